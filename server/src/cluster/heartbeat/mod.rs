//! Heartbeats: every node calls `Peer.Heartbeat` on every other member each interval, with
//! its own status, and records the answer. Incoming heartbeats are recorded too (see
//! [`crate::cluster::peer`]), so each pair of nodes hears from each other twice per interval.
//!
//! At most one heartbeat to a given peer is in flight: a hung peer ties up one task until
//! the call times out (after the miss limit), never a growing pile. The table is swept
//! twenty times per interval (every 5 ms by default: a few map entries under a lock), so a
//! peer is marked down within 5 ms of its limit and detection stays within the advertised
//! `interval × missed`, give or take that.

pub mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rankd_proto::peer::v1::peer_client::PeerClient;
use rankd_proto::peer::v1::PeerHeartbeat;
use rankd_raft::NodeId;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::outlier::Signals;
use super::Cluster;
use crate::node_state::NodeState;
pub use table::{PeerTable, PeerView, Target};

/// Sends heartbeats and sweeps the table until `stop` changes.
pub async fn run(
    cluster: Arc<Cluster>,
    state: Arc<NodeState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let table = cluster.peer_table.clone();
    let mut send = tokio::time::interval(table.interval());
    send.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut sweep = tokio::time::interval((table.interval() / 20).max(Duration::from_millis(1)));
    sweep.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut in_flight: HashMap<NodeId, JoinHandle<()>> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = sweep.tick() => {
                table.sweep(Instant::now());
            }
            _ = send.tick() => {
                let members: Vec<(NodeId, rankd_raft::PeerNode)> = cluster
                    .metrics()
                    .membership_config
                    .nodes()
                    .map(|(id, n)| (*id, n.clone()))
                    .collect();
                table.set_members(members.iter().map(|(id, _)| *id));
                let mut hb = state.peer_heartbeat();
                judge_outliers(&cluster, &hb);
                hb.degraded = table.degraded().into_keys().collect();
                in_flight.retain(|id, h| !h.is_finished() && members.iter().any(|(m, _)| m == id));
                for (id, node) in members {
                    if id == cluster.id || in_flight.contains_key(&id) {
                        continue;
                    }
                    let Ok(channels) = cluster.peers.channels(id, &node) else {
                        continue;
                    };
                    let hb = hb.clone();
                    let table = table.clone();
                    in_flight.insert(id, tokio::spawn(async move {
                        let mut req = tonic::Request::new(hb);
                        req.set_timeout(table.down_after());
                        let mut client = PeerClient::new(channels.control);
                        let call = client.heartbeat(req);
                        match tokio::time::timeout(table.down_after(), call).await {
                            Ok(Ok(reply)) => {
                                let reply = reply.into_inner();
                                // An answer from whoever now holds that address is not this
                                // peer's heartbeat.
                                if reply.node_id == id {
                                    table.heard(reply, Instant::now());
                                }
                            }
                            Ok(Err(status)) => {
                                tracing::debug!(peer = id, error = %status, "heartbeat failed");
                            }
                            Err(_) => tracing::debug!(peer = id, "heartbeat timed out"),
                        }
                    }));
                }
            }
        }
    }
    for (_, h) in in_flight {
        h.abort();
    }
}

/// Compares every member with its peers (see [`crate::cluster::outlier`]) and records who
/// is degraded in the peer table; `mine` is this node's own heartbeat of this round.
fn judge_outliers(cluster: &Cluster, mine: &PeerHeartbeat) {
    let mut signals = cluster.peer_table.signals();
    signals.push((cluster.id, Signals::of(mine)));
    let before = cluster.peer_table.degraded();
    cluster
        .peer_table
        .set_degraded(super::outlier::judge(&signals, &before, &cluster.outlier));
}
