//! Live score statistics of the serving version, written by `crate::quality::export`.
//!
//! Series carry the version they describe. When the serving version changes, the old
//! version's series are removed, so a dashboard never mixes a retired model's figures into
//! the current one's.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::quality::replay::Round;
use crate::quality::Snapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplayResult {
    /// pass | fail | skipped (requests were waiting, so the round stopped)
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuantileLabel {
    pub version: String,
    /// "0.5" | "0.9" | "0.99"
    pub quantile: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    /// baked | rollback
    pub verdict: &'static str,
}

type F64Gauges<L> = Family<L, Gauge<f64, AtomicU64>>;

#[derive(Default)]
pub struct QualityMetrics {
    pub quantile: F64Gauges<QuantileLabel>,
    pub mean: F64Gauges<VersionLabel>,
    pub stddev: F64Gauges<VersionLabel>,
    pub scores: F64Gauges<VersionLabel>,
    pub nonfinite_ratio: F64Gauges<VersionLabel>,
    pub constant_ratio: F64Gauges<VersionLabel>,
    pub psi: F64Gauges<VersionLabel>,
    pub golden_agreement: F64Gauges<VersionLabel>,
    pub golden_max_error: F64Gauges<VersionLabel>,
    pub golden_pass: F64Gauges<VersionLabel>,
    pub golden_rounds: Family<ReplayResult, Counter>,
    pub live_error_ratio: Gauge<f64, AtomicU64>,
    pub live_p99: Gauge<f64, AtomicU64>,
    pub live_calls: Gauge,
    /// 1 while the registry has a promotion on probation (see `cluster::bake`).
    pub baking: Gauge,
    pub bake_verdicts: Family<VerdictLabel, Counter>,
}

const QUANTILES: [(f64, &str); 3] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99")];

impl QualityMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "baking",
            "1 while a promotion's bake window runs (the leader rolls back by itself on a breach)",
            self.baking.clone(),
        );
        registry.register(
            "bake_verdicts",
            "Bake windows ended, by verdict: baked, or rollback (automatic, on a breached signal)",
            self.bake_verdicts.clone(),
        );
        registry.register(
            "score_quantile",
            "Quantiles of the scores the serving version returned (t-digest sketch)",
            self.quantile.clone(),
        );
        registry.register(
            "score_mean",
            "Mean of the scores the serving version returned",
            self.mean.clone(),
        );
        registry.register(
            "score_stddev",
            "Standard deviation of the scores the serving version returned",
            self.stddev.clone(),
        );
        registry.register(
            "scores_observed",
            "Scores the serving version has returned since it was loaded",
            self.scores.clone(),
        );
        registry.register(
            "score_nonfinite_ratio",
            "Share of recent requests whose scores were NaN or infinite",
            self.nonfinite_ratio.clone(),
        );
        registry.register(
            "score_constant_ratio",
            "Share of recent requests whose returned scores were all equal",
            self.constant_ratio.clone(),
        );
        registry.register(
            "score_drift_psi",
            "Population stability index of recent scores against the baseline captured at promotion",
            self.psi.clone(),
        );
        registry.register(
            "golden_replay_agreement",
            "Mean share of the golden set's expected top-k ids the serving version reproduced in its last replay",
            self.golden_agreement.clone(),
        );
        registry.register(
            "golden_replay_max_score_error",
            "Largest score difference from the golden set in the last replay",
            self.golden_max_error.clone(),
        );
        registry.register(
            "golden_replay_pass",
            "1 if every golden case passed in the last replay, else 0",
            self.golden_pass.clone(),
        );
        registry.register(
            "live_error_ratio",
            "Share of this node's last 1024 Rank calls that failed through the node's doing (not the caller's)",
            self.live_error_ratio.clone(),
        );
        registry.register(
            "live_p99_seconds",
            "p99 latency of this node's last 1024 Rank calls, as served here",
            self.live_p99.clone(),
        );
        registry.register(
            "live_calls",
            "Rank calls in the live window (at most 1024)",
            self.live_calls.clone(),
        );
        registry.register(
            "golden_replays",
            "Golden-set replay rounds by result",
            self.golden_rounds.clone(),
        );
    }

    pub fn replayed(&self, version: &str, r: &Round) {
        let v = VersionLabel {
            version: version.to_string(),
        };
        let pass = r.passed == r.cases;
        self.golden_agreement.get_or_create(&v).set(r.agreement);
        self.golden_max_error
            .get_or_create(&v)
            .set(r.max_score_error);
        self.golden_pass
            .get_or_create(&v)
            .set(if pass { 1.0 } else { 0.0 });
        self.golden_rounds
            .get_or_create(&ReplayResult {
                result: if pass { "pass" } else { "fail" },
            })
            .inc();
    }

    pub fn replay_skipped(&self) {
        self.golden_rounds
            .get_or_create(&ReplayResult { result: "skipped" })
            .inc();
    }

    pub fn update(&self, version: &str, s: &Snapshot) {
        let v = VersionLabel {
            version: version.to_string(),
        };
        for (q, label) in QUANTILES {
            if let Some(&(_, value)) = s.quantiles.iter().find(|(x, _)| *x == q) {
                self.quantile
                    .get_or_create(&QuantileLabel {
                        version: version.to_string(),
                        quantile: label,
                    })
                    .set(value);
            }
        }
        self.mean.get_or_create(&v).set(s.mean);
        self.stddev.get_or_create(&v).set(s.stddev);
        self.scores.get_or_create(&v).set(s.scores as f64);
        self.nonfinite_ratio
            .get_or_create(&v)
            .set(s.nonfinite_ratio);
        self.constant_ratio.get_or_create(&v).set(s.constant_ratio);
        match s.psi {
            Some(p) => {
                self.psi.get_or_create(&v).set(p);
            }
            None => {
                self.psi.remove(&v);
            }
        }
    }

    /// Drops every series of `version`.
    pub fn forget(&self, version: &str) {
        let v = VersionLabel {
            version: version.to_string(),
        };
        for (_, label) in QUANTILES {
            self.quantile.remove(&QuantileLabel {
                version: version.to_string(),
                quantile: label,
            });
        }
        for f in [
            &self.mean,
            &self.stddev,
            &self.scores,
            &self.nonfinite_ratio,
            &self.constant_ratio,
            &self.psi,
            &self.golden_agreement,
            &self.golden_max_error,
            &self.golden_pass,
        ] {
            f.remove(&v);
        }
    }
}
