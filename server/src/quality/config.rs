//! `[quality]`: live model-quality monitoring on each node.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Seconds between golden-set replays on the serving version (only while no request
    /// waits); 0 disables them.
    pub golden_replay_interval_s: u64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            golden_replay_interval_s: 30,
        }
    }
}

impl QualityConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.golden_replay_interval_s > 86_400 {
            return Err((
                "quality.golden_replay_interval_s",
                "must be at most 86400 (a day); 0 disables replays".into(),
            ));
        }
        Ok(())
    }
}

/// `[bake]`: the probation after a promotion (docs/quality.md#bake-window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BakeConfig {
    /// Bake window for a promotion that names none (`rankctl promote --bake`); 0: none.
    pub window_ms: u64,
    /// A node's share of failed Rank calls on the new version above this is a breach.
    pub max_error_ratio: f64,
    /// A node's p99 Rank latency on the new version above this is a breach.
    pub max_p99_ms: f64,
    /// A golden replay whose mean top-k agreement falls below this is a breach (a round
    /// with any case out of tolerance also is).
    pub min_golden_agreement: f64,
    /// Score drift (PSI) against the scores served before the switch above this is a breach.
    pub max_drift_psi: f64,
    /// Calls a node must have served on the new version before its error share and p99
    /// count: a handful of calls says nothing.
    pub min_calls: u32,
    /// How often the leader reads the signals.
    pub check_interval_ms: u64,
}

impl Default for BakeConfig {
    fn default() -> Self {
        BakeConfig {
            window_ms: 60_000,
            max_error_ratio: 0.05,
            max_p99_ms: 250.0,
            min_golden_agreement: 0.99,
            max_drift_psi: 0.5,
            min_calls: 50,
            check_interval_ms: 250,
        }
    }
}

impl BakeConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.window_ms > 86_400_000 {
            return Err(("bake.window_ms", "must be at most a day".into()));
        }
        if !(0.0..1.0).contains(&self.max_error_ratio) {
            return Err(("bake.max_error_ratio", "must be in [0, 1)".into()));
        }
        if !(self.max_p99_ms.is_finite() && self.max_p99_ms > 0.0) {
            return Err(("bake.max_p99_ms", "must be a positive number".into()));
        }
        if !(0.0..=1.0).contains(&self.min_golden_agreement) {
            return Err(("bake.min_golden_agreement", "must be in [0, 1]".into()));
        }
        if !(self.max_drift_psi.is_finite() && self.max_drift_psi > 0.0) {
            return Err(("bake.max_drift_psi", "must be a positive number".into()));
        }
        // Faster than the heartbeats that carry the signals would only re-read old figures;
        // slower than a second would let a bad version serve a second longer than it must.
        if !(10..=1000).contains(&self.check_interval_ms) {
            return Err(("bake.check_interval_ms", "must be in [10, 1000]".into()));
        }
        Ok(())
    }
}

/// `[outlier]`: gray-failure detection, a node compared with its peers
/// (docs/quality.md#outlier-replicas).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// The window of Rank calls each node's error share and p99 are taken over (also the
    /// bake's window).
    pub window_ms: u64,
    /// Calls a node needs in the window to be judged, and its peers to be compared with.
    pub min_calls: u32,
    /// Degraded when its p99 is above this many times the median p99 of its peers ...
    pub latency_ratio: f64,
    /// ... and at least this many ms above it (so microsecond noise never counts).
    pub min_latency_gap_ms: f64,
    /// Degraded when its error share is this much above the median share of its peers.
    pub error_margin: f64,
    /// Probe Rank calls per second each node sends a peer it judges degraded (over the peer
    /// port): clients stop calling a degraded node, so without probes its window would
    /// empty and it could be judged neither still slow nor recovered. 0: none.
    pub probe_per_s: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            window_ms: 10_000,
            min_calls: 50,
            latency_ratio: 3.0,
            min_latency_gap_ms: 20.0,
            error_margin: 0.05,
            probe_per_s: 10,
        }
    }
}

impl OutlierConfig {
    pub fn window(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.window_ms)
    }

    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(500..=600_000).contains(&self.window_ms) {
            return Err(("outlier.window_ms", "must be in [500, 600000]".into()));
        }
        if self.min_calls == 0 {
            return Err(("outlier.min_calls", "must be at least 1".into()));
        }
        if !(self.latency_ratio.is_finite() && self.latency_ratio > 1.0) {
            return Err(("outlier.latency_ratio", "must be above 1".into()));
        }
        if !(self.min_latency_gap_ms.is_finite() && self.min_latency_gap_ms >= 0.0) {
            return Err(("outlier.min_latency_gap_ms", "must be 0 or more".into()));
        }
        if !(self.error_margin > 0.0 && self.error_margin < 1.0) {
            return Err(("outlier.error_margin", "must be in (0, 1)".into()));
        }
        if self.probe_per_s > 1000 {
            return Err(("outlier.probe_per_s", "must be at most 1000".into()));
        }
        Ok(())
    }
}
