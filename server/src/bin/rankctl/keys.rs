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

/// `rankctl token generate`: 256 random bits, printed once. rankd stores only the hash,
/// so the token cannot be recovered from the config: lose it and generate another.
pub fn token(name: &str, role: &str) -> Result<()> {
    if rankd_server::auth::Role::parse(role).is_none() {
        anyhow::bail!("role must be reader, operator or admin, not {role:?}");
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token = format!("rkd_{}", hex::encode(bytes));
    let hash = rankd_server::auth::token_hash(&token);
    if crate::format::json_output() {
        return crate::format::print_json(
            &serde_json::json!({"name": name, "role": role, "token": token, "sha256": hash}),
        );
    }
    println!("token (give this to {name}; it is not stored anywhere):\n  {token}\n");
    println!("add to rankd.toml on every node:\n[[auth.tokens]]\nname = {name:?}\nrole = {role:?}\nsha256 = {hash:?}");
    Ok(())
}
