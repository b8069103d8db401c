//! `rankctl keys generate`: a new keyring file with one random key, readable only by its
//! owner.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use rankd_artifact::Key;

pub fn generate(out: &Path, id: &str) -> Result<()> {
    let key = Key::generate()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| {
            format!(
                "creating {} (an existing keyring is never overwritten)",
                out.display()
            )
        })?;
    let text = zeroize::Zeroizing::new(format!(
        "# rankd keyring: the primary key encrypts, any listed key decrypts. Keep it mode 0600.\n\
         primary = \"{id}\"\n\n[[keys]]\nid = \"{id}\"\nkey = \"{}\"\n",
        key.to_hex().as_str()
    ));
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    // Validate what was written the way rankd will read it.
    rankd_artifact::Keyring::load(out)?;
    println!("wrote keyring {} with primary key {id:?}", out.display());
    Ok(())
}
