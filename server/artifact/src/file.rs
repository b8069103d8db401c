//! Artifact files: sealing a bundle directory into one file atomically, and opening one
//! only after its recorded SHA-256 checks out.

use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::ArtifactError;
use crate::keyring::Keyring;
use crate::pack::{pack, unpack, UnpackLimits};
use crate::stream::{ArtifactReader, ArtifactWriter};

/// What sealing produced, for the store's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// SHA-256 of the artifact file as stored.
    pub sha256: String,
    /// SHA-256 of the packed plaintext bundle.
    pub plaintext_sha256: String,
    /// Bytes of the artifact file.
    pub size: u64,
    pub key_id: String,
}

/// An artifact being written to a temporary file beside its destination.
struct Sealing {
    tmp: TempPath,
    dest: PathBuf,
    key_id: String,
    plain: Hashing<ArtifactWriter<Hashing<BufWriter<fs::File>>>>,
}

impl Sealing {
    fn begin(
        dest: &Path,
        keyring: &Keyring,
        name: &str,
        version: &str,
        segment_size: u32,
    ) -> Result<Sealing, ArtifactError> {
        let tmp = TempPath::beside(dest)?;
        let file = fs::File::create(&tmp.0)
            .map_err(ArtifactError::io(format!("creating {}", tmp.0.display())))?;
        let out = Hashing::new(BufWriter::with_capacity(1 << 20, file));
        let writer = ArtifactWriter::new(out, keyring, name, version, segment_size)?;
        Ok(Sealing {
            tmp,
            dest: dest.to_path_buf(),
            key_id: keyring.primary_id().to_string(),
            plain: Hashing::new(writer),
        })
    }

    /// Seals the last segment, fsyncs, renames into place and fsyncs the directory. With
    /// `expected_plaintext`, a plaintext that hashes otherwise is refused before the rename.
    fn commit(self, expected_plaintext: Option<&str>) -> Result<Sealed, ArtifactError> {
        let (writer, _, plaintext_sha256) = self.plain.finish();
        if let Some(expected) = expected_plaintext.filter(|e| **e != plaintext_sha256) {
            return Err(ArtifactError::Checksum {
                expected: expected.to_string(),
                actual: plaintext_sha256,
            });
        }
        let (out, _) = writer.finish()?;
        let (buffered, size, sha256) = out.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| ArtifactError::io("flushing the artifact")(e.into_error()))?;
        file.sync_all()
            .map_err(ArtifactError::io("syncing the artifact"))?;
        drop(file);
        fs::rename(&self.tmp.0, &self.dest).map_err(ArtifactError::io(format!(
            "renaming into {}",
            self.dest.display()
        )))?;
        self.tmp.disarm();
        sync_dir(&self.dest)?;
        Ok(Sealed {
            sha256,
            plaintext_sha256,
            size,
            key_id: self.key_id,
        })
    }
}

/// Packs `files` from `bundle_dir`, encrypts them under the primary key and writes `dest`
/// atomically: a temporary file beside it, fsync, rename, fsync of the directory. A crash
/// or error leaves either the old `dest` or nothing, never a partial file.
pub fn seal_bundle(
    bundle_dir: &Path,
    files: &[&str],
    keyring: &Keyring,
    name: &str,
    version: &str,
    segment_size: u32,
    dest: &Path,
) -> Result<Sealed, ArtifactError> {
    let mut sealing = Sealing::begin(dest, keyring, name, version, segment_size)?;
    pack(bundle_dir, files, &mut sealing.plain)?;
    sealing.commit(None)
}

/// Checks the file's SHA-256 against `expected_sha256` (the recorded value) and only then
/// decrypts and unpacks it into the empty directory `dest`.
pub fn open_bundle(
    artifact: &Path,
    expected_sha256: &str,
    keyring: &Keyring,
    name: &str,
    version: &str,
    dest: &Path,
) -> Result<Vec<(String, u64)>, ArtifactError> {
    let actual = sha256_file(artifact)?;
    if !actual.eq_ignore_ascii_case(expected_sha256) {
        return Err(ArtifactError::Checksum {
            expected: expected_sha256.to_string(),
            actual,
        });
    }
    let file = fs::File::open(artifact)
        .map_err(ArtifactError::io(format!("opening {}", artifact.display())))?;
    let reader = ArtifactReader::open(
        BufReader::with_capacity(1 << 20, file),
        keyring,
        name,
        version,
    )?;
    unpack(reader, dest, UnpackLimits::default())
}

/// Re-encrypts the artifact at `src` (whose file must hash to `expected_sha256` and whose
/// plaintext must hash to `expected_plaintext_sha256`) under the keyring's primary key
/// into `dest`, atomically. The plaintext streams from decryptor to encryptor and never
/// touches the disk.
#[allow(clippy::too_many_arguments)]
pub fn reseal(
    src: &Path,
    expected_sha256: &str,
    expected_plaintext_sha256: &str,
    keyring: &Keyring,
    name: &str,
    version: &str,
    segment_size: u32,
    dest: &Path,
) -> Result<Sealed, ArtifactError> {
    let actual = sha256_file(src)?;
    if !actual.eq_ignore_ascii_case(expected_sha256) {
        return Err(ArtifactError::Checksum {
            expected: expected_sha256.to_string(),
            actual,
        });
    }
    let input =
        fs::File::open(src).map_err(ArtifactError::io(format!("opening {}", src.display())))?;
    let mut reader = ArtifactReader::open(
        BufReader::with_capacity(1 << 20, input),
        keyring,
        name,
        version,
    )?;
    let mut sealing = Sealing::begin(dest, keyring, name, version, segment_size)?;
    io::copy(&mut reader, &mut sealing.plain).map_err(ArtifactError::from_io)?;
    sealing.commit(Some(expected_plaintext_sha256))
}

pub fn sha256_file(path: &Path) -> Result<String, ArtifactError> {
    let mut file =
        fs::File::open(path).map_err(ArtifactError::io(format!("opening {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(ArtifactError::io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

pub(crate) fn sync_dir(path: &Path) -> Result<(), ArtifactError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ArtifactError::io(format!(
            "syncing directory {}",
            dir.display()
        )))
}

/// A temporary file removed on drop unless the rename succeeded.
struct TempPath(PathBuf);

impl TempPath {
    fn beside(dest: &Path) -> Result<TempPath, ArtifactError> {
        let name = dest
            .file_name()
            .ok_or_else(|| ArtifactError::Pack(format!("{} has no file name", dest.display())))?;
        let mut tmp = name.to_os_string();
        tmp.push(format!(".tmp-{}", std::process::id()));
        Ok(TempPath(dest.with_file_name(tmp)))
    }

    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Hashes and counts what passes through to `inner`.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the bytes written and their SHA-256.
    fn finish(self) -> (W, u64, String) {
        (self.inner, self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Key;

    fn ring() -> Keyring {
        Keyring::new("k1", [("k1".to_string(), Key::from_bytes([3; 32]))]).unwrap()
    }

    fn bundle() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("manifest.json"), b"{}").unwrap();
        fs::write(dir.path().join("model.pt"), vec![1u8; 300_000]).unwrap();
        dir
    }

    #[test]
    fn seals_and_opens_a_bundle() {
        let src = bundle();
        let store = tempfile::tempdir().unwrap();
        let dest = store.path().join("a.rkart");
        let sealed = seal_bundle(
            src.path(),
            &["manifest.json", "model.pt"],
            &ring(),
            "m",
            "1",
            4096,
            &dest,
        )
        .unwrap();
        assert_eq!(sealed.size, fs::metadata(&dest).unwrap().len());
        assert_eq!(sealed.sha256, sha256_file(&dest).unwrap());
        assert_eq!(sealed.key_id, "k1");
        // Nothing but the artifact is left in the directory.
        assert_eq!(fs::read_dir(store.path()).unwrap().count(), 1);
        let out = tempfile::tempdir().unwrap();
        let files = open_bundle(&dest, &sealed.sha256, &ring(), "m", "1", out.path()).unwrap();
        assert_eq!(
            files,
            vec![("manifest.json".into(), 2), ("model.pt".into(), 300_000)]
        );
        assert_eq!(
            fs::read(out.path().join("model.pt")).unwrap(),
            vec![1u8; 300_000]
        );
    }

    #[test]
    fn a_changed_file_is_refused_before_decryption() {
        let src = bundle();
        let store = tempfile::tempdir().unwrap();
        let dest = store.path().join("a.rkart");
        let sealed =
            seal_bundle(src.path(), &["model.pt"], &ring(), "m", "1", 4096, &dest).unwrap();
        let mut bytes = fs::read(&dest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&dest, bytes).unwrap();
        let out = tempfile::tempdir().unwrap();
        let err = open_bundle(&dest, &sealed.sha256, &ring(), "m", "1", out.path()).unwrap_err();
        assert!(matches!(err, ArtifactError::Checksum { .. }), "{err}");
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_failed_seal_leaves_nothing_behind() {
        let src = bundle();
        let store = tempfile::tempdir().unwrap();
        let dest = store.path().join("a.rkart");
        let err = seal_bundle(
            src.path(),
            &["model.pt", "missing.bin"],
            &ring(),
            "m",
            "1",
            4096,
            &dest,
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing.bin"), "{err}");
        assert_eq!(fs::read_dir(store.path()).unwrap().count(), 0);
    }
}
