//! Packing a bundle's files into one stream (tar, with fixed metadata so the same files
//! always pack to the same bytes) and unpacking it with strict limits: regular files with
//! plain names only, no links, no directories, bounded sizes.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path};

use crate::error::ArtifactError;

/// Limits applied while unpacking untrusted (or merely corrupt) input.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    pub max_files: usize,
    pub max_total_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_files: 64,
            max_total_bytes: 64 << 30,
        }
    }
}

/// Writes `files` (plain names inside `dir`) to `out` as one tar stream.
pub fn pack(dir: &Path, files: &[&str], out: impl Write) -> Result<(), ArtifactError> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    for &name in files {
        check_name(name)?;
        let path = dir.join(name);
        let mut file = fs::File::open(&path)
            .map_err(ArtifactError::io(format!("opening {}", path.display())))?;
        let size = file
            .metadata()
            .map_err(ArtifactError::io(format!("reading {}", path.display())))?
            .len();
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, &mut file)
            .map_err(ArtifactError::io(format!("packing {name}")))?;
    }
    tar.into_inner()
        .map_err(ArtifactError::io("finishing the pack"))?
        .flush()
        .map_err(ArtifactError::io("flushing the pack"))
}

/// Unpacks a stream written by [`pack`] into the existing, empty directory `dest`.
/// Returns each file's name and size. Errors raised by an [`crate::ArtifactReader`]
/// underneath come back as the artifact error they carry.
pub fn unpack(
    input: impl Read,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<Vec<(String, u64)>, ArtifactError> {
    let mut archive = tar::Archive::new(input);
    let mut files = Vec::new();
    let mut total = 0u64;
    let entries = archive.entries().map_err(ArtifactError::from_io)?;
    for entry in entries {
        let mut entry = entry.map_err(ArtifactError::from_io)?;
        let header = entry.header();
        if header.entry_type() != tar::EntryType::Regular {
            return Err(ArtifactError::Pack(format!(
                "entry of type {:?} is not a regular file",
                header.entry_type()
            )));
        }
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw_name)
            .map_err(|_| ArtifactError::Pack("file name is not UTF-8".into()))?;
        check_name(&name)?;
        let size = entry.size();
        total = total.saturating_add(size);
        if files.len() == limits.max_files || total > limits.max_total_bytes {
            return Err(ArtifactError::Pack(format!(
                "more than {} files or {} bytes",
                limits.max_files, limits.max_total_bytes
            )));
        }
        let path = dest.join(&name);
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(ArtifactError::io(format!("creating {}", path.display())))?;
        let copied =
            io::copy(&mut (&mut entry).take(size), &mut out).map_err(ArtifactError::from_io)?;
        if copied != size {
            return Err(ArtifactError::Truncated);
        }
        out.sync_all()
            .map_err(ArtifactError::io(format!("syncing {}", path.display())))?;
        files.push((name, size));
    }
    Ok(files)
}

/// A plain file name: one normal path component, no separators, no `.`/`..`.
fn check_name(name: &str) -> Result<(), ArtifactError> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) if !name.contains('\\') => Ok(()),
        _ => Err(ArtifactError::Pack(format!(
            "{name:?} is not a plain file name"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.json"), b"{\"x\": 1}").unwrap();
        fs::write(dir.path().join("b.bin"), vec![7u8; 10_000]).unwrap();
        dir
    }

    #[test]
    fn packs_deterministically_and_round_trips() {
        let src = bundle();
        let (mut one, mut two) = (Vec::new(), Vec::new());
        pack(src.path(), &["a.json", "b.bin"], &mut one).unwrap();
        pack(src.path(), &["a.json", "b.bin"], &mut two).unwrap();
        assert_eq!(one, two);
        let dest = tempfile::tempdir().unwrap();
        let files = unpack(one.as_slice(), dest.path(), UnpackLimits::default()).unwrap();
        assert_eq!(
            files,
            vec![("a.json".to_string(), 8), ("b.bin".to_string(), 10_000)]
        );
        assert_eq!(
            fs::read(dest.path().join("b.bin")).unwrap(),
            vec![7u8; 10_000]
        );
    }

    #[test]
    fn refuses_paths_that_leave_the_directory() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        let name = b"../escape";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_size(1);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.append(&header, &b"x"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(bytes.as_slice(), dest.path(), UnpackLimits::default()).unwrap_err();
        assert!(err.to_string().contains("not a plain file name"), "{err}");
        assert!(!dest.path().parent().unwrap().join("escape").exists());
    }

    #[test]
    fn enforces_limits() {
        let src = bundle();
        let mut packed = Vec::new();
        pack(src.path(), &["a.json", "b.bin"], &mut packed).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let limits = UnpackLimits {
            max_files: 8,
            max_total_bytes: 5_000,
        };
        assert!(unpack(packed.as_slice(), dest.path(), limits).is_err());
    }

    #[test]
    fn names_must_be_plain() {
        for bad in ["", ".", "..", "a/b", "/etc/passwd", "a\\b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("model.pt").is_ok());
    }
}
