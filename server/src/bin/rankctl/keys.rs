//! `rankctl keys generate`: a new keyring file with one random key, readable only by its
//! owner.

use std::path::Path;

use anyhow::Result;

pub fn generate(out: &Path, id: &str) -> Result<()> {
    rankd_artifact::keyring::write_new(out, id)?;
    if crate::format::json_output() {
        return crate::format::print_json(&serde_json::json!({"keyring": out, "primary": id}));
    }
    println!("wrote keyring {} with primary key {id:?}", out.display());
    Ok(())
}
