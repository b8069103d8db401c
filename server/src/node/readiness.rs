//! Readiness and the Raft gauges, kept true to the applied registry.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::health::Readiness;
use crate::node_state::NodeState;

fn publish_raft_metrics(cluster: &Cluster, lagging: bool) {
    let m = cluster.metrics();
    let g = &cluster.local.metrics().raft;
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    g.term.set(int(m.current_term));
    g.leader.set(int(m.current_leader.unwrap_or(0)));
    g.is_leader
        .set(i64::from(m.current_leader == Some(cluster.id)));
    g.commit_index.set(int(cluster.committed_index()));
    g.applied_index
        .set(int(m.last_applied.map_or(0, |l| l.index)));
    g.serving_fence_index
        .set(int(cluster.local.slot().current().map_or(0, |c| c.fence.1)));
    g.lagging.set(i64::from(lagging));
}

/// Recomputes whether this node can serve locally, and why not, into `state`.
pub(super) fn refresh(cluster: &Cluster, state: &NodeState) {
    let lagging = cluster.is_lagging();
    let applied = cluster.applied();
    let active = applied.registry.active.as_ref();
    let serves = cluster.local.serves(active);
    let engine = state.engine_healthy();
    let reason = match active {
        _ if lagging => "lagging: no word from a Raft leader".to_string(),
        None => "no active version in the registry".to_string(),
        Some(f) if !serves => format!("loading active version {}", f.model.version),
        Some(_) if !engine => "inference engine stopped".to_string(),
        Some(_) => String::new(),
    };
    state.update(serves && !lagging && engine, lagging, &reason);
    publish_raft_metrics(cluster, lagging);
}

/// Keeps the health status true to the registry: SERVING only while this node serves the
/// applied registry's active version, is not lagging, and is not draining.
pub(super) async fn track_readiness(
    cluster: Arc<Cluster>,
    readiness: Readiness,
    state: Arc<NodeState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut changes = cluster.subscribe();
    // Consensus changes (a new leader, a new term) show in the gauges at once.
    let mut raft = cluster.raft.metrics();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last = None;
    let mut leader = None;
    loop {
        let now_leader = raft.borrow().current_leader;
        if now_leader != leader {
            tracing::info!(leader = ?now_leader, term = raft.borrow().current_term, "raft leader changed");
            leader = now_leader;
        }
        refresh(&cluster, &state);
        let serving = state.is_serving();
        if last != Some(serving) && !state.is_draining() {
            readiness.set(serving).await;
            tracing::info!(serving, reason = %state.reason(), "readiness changed");
            last = Some(serving);
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = changes.changed() => {}
            _ = raft.changed() => {}
            _ = tick.tick() => {}
        }
    }
}
