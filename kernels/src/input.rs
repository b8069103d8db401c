//! Request shapes shared by the engine and the server, and the checks that keep a request
//! from ever reaching libtorch with data that could crash it (an out-of-range id would be a
//! device-side assert on CUDA, which poisons the whole context).

use crate::error::InputError;
use crate::ModelInfo;

/// One request's worth of input, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub struct RankInput<'a> {
    pub query: &'a [f32],
    pub candidates: &'a [i64],
    pub top_k: usize,
}

/// The best `min(top_k, candidates)` items, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub ids: Vec<i64>,
    pub scores: Vec<f32>,
}

/// Checks `input` against the model's schema. O(query + candidates), no allocation.
pub fn validate(info: &ModelInfo, input: &RankInput<'_>) -> Result<(), InputError> {
    if input.query.len() != info.query_dim {
        return Err(InputError::QueryDim {
            expected: info.query_dim,
            actual: input.query.len(),
        });
    }
    if let Some((index, &value)) = input.query.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(InputError::QueryNotFinite { index, value });
    }
    if input.candidates.is_empty() {
        return Err(InputError::NoCandidates);
    }
    let item_count = info.item_count;
    let in_range = |id: i64| usize::try_from(id).is_ok_and(|u| u < item_count);
    if let Some((index, &id)) = input
        .candidates
        .iter()
        .enumerate()
        .find(|(_, &id)| !in_range(id))
    {
        return Err(InputError::UnknownId {
            index,
            id,
            item_count,
        });
    }
    if input.top_k == 0 {
        return Err(InputError::ZeroTopK);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Precision;

    fn info() -> ModelInfo {
        ModelInfo {
            name: "m".into(),
            version: "1".into(),
            query_dim: 2,
            item_dim: 3,
            item_count: 10,
            device: "cpu".into(),
            precision: Precision::Fp32,
        }
    }

    fn check(query: &[f32], candidates: &[i64], top_k: usize) -> Result<(), InputError> {
        validate(
            &info(),
            &RankInput {
                query,
                candidates,
                top_k,
            },
        )
    }

    #[test]
    fn accepts_a_good_request() {
        assert_eq!(check(&[0.0, 1.0], &[0, 9], 5), Ok(()));
    }

    #[test]
    fn names_each_problem() {
        assert_eq!(
            check(&[0.0], &[1], 1),
            Err(InputError::QueryDim {
                expected: 2,
                actual: 1
            })
        );
        assert!(matches!(
            check(&[0.0, f32::NAN], &[1], 1),
            Err(InputError::QueryNotFinite { index: 1, .. })
        ));
        assert!(matches!(
            check(&[f32::INFINITY, 0.0], &[1], 1),
            Err(InputError::QueryNotFinite { index: 0, .. })
        ));
        assert_eq!(check(&[0.0, 0.0], &[], 1), Err(InputError::NoCandidates));
        assert_eq!(
            check(&[0.0, 0.0], &[3, 10], 1),
            Err(InputError::UnknownId {
                index: 1,
                id: 10,
                item_count: 10
            })
        );
        assert!(matches!(
            check(&[0.0, 0.0], &[-1], 1),
            Err(InputError::UnknownId { id: -1, .. })
        ));
        assert_eq!(check(&[0.0, 0.0], &[1], 0), Err(InputError::ZeroTopK));
    }
}
