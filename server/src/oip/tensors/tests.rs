//! Decoding rules, one test per rule; every error names its tensor.

use std::collections::HashMap;

use rankd_proto::inference::model_infer_request::InferInputTensor;
use rankd_proto::inference::{InferParameter, InferTensorContents};

use super::*;

fn typed(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: InferTensorContents,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: HashMap::new(),
        contents: Some(contents),
    }
}

fn bare(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: HashMap::new(),
        contents: None,
    }
}

fn f32s(v: &[f32]) -> InferTensorContents {
    InferTensorContents {
        fp32_contents: v.to_vec(),
        ..Default::default()
    }
}

fn i64s(v: &[i64]) -> InferTensorContents {
    InferTensorContents {
        int64_contents: v.to_vec(),
        ..Default::default()
    }
}

fn le_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn le_i64(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Two rows, Dq = 2, N = 3.
fn good_typed() -> Vec<InferInputTensor> {
    vec![
        typed(QUERY, FP32, &[2, 2], f32s(&[0.5, 1.5, -2.0, 3.25])),
        typed(CANDIDATES, INT64, &[2, 3], i64s(&[1, 2, 3, 40, 50, 60])),
    ]
}

fn expected() -> Batch {
    Batch {
        rows: 2,
        query_dim: 2,
        candidates_per_row: 3,
        query: vec![0.5, 1.5, -2.0, 3.25],
        candidates: vec![1, 2, 3, 40, 50, 60],
    }
}

fn err(inputs: &[InferInputTensor], raw: &[Vec<u8>]) -> DecodeError {
    match decode(inputs, raw) {
        Ok(b) => panic!("decoded {b:?}, expected an error"),
        Err(e) => e,
    }
}

#[test]
fn typed_contents_decode_row_major() {
    let batch = decode(&good_typed(), &[]).expect("decode");
    assert_eq!(batch, expected());
    assert_eq!(batch.row(0), (&[0.5, 1.5][..], &[1, 2, 3][..]));
    assert_eq!(batch.row(1), (&[-2.0, 3.25][..], &[40, 50, 60][..]));
}

#[test]
fn raw_contents_are_little_endian_and_follow_input_order() {
    let e = expected();
    // candidate_ids first: raw entries follow `inputs`, not a fixed order.
    let inputs = vec![bare(CANDIDATES, INT64, &[2, 3]), bare(QUERY, FP32, &[2, 2])];
    let raw = vec![le_i64(&e.candidates), le_f32(&e.query)];
    assert_eq!(decode(&inputs, &raw).expect("decode"), e);
}

#[test]
fn typed_inputs_in_either_order() {
    let mut inputs = good_typed();
    inputs.reverse();
    assert_eq!(decode(&inputs, &[]).expect("decode"), expected());
}

#[test]
fn missing_unknown_and_duplicate_inputs_are_named() {
    let inputs = good_typed();
    let e = err(&inputs[..1], &[]);
    assert_eq!(e, DecodeError::MissingInput { name: CANDIDATES });
    assert!(
        e.to_string()
            .starts_with("input 'candidate_ids' is missing"),
        "{e}"
    );
    assert_eq!(
        err(&inputs[1..], &[]),
        DecodeError::MissingInput { name: QUERY }
    );

    let mut unknown = good_typed();
    unknown.push(bare("items", INT64, &[2, 0]));
    let e = err(&unknown, &[]);
    assert!(
        e.to_string().starts_with("input 'items': no such input"),
        "{e}"
    );

    let mut twice = good_typed();
    twice.push(twice[0].clone());
    assert_eq!(
        err(&twice, &[]),
        DecodeError::DuplicateInput { name: QUERY }
    );
}

#[test]
fn datatypes_must_match_exactly() {
    let mut inputs = good_typed();
    inputs[0].datatype = "FP64".into();
    let e = err(&inputs, &[]);
    assert_eq!(
        e.to_string(),
        "input 'query': datatype 'FP64' is not accepted; it must be FP32"
    );
    let mut inputs = good_typed();
    inputs[1].datatype = "INT32".into();
    assert!(err(&inputs, &[])
        .to_string()
        .starts_with("input 'candidate_ids': datatype 'INT32'"));
    let mut inputs = good_typed();
    inputs[0].datatype = "fp32".into();
    assert!(matches!(
        err(&inputs, &[]),
        DecodeError::Datatype { name: QUERY, .. }
    ));
}

#[test]
fn shapes_must_have_two_non_negative_dimensions() {
    for shape in [vec![4], vec![1, 2, 2], vec![], vec![-1, 4], vec![2, -2]] {
        let mut inputs = good_typed();
        inputs[0].shape = shape.clone();
        let e = err(&inputs, &[]);
        assert!(
            matches!(&e, DecodeError::Shape { name: QUERY, shape: s, .. } if *s == shape),
            "{shape:?}: {e}"
        );
        assert!(e.to_string().contains("must be [B, Dq]"), "{e}");
    }
    let mut inputs = good_typed();
    inputs[1].shape = vec![6];
    assert!(err(&inputs, &[])
        .to_string()
        .starts_with("input 'candidate_ids': shape [6] must be [B, N]"));
}

#[test]
fn typed_length_must_match_the_shape() {
    let mut inputs = good_typed();
    inputs[0].shape = vec![2, 3];
    let e = err(&inputs, &[]);
    assert_eq!(
        e.to_string(),
        "input 'query': shape [2, 3] holds 6 elements, but contents.fp32_contents has 4"
    );
    // A shape whose element count overflows is just "too many", never a panic.
    let mut inputs = good_typed();
    inputs[1].shape = vec![i64::MAX, i64::MAX];
    assert!(matches!(
        err(&inputs, &[]),
        DecodeError::Length {
            name: CANDIDATES,
            got: 6,
            ..
        }
    ));
}

#[test]
fn raw_length_must_match_the_shape_in_bytes() {
    let e = expected();
    let inputs = vec![bare(QUERY, FP32, &[2, 2]), bare(CANDIDATES, INT64, &[2, 3])];
    let mut short = le_f32(&e.query);
    short.pop();
    let err_ = err(&inputs, &[short, le_i64(&e.candidates)]);
    assert_eq!(
        err_.to_string(),
        "input 'query': shape [2, 2] needs 16 bytes of little-endian FP32, but raw_input_contents[0] has 15"
    );
    // INT64 ids sent as 4-byte integers are caught by length.
    let ids32: Vec<u8> = e
        .candidates
        .iter()
        .flat_map(|x| (*x as i32).to_le_bytes())
        .collect();
    let err_ = err(&inputs, &[le_f32(&e.query), ids32]);
    assert!(matches!(
        err_,
        DecodeError::RawLength {
            name: CANDIDATES,
            index: 1,
            want: 48,
            got: 24,
            ..
        }
    ));
}

#[test]
fn raw_entries_must_match_the_inputs_one_to_one() {
    let e = expected();
    let inputs = vec![bare(QUERY, FP32, &[2, 2]), bare(CANDIDATES, INT64, &[2, 3])];
    let err_ = err(&inputs, &[le_f32(&e.query)]);
    assert_eq!(
        err_.to_string(),
        "raw_input_contents has 1 entries for 2 inputs ('query', 'candidate_ids'); give one per input, in the order of inputs"
    );
}

#[test]
fn raw_and_typed_together_are_refused() {
    let e = expected();
    let mut inputs = good_typed();
    inputs[0].contents = None;
    let err_ = err(&inputs, &[le_f32(&e.query), le_i64(&e.candidates)]);
    assert_eq!(err_, DecodeError::RawAndTyped { name: CANDIDATES });
    assert!(err_.to_string().contains("'candidate_ids'"));
    // An empty contents message next to raw data is no data at all.
    let mut inputs = vec![bare(QUERY, FP32, &[2, 2]), bare(CANDIDATES, INT64, &[2, 3])];
    inputs[0].contents = Some(InferTensorContents::default());
    assert_eq!(
        decode(&inputs, &[le_f32(&e.query), le_i64(&e.candidates)]).expect("decode"),
        e
    );
}

#[test]
fn typed_data_must_be_in_the_field_of_its_datatype() {
    let mut inputs = good_typed();
    inputs[1].contents = Some(InferTensorContents {
        int_contents: vec![1, 2, 3, 40, 50, 60],
        ..Default::default()
    });
    let e = err(&inputs, &[]);
    assert_eq!(
        e.to_string(),
        "input 'candidate_ids': INT64 data belongs in contents.int64_contents, but contents.int_contents is set"
    );
    let mut inputs = good_typed();
    inputs[0].contents = Some(InferTensorContents {
        fp32_contents: vec![0.0; 4],
        fp64_contents: vec![0.0; 4],
        ..Default::default()
    });
    assert!(matches!(
        err(&inputs, &[]),
        DecodeError::WrongContents {
            name: QUERY,
            got: "fp64_contents",
            ..
        }
    ));
}

#[test]
fn batch_sizes_must_agree_and_be_positive() {
    let inputs = vec![
        typed(QUERY, FP32, &[1, 2], f32s(&[0.5, 1.5])),
        typed(CANDIDATES, INT64, &[2, 3], i64s(&[1, 2, 3, 4, 5, 6])),
    ];
    let e = err(&inputs, &[]);
    assert_eq!(
        e,
        DecodeError::BatchMismatch {
            query: 1,
            candidates: 2
        }
    );
    assert!(e.to_string().contains("'query' and 'candidate_ids'"));

    let empty = vec![bare(QUERY, FP32, &[0, 2]), bare(CANDIDATES, INT64, &[0, 3])];
    assert_eq!(err(&empty, &[]), DecodeError::EmptyBatch);
}

#[test]
fn zero_width_tensors_need_no_data() {
    // Decodes; Rank then refuses the empty rows with its own messages.
    let inputs = vec![bare(QUERY, FP32, &[1, 0]), bare(CANDIDATES, INT64, &[1, 0])];
    let batch = decode(&inputs, &[]).expect("decode");
    assert_eq!(batch.row(0), (&[][..], &[][..]));
    let missing = vec![bare(QUERY, FP32, &[1, 2]), bare(CANDIDATES, INT64, &[1, 0])];
    assert!(matches!(
        err(&missing, &[]),
        DecodeError::Length {
            name: QUERY,
            want: 2,
            got: 0,
            ..
        }
    ));
}

#[test]
fn shared_memory_inputs_are_refused_by_name() {
    let mut inputs = good_typed();
    inputs[1].parameters.insert(
        "shared_memory_region".into(),
        InferParameter {
            parameter_choice: None,
        },
    );
    assert_eq!(
        err(&inputs, &[]),
        DecodeError::SharedMemory {
            name: CANDIDATES.into()
        }
    );
}
