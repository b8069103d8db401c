//! `rank_request`: arbitrary bytes, decoded as a `rankd.v1.RankRequest` (prost), through
//! the checks the Rank handler runs before inference (`rankd_proto::request`), against a
//! few model schemas and candidate limits.
//!
//! Asserts, for every request that decodes:
//! - the checks never panic, and their answer equals an independent, deliberately naive
//!   statement of the rules below (`spec`), error for error, field for field;
//! - an accepted request really is servable: its query has the schema's length and only
//!   finite values, it has 1..=max candidates, every id is in `0..item_count`, no id
//!   repeats, `top_k >= 1`, and the engine's view of it borrows the request unchanged;
//! - every refusal's message starts with the field it names.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use rankd_proto::request::{check_rank_request, InputError, RequestError, Schema};
use rankd_proto::v1::RankRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = RankRequest::decode(data) else {
        return;
    };
    let own = req.query.len();
    // (query_dim, item_count, max_candidates)
    let schemas = [
        // The request's own query length, so the fuzzer reaches the checks after it.
        (own, 1 << 20, 4096),
        // The demo model with the default max_candidates.
        (32, 100_000, 4096),
        // Small enough for the fuzzer to satisfy everything by chance.
        (4, 64, 16),
        // Degenerate and extreme: no items at all; every non-negative id is valid.
        (0, 0, 0),
        (own, usize::MAX, usize::MAX),
    ];
    for (query_dim, item_count, max) in schemas {
        let schema = Schema {
            query_dim,
            item_count,
        };
        check(&req, &schema, max);
    }
});

fn check(req: &RankRequest, schema: &Schema, max: usize) {
    let got = check_rank_request(req, schema, max);
    let want = spec(req, schema, max);
    // Debug, not PartialEq: a NaN feature is reported as NaN, which never equals itself.
    assert_eq!(
        format!("{:?}", got.as_ref().map(|_| ())),
        format!("{want:?}"),
        "schema {schema:?}, max_candidates {max}"
    );
    match got {
        Ok(input) => {
            assert!(std::ptr::eq(input.query, req.query.as_slice()));
            assert!(std::ptr::eq(input.candidates, req.candidate_ids.as_slice()));
            assert_eq!(input.top_k, req.top_k as usize);
            assert_eq!(input.query.len(), schema.query_dim);
            assert!(input.query.iter().all(|v| v.is_finite()));
            assert!((1..=max).contains(&input.candidates.len()));
            assert!(input
                .candidates
                .iter()
                .all(|&id| id >= 0 && (id as u64 as u128) < schema.item_count as u128));
            let mut ids = input.candidates.to_vec();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), input.candidates.len(), "duplicate id accepted");
            assert!(input.top_k >= 1);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with(e.field()),
                "{message:?} does not name {}",
                e.field()
            );
        }
    }
}

/// The rules as the API documents them (ranker.proto), written as plainly as
/// possible and independently of the implementation: the first rule a request breaks, in
/// order, with the position it breaks it at.
fn spec(req: &RankRequest, schema: &Schema, max: usize) -> Result<(), RequestError> {
    let (query, ids) = (&req.query, &req.candidate_ids);
    if ids.len() > max {
        return Err(RequestError::TooManyCandidates {
            count: ids.len(),
            max,
        });
    }
    if query.len() != schema.query_dim {
        return Err(InputError::QueryDim {
            expected: schema.query_dim,
            actual: query.len(),
        }
        .into());
    }
    for (index, &value) in query.iter().enumerate() {
        if value.is_nan() || value.is_infinite() {
            return Err(InputError::QueryNotFinite { index, value }.into());
        }
    }
    if ids.is_empty() {
        return Err(InputError::NoCandidates.into());
    }
    for (index, &id) in ids.iter().enumerate() {
        // i128: no cast between i64 and usize can wrap here.
        if id < 0 || i128::from(id) >= schema.item_count as i128 {
            return Err(InputError::UnknownId {
                index,
                id,
                item_count: schema.item_count,
            }
            .into());
        }
    }
    if req.top_k == 0 {
        return Err(InputError::ZeroTopK.into());
    }
    let mut first_seen = BTreeMap::new();
    for (second, &id) in ids.iter().enumerate() {
        if let Some(&first) = first_seen.get(&id) {
            return Err(RequestError::DuplicateCandidate { first, second, id });
        }
        first_seen.insert(id, second);
    }
    Ok(())
}
