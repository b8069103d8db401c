//! Keyrings: named 256-bit keys, one of them primary.
//!
//! ```toml
//! primary = "2026-11"
//! [[keys]]
//! id = "2026-11"
//! key = "<64 hex digits>"
//! [[keys]]
//! id = "2026-05"
//! key = "<64 hex digits>"
//! ```
//!
//! The primary key encrypts; any listed key decrypts (an artifact's header names its key).
//! The file must not be readable by group or others, or loading fails.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::ArtifactError;

/// Longest key id; it is stored in every artifact header.
pub const MAX_KEY_ID: usize = 64;

/// A 256-bit key, wiped from memory when dropped and never printed.
#[derive(Clone)]
pub struct Key(Zeroizing<[u8; 32]>);

impl Key {
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(Zeroizing::new(bytes))
    }

    /// A fresh random key from the operating system.
    pub fn generate() -> Result<Key, ArtifactError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| ArtifactError::Io {
            context: "generating a key".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Key(bytes))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_ref()))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

#[derive(Clone, Debug)]
pub struct Keyring {
    primary: String,
    keys: BTreeMap<String, Key>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    primary: String,
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    key: Zeroizing<String>,
}

impl Keyring {
    /// Builds a keyring from `(id, key)` pairs; `primary` must be among them.
    pub fn new(
        primary: &str,
        keys: impl IntoIterator<Item = (String, Key)>,
    ) -> Result<Keyring, String> {
        let keys: BTreeMap<String, Key> = keys.into_iter().collect();
        for id in keys.keys() {
            check_id(id)?;
        }
        if !keys.contains_key(primary) {
            return Err(format!("primary key {primary:?} is not listed"));
        }
        Ok(Keyring {
            primary: primary.to_string(),
            keys,
        })
    }

    /// Loads and checks a keyring file. Errors never include key material.
    pub fn load(path: &Path) -> Result<Keyring, ArtifactError> {
        let bad = |reason: String| ArtifactError::Keyring {
            path: path.to_path_buf(),
            reason,
        };
        check_permissions(path).map_err(bad)?;
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?,
        );
        // toml's messages quote the offending line, which could hold a key: keep only the
        // position.
        let file: KeyringFile = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(" at byte {}", s.start))
                .unwrap_or_default();
            bad(format!("malformed TOML{at}"))
        })?;
        let mut keys = Vec::with_capacity(file.keys.len());
        for entry in &file.keys {
            let key = parse_key(&entry.key).map_err(|r| bad(format!("key {:?}: {r}", entry.id)))?;
            if keys.iter().any(|(id, _): &(String, Key)| id == &entry.id) {
                return Err(bad(format!("key id {:?} is listed twice", entry.id)));
            }
            keys.push((entry.id.clone(), key));
        }
        Keyring::new(&file.primary, keys).map_err(bad)
    }

    pub fn primary_id(&self) -> &str {
        &self.primary
    }

    pub(crate) fn primary(&self) -> (&str, &Key) {
        // `new` guarantees the primary is present.
        let key = &self.keys[&self.primary];
        (&self.primary, key)
    }

    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

/// Writes a new keyring file at `path` (mode 0600, never over an existing file) holding
/// one fresh random key named `id`, primary, and checks it loads.
pub fn write_new(path: &Path, id: &str) -> Result<(), ArtifactError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    check_id(id).map_err(|reason| ArtifactError::Keyring {
        path: path.to_path_buf(),
        reason,
    })?;
    let key = Key::generate()?;
    let io = ArtifactError::io(format!("writing keyring {}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(ArtifactError::io(format!(
            "creating {} (an existing keyring is never overwritten)",
            path.display()
        )))?;
    let text = Zeroizing::new(format!(
        "# rankd keyring: the primary key encrypts, any listed key decrypts. Keep it mode 0600.\n\
         primary = \"{id}\"\n\n[[keys]]\nid = \"{id}\"\nkey = \"{}\"\n",
        key.to_hex().as_str()
    ));
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    Keyring::load(path).map(|_| ())
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_KEY_ID {
        return Err(format!("key id {id:?} must be 1..={MAX_KEY_ID} bytes"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "key id {id:?} may hold only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

fn parse_key(hex_key: &str) -> Result<Key, String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_key.trim(), bytes.as_mut())
        .map_err(|_| "must be exactly 64 hex digits (256 bits)".to_string())?;
    Ok(Key(bytes))
}

#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "mode {mode:o} lets group or others read it; run chmod 600"
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn write(dir: &Path, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join("keyring.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn loads_a_private_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "primary = \"b\"\n[[keys]]\nid = \"a\"\nkey = \"{K1}\"\n[[keys]]\nid = \"b\"\nkey = \"{K2}\"\n"
        );
        let ring = Keyring::load(&write(dir.path(), &text, 0o600)).unwrap();
        assert_eq!(ring.primary_id(), "b");
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(ring.get("a").unwrap().bytes()[1], 1);
    }

    #[test]
    fn refuses_a_readable_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("primary = \"a\"\n[[keys]]\nid = \"a\"\nkey = \"{K1}\"\n");
        let err = Keyring::load(&write(dir.path(), &text, 0o640))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode 640"), "{err}");
    }

    #[test]
    fn malformed_keyrings_never_echo_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            format!("primary = \"a\"\n[[keys]]\nid = \"a\"\nkey = \"{}\"\n", &K1[..60]),
            format!("primary = \"z\"\n[[keys]]\nid = \"a\"\nkey = \"{K1}\"\n"),
            format!("primary = \"a\"\n[[keys]]\nid = \"a\"\nkey = \"{K1}\"\n[[keys]]\nid = \"a\"\nkey = \"{K2}\"\n"),
            format!("primary = \"a\"\n[[keys]]\nid = \"a\"\nkey = \"{K1}\" oops\n"),
            format!("primary = \"a\"\n[[keys]]\nid = \"a b\"\nkey = \"{K1}\"\n"),
        ];
        for text in cases {
            let err = Keyring::load(&write(dir.path(), &text, 0o600))
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains(&K1[..16]) && !err.contains(&K2[..16]),
                "{err}"
            );
        }
    }

    #[test]
    fn writes_a_new_private_keyring_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        write_new(&path, "k1").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Keyring::load(&path).unwrap().primary_id(), "k1");
        assert!(write_new(&path, "k1").is_err());
    }

    #[test]
    fn keys_do_not_print() {
        assert_eq!(format!("{:?}", Key::from_bytes([7; 32])), "Key(<redacted>)");
    }
}
