//! `[auth]`: the credentials admin calls are checked against.
//!
//! Tokens are stored as the SHA-256 of the token, never the token: a leaked config does not
//! leak a credential. A plain hash (no salt, no stretching) is enough because rankd's
//! tokens are 256-bit random strings (`rankctl token generate`), not passwords: there is
//! nothing to guess from a dictionary.

use serde::{Deserialize, Serialize};

use super::Role;
use crate::tls::SecurityMode;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `required`: every admin call needs a credential. `insecure-dev`: a call without one
    /// runs as "anonymous" with the admin role (logged loudly at start); a credential that
    /// is presented is still checked.
    pub mode: SecurityMode,
    pub tokens: Vec<TokenEntry>,
    /// Client-certificate identities (subject CN, else first DNS name), verified against
    /// the `client_ca` of the port the admin surface is on.
    pub identities: Vec<IdentityEntry>,
    /// Calls per second each client identity (certificate, token name, else source IP)
    /// may make to the Rank API; 0: unlimited.
    pub rank_rate_per_client: u32,
    /// Calls per second each identity may make to the admin surface; 0: unlimited.
    pub admin_rate_per_client: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: SecurityMode::Required,
            tokens: Vec::new(),
            identities: Vec::new(),
            rank_rate_per_client: 0,
            admin_rate_per_client: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds the token; recorded in the audit history.
    pub name: String,
    pub role: Role,
    /// Lowercase hex SHA-256 of the token (`rankctl token generate` prints it).
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityEntry {
    pub subject: String,
    pub role: Role,
}

impl AuthConfig {
    /// `client_ca`: whether the port the admin surface is on verifies client certificates.
    pub fn validate(&self, client_ca: bool) -> Result<(), (&'static str, String)> {
        if self.mode == SecurityMode::Required
            && self.tokens.is_empty()
            && self.identities.is_empty()
        {
            return Err((
                "auth",
                "no credentials: add [[auth.tokens]] or [[auth.identities]] (docs/security.md), or \
                 set auth.mode = \"insecure-dev\""
                    .into(),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        for t in &self.tokens {
            if t.name.trim().is_empty() {
                return Err(("auth.tokens", "every token needs a name".into()));
            }
            // Names travel in gRPC metadata when a call is forwarded to the leader.
            if !printable(&t.name) || t.name == super::ANONYMOUS {
                return Err((
                    "auth.tokens",
                    format!(
                        "name {:?} must be printable ASCII and not \"{}\"",
                        t.name,
                        super::ANONYMOUS
                    ),
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(("auth.tokens", format!("name {:?} is used twice", t.name)));
            }
            let hex_ok = t.sha256.len() == 64
                && t.sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                return Err((
                    "auth.tokens",
                    format!(
                        "token {:?}: sha256 must be 64 lowercase hex digits (the hash, not the token)",
                        t.name
                    ),
                ));
            }
        }
        for i in &self.identities {
            if i.subject.trim().is_empty()
                || !printable(&i.subject)
                || i.subject == super::ANONYMOUS
            {
                return Err((
                    "auth.identities",
                    format!(
                        "subject {:?} must be non-empty printable ASCII and not \"{}\"",
                        i.subject,
                        super::ANONYMOUS
                    ),
                ));
            }
        }
        if !self.identities.is_empty() && !client_ca {
            return Err((
                "auth.identities",
                "need a client_ca on the port the admin surface is on ([tls.admin] with \
                 server.admin_listen, else [tls.client]); without one no certificate is verified"
                    .into(),
            ));
        }
        Ok(())
    }
}
