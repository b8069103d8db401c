//! What the client tells its owner: call counters ([`ClientStats`]) and each node's state
//! ([`NodeInfo`]), for a frontend's own metrics and status pages.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::v1::Fence;

/// Counters since the client was created. Take one with
/// [`FailoverClient::stats`](super::FailoverClient::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Rank calls made.
    pub calls: u64,
    /// Calls that returned an error to the caller.
    pub failures: u64,
    /// Attempts sent again on another node after a retryable failure.
    pub retries: u64,
    /// Second attempts sent because the first one was slow.
    pub hedges: u64,
    /// Calls answered by a node other than the one their first attempt went to (after a
    /// retry or a hedge).
    pub failovers: u64,
    /// Times a serving node was taken out of the balancer (lapse, transport error,
    /// UNAVAILABLE, `serving = false`).
    pub ejections: u64,
    /// Times an ejected node was let back in by a serving heartbeat (its first admission is
    /// not counted).
    pub readmissions: u64,
    /// Times a node was rested after RESOURCE_EXHAUSTED.
    pub cooldowns: u64,
    /// Retries or hedges not made because the retry budget was empty.
    pub budget_exhausted: u64,
    /// Times a node was held out because a serving node's heartbeat named it degraded.
    pub degradations: u64,
}

/// The live counters behind [`ClientStats`]; relaxed atomics, as they order nothing.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    pub retries: AtomicU64,
    pub hedges: AtomicU64,
    pub failovers: AtomicU64,
    pub ejections: AtomicU64,
    pub readmissions: AtomicU64,
    pub cooldowns: AtomicU64,
    pub budget_exhausted: AtomicU64,
    pub degradations: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ClientStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClientStats {
            calls: get(&self.calls),
            failures: get(&self.failures),
            retries: get(&self.retries),
            hedges: get(&self.hedges),
            failovers: get(&self.failovers),
            ejections: get(&self.ejections),
            readmissions: get(&self.readmissions),
            cooldowns: get(&self.cooldowns),
            budget_exhausted: get(&self.budget_exhausted),
            degradations: get(&self.degradations),
        }
    }
}

/// How the client learned of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeOrigin {
    /// Given in [`Targets::Static`](super::Targets::Static).
    Static,
    /// Resolved from [`Targets::Dns`](super::Targets::Dns); dropped when DNS stops naming it.
    Dns,
    /// Listed in another node's heartbeat `members`.
    Member,
}

/// Why a node is out of the balancer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EjectReason {
    /// No serving heartbeat yet: every node starts here.
    Connecting,
    /// The heartbeat stream could not be opened.
    Unreachable(String),
    /// No heartbeat for `missed_limit` intervals.
    Lapsed { silent_for: Duration },
    /// The node ended its heartbeat stream (it is shutting down).
    StreamEnded,
    /// The heartbeat stream failed.
    StreamFailed(String),
    /// The node reported `serving = false`, with its reason ("loading", "draining", ...).
    NotServing(String),
    /// A Rank call to it failed in transport.
    CallTransport(String),
    /// A Rank call to it was answered UNAVAILABLE.
    CallUnavailable(String),
}

impl fmt::Display for EjectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EjectReason::Connecting => f.write_str("no serving heartbeat yet"),
            EjectReason::Unreachable(e) => write!(f, "heartbeat stream cannot be opened: {e}"),
            EjectReason::Lapsed { silent_for } => {
                write!(f, "heartbeats lapsed (silent for {silent_for:?})")
            }
            EjectReason::StreamEnded => f.write_str("node ended its heartbeat stream"),
            EjectReason::StreamFailed(e) => write!(f, "heartbeat stream failed: {e}"),
            EjectReason::NotServing(why) if why.is_empty() => f.write_str("not serving"),
            EjectReason::NotServing(why) => write!(f, "not serving: {why}"),
            EjectReason::CallTransport(e) => write!(f, "Rank transport error: {e}"),
            EjectReason::CallUnavailable(e) => write!(f, "Rank answered UNAVAILABLE: {e}"),
        }
    }
}

/// One node as the client sees it. Take them with
/// [`FailoverClient::nodes`](super::FailoverClient::nodes).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    /// `host:port`.
    pub address: String,
    pub origin: NodeOrigin,
    /// From its heartbeats; `None` until the first one.
    pub node_id: Option<String>,
    /// In the balancer now: its last heartbeat said serving, nothing ejected it since, and
    /// it is not cooling down.
    pub healthy: bool,
    /// Why it is ejected, when it is.
    pub ejection: Option<EjectReason>,
    /// Resting after RESOURCE_EXHAUSTED (admitted, but out of the balancer for now).
    pub cooling_down: bool,
    /// Time since its last heartbeat; `None` before the first.
    pub last_heartbeat_age: Option<Duration>,
    /// The activation it reported serving.
    pub fence: Option<Fence>,
    /// Queue depth and capacity and Rank calls in flight, as last reported.
    pub queue_depth: u32,
    pub queue_capacity: u32,
    pub in_flight: u32,
    /// A serving node's heartbeat names it degraded (slow or failing against its peers), so
    /// it gets no calls while another node can take them.
    pub degraded: bool,
}
