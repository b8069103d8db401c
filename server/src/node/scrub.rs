//! The periodic re-verification of stored artifacts.

use std::sync::Arc;
use std::time::Duration;

use rankd_artifact::Store;

use crate::cluster::Cluster;
use crate::metrics::{Metrics, Outcome};

/// Re-verifies every stored artifact each `interval` (0 disables), with a metric and a log
/// line per result.
pub(super) async fn scrub_loop(
    store: Arc<Store>,
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if interval.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        let s = store.clone();
        let Ok(results) = tokio::task::spawn_blocking(move || s.scrub()).await else {
            continue;
        };
        for r in results {
            let result = if r.ok { "ok" } else { "failed" };
            metrics
                .artifact_verifications
                .get_or_create(&Outcome { result })
                .inc();
            if r.ok {
                tracing::info!(name = %r.model.name, version = %r.model.version, "scrub: artifact verified");
            } else {
                tracing::error!(name = %r.model.name, version = %r.model.version, detail = %r.detail,
                    "scrub: artifact failed verification and was quarantined; fetching it again from a peer");
                cluster.local.wake.notify_one();
            }
        }
    }
}
