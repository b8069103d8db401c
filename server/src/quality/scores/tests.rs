use super::*;

fn ranked(scores: &[f32]) -> Result<Ranked, KernelError> {
    Ok(Ranked {
        ids: (0..scores.len() as i64).collect(),
        scores: scores.to_vec(),
    })
}

/// `n` requests whose top scores walk through `spread` around `centre`.
fn batch(n: usize, centre: f32, spread: f32) -> Vec<Result<Ranked, KernelError>> {
    (0..n)
        .map(|i| {
            let x = centre + spread * ((i % 100) as f32 / 50.0 - 1.0);
            ranked(&[x + 0.2, x + 0.1, x])
        })
        .collect()
}

#[test]
fn mean_spread_and_quantiles_follow_the_scores() {
    let s = ScoreStats::new();
    s.record(&batch(1000, 1.0, 1.0));
    let snap = s.snapshot();
    assert_eq!(snap.scores, 3000);
    assert!((snap.mean - 1.09).abs() < 0.05, "{snap:?}");
    assert!(snap.stddev > 0.5 && snap.stddev < 0.7, "{snap:?}");
    let median = snap.quantiles.iter().find(|(q, _)| *q == 0.5).unwrap().1;
    assert!((median - 1.1).abs() < 0.1, "{snap:?}");
    assert_eq!(snap.nonfinite_ratio, 0.0);
    assert_eq!(snap.constant_ratio, 0.0);
}

#[test]
fn non_finite_and_constant_outputs_are_counted_per_request() {
    let s = ScoreStats::new();
    s.record(&[
        ranked(&[1.0, 0.5]),
        ranked(&[0.3, 0.3, 0.3]),
        Err(KernelError::NonFiniteScore { score: f32::NAN }),
        Err(KernelError::Torch("unrelated".into())),
    ]);
    let snap = s.snapshot();
    assert!((snap.constant_ratio - 1.0 / 3.0).abs() < 1e-9, "{snap:?}");
    assert!((snap.nonfinite_ratio - 1.0 / 3.0).abs() < 1e-9, "{snap:?}");
}

#[test]
fn drift_is_measured_against_the_baseline_handed_over_at_promotion() {
    let old = ScoreStats::new();
    old.record(&batch(2000, 0.0, 1.0));
    let baseline = old
        .as_baseline("v1 at promotion".into())
        .expect("enough scores");

    let shifted = ScoreStats::new();
    shifted.set_baseline(baseline.clone());
    shifted.record(&batch(2000, 1.5, 1.0));
    let snap = shifted.snapshot();
    assert!(snap.psi.unwrap() > 0.25, "{snap:?}");
    assert_eq!(snap.baseline_source.as_deref(), Some("v1 at promotion"));

    let same = ScoreStats::new();
    same.set_baseline(baseline);
    same.record(&batch(2000, 0.0, 1.0));
    assert!(same.snapshot().psi.unwrap() < 0.05);
}

#[test]
fn a_first_version_becomes_its_own_baseline_once_it_has_served_enough() {
    let s = ScoreStats::new();
    s.record(&batch(100, 0.0, 1.0));
    assert_eq!(s.snapshot().psi, None, "too few scores for a baseline");
    s.record(&batch(1000, 0.0, 1.0));
    let snap = s.snapshot();
    assert!(snap.psi.is_some(), "{snap:?}");
    assert!(snap
        .baseline_source
        .as_deref()
        .is_some_and(|b| b.contains("its own first")));
}
