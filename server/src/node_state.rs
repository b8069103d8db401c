//! What this node says about itself: in peer heartbeats, in the client heartbeat stream and
//! to the Rank path deciding whether to forward.
//!
//! The readiness task ([`crate::node`]'s `track_readiness`) is the only writer of
//! `local_ok`, `lagging` and `reason`; everything else only reads, so one request sees one
//! consistent decision without taking a lock on the hot path.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rankd_proto::peer::v1::PeerHeartbeat;
use rankd_proto::v1::{Fence, NodeHeartbeat};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::model::ModelSlot;

pub struct NodeState {
    /// The configured node name (`node_id`), as clients see it in responses.
    pub name: String,
    pub raft_id: u64,
    /// Client address peers forward to.
    pub api_addr: String,
    pub queue_capacity: usize,
    slot: Arc<ModelSlot>,
    metrics: Arc<Metrics>,
    /// Rank calls inside the handler (queued, running or being forwarded).
    in_flight: AtomicUsize,
    draining: AtomicBool,
    /// Serves the applied registry's active version and is not lagging.
    local_ok: AtomicBool,
    lagging: AtomicBool,
    reason: Mutex<String>,
    /// Bumped on every readiness change, so heartbeat streams push it at once.
    changed: watch::Sender<u64>,
    /// Set when the node stops: heartbeat streams end so they do not hold the shutdown.
    closing: watch::Sender<bool>,
    /// Whether the inference engine can take work; set once the scheduler exists.
    engine: OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
    /// Recent Rank outcomes and latencies on this node.
    pub live: crate::quality::live::LiveSignals,
    /// The window `live` is read over (`outlier.window_ms`).
    live_window_ms: AtomicU64,
}

/// Counts one Rank call as in flight until dropped.
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl NodeState {
    pub fn new(
        name: String,
        raft_id: u64,
        api_addr: String,
        queue_capacity: usize,
        slot: Arc<ModelSlot>,
        metrics: Arc<Metrics>,
    ) -> NodeState {
        NodeState {
            name,
            raft_id,
            api_addr,
            queue_capacity,
            slot,
            metrics,
            in_flight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            local_ok: AtomicBool::new(false),
            lagging: AtomicBool::new(false),
            reason: Mutex::new("starting".into()),
            changed: watch::channel(0).0,
            closing: watch::channel(false).0,
            engine: OnceLock::new(),
            live: Default::default(),
            live_window_ms: AtomicU64::new(10_000),
        }
    }

    /// Sets the window recent Rank calls are judged over (`outlier.window_ms`).
    pub fn set_live_window(&self, window: std::time::Duration) {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.live_window_ms.store(ms, Ordering::Relaxed);
    }

    pub fn live_window(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.live_window_ms.load(Ordering::Relaxed))
    }

    /// Installs the engine health check (once).
    pub fn set_engine_check(&self, check: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.engine.set(Box::new(check));
    }

    /// The engine runs. Before the scheduler starts there is no engine to serve with.
    pub fn engine_healthy(&self) -> bool {
        self.engine.get().is_some_and(|check| check())
    }

    pub fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// This node can answer Rank with the registry's active version itself. Draining does not
    /// change this: a draining node still serves what reaches it.
    pub fn serves_locally(&self) -> bool {
        self.local_ok.load(Ordering::Acquire)
    }

    pub fn is_lagging(&self) -> bool {
        self.lagging.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Reported SERVING: serves locally and is not draining.
    pub fn is_serving(&self) -> bool {
        self.serves_locally() && !self.is_draining()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.set_reason("draining");
        self.changed.send_modify(|n| *n += 1);
    }

    /// Written by the readiness task only.
    pub fn update(&self, local_ok: bool, lagging: bool, reason: &str) {
        let was = self.local_ok.swap(local_ok, Ordering::AcqRel);
        let was_lagging = self.lagging.swap(lagging, Ordering::AcqRel);
        if !self.is_draining() {
            self.set_reason(reason);
        }
        if was != local_ok || was_lagging != lagging {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    fn set_reason(&self, reason: &str) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if *r != reason {
            *r = reason.to_string();
        }
    }

    pub fn reason(&self) -> String {
        if self.is_serving() {
            return String::new();
        }
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn queue_depth(&self) -> u32 {
        u32::try_from(self.metrics.queue_depth.get().max(0)).unwrap_or(u32::MAX)
    }

    fn fence(&self) -> (String, u64, u64) {
        self.slot.current().map_or((String::new(), 0, 0), |m| {
            (m.info.version.clone(), m.fence.0, m.fence.1)
        })
    }

    /// What this node tells its peers each heartbeat.
    pub fn peer_heartbeat(&self) -> PeerHeartbeat {
        let (model_version, fence_term, fence_index) = self.fence();
        PeerHeartbeat {
            node_id: self.raft_id,
            ready: self.is_serving(),
            lagging: self.is_lagging(),
            draining: self.is_draining(),
            model_version,
            fence_term,
            fence_index,
            queue_depth: self.queue_depth(),
            queue_capacity: clamp(self.queue_capacity),
            in_flight: clamp(self.in_flight()),
            api_addr: self.api_addr.clone(),
            ..self.signals()
        }
    }

    /// The gray-failure and bake signals a peer heartbeat carries.
    fn signals(&self) -> PeerHeartbeat {
        let window = self.live_window();
        let node = self.live.snapshot(window);
        let mut hb = PeerHeartbeat {
            recent_calls: clamp(node.calls),
            error_ratio: node.error_ratio,
            p99_us: u64::try_from(node.p99.as_micros()).unwrap_or(u64::MAX),
            drift_psi: -1.0,
            ..Default::default()
        };
        if let Some(m) = self.slot.current() {
            let v = m.live.snapshot(window);
            hb.version_calls = clamp(v.calls);
            hb.version_error_ratio = v.error_ratio;
            hb.version_p99_us = u64::try_from(v.p99.as_micros()).unwrap_or(u64::MAX);
            if let Some(r) = crate::model::lock(&m.last_replay).as_ref() {
                hb.golden = if r.passed == r.cases { 1 } else { 2 };
                hb.golden_agreement = r.agreement;
            }
            hb.drift_psi = crate::model::lock(&m.drift).unwrap_or(-1.0);
        }
        hb
    }

    /// What the client heartbeat stream sends; `members` and `peers_up` come from the
    /// cluster, which this state does not know.
    pub fn client_heartbeat(
        &self,
        interval_ms: u32,
        missed_limit: u32,
        members: Vec<String>,
        peers_up: Vec<String>,
    ) -> NodeHeartbeat {
        let (model_version, term, index) = self.fence();
        NodeHeartbeat {
            node_id: self.name.clone(),
            serving: self.is_serving(),
            reason: self.reason(),
            fence: Some(Fence {
                model_version,
                term,
                index,
            }),
            queue_depth: self.queue_depth(),
            queue_capacity: clamp(self.queue_capacity),
            in_flight: clamp(self.in_flight()),
            interval_ms,
            missed_limit,
            members,
            peers_up,
            degraded: Vec::new(),
        }
    }
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
