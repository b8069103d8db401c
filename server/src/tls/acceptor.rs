//! Accepting connections on one port, in plaintext or TLS, for tonic's
//! `serve_with_incoming`.
//!
//! Handshakes run in their own tasks with a deadline, so a client that opens a connection
//! and sends nothing (or trickles bytes) holds one task, never the accept loop. Each
//! handshake reads the listener's current configuration, which is how a reload reaches
//! new connections.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// A slow or silent client gets this long to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once per port. Beyond it new connections are closed at once,
/// so a connection flood costs at most this many tasks and descriptors, not all of them.
const MAX_HANDSHAKES: usize = 1024;

/// What a request can learn about its connection (from tonic's request extensions).
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// The client's verified certificate chain, leaf first; None in plaintext or when the
    /// client presented none.
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl ConnInfo {
    /// The client certificate's identity: its subject common name, else its first DNS
    /// subject alternative name.
    pub fn client_identity(&self) -> Option<String> {
        let leaf = self.peer_certs.as_ref()?.first()?;
        super::names::cert_names(leaf.as_ref()).into_iter().next()
    }
}

/// One accepted connection.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match self {
            Conn::Plain(s) => ConnInfo {
                remote: s.peer_addr().ok(),
                peer_certs: None,
            },
            Conn::Tls(s) => {
                let (tcp, session) = s.get_ref();
                ConnInfo {
                    remote: tcp.peer_addr().ok(),
                    peer_certs: session.peer_certificates().map(|c| Arc::new(c.to_vec())),
                }
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A listener's TLS configuration, replaced in place on reload.
pub type LiveConfig = Arc<RwLock<Arc<ServerConfig>>>;

/// Accepts on `listener` until the returned stream is dropped (the server stopped).
/// `tls`: None serves plaintext. `on_failed_handshake` counts refused clients (metrics).
pub fn incoming(
    listener: TcpListener,
    tls: Option<LiveConfig>,
    port: &'static str,
    on_failed_handshake: impl Fn() + Send + Sync + 'static,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let on_failed_handshake = Arc::new(on_failed_handshake);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Without TCP_NODELAY a response's frames meet the client's delayed ACK.
            let _ = tcp.set_nodelay(true);
            let Some(tls) = &tls else {
                if tx.send(Ok(Conn::Plain(tcp))).await.is_err() {
                    return;
                }
                continue;
            };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                on_failed_handshake();
                tracing::warn!(
                    port,
                    "too many TLS handshakes in progress; connection closed"
                );
                continue;
            };
            let config = tls.read().unwrap_or_else(|p| p.into_inner()).clone();
            let tx = tx.clone();
            let failed = on_failed_handshake.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let remote = tcp.peer_addr().ok();
                let handshake = TlsAcceptor::from(config).accept(tcp);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(Conn::Tls(Box::new(stream)))).await;
                    }
                    Ok(Err(e)) => {
                        failed();
                        tracing::info!(port, remote = ?remote, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        failed();
                        tracing::info!(port, remote = ?remote, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
