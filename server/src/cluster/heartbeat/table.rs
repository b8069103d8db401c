//! The peer table: what this node last heard from each peer, and whether it counts the peer
//! up.
//!
//! Invariants:
//! - A peer is up only while its last heartbeat (sent by it, or its answer to ours) is at
//!   most `interval * missed` old. A crashed, hung (SIGSTOP) or partitioned peer stops
//!   answering and sending alike, so all three age out the same way.
//! - Only current members are tracked: a heartbeat from a node that is not (or no longer)
//!   a member is ignored, so a removed node cannot come back as a forwarding target.
//! - A peer that was never heard is down. Nothing is forwarded on a guess.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rankd_proto::peer::v1::PeerHeartbeat;
use rankd_raft::NodeId;
use tokio::time::Instant;

use crate::cluster::outlier::Signals;
use crate::metrics::{Metrics, PeerLabel};

pub struct PeerTable {
    me: NodeId,
    interval: Duration,
    missed: u32,
    metrics: Arc<Metrics>,
    peers: RwLock<BTreeMap<NodeId, Entry>>,
    /// Breaks ties between equally loaded forwarding targets, so they share the work.
    turn: AtomicUsize,
    /// Members (this node included) judged degraded against their peers, with why.
    degraded: RwLock<BTreeMap<NodeId, String>>,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    last_heard: Option<Instant>,
    status: Option<PeerHeartbeat>,
    up: bool,
}

/// One peer as the table sees it now.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub id: NodeId,
    pub up: bool,
    /// Time since the last heartbeat; `None` when never heard.
    pub age: Option<Duration>,
    pub status: Option<PeerHeartbeat>,
}

/// A peer that can take a forwarded Rank call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: NodeId,
    pub api_addr: String,
}

impl PeerTable {
    pub fn new(me: NodeId, interval: Duration, missed: u32, metrics: Arc<Metrics>) -> PeerTable {
        PeerTable {
            me,
            interval,
            missed,
            metrics,
            peers: RwLock::new(BTreeMap::new()),
            turn: AtomicUsize::new(0),
            degraded: RwLock::new(BTreeMap::new()),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn missed(&self) -> u32 {
        self.missed
    }

    /// Silence longer than this marks a peer down.
    pub fn down_after(&self) -> Duration {
        self.interval * self.missed
    }

    /// Tracks exactly `members` (this node excluded): new ones start down, gone ones are
    /// dropped with their metric series.
    pub fn set_members(&self, members: impl IntoIterator<Item = NodeId>) {
        let wanted: Vec<NodeId> = members.into_iter().filter(|id| *id != self.me).collect();
        let mut peers = self.write();
        let gone: Vec<NodeId> = peers
            .keys()
            .copied()
            .filter(|id| !wanted.contains(id))
            .collect();
        for id in gone {
            peers.remove(&id);
            let label = label(id);
            self.metrics.peers.heartbeat_age.remove(&label);
            self.metrics.peers.up.remove(&label);
        }
        for id in wanted {
            peers.entry(id).or_default();
        }
        self.publish_up(&peers);
    }

    /// Records a heartbeat from (or answered by) a peer. Returns true when this brought the
    /// peer up.
    pub fn heard(&self, hb: PeerHeartbeat, now: Instant) -> bool {
        let id = hb.node_id;
        let mut peers = self.write();
        let Some(entry) = peers.get_mut(&id) else {
            return false;
        };
        entry.last_heard = Some(now);
        entry.status = Some(hb);
        let came_up = !entry.up;
        entry.up = true;
        if came_up {
            tracing::info!(peer = id, "peer up: heartbeats answered");
            self.publish_up(&peers);
        }
        came_up
    }

    /// Marks down every peer silent for longer than [`Self::down_after`] and refreshes the
    /// age gauges. Returns the peers it just marked down.
    pub fn sweep(&self, now: Instant) -> Vec<NodeId> {
        let limit = self.down_after();
        let mut peers = self.write();
        let mut downed = Vec::new();
        for (id, e) in peers.iter_mut() {
            let age = e.last_heard.map(|t| now.saturating_duration_since(t));
            if let Some(age) = age {
                self.metrics
                    .peers
                    .heartbeat_age
                    .get_or_create(&label(*id))
                    .set(age.as_secs_f64());
            }
            if e.up && age.is_none_or(|a| a > limit) {
                e.up = false;
                downed.push(*id);
                self.metrics
                    .peers
                    .failovers
                    .get_or_create(&label(*id))
                    .inc();
                tracing::warn!(
                    peer = id,
                    silent_ms = age.map(|a| a.as_millis() as u64),
                    limit_ms = limit.as_millis() as u64,
                    "peer down: heartbeats lapsed"
                );
            }
        }
        if !downed.is_empty() {
            self.publish_up(&peers);
        }
        downed
    }

    /// The least loaded peer that is up, ready, not draining and has queue room; `None`
    /// when there is none.
    pub fn pick(&self) -> Option<Target> {
        let peers = self.read();
        let candidates: Vec<(NodeId, &PeerHeartbeat)> = peers
            .iter()
            .filter(|(_, e)| e.up)
            .filter(|(id, _)| !self.is_degraded(**id))
            .filter_map(|(id, e)| e.status.as_ref().map(|s| (*id, s)))
            .filter(|(_, s)| {
                s.ready && !s.draining && !s.api_addr.is_empty() && s.queue_depth < s.queue_capacity
            })
            .collect();
        let load = |s: &PeerHeartbeat| u64::from(s.queue_depth) + u64::from(s.in_flight);
        let least = candidates.iter().map(|(_, s)| load(s)).min()?;
        let tied: Vec<&(NodeId, &PeerHeartbeat)> = candidates
            .iter()
            .filter(|(_, s)| load(s) == least)
            .collect();
        let (id, s) = tied[self.turn.fetch_add(1, Ordering::Relaxed) % tied.len()];
        Some(Target {
            id: *id,
            api_addr: s.api_addr.clone(),
        })
    }

    /// Peer `id` as the table sees it at `now`; `None` for this node or a non-member.
    pub fn view(&self, id: NodeId, now: Instant) -> Option<PeerView> {
        self.read().get(&id).map(|e| PeerView {
            id,
            up: e.up,
            age: e.last_heard.map(|t| now.saturating_duration_since(t)),
            status: e.status.clone(),
        })
    }

    /// Every up peer's gray-failure signals, from its last heartbeat.
    pub fn signals(&self) -> Vec<(NodeId, Signals)> {
        self.read()
            .iter()
            .filter(|(_, e)| e.up)
            .filter_map(|(id, e)| Some((*id, Signals::of(e.status.as_ref()?))))
            .collect()
    }

    /// Replaces the degraded set (see [`crate::cluster::outlier`]), logging and counting
    /// each change.
    pub fn set_degraded(&self, now: BTreeMap<NodeId, String>) {
        let mut d = self.degraded.write().unwrap_or_else(|p| p.into_inner());
        for (id, why) in &now {
            if !d.contains_key(id) {
                tracing::warn!(node = id, reason = %why, "node degraded against its peers");
                self.metrics
                    .peers
                    .degradations
                    .get_or_create(&label(*id))
                    .inc();
            }
            self.metrics
                .peers
                .degraded
                .get_or_create(&label(*id))
                .set(1);
        }
        for id in d.keys().filter(|id| !now.contains_key(id)) {
            tracing::info!(node = id, "node no longer degraded");
            self.metrics
                .peers
                .degraded
                .get_or_create(&label(*id))
                .set(0);
        }
        *d = now;
    }

    pub fn degraded(&self) -> BTreeMap<NodeId, String> {
        self.degraded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn is_degraded(&self, id: NodeId) -> bool {
        self.degraded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
    }

    pub fn up_ids(&self) -> Vec<NodeId> {
        self.read()
            .iter()
            .filter(|(_, e)| e.up)
            .map(|(id, _)| *id)
            .collect()
    }

    fn publish_up(&self, peers: &BTreeMap<NodeId, Entry>) {
        let mut n = 0;
        for (id, e) in peers {
            self.metrics
                .peers
                .up
                .get_or_create(&label(*id))
                .set(i64::from(e.up));
            n += i64::from(e.up);
        }
        self.metrics.peers.peers_up.set(n);
    }

    /// A poisoned lock only means a panic elsewhere while holding it; the map is still whole
    /// (every update is a plain field write).
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<NodeId, Entry>> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<NodeId, Entry>> {
        self.peers.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn label(id: NodeId) -> PeerLabel {
    PeerLabel {
        peer: id.to_string(),
    }
}

#[cfg(test)]
mod tests;
