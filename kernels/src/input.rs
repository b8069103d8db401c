//! Request shapes shared by the engine and the server, and the checks that keep a request
//! from ever reaching libtorch with data that could crash it (an out-of-range id would be a
//! device-side assert on CUDA, which poisons the whole context).
//!
//! The checks themselves live in [`rankd_proto::request`], free of libtorch, so the server's
//! Rank handler, this engine and the fuzz targets (fuzz/) all run the same code; this module
//! applies them to a loaded model's [`ModelInfo`].

use rankd_proto::request::{self, Schema};

use crate::error::InputError;
use crate::ModelInfo;

pub use rankd_proto::request::RankInput;

/// The best `min(top_k, candidates)` items, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub ids: Vec<i64>,
    pub scores: Vec<f32>,
}

impl ModelInfo {
    /// The input schema a request is checked against.
    pub fn schema(&self) -> Schema {
        Schema {
            query_dim: self.query_dim,
            item_count: self.item_count,
        }
    }
}

/// Checks `input` against the model's schema ([`request::validate`]). O(query +
/// candidates), no allocation.
pub fn validate(info: &ModelInfo, input: &RankInput<'_>) -> Result<(), InputError> {
    request::validate(&info.schema(), input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Precision;

    #[test]
    fn checks_against_the_models_schema() {
        let info = ModelInfo {
            name: "m".into(),
            version: "1".into(),
            query_dim: 2,
            item_dim: 3,
            item_count: 10,
            device: "cpu".into(),
            precision: Precision::Fp32,
        };
        let input = |query, candidates| RankInput {
            query,
            candidates,
            top_k: 5,
        };
        assert_eq!(validate(&info, &input(&[0.0, 1.0], &[0, 9])), Ok(()));
        assert_eq!(
            validate(&info, &input(&[0.0], &[1])),
            Err(InputError::QueryDim {
                expected: 2,
                actual: 1
            })
        );
        assert_eq!(
            validate(&info, &input(&[0.0, 1.0], &[10])),
            Err(InputError::UnknownId {
                index: 0,
                id: 10,
                item_count: 10
            })
        );
    }
}
