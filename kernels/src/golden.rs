//! Golden-set replay: a bundle is served only if the loaded model, on this device and at this
//! precision, reproduces the rankings the exporter recorded.
//!
//! Ids must match position by position, except that two items whose recorded scores are
//! within the tolerance may trade places (reduced precision legitimately reorders near-ties;
//! the exporter keeps a margin at the top-k boundary so no outsider can slip in). Scores must
//! match within `tol * (1 + |expected|)`.

use crate::bundle::{GoldenCase, GoldenSet};
use crate::error::KernelError;
use crate::input::{RankInput, Ranked};
use crate::Ranker;

/// Replays every case alone and then all cases as one batch, so the padding path used for
/// mixed candidate counts is validated too.
pub fn validate(ranker: &dyn Ranker, golden: &GoldenSet, tol: f32) -> Result<(), KernelError> {
    if golden.cases.is_empty() {
        return Err(KernelError::Golden {
            case: 0,
            reason: "golden.json has no cases; an unvalidated model is never served".into(),
        });
    }
    let inputs: Vec<RankInput<'_>> = golden
        .cases
        .iter()
        .map(|c| RankInput {
            query: &c.query,
            candidates: &c.candidates,
            top_k: c.top_k,
        })
        .collect();
    for (i, input) in inputs.iter().enumerate() {
        let got = single(ranker.rank_batch(std::slice::from_ref(input)), i)?;
        compare(i, &golden.cases[i], &got, tol)?;
    }
    let batched = ranker.rank_batch(&inputs)?;
    for (i, got) in batched.into_iter().enumerate() {
        let got = got.map_err(|e| KernelError::Golden {
            case: i,
            reason: format!("batched replay failed: {e}"),
        })?;
        compare(i, &golden.cases[i], &got, tol).map_err(|e| KernelError::Golden {
            case: i,
            reason: format!("batched replay: {e}"),
        })?;
    }
    Ok(())
}

fn single(
    res: Result<Vec<Result<Ranked, KernelError>>, KernelError>,
    case: usize,
) -> Result<Ranked, KernelError> {
    let fail = |reason: String| KernelError::Golden { case, reason };
    match res {
        Ok(mut v) if v.len() == 1 => v.remove(0).map_err(|e| fail(e.to_string())),
        Ok(v) => Err(fail(format!(
            "engine returned {} results for 1 input",
            v.len()
        ))),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// How one golden case replayed on a serving model: for live monitoring, where a failure is
/// a figure to export rather than a reason to refuse the model.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseReplay {
    /// Whether the case passed the same check as at load.
    pub passed: bool,
    /// Share of the expected top-k ids the model also ranked in its top k.
    pub agreement: f64,
    /// Largest |score - expected| over the positions both rankings have.
    pub max_score_error: f64,
}

/// Replays case `i` of `golden` alone. The outer error means the engine failed to rank it.
pub fn replay_case(
    ranker: &dyn Ranker,
    golden: &GoldenSet,
    i: usize,
    tol: f32,
) -> Result<CaseReplay, KernelError> {
    let case = golden.cases.get(i).ok_or_else(|| KernelError::Golden {
        case: i,
        reason: format!("no such case (the set has {})", golden.cases.len()),
    })?;
    let input = RankInput {
        query: &case.query,
        candidates: &case.candidates,
        top_k: case.top_k,
    };
    let got = match ranker.rank_batch(std::slice::from_ref(&input))?.pop() {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            // A non-finite score is the model misbehaving on this case: a failed replay.
            return Ok(CaseReplay {
                passed: false,
                agreement: 0.0,
                max_score_error: match e {
                    KernelError::NonFiniteScore { .. } => f64::INFINITY,
                    other => return Err(other),
                },
            });
        }
        None => return Err(KernelError::Torch("engine returned no result".into())),
    };
    let k = case.expected_ids.len().max(1);
    let hits = got
        .ids
        .iter()
        .filter(|id| case.expected_ids.contains(id))
        .count();
    let max_score_error = got
        .scores
        .iter()
        .zip(&case.expected_scores)
        .map(|(g, w)| f64::from((g - w).abs()))
        .fold(0.0, f64::max);
    Ok(CaseReplay {
        passed: compare(i, case, &got, tol).is_ok(),
        agreement: hits as f64 / k as f64,
        max_score_error,
    })
}

fn compare(i: usize, case: &GoldenCase, got: &Ranked, tol: f32) -> Result<(), KernelError> {
    let fail = |reason: String| Err(KernelError::Golden { case: i, reason });
    let k = case.top_k.min(case.candidates.len());
    if case.expected_ids.len() != k || case.expected_scores.len() != k {
        return fail(format!(
            "golden.json is inconsistent: top_k {} over {} candidates but {} ids and {} scores",
            case.top_k,
            case.candidates.len(),
            case.expected_ids.len(),
            case.expected_scores.len()
        ));
    }
    if got.ids.len() != k {
        return fail(format!("expected {k} results, got {}", got.ids.len()));
    }
    let close = |a: f32, b: f32| (a - b).abs() <= tol * (1.0 + b.abs());
    for pos in 0..k {
        let (want_id, want_score) = (case.expected_ids[pos], case.expected_scores[pos]);
        let (got_id, got_score) = (got.ids[pos], got.scores[pos]);
        if !close(got_score, want_score) {
            return fail(format!(
                "position {pos}: score {got_score} differs from expected {want_score} by more than {tol}"
            ));
        }
        if got_id != want_id {
            let tie = case
                .expected_ids
                .iter()
                .position(|&id| id == got_id)
                .is_some_and(|j| close(case.expected_scores[j], want_score));
            if !tie {
                return fail(format!(
                    "position {pos}: expected id {want_id} (score {want_score}), got id {got_id} (score {got_score})"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case() -> GoldenCase {
        GoldenCase {
            query: vec![0.0],
            candidates: vec![1, 2, 3, 4],
            top_k: 3,
            expected_ids: vec![3, 1, 2],
            expected_scores: vec![2.0, 1.0, 0.9995],
        }
    }

    fn ranked(ids: &[i64], scores: &[f32]) -> Ranked {
        Ranked {
            ids: ids.to_vec(),
            scores: scores.to_vec(),
        }
    }

    #[test]
    fn exact_match_passes() {
        compare(0, &case(), &ranked(&[3, 1, 2], &[2.0, 1.0, 0.9995]), 1e-3).unwrap();
    }

    #[test]
    fn near_ties_may_swap() {
        compare(0, &case(), &ranked(&[3, 2, 1], &[2.0, 1.0, 0.9995]), 1e-3).unwrap();
    }

    #[test]
    fn a_real_reordering_fails() {
        let err = compare(0, &case(), &ranked(&[1, 3, 2], &[2.0, 1.0, 0.9995]), 1e-3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("position 0: expected id 3"), "{err}");
    }

    #[test]
    fn an_outsider_fails() {
        let err = compare(0, &case(), &ranked(&[3, 1, 4], &[2.0, 1.0, 0.9995]), 1e-3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("got id 4"), "{err}");
    }

    #[test]
    fn drifted_scores_fail() {
        let err = compare(0, &case(), &ranked(&[3, 1, 2], &[2.1, 1.0, 0.9995]), 1e-3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("position 0: score 2.1"), "{err}");
    }

    /// A ranker that returns fixed results, for the replay figures.
    struct Fixed(Ranked);
    impl Ranker for Fixed {
        fn info(&self) -> &crate::ModelInfo {
            unimplemented!("not needed by replay_case")
        }
        fn rank_batch(
            &self,
            _: &[RankInput<'_>],
        ) -> Result<Vec<Result<Ranked, KernelError>>, KernelError> {
            Ok(vec![Ok(self.0.clone())])
        }
    }

    #[test]
    fn replay_reports_agreement_and_score_error() {
        let set = GoldenSet {
            cases: vec![case()],
        };
        let ok = replay_case(
            &Fixed(ranked(&[3, 1, 2], &[2.0, 1.0, 0.9995])),
            &set,
            0,
            1e-3,
        )
        .unwrap();
        assert_eq!(
            (ok.passed, ok.agreement, ok.max_score_error),
            (true, 1.0, 0.0)
        );
        let bad = replay_case(
            &Fixed(ranked(&[3, 4, 2], &[2.5, 1.0, 0.9995])),
            &set,
            0,
            1e-3,
        )
        .unwrap();
        assert!(!bad.passed);
        assert!((bad.agreement - 2.0 / 3.0).abs() < 1e-12);
        assert!((bad.max_score_error - 0.5).abs() < 1e-6);
    }

    #[test]
    fn wrong_length_fails() {
        assert!(compare(0, &case(), &ranked(&[3, 1], &[2.0, 1.0]), 1e-3).is_err());
    }
}
