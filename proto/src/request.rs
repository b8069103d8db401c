//! What a valid `rankd.v1.RankRequest` is, checked without libtorch.
//!
//! These are the checks that keep a request from ever reaching libtorch with data that
//! could crash it (an out-of-range id would be a device-side assert on CUDA, which poisons
//! the whole context), plus the server's own limits. There is one implementation, here:
//! the Rank handler runs [`check_rank_request`] before a request takes a queue slot, the
//! engine runs [`validate`] again on every batch it is handed, and the `rank_request` fuzz
//! target (fuzz/, docs/fuzzing.md) runs both on arbitrary encoded messages. It lives in
//! the API crate because it needs nothing heavier than the generated message, so the fuzz
//! target builds without libtorch.
//!
//! Checks run in a fixed order and the first failure is reported: candidate count against
//! the server's limit, then the query (length, then finiteness), the candidate ids
//! (non-empty, then every id in the item table), `top_k`, and last duplicate ids. Each
//! error names the offending field and position, so the server can answer
//! `INVALID_ARGUMENT` (or `OUT_OF_RANGE` for the limit) precisely.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::v1::RankRequest;

/// What a request is checked against: the loaded model's input schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// Features per query.
    pub query_dim: usize,
    /// Rows in the item table: valid ids are `0..item_count`.
    pub item_count: usize,
}

/// One request's worth of input, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub struct RankInput<'a> {
    pub query: &'a [f32],
    pub candidates: &'a [i64],
    pub top_k: usize,
}

impl<'a> RankInput<'a> {
    /// The request's fields as the engine takes them; nothing is checked.
    pub fn from_request(req: &'a RankRequest) -> RankInput<'a> {
        RankInput {
            query: &req.query,
            candidates: &req.candidate_ids,
            top_k: usize::try_from(req.top_k).unwrap_or(usize::MAX),
        }
    }
}

/// A request that does not fit the loaded model. Each variant names the offending field so
/// the server can answer INVALID_ARGUMENT precisely.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    #[error("query: expected {expected} features, got {actual}")]
    QueryDim { expected: usize, actual: usize },
    #[error("query[{index}]: feature is {value}, every feature must be finite")]
    QueryNotFinite { index: usize, value: f32 },
    #[error("candidate_ids: must not be empty")]
    NoCandidates,
    #[error(
        "candidate_ids[{index}]: id {id} is not in the item table (valid ids are 0..{item_count})"
    )]
    UnknownId {
        index: usize,
        id: i64,
        item_count: usize,
    },
    #[error("top_k: must be at least 1")]
    ZeroTopK,
}

impl InputError {
    /// The request field this error is about, for structured error details and metrics.
    pub fn field(&self) -> &'static str {
        match self {
            InputError::QueryDim { .. } | InputError::QueryNotFinite { .. } => "query",
            InputError::NoCandidates | InputError::UnknownId { .. } => "candidate_ids",
            InputError::ZeroTopK => "top_k",
        }
    }
}

/// Why the Rank handler refuses a request before it takes a queue slot: the model's
/// checks ([`InputError`]) plus the server's own rules. The server maps each variant to its
/// gRPC status (`ServeError` in rankd-server, which owns the status codes).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("candidate_ids: {count} candidates exceed this server's limit of {max}")]
    TooManyCandidates { count: usize, max: usize },
    #[error("candidate_ids[{second}]: id {id} duplicates candidate_ids[{first}]")]
    DuplicateCandidate {
        first: usize,
        second: usize,
        id: i64,
    },
}

impl RequestError {
    /// The request field this error is about.
    pub fn field(&self) -> &'static str {
        match self {
            RequestError::Input(e) => e.field(),
            RequestError::TooManyCandidates { .. } | RequestError::DuplicateCandidate { .. } => {
                "candidate_ids"
            }
        }
    }
}

/// Checks `input` against the model's schema. O(query + candidates), no allocation.
pub fn validate(schema: &Schema, input: &RankInput<'_>) -> Result<(), InputError> {
    if input.query.len() != schema.query_dim {
        return Err(InputError::QueryDim {
            expected: schema.query_dim,
            actual: input.query.len(),
        });
    }
    if let Some((index, &value)) = input.query.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(InputError::QueryNotFinite { index, value });
    }
    if input.candidates.is_empty() {
        return Err(InputError::NoCandidates);
    }
    let item_count = schema.item_count;
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

/// The server's limit on candidates per request (`batching.max_candidates`). It holds
/// whether or not a model is loaded, so the handler checks it first.
pub fn check_candidate_count(count: usize, max_candidates: usize) -> Result<(), RequestError> {
    if count > max_candidates {
        return Err(RequestError::TooManyCandidates {
            count,
            max: max_candidates,
        });
    }
    Ok(())
}

/// Duplicate ids are refused rather than silently merged: a frontend that sends one has a
/// bug in its retrieval merge, and a deduplicated answer would hide it. The error names both
/// positions (the id's first occurrence and its first repeat).
pub fn find_duplicate(ids: &[i64]) -> Result<(), RequestError> {
    let mut seen: HashMap<i64, usize, BuildHasherDefault<IdHasher>> =
        HashMap::with_capacity_and_hasher(ids.len(), BuildHasherDefault::default());
    for (second, &id) in ids.iter().enumerate() {
        if let Some(&first) = seen.get(&id) {
            return Err(RequestError::DuplicateCandidate { first, second, id });
        }
        seen.insert(id, second);
    }
    Ok(())
}

/// Everything the Rank handler checks before inference, in order: the candidate limit, the
/// model's schema ([`validate`]), then duplicate ids. Returns the request as the engine
/// takes it.
pub fn check_rank_request<'a>(
    req: &'a RankRequest,
    schema: &Schema,
    max_candidates: usize,
) -> Result<RankInput<'a>, RequestError> {
    check_candidate_count(req.candidate_ids.len(), max_candidates)?;
    let input = RankInput::from_request(req);
    validate(schema, &input)?;
    find_duplicate(input.candidates)?;
    Ok(input)
}

/// Item ids are already well spread integers; a multiplicative hash is enough and several
/// times cheaper than SipHash on the request path. (Not exposed to untrusted keys beyond
/// one request's bounded candidate list.)
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = (v as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: Schema = Schema {
        query_dim: 2,
        item_count: 10,
    };

    fn check(query: &[f32], candidates: &[i64], top_k: usize) -> Result<(), InputError> {
        validate(
            &SCHEMA,
            &RankInput {
                query,
                candidates,
                top_k,
            },
        )
    }

    fn request(query: Vec<f32>, candidate_ids: Vec<i64>, top_k: u32) -> RankRequest {
        RankRequest {
            request_id: String::new(),
            query,
            candidate_ids,
            top_k,
        }
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

    #[test]
    fn duplicates_are_named_by_both_positions() {
        assert!(find_duplicate(&[1, 2, 3]).is_ok());
        assert_eq!(
            find_duplicate(&[5, 6, 7, 6]),
            Err(RequestError::DuplicateCandidate {
                first: 1,
                second: 3,
                id: 6
            })
        );
    }

    #[test]
    fn a_request_is_checked_in_order() {
        let good = request(vec![0.0, 1.0], vec![3, 1], 2);
        let input = check_rank_request(&good, &SCHEMA, 2).unwrap();
        assert_eq!(
            (input.query, input.candidates, input.top_k),
            (&[0.0, 1.0][..], &[3, 1][..], 2)
        );
        // The limit comes first, even for a request that is wrong in every other way.
        let mut bad = request(vec![f32::NAN], vec![-1, -1, -1], 0);
        assert_eq!(
            check_rank_request(&bad, &SCHEMA, 2).err(),
            Some(RequestError::TooManyCandidates { count: 3, max: 2 })
        );
        assert_eq!(
            check_rank_request(&bad, &SCHEMA, 3).err(),
            Some(RequestError::Input(InputError::QueryDim {
                expected: 2,
                actual: 1
            }))
        );
        // Duplicates come last: an unknown id is reported before a repeated one.
        bad = request(vec![0.0, 0.0], vec![4, 4, 11], 1);
        assert!(matches!(
            check_rank_request(&bad, &SCHEMA, 3),
            Err(RequestError::Input(InputError::UnknownId { index: 2, .. }))
        ));
        bad.candidate_ids.pop();
        let err = check_rank_request(&bad, &SCHEMA, 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "candidate_ids[1]: id 4 duplicates candidate_ids[0]"
        );
        assert_eq!(err.field(), "candidate_ids");
    }
}
