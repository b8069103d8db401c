//! Secrets must never reach a log. Every [`crate::Node`] checks its own log for the secrets
//! in its config when it is dropped (so every test in the suite checks, not one), and a
//! [`crate::Cluster`] also checks for the bearer tokens it handed out.

use std::path::Path;

/// What a node's config makes secret: the keyring's keys, and the body of every TLS
/// private key it names. (Token hashes are not secret; the tokens are, and only the test
/// that made them knows them.)
pub fn from_config(config: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(config) else {
        return Vec::new();
    };
    let Ok(cfg) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut secrets = Vec::new();
    let get = |path: &[&str]| -> Option<String> {
        let mut v = cfg.get(path[0])?;
        for k in &path[1..] {
            v = v.get(*k)?;
        }
        v.as_str().map(str::to_owned)
    };
    if let Some(keyring) = get(&["artifacts", "keyring"]) {
        secrets.extend(keyring_keys(Path::new(&keyring)));
    }
    for port in ["client", "admin", "peer"] {
        if let Some(key) = get(&["tls", port, "key"]) {
            secrets.extend(pem_body_lines(Path::new(&key)));
        }
    }
    secrets
}

/// The hex keys in a keyring file.
pub fn keyring_keys(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(t) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    t.get("keys")
        .and_then(|k| k.as_array())
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k.get("key")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The base64 lines of a PEM private key: any one of them in a log is a leak.
pub fn pem_body_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|pem| {
            pem.lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 32)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Panics, naming the kind of secret (never printing it), if `text` contains any.
pub fn assert_absent(what: &str, text: &str, secrets: &[String]) {
    for (i, s) in secrets.iter().enumerate() {
        assert!(
            s.len() < 16 || !text.contains(s.as_str()),
            "{what} contains secret #{i} ({} characters) verbatim",
            s.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keyring_keys_and_tls_key_lines_and_catches_them_in_text() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let keyring = dir.path().join("keyring.toml");
        crate::write_keyring(&keyring, "k1");
        let pki = crate::TestPki::new(dir.path(), "t");
        let cert = pki.issue("node", &[]);
        let config = dir.path().join("rankd.toml");
        std::fs::write(
            &config,
            format!(
                "[artifacts]\nkeyring = {:?}\n[tls.peer]\nkey = {:?}\n",
                keyring.display().to_string(),
                cert.key.display().to_string()
            ),
        )
        .expect("config");
        let secrets = from_config(&config);
        let key = keyring_keys(&keyring);
        assert_eq!(key.len(), 1);
        assert!(secrets.contains(&key[0]));
        assert!(secrets.len() > 1, "the TLS key's body lines are included");
        assert_absent("a clean log", "INFO all good", &secrets);
        let leaked = format!("WARN loaded key {}", key[0]);
        let caught = std::panic::catch_unwind(|| assert_absent("a leaky log", &leaked, &secrets));
        assert!(caught.is_err(), "a leaked key must be caught");
    }
}
