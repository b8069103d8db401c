//! Live model quality on each node: what the active version's traffic gets scored, and how
//! far that has drifted from the scores served before it was promoted.

pub mod config;
pub mod drift;
pub mod live;
pub mod replay;
pub mod scores;

pub use config::{BakeConfig, OutlierConfig, QualityConfig};
pub use drift::Baseline;
pub use scores::{ScoreStats, Snapshot};

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::model::ModelSlot;

/// How often the serving version's statistics are copied into the metrics.
pub const EXPORT_INTERVAL: Duration = Duration::from_secs(2);

/// Copies the serving version's score statistics into the metrics every
/// [`EXPORT_INTERVAL`] until `stop` changes, and drops a version's series once it no longer
/// serves.
pub async fn export(
    slot: Arc<ModelSlot>,
    state: Arc<crate::node_state::NodeState>,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(EXPORT_INTERVAL);
    let mut shown: Option<String> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        let current = slot.current();
        let version = current.as_ref().map(|m| m.info.version.clone());
        if let Some(old) = shown.as_deref().filter(|&o| Some(o) != version.as_deref()) {
            metrics.quality.forget(old);
        }
        if let Some(m) = current {
            let snapshot = m.scores.snapshot();
            // Only drift against the scores served before the switch can judge a promotion.
            *crate::model::lock(&m.drift) =
                snapshot.psi.filter(|_| snapshot.baseline_from_previous);
            metrics.quality.update(&m.info.version, &snapshot);
        }
        let live = state.live.snapshot(state.live_window());
        metrics.quality.live_error_ratio.set(live.error_ratio);
        metrics.quality.live_p99.set(live.p99.as_secs_f64());
        metrics
            .quality
            .live_calls
            .set(i64::try_from(live.calls).unwrap_or(i64::MAX));
        shown = version;
    }
}
