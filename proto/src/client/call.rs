//! One Rank call: the first attempt through the balancer, then retries and a hedge, all
//! within the caller's deadline.
//!
//! Rules, in the order they apply:
//! - Every attempt carries the time left until the caller's deadline as `grpc-timeout`, so
//!   the server drops work nobody waits for. At the deadline the call ends: DEADLINE_EXCEEDED
//!   while an attempt still runs, else the last error, else UNAVAILABLE "no healthy rankd
//!   node among [...]" when no node was ever healthy enough to try.
//! - A failed attempt is sorted by [`classify`]: INVALID_ARGUMENT and every other final
//!   status is returned at once, never retried. A transport error or UNAVAILABLE ejects the
//!   node (its heartbeat re-admits it); RESOURCE_EXHAUSTED rests it for `overload_cooldown`.
//!   All three are retried, on another node.
//! - "Another node" is guaranteed by construction: a call records the node each of its
//!   attempts was dispatched to, and a retry or hedge is placed by [`Pool::try_pick`] with
//!   those nodes excluded. A call never sends two attempts to one node. If no other node is
//!   healthy yet, the retry waits for one until the deadline; if every known node has been
//!   tried, the last error is returned at once.
//! - A retry needs `max_attempts` not reached, at least `min_retry_time` left, and a token
//!   from the retry budget; without any of them the last error is returned.
//! - An attempt in flight to a node that gets ejected meanwhile (its heartbeats lapsed: it
//!   hangs; its stream broke; it stopped serving) is abandoned: it no longer counts as
//!   live, and the call retries on another node as if the attempt had failed. Without this a
//!   call sent to a node just before it hung would wait for its whole deadline. The
//!   abandoned attempt keeps running, so if it answers first after all, its answer wins.
//! - With hedging on, once the hedge delay has passed and the only attempt is still running,
//!   a second attempt goes to another node (budget permitting). The first success wins;
//!   dropping the call's remaining attempts cancels them (their HTTP/2 streams are reset).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::TryFutureExt;
use tokio::time::{sleep_until, Instant};
use tonic::Status;
use tower::retry::budget::Budget;
use tower::{BoxError, Service, ServiceExt};

use super::error::{classify, Failure};
use super::hedge::hedge_delay;
use super::pool::{NodeKey, Pool};
use super::service::{Answer, Attempt, AttemptError, Balanced};
use super::stats::{bump, EjectReason};
use super::{instant_after, ClientInner};
use crate::v1::{RankRequest, RankResponse};

/// Why an attempt produced no answer.
enum Failed {
    /// The node answered with an error, or the transport to it failed.
    Node(AttemptError),
    /// No node outside the call's tried set became pickable before the deadline.
    NoNode,
    /// The balancer is gone: the client is shutting down.
    Balancer(Status),
}

type Running = FuturesUnordered<BoxFuture<'static, Result<Answer, Failed>>>;

/// A call in progress.
struct Call<'a> {
    inner: &'a ClientInner,
    request: RankRequest,
    started: Instant,
    deadline: Instant,
    /// Where each attempt went, in order; a slot stays empty while its attempt waits.
    attempts: Vec<Arc<OnceLock<NodeKey>>>,
    running: Running,
    /// Nodes whose attempt failed, and the last retryable error.
    failed: Vec<NodeKey>,
    /// Nodes whose attempt is still running but was given up on (the node was ejected).
    abandoned: Vec<NodeKey>,
    last_error: Option<Status>,
}

/// Runs `request` with `timeout` as its deadline; see the module rules.
pub(crate) async fn rank(
    inner: &ClientInner,
    request: RankRequest,
    timeout: Duration,
) -> Result<RankResponse, Status> {
    bump(&inner.counters.calls);
    inner.budget.deposit();
    let started = Instant::now();
    let mut call = Call {
        inner,
        request,
        started,
        deadline: instant_after(started, timeout),
        attempts: Vec::new(),
        running: FuturesUnordered::new(),
        failed: Vec::new(),
        abandoned: Vec::new(),
        last_error: None,
    };
    let result = call.run().await;
    if result.is_err() {
        bump(&inner.counters.failures);
    }
    result
}

impl Call<'_> {
    async fn run(&mut self) -> Result<RankResponse, Status> {
        let first = self.attempt();
        let balancer = self.inner.balancer.clone();
        self.running
            .push(Box::pin(balancer.oneshot(first).map_err(balancer_failure)));
        let mut hedge_at = (self.inner.config.hedge.as_ref())
            .map(|hedge| instant_after(self.started, hedge_delay(hedge, &self.inner.latencies)));
        let deadline = sleep_until(self.deadline);
        tokio::pin!(deadline);
        let mut changes = self.inner.pool.changes();
        let mut watching = true;
        loop {
            let hedge_timer = async move {
                match hedge_at {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                Some(result) = self.running.next() => {
                    if let Some(done) = self.on_result(result) {
                        return done;
                    }
                    if self.live_attempts() == 0 {
                        match self.retry() {
                            Ok(()) => {}
                            // An abandoned attempt may still answer before the deadline.
                            Err(_) if !self.running.is_empty() => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                () = hedge_timer => {
                    hedge_at = None;
                    self.hedge();
                }
                () = &mut deadline => return Err(self.timed_out()),
                changed = changes.changed(), if watching => match changed {
                    Ok(()) => self.abandon_ejected(),
                    // The node table is gone (the client is shutting down).
                    Err(_) => watching = false,
                },
            }
        }
    }

    /// A fresh attempt of the request, its slot recorded.
    fn attempt(&mut self) -> Attempt {
        let attempt = Attempt::new(self.request.clone(), self.deadline);
        self.attempts.push(Arc::clone(&attempt.dispatched_to));
        attempt
    }

    /// Attempts that may still answer and have not been given up on: waiting for the
    /// balancer, or dispatched to a node that has neither failed nor been ejected.
    fn live_attempts(&self) -> usize {
        self.attempts
            .iter()
            .filter(|slot| {
                slot.get()
                    .is_none_or(|n| !self.failed.contains(n) && !self.abandoned.contains(n))
            })
            .count()
    }

    /// Gives up on attempts whose node was ejected while they ran, and retries elsewhere
    /// when none is left live.
    fn abandon_ejected(&mut self) {
        let mut any = false;
        for node in self.tried() {
            if self.failed.contains(&node) || self.abandoned.contains(&node) {
                continue;
            }
            if let Some(reason) = self.inner.pool.ejection_of(&node) {
                tracing::info!(%node, %reason, "node ejected while a Rank attempt was in flight; trying another");
                self.last_error = Some(Status::unavailable(format!(
                    "{node} was ejected while the call was in flight: {reason}"
                )));
                self.abandoned.push(node);
                any = true;
            }
        }
        if any && self.live_attempts() == 0 {
            // If no retry is possible the abandoned attempt is still awaited.
            let _ = self.retry();
        }
    }

    /// Nodes this call has sent an attempt to (failed or still running).
    fn tried(&self) -> Vec<NodeKey> {
        self.attempts
            .iter()
            .filter_map(|s| s.get().cloned())
            .collect()
    }

    /// Handles one finished attempt; `Some` ends the call.
    fn on_result(
        &mut self,
        result: Result<Answer, Failed>,
    ) -> Option<Result<RankResponse, Status>> {
        let (node, status) = match result {
            Ok(answer) => {
                self.inner.latencies.record(answer.latency);
                let first = self.attempts.first().and_then(|s| s.get());
                if let Some(first) = first.filter(|first| **first != answer.node) {
                    bump(&self.inner.counters.failovers);
                    tracing::info!(from = %first, to = %answer.node, attempts = self.attempts.len(), "Rank failed over to another node");
                }
                return Some(Ok(answer.response));
            }
            Err(Failed::Node(AttemptError { node, status })) => (node, status),
            Err(Failed::NoNode) => return self.running.is_empty().then(|| Err(self.give_up())),
            Err(Failed::Balancer(status)) => return Some(Err(status)),
        };
        let failure = classify(&status);
        let pool = &self.inner.pool;
        match failure {
            Failure::Transport => {
                let reason = EjectReason::CallTransport(status.message().to_owned());
                pool.eject(&node, reason, true);
            }
            Failure::Unavailable => {
                let reason = EjectReason::CallUnavailable(status.message().to_owned());
                pool.eject(&node, reason, true);
            }
            Failure::Overloaded => pool.cool_down(&node),
            Failure::Deadline => {
                self.failed.push(node);
                return self
                    .running
                    .is_empty()
                    .then(|| Err(self.deadline_exceeded()));
            }
            Failure::Final => return Some(Err(status)),
        }
        debug_assert!(failure.is_retryable());
        tracing::debug!(%node, code = ?status.code(), message = status.message(), "Rank attempt failed");
        self.failed.push(node);
        self.last_error = Some(status);
        None
    }

    /// Starts a retry on a node this call has not tried, or says why not.
    fn retry(&mut self) -> Result<(), Status> {
        let config = &self.inner.config;
        if self.attempts.len() >= config.max_attempts as usize
            || self.deadline.saturating_duration_since(Instant::now()) < config.min_retry_time
        {
            return Err(self.give_up());
        }
        let tried = self.tried();
        if !self.inner.pool.has_untried(&tried) {
            return Err(self.give_up());
        }
        if !self.inner.budget.withdraw() {
            bump(&self.inner.counters.budget_exhausted);
            tracing::debug!("retry budget empty; not retrying Rank");
            return Err(self.give_up());
        }
        bump(&self.inner.counters.retries);
        let code = self.last_error.as_ref().map(Status::code);
        let failed = self
            .failed
            .last()
            .map(|n| n.to_string())
            .unwrap_or_default();
        tracing::info!(%failed, ?code, attempt = self.attempts.len() + 1, "retrying Rank on another node");
        let attempt = self.attempt();
        let pool = Arc::clone(&self.inner.pool);
        self.running.push(Box::pin(async move {
            let deadline = attempt.deadline;
            match pick_waiting(&pool, &tried, deadline).await {
                Some((_, mut service)) => service.call(attempt).await.map_err(Failed::Node),
                None => Err(Failed::NoNode),
            }
        }));
        Ok(())
    }

    /// Sends a hedge for a slow attempt, if one is due and allowed.
    fn hedge(&mut self) {
        if self.running.len() != 1 || self.attempts.len() >= self.inner.config.max_attempts as usize
        {
            return;
        }
        // An attempt still waiting for the balancer is not slow, it has no node: no hedge.
        let Some(slow) = self.attempts.last().and_then(|s| s.get().cloned()) else {
            return;
        };
        let tried = self.tried();
        let Some((node, mut service)) = self.inner.pool.try_pick(&tried) else {
            tracing::debug!(%slow, "no other healthy node to hedge on");
            return;
        };
        if !self.inner.budget.withdraw() {
            bump(&self.inner.counters.budget_exhausted);
            tracing::debug!(%slow, "retry budget empty; not hedging");
            return;
        }
        bump(&self.inner.counters.hedges);
        tracing::info!(%slow, to = %node, after = ?self.started.elapsed(), "hedging slow Rank call");
        let attempt = self.attempt();
        self.running
            .push(Box::pin(service.call(attempt).map_err(Failed::Node)));
    }

    /// The error when no further attempt will be made.
    fn give_up(&mut self) -> Status {
        self.last_error
            .take()
            .unwrap_or_else(|| self.no_healthy_node())
    }

    fn no_healthy_node(&self) -> Status {
        let addresses = self.inner.pool.addresses().join(", ");
        Status::unavailable(format!("no healthy rankd node among [{addresses}]"))
    }

    fn deadline_exceeded(&self) -> Status {
        let budget = self.deadline - self.started;
        Status::deadline_exceeded(format!(
            "Rank deadline of {budget:?} exceeded after {} attempt(s)",
            self.attempts.len()
        ))
    }

    /// The error at the caller's deadline.
    fn timed_out(&mut self) -> Status {
        let running = self.tried().iter().any(|node| !self.failed.contains(node));
        if running {
            return self.deadline_exceeded();
        }
        if let Some(status) = self.last_error.take() {
            return status;
        }
        if self.inner.pool.healthy_count() == 0 {
            return self.no_healthy_node();
        }
        let budget = self.deadline - self.started;
        Status::deadline_exceeded(format!(
            "Rank deadline of {budget:?} exceeded waiting for a node"
        ))
    }
}

/// Recovers the node's error from what the balancer returns (it boxes every error).
fn balancer_failure(error: BoxError) -> Failed {
    match error.downcast::<AttemptError>() {
        Ok(failed) => Failed::Node(*failed),
        Err(other) => Failed::Balancer(Status::unavailable(format!(
            "rankd client is shutting down: {other}"
        ))),
    }
}

/// Picks a node outside `exclude`, waiting for one to become healthy until `deadline`.
/// `None` when the deadline passes first, or when every known node is excluded.
async fn pick_waiting(
    pool: &Pool,
    exclude: &[NodeKey],
    deadline: Instant,
) -> Option<(NodeKey, Balanced)> {
    // Subscribed before looking, so a change between the look and the wait is not missed.
    let mut changes = pool.changes();
    loop {
        if let Some(picked) = pool.try_pick(exclude) {
            return Some(picked);
        }
        if !pool.has_untried(exclude) {
            return None;
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
    }
}
