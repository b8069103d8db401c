//! The failover client a search frontend links to call a rankd cluster (feature `client`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rankd_proto::client::{ClientConfig, FailoverClient};
//! use rankd_proto::v1::RankRequest;
//!
//! let client = FailoverClient::connect(
//!     ["10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"],
//!     ClientConfig::default(),
//! )
//! .await?;
//! let response = client
//!     .rank(RankRequest {
//!         query: vec![0.0; 32],
//!         candidate_ids: vec![1, 2, 3],
//!         top_k: 2,
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("served by {} with {}", response.node_id, response.model_version);
//! # Ok(())
//! # }
//! ```
//!
//! How it works (docs/client.md has the full rules):
//! - `node.rs`: a task per node follows its `Heartbeat/Subscribe` stream; lapses, stream
//!   failures and `serving = false` eject the node, a serving heartbeat re-admits it.
//! - `pool.rs`: the node table; it alone inserts nodes into and removes them from the
//!   balancer, and learns further nodes from DNS and from heartbeat `members`.
//! - `service.rs`: p2c `Balance` on peak-EWMA latency, behind a `Buffer`.
//! - `call.rs`: deadline, retries on another node under a retry budget, hedging.

mod call;
mod config;
mod error;
mod hedge;
mod node;
mod pool;
mod service;
mod stats;
mod targets;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Status;
use tower::retry::budget::TpsBudget;

pub use config::{ClientConfig, HedgeConfig, HedgeDelay, RetryBudgetConfig};
pub use error::ClientError;
pub use stats::{ClientStats, EjectReason, NodeInfo, NodeOrigin};
pub use targets::Targets;

use crate::v1::{RankRequest, RankResponse};
use hedge::LatencyWindow;
use pool::Pool;
use service::Balancer;
use stats::Counters;

/// `now + after`, saturating at a year from now instead of overflowing (a caller may pass
/// any Duration as a deadline or a cooldown).
pub(crate) fn instant_after(now: Instant, after: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    now.checked_add(after.min(FAR)).unwrap_or(now)
}

/// A Rank client over every node of a rankd cluster: it balances calls over the healthy
/// nodes, keeps sick ones out, and retries or hedges on another node within the caller's
/// deadline.
///
/// Cheap to clone (one `Arc`); clones share nodes, balancer, budget and counters. The
/// background tasks (heartbeat watchers, balancer, DNS refresh) stop when the last clone is
/// dropped.
#[derive(Clone)]
pub struct FailoverClient {
    inner: Arc<ClientInner>,
}

/// What every clone shares; [`call`] reads it.
pub(crate) struct ClientInner {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) balancer: Balancer,
    pub(crate) budget: TpsBudget,
    pub(crate) latencies: LatencyWindow,
    pub(crate) counters: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.pool.shutdown();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for FailoverClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverClient")
            .field("nodes", &self.inner.pool.addresses())
            .finish_non_exhaustive()
    }
}

impl FailoverClient {
    /// Validates `config`, resolves `targets` and starts watching every node.
    ///
    /// Returns without waiting for any node: nodes start ejected and join the balancer at
    /// their first serving heartbeat, and a call made before that waits for one (within its
    /// deadline). Use [`wait_healthy`](Self::wait_healthy) to wait at startup. Must be called
    /// inside a tokio runtime.
    pub async fn connect(
        targets: impl Into<Targets>,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        config.validate()?;
        let (keys, origin, refresh) = match targets.into() {
            Targets::Static(addresses) => {
                if addresses.is_empty() {
                    return Err(ClientError::NoTargets);
                }
                let keys = addresses.iter().map(|a| targets::parse_address(a));
                (keys.collect::<Result<_, _>>()?, NodeOrigin::Static, None)
            }
            Targets::Dns { name, every } => {
                if every.is_zero() {
                    let reason = "(the DNS refresh interval) must be greater than zero".into();
                    return Err(ClientError::Config {
                        field: "Targets::Dns::every",
                        reason,
                    });
                }
                let name = targets::parse_address(&name)?.to_string();
                let keys = targets::resolve(&name).await?;
                if keys.is_empty() {
                    return Err(ClientError::NoAddresses { name });
                }
                (keys, NodeOrigin::Dns, Some((name, every)))
            }
        };

        let config = Arc::new(config);
        let counters = Arc::new(Counters::default());
        let (balancer, discovery, worker) = service::balancer(config.buffer_capacity);
        let pool = Pool::new(Arc::clone(&config), Arc::clone(&counters), discovery);
        let budget = &config.retry_budget;
        let budget = TpsBudget::new(budget.ttl, budget.min_per_sec, budget.ratio);
        let mut inner = ClientInner {
            config,
            pool,
            balancer,
            budget,
            latencies: LatencyWindow::default(),
            counters,
            tasks: vec![worker],
        };
        // `inner` owns the tasks from here, so an early return below stops them.
        for key in keys {
            inner.pool.add(key, origin)?;
        }
        if let Some((name, every)) = refresh {
            let pool = Arc::clone(&inner.pool);
            let task = tokio::spawn(targets::refresh_dns(pool, name, every));
            inner.tasks.push(task);
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Ranks on some healthy node within [`ClientConfig::default_deadline`].
    ///
    /// Fails with the status of the last attempt (INVALID_ARGUMENT and other final codes at
    /// once), DEADLINE_EXCEEDED, or UNAVAILABLE "no healthy rankd node among [...]".
    pub async fn rank(&self, request: RankRequest) -> Result<RankResponse, Status> {
        call::rank(&self.inner, request, self.inner.config.default_deadline).await
    }

    /// As [`rank`](Self::rank), with this call's own deadline (from now), e.g. what is left
    /// of the frontend's own request budget.
    pub async fn rank_with_deadline(
        &self,
        request: RankRequest,
        deadline: Duration,
    ) -> Result<RankResponse, Status> {
        if deadline.is_zero() {
            return Err(Status::deadline_exceeded(
                "Rank called with a zero deadline",
            ));
        }
        call::rank(&self.inner, request, deadline).await
    }

    /// Counters since the client was created.
    pub fn stats(&self) -> ClientStats {
        self.inner.counters.snapshot()
    }

    /// Every known node and its state, sorted by address.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.inner.pool.snapshot()
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Waits until at least `count` nodes are healthy, for at most `timeout`. Returns
    /// whether they are.
    pub async fn wait_healthy(&self, count: usize, timeout: Duration) -> bool {
        let until = instant_after(Instant::now(), timeout);
        let mut changes = self.inner.pool.changes();
        loop {
            if self.inner.pool.healthy_count() >= count {
                return true;
            }
            match tokio::time::timeout_at(until, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.inner.pool.healthy_count() >= count,
            }
        }
    }
}
