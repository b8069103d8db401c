//! Readiness and the Raft gauges, kept true to the applied registry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::health::Readiness;

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

/// Keeps the health status true to the registry: SERVING only while this node serves the
/// applied registry's active version, is not lagging, and is not draining.
pub(super) async fn track_readiness(
    cluster: Arc<Cluster>,
    readiness: Readiness,
    draining: Arc<AtomicBool>,
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
        let lagging = cluster.is_lagging();
        let serving = !draining.load(Ordering::Acquire)
            && cluster
                .local
                .serves(cluster.applied().registry.active.as_ref())
            && !lagging;
        publish_raft_metrics(&cluster, lagging);
        if last != Some(serving) && !draining.load(Ordering::Acquire) {
            readiness.set(serving).await;
            tracing::info!(serving, "readiness changed");
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
