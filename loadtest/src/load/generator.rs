//! The open-loop generator: Rank calls at a constant arrival rate, each timed from the
//! moment it was scheduled.
//!
//! Call `i` is due at `start + i / rate` and goes out then, whether or not earlier calls have
//! returned. A stalled server therefore shows up as latency and failures on every call that
//! was due during the stall, never as fewer calls sent (no coordinated omission). When the
//! runtime itself falls behind, the overdue calls go out at once, in a burst, and their
//! latency includes the lag, since it counts from the schedule, not from the send.
//!
//! Invariants:
//! - Every call due before the stop ([`Generator::stop`], [`Generator::stop_after`]) is
//!   sent exactly once and recorded exactly once; none due at or after it is sent.
//! - Each call ends at the latest `deadline + GRACE` after it went out, so [`Generator::stop`]
//!   returns within about that much time.
//! - In-flight calls are capped (see [`in_flight_limit`]) and share one copy of the request
//!   until the moment they send, so memory stays bounded however the server behaves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rankd_proto::client::FailoverClient;
use rankd_proto::v1::ranker_client::RankerClient;
use rankd_proto::v1::{RankRequest, RankResponse};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Status;

use super::codes;
use super::record::{Call, LoadResult};

/// Past its deadline, a call is abandoned after this much more time even if the client has
/// not given up by itself (a backstop; both clients enforce the deadline on their own).
const GRACE: Duration = Duration::from_millis(500);

/// What sends the calls.
#[derive(Clone, Debug)]
pub enum LoadClient {
    /// The failover client: balancing, retries and hedging across the cluster.
    Failover(FailoverClient),
    /// One tonic channel to one node: what the node alone does, with nothing to hide it.
    Plain(RankerClient<Channel>),
}

impl LoadClient {
    /// How the record names this client ([`LoadResult::client`]).
    pub fn label(&self) -> &'static str {
        match self {
            LoadClient::Failover(_) => "failover client",
            LoadClient::Plain(_) => "plain channel",
        }
    }

    /// One Rank call that must finish within `deadline` from now.
    ///
    /// The plain channel sends the deadline as `grpc-timeout`, which tonic also enforces on
    /// the client side (see [`codes::status_name`] for how that expiry is named).
    pub async fn rank(
        &self,
        request: RankRequest,
        deadline: Duration,
    ) -> Result<RankResponse, Status> {
        match self {
            LoadClient::Failover(client) => client.rank_with_deadline(request, deadline).await,
            LoadClient::Plain(client) => {
                let mut request = tonic::Request::new(request);
                request.set_timeout(deadline);
                // A clone shares the channel; `rank` needs `&mut self`.
                let mut client = client.clone();
                client.rank(request).await.map(tonic::Response::into_inner)
            }
        }
    }
}

/// What to send, and how often.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Calls per second. 0 sends nothing.
    pub rate: u32,
    /// Each call's deadline, from the moment it goes out.
    pub deadline: Duration,
    /// Sent as is by every call.
    pub request: RankRequest,
}

/// Live counters of a running generator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Calls sent so far.
    pub sent: u64,
    /// Calls answered successfully.
    pub ok: u64,
    /// Calls that failed, whatever the code.
    pub failed: u64,
}

impl Progress {
    /// Calls sent and not yet answered.
    pub fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.ok + self.failed)
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
}

/// A running load. [`stop`](Self::stop) ends it; dropping it instead also stops the
/// schedule, and the calls in flight then finish in the background, unrecorded.
pub struct Generator {
    started: Instant,
    rate: u32,
    client: &'static str,
    counters: Arc<Counters>,
    /// `Some(when)` once stop was asked for: calls due at or after `when` are not sent.
    stop: watch::Sender<Option<Instant>>,
    scheduler: JoinHandle<Vec<Call>>,
}

impl Generator {
    /// Starts sending at once: the first call is due now. Must be called inside a tokio
    /// runtime.
    pub fn start(client: LoadClient, spec: LoadSpec) -> Generator {
        let started = Instant::now();
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = watch::channel(None);
        let (rate, label) = (spec.rate, client.label());
        let scheduler = tokio::spawn(schedule(
            client,
            spec,
            started,
            Arc::clone(&counters),
            stopped,
        ));
        Generator {
            started,
            rate,
            client: label,
            counters,
            stop,
            scheduler,
        }
    }

    /// Time since the load started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Calls sent, answered and failed so far.
    pub fn progress(&self) -> Progress {
        // `ok` and `failed` are read before `sent`, so `in_flight` never underflows.
        let ok = self.counters.ok.load(Ordering::Acquire);
        let failed = self.counters.failed.load(Ordering::Acquire);
        let sent = self.counters.sent.load(Ordering::Acquire);
        Progress { sent, ok, failed }
    }

    /// Stops scheduling (calls already due still go out), waits for every call in flight,
    /// and returns them all, sorted by scheduled time.
    pub async fn stop(self) -> LoadResult {
        let now = self.elapsed();
        self.stop_after(now).await
    }

    /// As [`stop`](Self::stop), but the schedule ends exactly `run` after the start: the
    /// calls due in `[0, run)` are sent, waiting for that time if it is still ahead, so a
    /// run of 10 s at 100/s sends exactly 1000 calls. A `run` already past acts as `stop`
    /// now (calls that went out are never dropped from the record).
    pub async fn stop_after(self, run: Duration) -> LoadResult {
        let stop_at = (self.started + run).max(Instant::now());
        // The scheduler holds the receiver until it returns, so this cannot fail.
        let _ = self.stop.send(Some(stop_at));
        let calls = match self.scheduler.await {
            Ok(calls) => calls,
            Err(e) => rethrow(e),
        };
        LoadResult {
            rate: self.rate,
            duration_s: (stop_at - self.started).as_secs_f64(),
            client: self.client.to_owned(),
            calls,
        }
    }
}

/// Calls that may be in flight at once.
///
/// Each call lasts at most `deadline + GRACE`, so at `rate` no more than
/// `rate × (deadline + GRACE)` are ever in flight; the cap is twice that (and at least
/// 1024), so it does not bind in any run the runtime keeps up with. It exists for the
/// extremes (a huge rate times a long deadline), where it bounds memory at 65 536 calls: a
/// call due while every slot is taken waits for one, and that wait counts in its latency,
/// since latency is always measured from the schedule.
pub fn in_flight_limit(rate: u32, deadline: Duration) -> usize {
    let natural = f64::from(rate) * (deadline + GRACE).as_secs_f64();
    (2.0 * natural).clamp(1024.0, 65_536.0) as usize
}

/// Microseconds from the start at which call `i` is due. Computed from `i` each time
/// rather than by adding an interval, so rounding never accumulates into drift.
fn due_us(i: u64, rate: u32) -> u64 {
    i.saturating_mul(1_000_000) / u64::from(rate.max(1))
}

/// The scheduling loop: sends each call when due, and returns every call once the last
/// one is answered.
async fn schedule(
    client: LoadClient,
    spec: LoadSpec,
    started: Instant,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<Option<Instant>>,
) -> Vec<Call> {
    let LoadSpec {
        rate,
        deadline,
        request,
    } = spec;
    let mut calls = Vec::new();
    if rate == 0 {
        let _ = stop.changed().await;
        return calls;
    }
    let request = Arc::new(request);
    let slots = Arc::new(Semaphore::new(in_flight_limit(rate, deadline)));
    let mut running = JoinSet::new();
    let mut stop_at: Option<Instant> = None;
    for i in 0u64.. {
        let at_us = due_us(i, rate);
        let due = started + Duration::from_micros(at_us);
        // Wait for the call's time, watching for a stop meanwhile.
        while stop_at.is_none() && due > Instant::now() {
            tokio::select! {
                // A due call goes out before a stop that arrives at the same moment.
                biased;
                () = tokio::time::sleep_until(due) => break,
                changed = stop.changed() => {
                    // A dropped sender (the Generator dropped) means stop now.
                    stop_at = Some(match changed {
                        Ok(()) => stop.borrow().unwrap_or_else(Instant::now),
                        Err(_) => Instant::now(),
                    });
                }
            }
        }
        // Behind schedule, the wait above is skipped: look for a stop here too, or a
        // runtime that never catches up would never stop.
        if stop_at.is_none() {
            stop_at = match stop.has_changed() {
                Ok(_) => *stop.borrow(),
                Err(_) => Some(Instant::now()),
            };
        }
        if stop_at.is_some_and(|s| due >= s) {
            break;
        }
        // A stop still ahead (`stop_after`): the schedule runs on until then.
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        // Never closed, so this only waits when every slot is taken.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        counters.sent.fetch_add(1, Ordering::AcqRel);
        running.spawn(one_call(
            client.clone(),
            Arc::clone(&request),
            deadline,
            (due, at_us),
            Arc::clone(&counters),
            slot,
        ));
        while let Some(done) = running.try_join_next() {
            keep(&mut calls, done);
        }
    }
    while let Some(done) = running.join_next().await {
        keep(&mut calls, done);
    }
    calls.sort_by_key(|c| c.at_us);
    calls
}

/// One call, due at `due` (`at_us` from the start); holds its in-flight slot until answered.
async fn one_call(
    client: LoadClient,
    request: Arc<RankRequest>,
    deadline: Duration,
    (due, at_us): (Instant, u64),
    counters: Arc<Counters>,
    _slot: OwnedSemaphorePermit,
) -> Call {
    // The copy is made here, as the call goes out, and released as soon as it is sent.
    let outcome = tokio::time::timeout(
        deadline + GRACE,
        client.rank(RankRequest::clone(&request), deadline),
    )
    .await;
    let latency_us = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
    let failed = |code: &str| Call {
        at_us,
        latency_us,
        code: code.to_owned(),
        version: String::new(),
        node: String::new(),
    };
    let call = match outcome {
        Ok(Ok(response)) => Call {
            at_us,
            latency_us,
            code: codes::OK.to_owned(),
            version: response.model_version,
            node: response.node_id,
        },
        Ok(Err(status)) => failed(codes::status_name(&status)),
        Err(_backstop) => failed(codes::code_name(tonic::Code::DeadlineExceeded)),
    };
    let counter = if call.ok() {
        &counters.ok
    } else {
        &counters.failed
    };
    counter.fetch_add(1, Ordering::AcqRel);
    call
}

fn keep(calls: &mut Vec<Call>, done: Result<Call, JoinError>) {
    match done {
        Ok(call) => calls.push(call),
        Err(e) => rethrow(e),
    }
}

/// A call task or the scheduler panicked: that is a bug here, so let it surface rather than
/// report a run with calls silently missing. (Nothing aborts these tasks, so a cancelled
/// one can only mean the runtime is shutting down; then there is nobody to report to.)
fn rethrow<T>(e: JoinError) -> T {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    panic!("load generator task cancelled: the runtime is shutting down");
}
