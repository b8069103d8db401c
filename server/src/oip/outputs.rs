//! What a `ModelInfer` request asks for besides its inputs -- `top_k` and which outputs --
//! and the outputs themselves.
//!
//! Outputs always travel as `raw_output_contents` (little-endian, one entry per output, in
//! the order of `outputs`), never as typed `contents`: tritonclient's `InferResult.as_numpy`
//! reads numeric tensors only from the raw entries, and gives an empty array for typed ones.

use std::collections::HashMap;

use rankd_proto::inference::infer_parameter::ParameterChoice;
use rankd_proto::inference::model_infer_request::InferRequestedOutputTensor;
use rankd_proto::inference::model_infer_response::InferOutputTensor;
use rankd_proto::inference::InferParameter;

use super::tensors::{DecodeError, FP32, INT64, ITEM_IDS, SCORES};

/// The request parameter that carries Rank's `top_k`.
pub const TOP_K: &str = "top_k";
/// `top_k` when the request does not set it: rankctl's default.
pub const DEFAULT_TOP_K: u32 = 10;

/// `top_k` from the request parameters: an integer of at least 1, [`DEFAULT_TOP_K`] when
/// absent. A `top_k` larger than N returns all N candidates, as Rank does.
pub fn top_k(parameters: &HashMap<String, InferParameter>) -> Result<u32, DecodeError> {
    let Some(p) = parameters.get(TOP_K) else {
        return Ok(DEFAULT_TOP_K);
    };
    let value: i128 = match &p.parameter_choice {
        Some(ParameterChoice::Int64Param(v)) => i128::from(*v),
        Some(ParameterChoice::Uint64Param(v)) => i128::from(*v),
        Some(other) => {
            let kind = match other {
                ParameterChoice::BoolParam(_) => "bool_param",
                ParameterChoice::StringParam(_) => "string_param",
                _ => "double_param",
            };
            return Err(DecodeError::TopK(format!(
                "must be an int64_param or uint64_param, got {kind}"
            )));
        }
        None => return Err(DecodeError::TopK("has no value".into())),
    };
    u32::try_from(value)
        .ok()
        .filter(|k| *k >= 1)
        .ok_or_else(|| {
            DecodeError::TopK(format!("must be between 1 and {}, got {value}", u32::MAX))
        })
}

/// The two outputs a response can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    ItemIds,
    Scores,
}

/// Which outputs to return, in order: those requested, or both when none are. Output
/// parameters are not supported (Triton's `classification` would change the output's type
/// and meaning; shared-memory outputs need regions rankd does not keep); `binary_data`, an
/// HTTP-only hint, is accepted and ignored.
pub fn requested_outputs(
    requested: &[InferRequestedOutputTensor],
) -> Result<Vec<Output>, DecodeError> {
    if requested.is_empty() {
        return Ok(vec![Output::ItemIds, Output::Scores]);
    }
    let mut outputs = Vec::with_capacity(requested.len());
    for r in requested {
        let output = match r.name.as_str() {
            ITEM_IDS => Output::ItemIds,
            SCORES => Output::Scores,
            other => {
                return Err(DecodeError::UnknownOutput {
                    name: other.to_string(),
                })
            }
        };
        if outputs.contains(&output) {
            return Err(DecodeError::DuplicateOutput {
                name: r.name.clone(),
            });
        }
        if let Some(parameter) = r.parameters.keys().find(|k| *k != "binary_data") {
            return Err(DecodeError::OutputParameter {
                name: r.name.clone(),
                parameter: parameter.clone(),
            });
        }
        outputs.push(output);
    }
    Ok(outputs)
}

/// Encodes `rows` (each a ranking of `k` items: ids and scores, best first) as the
/// `outputs`, returning the output tensors and their `raw_output_contents`, index for index.
pub fn encode(
    outputs: &[Output],
    rows: &[(Vec<i64>, Vec<f32>)],
    k: usize,
) -> (Vec<InferOutputTensor>, Vec<Vec<u8>>) {
    let shape = vec![rows.len() as i64, k as i64];
    outputs
        .iter()
        .map(|output| {
            let (name, datatype, bytes) = match output {
                Output::ItemIds => (
                    ITEM_IDS,
                    INT64,
                    rows.iter()
                        .flat_map(|(ids, _)| ids.iter().flat_map(|id| id.to_le_bytes()))
                        .collect(),
                ),
                Output::Scores => (
                    SCORES,
                    FP32,
                    rows.iter()
                        .flat_map(|(_, scores)| scores.iter().flat_map(|s| s.to_le_bytes()))
                        .collect(),
                ),
            };
            let tensor = InferOutputTensor {
                name: name.into(),
                datatype: datatype.into(),
                shape: shape.clone(),
                parameters: HashMap::new(),
                contents: None,
            };
            (tensor, bytes)
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(choice: Option<ParameterChoice>) -> HashMap<String, InferParameter> {
        HashMap::from([(
            TOP_K.to_string(),
            InferParameter {
                parameter_choice: choice,
            },
        )])
    }

    fn wanted(names: &[(&str, &[&str])]) -> Vec<InferRequestedOutputTensor> {
        names
            .iter()
            .map(|(name, ps)| InferRequestedOutputTensor {
                name: name.to_string(),
                parameters: ps
                    .iter()
                    .map(|p| (p.to_string(), InferParameter::default()))
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn top_k_defaults_and_accepts_signed_and_unsigned_integers() {
        assert_eq!(top_k(&HashMap::new()), Ok(DEFAULT_TOP_K));
        assert_eq!(top_k(&params(Some(ParameterChoice::Int64Param(3)))), Ok(3));
        assert_eq!(top_k(&params(Some(ParameterChoice::Uint64Param(7)))), Ok(7));
    }

    #[test]
    fn top_k_out_of_range_or_of_another_type_is_named() {
        for (choice, message) in [
            (
                Some(ParameterChoice::Int64Param(0)),
                "parameters[\"top_k\"]: must be between 1 and 4294967295, got 0",
            ),
            (
                Some(ParameterChoice::Int64Param(-5)),
                "parameters[\"top_k\"]: must be between 1 and 4294967295, got -5",
            ),
            (
                Some(ParameterChoice::Uint64Param(1 << 40)),
                "parameters[\"top_k\"]: must be between 1 and 4294967295, got 1099511627776",
            ),
            (
                Some(ParameterChoice::StringParam("5".into())),
                "parameters[\"top_k\"]: must be an int64_param or uint64_param, got string_param",
            ),
            (
                Some(ParameterChoice::DoubleParam(5.0)),
                "parameters[\"top_k\"]: must be an int64_param or uint64_param, got double_param",
            ),
            (None, "parameters[\"top_k\"]: has no value"),
        ] {
            let e = top_k(&params(choice)).expect_err(message);
            assert_eq!(e.to_string(), message);
        }
    }

    #[test]
    fn outputs_default_to_both_and_follow_the_requested_order() {
        assert_eq!(
            requested_outputs(&[]),
            Ok(vec![Output::ItemIds, Output::Scores])
        );
        assert_eq!(
            requested_outputs(&wanted(&[(SCORES, &[]), (ITEM_IDS, &["binary_data"])])),
            Ok(vec![Output::Scores, Output::ItemIds])
        );
        assert_eq!(
            requested_outputs(&wanted(&[(SCORES, &[])])),
            Ok(vec![Output::Scores])
        );
    }

    #[test]
    fn unknown_duplicate_or_parameterised_outputs_are_named() {
        let e = requested_outputs(&wanted(&[("logits", &[])])).expect_err("unknown");
        assert!(
            e.to_string()
                .starts_with("requested output 'logits': no such output"),
            "{e}"
        );
        let e = requested_outputs(&wanted(&[(SCORES, &[]), (SCORES, &[])])).expect_err("twice");
        assert_eq!(e.to_string(), "requested output 'scores' is listed twice");
        let e = requested_outputs(&wanted(&[(ITEM_IDS, &["classification"])]))
            .expect_err("classification");
        assert_eq!(
            e.to_string(),
            "requested output 'item_ids': parameter 'classification' is not supported"
        );
    }

    #[test]
    fn outputs_encode_as_little_endian_raw_contents() {
        let rows = vec![(vec![7, 3], vec![0.5, -1.0]), (vec![9, 1], vec![2.0, 1.5])];
        let (tensors, raw) = encode(&[Output::Scores, Output::ItemIds], &rows, 2);
        assert_eq!(tensors.len(), 2);
        assert_eq!(raw.len(), 2);
        assert_eq!(
            (tensors[0].name.as_str(), tensors[0].datatype.as_str()),
            (SCORES, FP32)
        );
        assert_eq!(
            (tensors[1].name.as_str(), tensors[1].datatype.as_str()),
            (ITEM_IDS, INT64)
        );
        for t in &tensors {
            assert_eq!(t.shape, vec![2, 2]);
            assert!(
                t.contents.is_none(),
                "data travels in raw_output_contents only"
            );
        }
        let scores: Vec<f32> = raw[0]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(scores, vec![0.5, -1.0, 2.0, 1.5]);
        let ids: Vec<i64> = raw[1]
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        assert_eq!(ids, vec![7, 3, 9, 1]);
    }
}
