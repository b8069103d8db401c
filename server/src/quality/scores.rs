//! What a version's live traffic gets scored: a quantile sketch, mean and spread, the share
//! of broken outputs, and drift against a baseline.
//!
//! One [`ScoreStats`] belongs to each loaded version (shared by every activation of it), and
//! the scheduler records each batch's results into it after replying. Recording costs a
//! lock and a few pushes per request; the sketch merges its buffer only every
//! [`MERGE_EVERY`] scores, so the cost stays flat.
//!
//! Invariants:
//! - Only the scores a request returns (its top k) are seen; they are what users get.
//! - The drift baseline is set once per version and never changes afterwards, so the PSI of
//!   a version always compares against the same reference.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

use rankd_kernels::{KernelError, Ranked};
use tdigest::TDigest;

use super::drift::{psi, Baseline};

/// Scores buffered before they are merged into the sketch.
const MERGE_EVERY: usize = 1024;
/// Recent scores kept for the drift comparison and the breakage ratios.
pub const WINDOW: usize = 8192;
/// Scores a version needs before it can serve as a baseline (or as its own).
pub const MIN_BASELINE: usize = 1000;
/// Recent requests kept for the NaN and constant-output shares.
const REQUEST_WINDOW: usize = 2048;

/// How one request's output looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// The model produced NaN or infinity for it (the request failed).
    NonFinite,
    /// Every returned score was the same: the model is not ranking anything.
    Constant,
}

#[derive(Default)]
struct Inner {
    digest: Option<TDigest>,
    pending: Vec<f64>,
    window: VecDeque<f64>,
    outcomes: VecDeque<Outcome>,
    /// Welford's running mean and sum of squared deviations, over every score.
    count: u64,
    mean: f64,
    m2: f64,
}

/// A point-in-time view, for metrics and the bake window.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub scores: u64,
    pub mean: f64,
    pub stddev: f64,
    /// `(q, value)` for q in 0.5, 0.9, 0.99; empty before the first score.
    pub quantiles: Vec<(f64, f64)>,
    /// Shares of the recent requests whose output was non-finite, or constant.
    pub nonfinite_ratio: f64,
    pub constant_ratio: f64,
    /// Population stability index of the recent scores against the baseline; `None` until
    /// there is a baseline and a full [`MIN_BASELINE`] of recent scores.
    pub psi: Option<f64>,
    pub baseline_source: Option<String>,
    /// The baseline is the scores served before the switch (what a bake judges drift by).
    pub baseline_from_previous: bool,
}

#[derive(Default)]
pub struct ScoreStats {
    inner: Mutex<Inner>,
    baseline: OnceLock<Baseline>,
    /// The baseline is this version's own first scores, not the outgoing version's: drift
    /// against it says nothing about what the promotion changed.
    own_baseline: std::sync::atomic::AtomicBool,
}

impl ScoreStats {
    pub fn new() -> ScoreStats {
        ScoreStats::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one batch's per-request results.
    pub fn record<'a>(&self, results: impl IntoIterator<Item = &'a Result<Ranked, KernelError>>) {
        let mut g = self.lock();
        for r in results {
            let outcome = match r {
                Ok(ranked) => {
                    for &s in &ranked.scores {
                        g.push(f64::from(s));
                    }
                    if is_constant(&ranked.scores) {
                        Outcome::Constant
                    } else {
                        Outcome::Ok
                    }
                }
                Err(KernelError::NonFiniteScore { .. }) => Outcome::NonFinite,
                // Input and engine failures say nothing about the model's scores.
                Err(_) => continue,
            };
            if g.outcomes.len() == REQUEST_WINDOW {
                g.outcomes.pop_front();
            }
            g.outcomes.push_back(outcome);
        }
    }

    /// Fixes the drift baseline unless one is set: the first call wins.
    pub fn set_baseline(&self, baseline: Baseline) {
        let _ = self.baseline.set(baseline);
    }

    pub fn baseline(&self) -> Option<&Baseline> {
        self.baseline.get()
    }

    /// The decile edges of the recent scores, when there are enough of them to serve as a
    /// baseline for the version that replaces this one.
    pub fn as_baseline(&self, source: String) -> Option<Baseline> {
        let g = self.lock();
        (g.window.len() >= MIN_BASELINE)
            .then(|| Baseline::from_sample(g.window.iter().copied(), source))
            .flatten()
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut g = self.lock();
        g.flush();
        // A version first promoted with nothing before it becomes its own reference once it
        // has served enough.
        if self.baseline.get().is_none() && g.window.len() >= MIN_BASELINE {
            if let Some(b) = Baseline::from_sample(
                g.window.iter().take(MIN_BASELINE).copied(),
                format!("its own first {MIN_BASELINE} scores"),
            ) {
                if self.baseline.set(b).is_ok() {
                    self.own_baseline
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        let quantiles = match &g.digest {
            Some(d) if !d.is_empty() => [0.5, 0.9, 0.99]
                .iter()
                .map(|&q| (q, d.estimate_quantile(q)))
                .collect(),
            _ => Vec::new(),
        };
        let share = |o: Outcome| {
            let n = g.outcomes.len();
            if n == 0 {
                0.0
            } else {
                g.outcomes.iter().filter(|&&x| x == o).count() as f64 / n as f64
            }
        };
        let baseline = self.baseline.get();
        let psi = match baseline {
            Some(b) if g.window.len() >= MIN_BASELINE => Some(psi(b, g.window.iter().copied())),
            _ => None,
        };
        Snapshot {
            scores: g.count,
            mean: g.mean,
            stddev: if g.count > 1 {
                (g.m2 / (g.count - 1) as f64).sqrt()
            } else {
                0.0
            },
            quantiles,
            nonfinite_ratio: share(Outcome::NonFinite),
            constant_ratio: share(Outcome::Constant),
            psi,
            baseline_source: baseline.map(|b| b.source.clone()),
            baseline_from_previous: baseline.is_some()
                && !self.own_baseline.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl Inner {
    fn push(&mut self, s: f64) {
        self.count += 1;
        let delta = s - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (s - self.mean);
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(s);
        self.pending.push(s);
        if self.pending.len() >= MERGE_EVERY {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let values = std::mem::take(&mut self.pending);
        let digest = self
            .digest
            .take()
            .unwrap_or_else(|| TDigest::new_with_size(100));
        self.digest = Some(digest.merge_unsorted(values));
    }
}

/// Two or more scores, all equal to within float noise.
fn is_constant(scores: &[f32]) -> bool {
    if scores.len() < 2 {
        return false;
    }
    let (lo, hi) = scores
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &s| {
            (lo.min(s), hi.max(s))
        });
    hi - lo <= 1e-6 * (1.0 + hi.abs())
}

#[cfg(test)]
mod tests;
