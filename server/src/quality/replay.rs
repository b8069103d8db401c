//! Periodic golden-set replay on the serving version.
//!
//! At load every version proved it reproduces its golden set; this keeps checking while it
//! serves, so a model that goes wrong in place (a device fault, memory corruption, a
//! libtorch bug on a rare path) is seen. It runs one case at a time on the blocking pool and
//! only while the request queue is empty, so a replay never makes a user request wait: when
//! traffic arrives, the round stops and is counted as skipped.

use std::sync::Arc;
use std::time::Duration;

use rankd_kernels::golden::replay_case;

use crate::metrics::Metrics;
use crate::model::{Loaded, ModelSlot};

/// The figures of one full round over a version's golden set.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    pub cases: usize,
    pub passed: usize,
    /// Mean share of expected top-k ids reproduced.
    pub agreement: f64,
    pub max_score_error: f64,
}

/// Replays every case of `model`'s golden set, stopping early (`None`) as soon as `busy`
/// says requests are waiting. Blocking: call from the blocking pool.
pub fn round(model: &Loaded, busy: &dyn Fn() -> bool) -> Option<Round> {
    let golden = model.golden.as_ref()?;
    let n = golden.set.cases.len();
    if n == 0 {
        return None;
    }
    let (mut passed, mut agreement, mut max_err) = (0, 0.0, 0.0f64);
    for i in 0..n {
        if busy() {
            return None;
        }
        match replay_case(model.ranker.as_ref(), &golden.set, i, golden.tolerance) {
            Ok(c) => {
                passed += usize::from(c.passed);
                agreement += c.agreement;
                max_err = max_err.max(c.max_score_error);
            }
            Err(e) => {
                tracing::warn!(case = i, error = %e, "golden replay could not rank a case");
                max_err = f64::INFINITY;
            }
        }
    }
    Some(Round {
        cases: n,
        passed,
        agreement: agreement / n as f64,
        max_score_error: max_err,
    })
}

/// Replays the serving version's golden set every `interval` until `stop` changes.
pub async fn run(
    slot: Arc<ModelSlot>,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        let Some(model) = slot.current() else {
            continue;
        };
        let m = metrics.clone();
        let done = tokio::task::spawn_blocking(move || {
            let busy = || m.queue_depth.get() > 0;
            (round(&model, &busy), model)
        })
        .await;
        let Ok((result, model)) = done else {
            return;
        };
        let version = &model.info.version;
        match result {
            Some(r) => {
                if r.passed < r.cases {
                    tracing::error!(
                        %version, passed = r.passed, cases = r.cases, agreement = r.agreement,
                        max_score_error = r.max_score_error,
                        "the serving model no longer reproduces its golden set"
                    );
                }
                metrics.quality.replayed(version, &r);
                *crate::model::lock(&model.last_replay) = Some(r);
            }
            None => metrics.quality.replay_skipped(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GoldenReference;
    use rankd_kernels::{
        GoldenCase, GoldenSet, KernelError, ModelInfo, Precision, RankInput, Ranked, Ranker,
    };

    /// Scores each candidate id as its own value times `gain`.
    struct ById {
        info: ModelInfo,
        gain: f32,
    }

    impl Ranker for ById {
        fn info(&self) -> &ModelInfo {
            &self.info
        }
        fn rank_batch(
            &self,
            batch: &[RankInput<'_>],
        ) -> Result<Vec<Result<Ranked, KernelError>>, KernelError> {
            Ok(batch
                .iter()
                .map(|r| {
                    let mut ids = r.candidates.to_vec();
                    ids.sort_unstable_by(|a, b| b.cmp(a));
                    ids.truncate(r.top_k);
                    let scores = ids.iter().map(|&i| i as f32 * self.gain).collect();
                    Ok(Ranked { ids, scores })
                })
                .collect())
        }
    }

    fn model(gain: f32) -> Loaded {
        let info = ModelInfo {
            name: "m".into(),
            version: "1".into(),
            query_dim: 1,
            item_dim: 1,
            item_count: 10,
            device: "cpu".into(),
            precision: Precision::Fp32,
        };
        let set = GoldenSet {
            cases: vec![GoldenCase {
                query: vec![0.0],
                candidates: vec![1, 5, 3, 7],
                top_k: 2,
                expected_ids: vec![7, 5],
                expected_scores: vec![7.0, 5.0],
            }],
        };
        Loaded::new(Arc::new(ById { info, gain }), 0.0).with_golden(GoldenReference {
            set,
            tolerance: 1e-3,
        })
    }

    #[test]
    fn a_faithful_model_passes_and_a_drifted_one_fails_with_its_error() {
        let ok = round(&model(1.0), &|| false).unwrap();
        assert_eq!((ok.cases, ok.passed), (1, 1));
        assert_eq!((ok.agreement, ok.max_score_error), (1.0, 0.0));

        let drifted = round(&model(1.5), &|| false).unwrap();
        assert_eq!(drifted.passed, 0);
        assert_eq!(drifted.agreement, 1.0, "same ids, other scores");
        assert!((drifted.max_score_error - 3.5).abs() < 1e-6);
    }

    #[test]
    fn a_round_stops_as_soon_as_requests_wait() {
        assert_eq!(round(&model(1.0), &|| true), None);
    }
}
