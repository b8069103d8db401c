//! The tower services a Rank attempt passes through: [`NodeService`] (one node's Ranker
//! client), [`Balanced`] (that service under a shared peak-EWMA load meter) and the
//! [`Balancer`] (`Buffer<Balance<…>>` over every healthy node).
//!
//! A call's first attempt goes through the balancer: power of two choices on peak-EWMA
//! latency among the nodes the [`Pool`](super::pool::Pool) has inserted. Retries and hedges
//! must avoid particular nodes, which `Balance` cannot be asked to do per request, so the
//! pool picks those itself with the same rule over the same [`Balanced`] handles; both paths
//! therefore feed and read one latency estimate per node.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::Status;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, Load, PeakEwma};
use tower::util::BoxService;
use tower::{BoxError, Service};

use super::config::ClientConfig;
use crate::v1::ranker_client::RankerClient;
use crate::v1::{RankRequest, RankResponse};

/// A node's identity in the client: its address, `host:port`.
pub(crate) type NodeKey = Arc<str>;

/// One try of a Rank call on one node.
pub(crate) struct Attempt {
    pub request: RankRequest,
    /// The caller's deadline: the attempt sends what is left of it as `grpc-timeout`.
    pub deadline: Instant,
    /// Filled with the node's key the moment the attempt is dispatched to it, so the caller
    /// knows where a still-running attempt went (the balancer decides that out of sight).
    pub dispatched_to: Arc<OnceLock<NodeKey>>,
}

impl Attempt {
    pub(crate) fn new(request: RankRequest, deadline: Instant) -> Self {
        Self {
            request,
            deadline,
            dispatched_to: Arc::new(OnceLock::new()),
        }
    }
}

/// A successful attempt.
#[derive(Debug)]
pub(crate) struct Answer {
    pub node: NodeKey,
    pub response: RankResponse,
    /// From dispatch to answer, for the hedging percentile.
    pub latency: Duration,
}

/// A failed attempt: the status, and which node gave it.
#[derive(Debug, thiserror::Error)]
#[error("{node}: {status}")]
pub(crate) struct AttemptError {
    pub node: NodeKey,
    pub status: Status,
}

/// Rank on one node, over that node's channel.
#[derive(Clone, Debug)]
pub(crate) struct NodeService {
    key: NodeKey,
    client: RankerClient<Channel>,
}

impl NodeService {
    pub(crate) fn new(key: NodeKey, channel: Channel) -> Self {
        Self {
            key,
            client: RankerClient::new(channel),
        }
    }
}

impl Service<Attempt> for NodeService {
    type Response = Answer;
    type Error = AttemptError;
    type Future = BoxFuture<'static, Result<Answer, AttemptError>>;

    /// Always ready. The generated client waits for the channel inside the call, and a
    /// readiness *error* here would make `Balance` drop the node silently, behind the
    /// pool's back; node health is the heartbeat's business.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), AttemptError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let _ = attempt.dispatched_to.set(self.key.clone());
        let node = self.key.clone();
        let mut client = self.client.clone();
        Box::pin(async move {
            let started = Instant::now();
            let remaining = attempt.deadline.saturating_duration_since(started);
            if remaining.is_zero() {
                let status = Status::deadline_exceeded("the deadline passed before sending");
                return Err(AttemptError { node, status });
            }
            let mut request = tonic::Request::new(attempt.request);
            request.set_timeout(remaining);
            match client.rank(request).await {
                Ok(response) => Ok(Answer {
                    node,
                    response: response.into_inner(),
                    latency: started.elapsed(),
                }),
                Err(status) => Err(AttemptError { node, status }),
            }
        })
    }
}

type Metered = PeakEwma<NodeService, CompleteOnResponse>;

/// A node's service with its peak-EWMA load meter, shared between the balancer (which owns
/// one clone) and the pool (which keeps another, to pick retry and hedge targets on the
/// same estimate). The mutex is held only to start a call or read the load, never across
/// an await.
#[derive(Clone, Debug)]
pub(crate) struct Balanced(Arc<Mutex<Metered>>);

impl Balanced {
    pub(crate) fn new(service: NodeService, config: &ClientConfig) -> Self {
        let decay_ns = config.ewma_decay.as_nanos() as f64;
        let metered = PeakEwma::new(
            service,
            config.default_rtt,
            decay_ns,
            CompleteOnResponse::default(),
        );
        Self(Arc::new(Mutex::new(metered)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Metered> {
        // Nothing panics while holding it; were it poisoned, the meter is still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Service<Attempt> for Balanced {
    type Response = Answer;
    type Error = AttemptError;
    type Future = <Metered as Service<Attempt>>::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), AttemptError>> {
        Poll::Ready(Ok(())) // see NodeService::poll_ready
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        self.lock().call(attempt)
    }
}

impl Load for Balanced {
    type Metric = <Metered as Load>::Metric;

    fn load(&self) -> Self::Metric {
        self.lock().load()
    }
}

/// Where the pool announces nodes entering (`Insert`) and leaving (`Remove`) the balancer.
/// Unbounded, so that announcing never waits, and a `Remove` sent before a call is queued is
/// seen by the balancer before it routes that call (it drains discovery on every poll).
pub(crate) type Discovery = mpsc::UnboundedSender<Result<Change<NodeKey, Balanced>, Infallible>>;

/// p2c `Balance` behind a `Buffer`, which makes it shareable (`Balance` is not `Clone`):
/// one worker task owns the balancer and callers queue attempts to it. While no node is in
/// the balancer the worker waits, and so do queued attempts, until their callers give up.
pub(crate) type Balancer = Buffer<Attempt, BoxFuture<'static, Result<Answer, BoxError>>>;

/// Builds the balancer and spawns its worker; the handle aborts it at shutdown.
pub(crate) fn balancer(capacity: usize) -> (Balancer, Discovery, JoinHandle<()>) {
    let (discovery, changes) = mpsc::unbounded_channel();
    let balance = Balance::new(UnboundedReceiverStream::new(changes));
    let (buffer, worker) = Buffer::pair(BoxService::new(balance), capacity);
    (buffer, discovery, tokio::spawn(worker))
}
