//! Who may call which admin RPC.
//!
//! A caller is identified by a bearer token (`authorization: Bearer <token>`) or, where the
//! port verifies client certificates, by its certificate. Each credential has one role, and
//! roles are ordered: `admin` may do what `operator` may, `operator` what `reader` may.
//! Every method not listed in [`required_role`] needs `admin`, so a method added later is
//! closed until someone decides otherwise.

pub mod config;
pub mod layer;
pub mod rate;

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Status;

pub use config::{AuthConfig, IdentityEntry, TokenEntry};

use crate::tls::{ConnInfo, SecurityMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reader" => Some(Role::Reader),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The principal of a call without a credential under `auth.mode = "insecure-dev"`. Its
/// calls keep the `requested_by`/`uploaded_by` the client sent, since nobody was
/// authenticated to put there instead.
pub const ANONYMOUS: &str = "anonymous";

/// The authenticated caller of an admin RPC, in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// Every admin RPC and the role it needs. Reads are `reader`; changes to what is served,
/// and backups, are `operator`; membership and keys are `admin`.
pub const ADMIN_METHODS: [(&str, Role); 17] = [
    ("ListModels", Role::Reader),
    ("GetModel", Role::Reader),
    ("ListBackups", Role::Reader),
    ("History", Role::Reader),
    ("GetClusterStatus", Role::Reader),
    ("UploadModel", Role::Operator),
    ("ActivateModel", Role::Operator),
    ("Promote", Role::Operator),
    ("Rollback", Role::Operator),
    ("CreateBackup", Role::Operator),
    ("VerifyBackup", Role::Operator),
    ("RotateKeys", Role::Admin),
    ("DownloadModel", Role::Admin),
    ("InjectFault", Role::Admin),
    ("InitCluster", Role::Admin),
    ("AddNode", Role::Admin),
    ("RemoveNode", Role::Admin),
];

/// The method's static name and the role it needs; unknown methods need `admin`.
pub fn required_role(method: &str) -> (&'static str, Role) {
    ADMIN_METHODS
        .iter()
        .find(|(m, _)| *m == method)
        .copied()
        .unwrap_or(("unknown", Role::Admin))
}

/// Lowercase hex SHA-256, the form tokens are stored in.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Equal-length comparison that does not stop at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks credentials against the configured tokens and identities.
#[derive(Debug, Clone)]
pub struct Authenticator {
    mode: SecurityMode,
    tokens: Vec<TokenEntry>,
    identities: Vec<IdentityEntry>,
}

impl Authenticator {
    pub fn new(cfg: &AuthConfig) -> Authenticator {
        Authenticator {
            mode: cfg.mode,
            tokens: cfg.tokens.clone(),
            identities: cfg.identities.clone(),
        }
    }

    /// Who is calling. A presented token must be known (UNAUTHENTICATED otherwise, without
    /// echoing it); a verified client certificate must be listed. With neither, the call is
    /// anonymous: refused in `required` mode, an admin in `insecure-dev`.
    pub fn authenticate(
        &self,
        headers: &http::HeaderMap,
        conn: Option<&ConnInfo>,
    ) -> Result<Principal, Status> {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| {
                    Status::unauthenticated("the authorization metadata must be `Bearer <token>`")
                })?;
            let hash = token_hash(token);
            return self
                .tokens
                .iter()
                .find(|t| same(t.sha256.as_bytes(), hash.as_bytes()))
                .map(|t| Principal {
                    name: t.name.clone(),
                    role: t.role,
                })
                .ok_or_else(|| Status::unauthenticated("the bearer token is not recognised"));
        }
        if let Some(subject) = conn.and_then(ConnInfo::client_identity) {
            return self
                .identities
                .iter()
                .find(|i| i.subject == subject)
                .map(|i| Principal {
                    name: subject.clone(),
                    role: i.role,
                })
                .ok_or_else(|| {
                    Status::unauthenticated(format!(
                        "client certificate {subject:?} is not listed in auth.identities"
                    ))
                });
        }
        match self.mode {
            SecurityMode::InsecureDev => Ok(Principal {
                name: ANONYMOUS.into(),
                role: Role::Admin,
            }),
            SecurityMode::Required => Err(Status::unauthenticated(
                "admin calls need a credential: a bearer token in the authorization metadata, \
                 or a client certificate listed in auth.identities",
            )),
        }
    }

    /// Authenticates, then checks the role `method` needs.
    pub fn authorize(
        &self,
        method: &str,
        headers: &http::HeaderMap,
        conn: Option<&ConnInfo>,
    ) -> Result<Principal, Status> {
        let principal = self.authenticate(headers, conn)?;
        let (name, needed) = required_role(method);
        if principal.role < needed {
            return Err(Status::permission_denied(format!(
                "{:?} has role {}; {name} needs {needed}",
                principal.name, principal.role
            )));
        }
        Ok(principal)
    }
}

#[cfg(test)]
mod tests;
