//! Ports: binding them, their accept streams, reflection, and the warning for insecure ones.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::StartError;
use crate::config::Config;
use crate::metrics::Metrics;

/// The accept stream for one port: TLS when `tls` is configured, else plaintext.
pub(super) fn incoming_on(
    listener: TcpListener,
    tls: Option<&crate::tls::Listener>,
    port: &'static str,
    metrics: &Arc<Metrics>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<crate::tls::Conn>> {
    let metrics = metrics.clone();
    crate::tls::incoming(listener, tls.map(|l| l.live.clone()), port, move || {
        metrics
            .tls
            .handshake_failures
            .get_or_create(&crate::metrics::PortLabel { port })
            .inc();
    })
}

/// Plaintext ports and anonymous admin are for development; say so where nobody can miss it.
pub(super) fn warn_insecure(cfg: &Config) {
    let t = &cfg.tls;
    let mut plaintext = Vec::new();
    if t.client.is_none() {
        plaintext.push("client");
    }
    if cfg.server.admin_listen.is_some() && t.admin.is_none() {
        plaintext.push("admin");
    }
    if t.peer.is_none() {
        plaintext.push("peer");
    }
    for port in plaintext {
        tracing::warn!(port, "INSECURE (tls.mode = \"insecure-dev\"): this port speaks PLAINTEXT; anyone who can reach it can read and forge its traffic. Never run this in production.");
    }
    if cfg.auth.mode == crate::tls::SecurityMode::InsecureDev {
        tracing::warn!("INSECURE (auth.mode = \"insecure-dev\"): admin calls WITHOUT a credential run as \"anonymous\" with the admin role. Never run this in production.");
    }
}

/// Every service this node serves, for grpc.reflection v1 and v1alpha alike.
pub(super) fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rankd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

pub(super) async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

pub(super) fn local_addr(l: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}
