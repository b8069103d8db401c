//! The Open Inference Protocol's ModelInfer against a real node: the exact status of each
//! malformed tensor and bad value, and the node serving on afterwards.

mod oip_support;

use std::collections::HashMap;

use rankd_proto::inference::model_infer_request::InferRequestedOutputTensor;
use rankd_proto::inference::{InferTensorContents, ModelInferRequest};
use rankd_tests::{example_query, init, rank_request, Node};
use tonic::Code;

use oip_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tensors_and_bad_values_get_exact_statuses() {
    init();
    let (name, _) = model();
    let q = example_query();
    let node = Node::builder()
        .max_candidates(MAX_CANDIDATES)
        .queue_capacity(8)
        .max_batch_size(4)
        .start()
        .await;
    let mut c = client(&node).await;
    let good = vec![(q.query.clone(), q.candidates[..20].to_vec())];
    let two = vec![good[0].clone(), good[0].clone()];

    tracing::info!("--- malformed tensors: INVALID_ARGUMENT naming the tensor");
    let mut cases: Vec<(&str, ModelInferRequest, &str)> = Vec::new();
    let mut r = typed_request(&good, None);
    r.inputs[0].datatype = "FP64".into();
    cases.push(("wrong query datatype", r, "input 'query': datatype 'FP64'"));
    let mut r = raw_request(&good, None);
    r.inputs[1].datatype = "INT32".into();
    cases.push((
        "wrong candidate_ids datatype",
        r,
        "input 'candidate_ids': datatype 'INT32'",
    ));
    let mut r = typed_request(&good, None);
    r.inputs[0].shape = vec![1, 31];
    cases.push((
        "typed shape disagrees with the data",
        r,
        "input 'query': shape [1, 31] holds 31 elements",
    ));
    let mut r = raw_request(&good, None);
    r.inputs[1].shape = vec![1, 21];
    cases.push((
        "raw shape disagrees with the data",
        r,
        "input 'candidate_ids': shape [1, 21] needs 168 bytes",
    ));
    let mut r = typed_request(&good, None);
    r.inputs[0].shape = vec![1, 1, 32];
    cases.push((
        "three dimensions",
        r,
        "input 'query': shape [1, 1, 32] must be [B, Dq]",
    ));
    let mut r = typed_request(&good, None);
    r.inputs.remove(0);
    cases.push(("missing input", r, "input 'query' is missing"));
    let mut r = typed_request(&good, None);
    r.inputs[1].name = "items".into();
    cases.push(("unknown input", r, "input 'items': no such input"));
    let mut r = typed_request(&two, None);
    r.inputs[1] = typed_request(&good, None).inputs[1].clone();
    cases.push((
        "batch sizes differ",
        r,
        "inputs 'query' and 'candidate_ids' disagree on the batch size: 2 rows against 1",
    ));
    let mut r = raw_request(&good, None);
    r.inputs[0].contents = typed_request(&good, None).inputs[0].contents.clone();
    cases.push((
        "raw and typed together",
        r,
        "input 'query': data is in both contents and raw_input_contents",
    ));
    let mut r = raw_request(&good, None);
    r.raw_input_contents.pop();
    cases.push((
        "one raw entry for two inputs",
        r,
        "raw_input_contents has 1 entries for 2 inputs ('query', 'candidate_ids')",
    ));
    let mut r = typed_request(&good, None);
    r.inputs[1].contents = Some(InferTensorContents {
        int_contents: vec![1; 20],
        ..Default::default()
    });
    cases.push((
        "ids in int_contents",
        r,
        "input 'candidate_ids': INT64 data belongs in contents.int64_contents",
    ));
    cases.push((
        "top_k zero",
        typed_request(&good, Some(0)),
        "parameters[\"top_k\"]: must be between 1",
    ));
    let mut r = typed_request(&good, None);
    r.outputs = vec![InferRequestedOutputTensor {
        name: "logits".into(),
        parameters: HashMap::new(),
    }];
    cases.push((
        "unknown output",
        r,
        "requested output 'logits': no such output",
    ));
    for (what, req, message) in cases {
        let s = refused(&mut c, req, what).await;
        assert_eq!(s.code(), Code::InvalidArgument, "{what}: {s:?}");
        assert!(
            s.message().starts_with(message),
            "{what}: {:?} does not start with {message:?}",
            s.message()
        );
    }

    tracing::info!("--- bad values: Rank's own code and message, prefixed by the row");
    let mut nan = two.clone();
    nan[1].0[3] = f32::NAN;
    let mut unknown_id = good.clone();
    unknown_id[0].1[3] = i64::MAX;
    let mut duplicate = good.clone();
    duplicate[0].1[5] = duplicate[0].1[2];
    let short = vec![(q.query[..31].to_vec(), good[0].1.clone())];
    let too_many = vec![(
        q.query.clone(),
        (0..=MAX_CANDIDATES as i64).collect::<Vec<_>>(),
    )];
    let empty = vec![(q.query.clone(), Vec::new())];
    for (what, rows, row, code) in [
        ("NaN feature", &nan, 1, Code::InvalidArgument),
        ("unknown id", &unknown_id, 0, Code::InvalidArgument),
        ("duplicate id", &duplicate, 0, Code::InvalidArgument),
        ("wrong Dq", &short, 0, Code::InvalidArgument),
        ("too many candidates", &too_many, 0, Code::OutOfRange),
        ("no candidates", &empty, 0, Code::InvalidArgument),
    ] {
        let rank = node
            .rank_client()
            .await
            .rank(rank_request(&rows[row].0, &rows[row].1, 10))
            .await
            .expect_err(what);
        assert_eq!(rank.code(), code, "{what}: Rank gave {rank:?}");
        for (form, req) in [
            ("typed", typed_request(rows, None)),
            ("raw", raw_request(rows, None)),
        ] {
            let s = refused(&mut c, req, what).await;
            assert_eq!(s.code(), code, "{what} {form}: {s:?}");
            assert_eq!(
                s.message(),
                format!("row {row}: {}", rank.message()),
                "{what} {form}"
            );
        }
    }

    tracing::info!("--- model, version and batch limits");
    let mut r = typed_request(&good, None);
    r.model_name = "other-model".into();
    let s = refused(&mut c, r, "unknown model").await;
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(s.message().contains("'other-model'"), "{s:?}");
    let mut r = typed_request(&good, None);
    r.model_version = "999".into();
    let s = refused(&mut c, r, "unknown version").await;
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(
        s.message()
            .contains(&format!("model '{name}' version '999'")),
        "{s:?}"
    );
    let nine = vec![good[0].clone(); 9];
    let s = refused(
        &mut c,
        typed_request(&nine, None),
        "more rows than the queue holds",
    )
    .await;
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    assert!(
        s.message().starts_with("input 'query': 9 rows exceed"),
        "{s:?}"
    );

    tracing::info!("--- the node still serves after every refusal");
    let resp = c
        .model_infer(raw_request(&two, Some(5)))
        .await
        .expect("a good call")
        .into_inner();
    assert_eq!(rows_of(&resp).len(), 2);
}
