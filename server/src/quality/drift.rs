//! Score drift as a population stability index (PSI).
//!
//! The baseline is the decile edges of a reference sample of served scores, with the share
//! of that sample in each bucket. PSI = Σ (a − e) · ln(a / e) over the buckets, where e is
//! the baseline's share and a the current sample's. Common reading: below 0.1 stable,
//! 0.1–0.25 a moderate shift, above 0.25 a major one. A collapsed model (every score in one
//! bucket) or one whose scores moved by a standard deviation reads far above 1.

/// Buckets are the deciles of the reference sample.
const BUCKETS: usize = 10;
/// Floor on a bucket's share, so an empty bucket counts as very unlikely, not impossible.
const FLOOR: f64 = 1e-4;

#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// `BUCKETS - 1` ascending cut points.
    pub edges: Vec<f64>,
    /// The reference sample's share in each bucket (deciles: about 0.1 each, unless ties).
    pub expected: Vec<f64>,
    /// Where the reference came from, e.g. "demo-ranker@1's live scores at promotion".
    pub source: String,
}

impl Baseline {
    /// The baseline of a sample; `None` for an empty one or one with non-finite values.
    pub fn from_sample(sample: impl Iterator<Item = f64>, source: String) -> Option<Baseline> {
        let mut v: Vec<f64> = sample.collect();
        if v.is_empty() || v.iter().any(|x| !x.is_finite()) {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let edges: Vec<f64> = (1..BUCKETS)
            .map(|i| v[(i * v.len() / BUCKETS).min(v.len() - 1)])
            .collect();
        let expected = shares(&edges, v.iter().copied());
        Some(Baseline {
            edges,
            expected,
            source,
        })
    }
}

fn bucket(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|&e| e < x)
}

fn shares(edges: &[f64], sample: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut counts = vec![0u64; edges.len() + 1];
    let mut n = 0u64;
    for x in sample {
        counts[bucket(edges, x)] += 1;
        n += 1;
    }
    counts
        .into_iter()
        .map(|c| (c as f64 / n.max(1) as f64).max(FLOOR))
        .collect()
}

/// PSI of `sample` against `baseline`.
pub fn psi(baseline: &Baseline, sample: impl Iterator<Item = f64>) -> f64 {
    let actual = shares(&baseline.edges, sample);
    actual
        .iter()
        .zip(&baseline.expected)
        .map(|(&a, &e)| (a - e) * (a / e).ln())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic, roughly normal sample: the sum of 12 uniform draws, centred.
    fn normal(n: usize, shift: f64, scale: f64) -> Vec<f64> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| shift + scale * ((0..12).map(|_| uniform()).sum::<f64>() - 6.0))
            .collect()
    }

    fn base() -> Baseline {
        Baseline::from_sample(normal(5000, 0.0, 1.0).into_iter(), "test".into()).unwrap()
    }

    #[test]
    fn the_same_distribution_is_stable() {
        let p = psi(&base(), normal(5000, 0.0, 1.0).into_iter().rev());
        assert!(p < 0.02, "{p}");
    }

    #[test]
    fn a_shift_of_one_standard_deviation_is_a_major_drift() {
        let p = psi(&base(), normal(5000, 1.0, 1.0).into_iter());
        assert!(p > 0.25, "{p}");
    }

    #[test]
    fn collapsed_scores_are_a_major_drift() {
        let p = psi(&base(), std::iter::repeat_n(0.0, 5000));
        assert!(p > 1.0, "{p}");
    }

    #[test]
    fn an_empty_or_broken_sample_has_no_baseline() {
        assert!(Baseline::from_sample(std::iter::empty(), "x".into()).is_none());
        assert!(Baseline::from_sample([1.0, f64::NAN].into_iter(), "x".into()).is_none());
    }
}
