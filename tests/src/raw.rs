//! A bare HTTP/2 transport for tonic clients.
//!
//! tonic's `Channel` enforces a request's `grpc-timeout` on the client side too: a call with
//! a 1 ns deadline fails locally (CANCELLED, "Timeout expired") and may never reach the
//! server. To observe what the *server* does with an expired deadline, this transport sends
//! the request as is and waits for the server's answer.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rankd_proto::v1::ranker_client::RankerClient;
use tokio::net::TcpStream;
use tonic::body::Body;

/// One HTTP/2 connection, usable as a tonic transport.
#[derive(Clone)]
pub struct RawH2(SendRequest<Body>);

impl RawH2 {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<RawH2> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "raw HTTP/2 connection ended");
            }
        });
        Ok(RawH2(send))
    }
}

impl tower_service::Service<http::Request<Body>> for RawH2 {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

/// A Rank client over [`RawH2`]: deadlines it sends are enforced by the server only.
pub async fn raw_rank_client(addr: SocketAddr) -> RankerClient<RawH2> {
    let transport = RawH2::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("raw HTTP/2 connection to {addr}: {e}"));
    let origin: http::Uri = format!("http://{addr}").parse().expect("a valid origin");
    RankerClient::with_origin(transport, origin)
}
