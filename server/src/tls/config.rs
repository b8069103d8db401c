//! `[tls]`: which ports speak TLS, with which certificates.
//!
//! Each listener is configured on its own: the client port (`[tls.client]`), the admin
//! surface when it has its own port (`[tls.admin]`, with `server.admin_listen`), and the
//! peer port (`[tls.peer]`, always mutual: both sides present certificates signed by the
//! cluster CA). With `mode = "required"` (the default) a port without a section is a config
//! error; plaintext exists only under `mode = "insecure-dev"`, which rankd logs at WARN on
//! every start, once per plaintext port.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Whether a missing security setting is an error or a loudly logged development shortcut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityMode {
    #[default]
    Required,
    InsecureDev,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub mode: SecurityMode,
    /// How often certificate and key files are checked for changes; a changed, valid set
    /// is used for every new connection from then on. Open connections keep theirs.
    pub reload_interval_s: u64,
    pub client: Option<ListenerTls>,
    pub admin: Option<ListenerTls>,
    pub peer: Option<PeerTls>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            mode: SecurityMode::Required,
            reload_interval_s: 30,
            client: None,
            admin: None,
            peer: None,
        }
    }
}

/// A listener that clients reach: the server's chain and key, and optionally a CA whose
/// client certificates are accepted as identities (for admin roles and per-client rate
/// limits). A client without a certificate is still accepted; admin calls then need a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// The peer port and every outbound node-to-node connection: this node's certificate and
/// key (used as server and as client), and the cluster CA that must have signed the other
/// side's. A peer without such a certificate cannot complete the handshake, so it can
/// neither vote, replicate, fetch artifacts nor forward calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Names (subject CN or DNS name, one `*` wildcard allowed) a certificate must carry to
    /// act as a member. Required: the CA may also sign operators' and frontends'
    /// certificates, which must not be able to vote or fetch artifacts.
    #[serde(default)]
    pub allowed_names: Vec<String>,
}

impl TlsConfig {
    /// `admin_port`: whether `server.admin_listen` gives the admin surface its own port.
    pub fn validate(&self, admin_port: bool) -> Result<(), (&'static str, String)> {
        if !(1..=3600).contains(&self.reload_interval_s) {
            return Err(("tls.reload_interval_s", "must be between 1 and 3600".into()));
        }
        if self.admin.is_some() && !admin_port {
            return Err((
                "tls.admin",
                "needs server.admin_listen: without its own port the admin surface shares the \
                 client port and [tls.client]"
                    .into(),
            ));
        }
        if let Some(p) = &self.peer {
            if p.allowed_names.iter().all(|n| n.trim().is_empty()) {
                return Err((
                    "tls.peer.allowed_names",
                    "must name the nodes' certificates (CN or DNS name, e.g. \"rankd-node\" or \
                     \"*.rankd-peer.rankd.svc\"): without it any certificate the CA signed could \
                     act as a cluster member"
                        .into(),
                ));
            }
        }
        if self.mode == SecurityMode::InsecureDev {
            return Ok(());
        }
        let missing = |section: &'static str| {
            Err((
                section,
                "is required: configure certificates for this port (docs/security.md), or set \
                 tls.mode = \"insecure-dev\" to run it in plaintext"
                    .to_string(),
            ))
        };
        if self.client.is_none() {
            return missing("tls.client");
        }
        if admin_port && self.admin.is_none() {
            return missing("tls.admin");
        }
        if self.peer.is_none() {
            return missing("tls.peer");
        }
        Ok(())
    }
}
