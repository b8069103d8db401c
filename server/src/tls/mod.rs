//! TLS on the client, admin and peer ports, reloaded from disk while the node runs.
//!
//! rankd accepts TLS itself (tokio-rustls, see `acceptor`) rather than through tonic's
//! static TLS settings, so a rotated certificate or CA reaches every new connection without
//! a restart. Outbound node-to-node channels use tonic's client TLS; on reload they are
//! rebuilt, and the old ones close once their in-flight calls finish.

pub mod acceptor;
pub mod config;
pub mod files;
pub mod names;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use acceptor::{incoming, Conn, ConnInfo, LiveConfig};
pub use config::{ListenerTls, PeerTls, SecurityMode, TlsConfig};
use files::{ClientAuth, Fingerprint, ServerFiles};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::metrics::{Metrics, PortLabel, PortResult};

/// A certificate, key or CA that cannot be used. The messages name files, never content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{cert} does not go with its key: {reason}")]
    KeyMismatch { cert: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Rustls(rustls::Error),
}

/// One TLS listener: its files, the configuration in use, and what the files looked like
/// when it was built.
pub struct Listener {
    pub port: &'static str,
    files: ServerFiles,
    pub live: LiveConfig,
    seen: Mutex<Fingerprint>,
    /// Expiry of the certificate in `live` (not of whatever is on disk: a set that failed
    /// to load must not hide that the served one runs out). 0: unknown.
    not_after: AtomicI64,
}

impl Listener {
    fn load(port: &'static str, files: ServerFiles) -> Result<Listener, TlsError> {
        let seen = Fingerprint::of(&files.paths());
        let config = files.build()?;
        let not_after = AtomicI64::new(files::not_after(&files.cert).unwrap_or(0));
        Ok(Listener {
            port,
            files,
            live: Arc::new(RwLock::new(config)),
            seen: Mutex::new(seen),
            not_after,
        })
    }

    /// Rebuilds from disk if any file changed. A set that fails to load (a key written
    /// before its certificate, a typo) leaves the working configuration in place, and is
    /// tried again once the files change again.
    fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = Fingerprint::of(&self.files.paths());
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return None;
        }
        *seen = now;
        Some(self.files.build().map(|config| {
            *self.live.write().unwrap_or_else(|p| p.into_inner()) = config;
            // Read after the build succeeded; a rotation racing this read is seen by the
            // fingerprint on the next check.
            let t = files::not_after(&self.files.cert).unwrap_or(0);
            self.not_after.store(t, Ordering::Relaxed);
        }))
    }

    fn not_after(&self) -> Option<i64> {
        Some(self.not_after.load(Ordering::Relaxed)).filter(|t| *t != 0)
    }
}

/// The node's TLS material. A `None` listener serves plaintext (only possible under
/// `tls.mode = "insecure-dev"`; the config validation sees to that).
pub struct NodeTls {
    pub client: Option<Listener>,
    pub admin: Option<Listener>,
    pub peer: Option<Listener>,
    peer_files: Option<PeerTls>,
    peer_seen: Mutex<Fingerprint>,
}

fn listener_files(l: &ListenerTls) -> ServerFiles {
    ServerFiles {
        cert: l.cert.clone(),
        key: l.key.clone(),
        client_auth: l
            .client_ca
            .clone()
            .map_or(ClientAuth::None, ClientAuth::Optional),
    }
}

impl NodeTls {
    pub fn load(cfg: &TlsConfig) -> Result<NodeTls, TlsError> {
        let listener = |port, l: &Option<ListenerTls>| {
            l.as_ref()
                .map(|l| Listener::load(port, listener_files(l)))
                .transpose()
        };
        let peer = cfg
            .peer
            .as_ref()
            .map(|p| {
                Listener::load(
                    "peer",
                    ServerFiles {
                        cert: p.cert.clone(),
                        key: p.key.clone(),
                        client_auth: ClientAuth::RequiredNamed {
                            ca: p.ca.clone(),
                            allowed: p.allowed_names.clone(),
                        },
                    },
                )
            })
            .transpose()?;
        let tls = NodeTls {
            client: listener("client", &cfg.client)?,
            admin: listener("admin", &cfg.admin)?,
            peer,
            peer_files: cfg.peer.clone(),
            peer_seen: Mutex::new(Fingerprint::of(&peer_paths(cfg.peer.as_ref()))),
        };
        // Fail the start now, not at the first outbound call.
        tls.peer_client()?;
        Ok(tls)
    }

    /// Outbound node-to-node TLS: this node's certificate as client identity, the cluster
    /// CA as the only trusted root.
    pub fn peer_client(&self) -> Result<Option<ClientTlsConfig>, TlsError> {
        let Some(p) = &self.peer_files else {
            return Ok(None);
        };
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.clone(),
                source,
            })
        };
        // Build a client config now, so a broken file or a key that does not go with its
        // certificate is reported with its name (and a reload keeps the previous identity)
        // instead of failing every peer handshake.
        rustls::ClientConfig::builder_with_provider(files::provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_root_certificates(files::read_roots(&p.ca)?)
            .with_client_auth_cert(files::read_certs(&p.cert)?, files::read_key(&p.key)?)
            .map_err(|e| TlsError::KeyMismatch {
                cert: p.cert.clone(),
                reason: e.to_string(),
            })?;
        Ok(Some(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read(&p.ca)?))
                .identity(Identity::from_pem(read(&p.cert)?, read(&p.key)?)),
        ))
    }

    fn listeners(&self) -> impl Iterator<Item = &Listener> {
        [&self.client, &self.admin, &self.peer]
            .into_iter()
            .filter_map(Option::as_ref)
    }

    /// Publishes each listener's certificate expiry.
    pub fn export_expiry(&self, metrics: &Metrics) {
        for l in self.listeners() {
            if let Some(t) = l.not_after() {
                metrics
                    .tls
                    .cert_not_after
                    .get_or_create(&PortLabel { port: l.port })
                    .set(t);
            }
        }
    }

    /// Reloads whatever changed on disk. Returns the new outbound peer configuration when
    /// the peer files changed and load cleanly.
    pub fn reload(&self, metrics: &Metrics) -> Option<ClientTlsConfig> {
        for l in self.listeners() {
            if let Some(result) = l.reload_if_changed() {
                record(metrics, l.port, &result);
            }
        }
        self.export_expiry(metrics);
        let now = Fingerprint::of(&peer_paths(self.peer_files.as_ref()));
        {
            let mut seen = self.peer_seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return None;
            }
            *seen = now;
        }
        match self.peer_client() {
            Ok(config) => config,
            Err(e) => {
                record(metrics, "peer-client", &Err(e));
                None
            }
        }
    }
}

fn peer_paths(p: Option<&PeerTls>) -> Vec<PathBuf> {
    p.map(|p| vec![p.cert.clone(), p.key.clone(), p.ca.clone()])
        .unwrap_or_default()
}

fn record(metrics: &Metrics, port: &'static str, result: &Result<(), TlsError>) {
    let outcome = match result {
        Ok(()) => {
            tracing::info!(port, "TLS certificates reloaded");
            "ok"
        }
        Err(e) => {
            tracing::error!(port, error = %e, "TLS reload failed; still using the previous certificates");
            "failed"
        }
    };
    metrics
        .tls
        .reloads
        .get_or_create(&PortResult {
            port,
            result: outcome,
        })
        .inc();
}

/// Checks the files every `interval` until `stop` changes; `on_peer_client` receives a new
/// outbound configuration when the peer files changed.
pub async fn reload_loop(
    tls: Arc<NodeTls>,
    interval: Duration,
    metrics: Arc<Metrics>,
    on_peer_client: impl Fn(ClientTlsConfig) + Send + 'static,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        let (t, m) = (tls.clone(), metrics.clone());
        // File reads and PEM parsing are blocking work.
        if let Ok(Some(peer)) = tokio::task::spawn_blocking(move || t.reload(&m)).await {
            tracing::info!("outbound peer TLS reloaded; new connections use it");
            on_peer_client(peer);
        }
    }
}
