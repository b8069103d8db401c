//! The Open Inference Protocol (`inference.GRPCInferenceService`) against a real node: every
//! RPC, ModelInfer answers equal to the native Rank API's (raw and typed tensors, one row
//! and a batch), and the exact status of each malformed request.

use std::collections::HashMap;

use rankd_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use rankd_proto::inference::infer_parameter::ParameterChoice;
use rankd_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use rankd_proto::inference::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
    ModelMetadataRequest, ModelReadyRequest, ServerLiveRequest, ServerMetadataRequest,
    ServerReadyRequest,
};
use rankd_tests::{example_query, golden_set, init, manifest, rank_request, Node, RankResponse};
use tonic::transport::Channel;
use tonic::Code;

type Client = GrpcInferenceServiceClient<Channel>;

/// Both APIs run the same model on the same device: scores agree to float noise at most.
const SCORE_TOLERANCE: f32 = 1e-4;
const MAX_CANDIDATES: usize = 2000;

fn model() -> (String, String) {
    let m = manifest();
    let field = |k: &str| m[k].as_str().expect("manifest field").to_string();
    (field("name"), field("version"))
}

async fn client(node: &Node) -> Client {
    GrpcInferenceServiceClient::new(node.channel().await)
}

fn tensor(
    name: &str,
    datatype: &str,
    shape: &[usize],
    contents: Option<InferTensorContents>,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.iter().map(|&d| d as i64).collect(),
        parameters: HashMap::new(),
        contents,
    }
}

fn top_k_param(k: i64) -> HashMap<String, InferParameter> {
    HashMap::from([(
        "top_k".to_string(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(k)),
        },
    )])
}

/// A ModelInfer request for `rows` (query, candidates), data in typed `contents`.
fn typed_request(rows: &[(Vec<f32>, Vec<i64>)], top_k: Option<i64>) -> ModelInferRequest {
    let (dq, n) = (rows[0].0.len(), rows[0].1.len());
    let query: Vec<f32> = rows.iter().flat_map(|r| r.0.clone()).collect();
    let ids: Vec<i64> = rows.iter().flat_map(|r| r.1.clone()).collect();
    ModelInferRequest {
        model_name: model().0,
        model_version: String::new(),
        id: "oip-typed".into(),
        parameters: top_k.map(top_k_param).unwrap_or_default(),
        inputs: vec![
            tensor(
                "query",
                "FP32",
                &[rows.len(), dq],
                Some(InferTensorContents {
                    fp32_contents: query,
                    ..Default::default()
                }),
            ),
            tensor(
                "candidate_ids",
                "INT64",
                &[rows.len(), n],
                Some(InferTensorContents {
                    int64_contents: ids,
                    ..Default::default()
                }),
            ),
        ],
        outputs: Vec::new(),
        raw_input_contents: Vec::new(),
    }
}

/// The same request with its data in `raw_input_contents` (little-endian), as Triton
/// clients send it.
fn raw_request(rows: &[(Vec<f32>, Vec<i64>)], top_k: Option<i64>) -> ModelInferRequest {
    let mut req = typed_request(rows, top_k);
    req.id = "oip-raw".into();
    req.raw_input_contents = req
        .inputs
        .iter_mut()
        .map(|t| {
            let c = t.contents.take().unwrap_or_default();
            let f: Vec<u8> = c
                .fp32_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let i: Vec<u8> = c
                .int64_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            [f, i].concat()
        })
        .collect();
    req
}

/// The response's outputs as (ids, scores) rows, checking names, types and shapes.
fn rows_of(resp: &ModelInferResponse) -> Vec<(Vec<i64>, Vec<f32>)> {
    assert_eq!(resp.outputs.len(), 2, "item_ids and scores by default");
    assert_eq!(
        resp.raw_output_contents.len(),
        2,
        "outputs travel as raw_output_contents"
    );
    let (ids_t, scores_t) = (&resp.outputs[0], &resp.outputs[1]);
    assert_eq!(
        (ids_t.name.as_str(), ids_t.datatype.as_str()),
        ("item_ids", "INT64")
    );
    assert_eq!(
        (scores_t.name.as_str(), scores_t.datatype.as_str()),
        ("scores", "FP32")
    );
    assert_eq!(ids_t.shape, scores_t.shape);
    let (b, k) = (ids_t.shape[0] as usize, ids_t.shape[1] as usize);
    let ids: Vec<i64> = resp.raw_output_contents[0]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let scores: Vec<f32> = resp.raw_output_contents[1]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    assert_eq!(
        (ids.len(), scores.len()),
        (b * k, b * k),
        "data length matches the shape"
    );
    (0..b)
        .map(|r| {
            (
                ids[r * k..(r + 1) * k].to_vec(),
                scores[r * k..(r + 1) * k].to_vec(),
            )
        })
        .collect()
}

fn assert_same_ranking(got: &(Vec<i64>, Vec<f32>), native: &RankResponse, context: &str) {
    let ids: Vec<i64> = native.items.iter().map(|i| i.id).collect();
    assert_eq!(got.0, ids, "{context}: ids differ from Rank's");
    for (pos, (s, item)) in got.1.iter().zip(&native.items).enumerate() {
        assert!(
            (s - item.score).abs() <= SCORE_TOLERANCE,
            "{context}: item {pos} scored {s}, Rank gave {}",
            item.score
        );
    }
}

async fn native(node: &Node, query: &[f32], candidates: &[i64], top_k: u32) -> RankResponse {
    node.rank_client()
        .await
        .rank(rank_request(query, candidates, top_k))
        .await
        .expect("native rank")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metadata_rpcs_describe_the_active_model() {
    init();
    let (name, version) = model();
    let node = Node::start().await;
    let mut c = client(&node).await;

    tracing::info!("--- ServerLive, ServerReady, ServerMetadata");
    assert!(
        c.server_live(ServerLiveRequest {})
            .await
            .expect("live")
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(ServerReadyRequest {})
            .await
            .expect("ready")
            .into_inner()
            .ready
    );
    let meta = c
        .server_metadata(ServerMetadataRequest {})
        .await
        .expect("server metadata")
        .into_inner();
    assert_eq!(meta.name, "rankd");
    assert!(!meta.version.is_empty());

    tracing::info!("--- ModelReady: the active model, any or its own version");
    let ready = |name: &str, version: &str| ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    for v in ["", version.as_str()] {
        let r = c
            .model_ready(ready(&name, v))
            .await
            .expect("model ready")
            .into_inner();
        assert!(r.ready, "version {v:?}");
    }
    let s = c
        .model_ready(ready("other-model", ""))
        .await
        .expect_err("unknown model");
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(s.message().contains("'other-model'"), "{s:?}");
    let s = c
        .model_ready(ready(&name, "999"))
        .await
        .expect_err("unknown version");
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(s.message().contains("'999'"), "{s:?}");

    tracing::info!("--- ModelMetadata");
    let m = c
        .model_metadata(ModelMetadataRequest {
            name: name.clone(),
            version: String::new(),
        })
        .await
        .expect("model metadata")
        .into_inner();
    assert_eq!(m.name, name);
    assert_eq!(m.versions, vec![version.clone()]);
    assert_eq!(m.platform, "pytorch_libtorch");
    let described = |ts: &[rankd_proto::inference::model_metadata_response::TensorMetadata]| {
        ts.iter()
            .map(|t| (t.name.clone(), t.datatype.clone(), t.shape.clone()))
            .collect::<Vec<_>>()
    };
    let dq = example_query().query.len() as i64;
    assert_eq!(
        described(&m.inputs),
        vec![
            ("query".to_string(), "FP32".to_string(), vec![-1, dq]),
            (
                "candidate_ids".to_string(),
                "INT64".to_string(),
                vec![-1, -1]
            ),
        ]
    );
    assert_eq!(
        described(&m.outputs),
        vec![
            ("item_ids".to_string(), "INT64".to_string(), vec![-1, -1]),
            ("scores".to_string(), "FP32".to_string(), vec![-1, -1]),
        ]
    );
    assert_eq!(m.properties.get("node_id"), Some(&node.id().to_string()));
    assert_eq!(
        m.properties.get("item_count").map(String::as_str),
        manifest()["item_count"]
            .as_u64()
            .map(|n| n.to_string())
            .as_deref(),
    );
    for (n, v, what) in [
        ("other-model", "", "'other-model'"),
        (name.as_str(), "999", "'999'"),
    ] {
        let s = c
            .model_metadata(ModelMetadataRequest {
                name: n.into(),
                version: v.into(),
            })
            .await
            .expect_err(what);
        assert_eq!(s.code(), Code::NotFound, "{s:?}");
        assert!(s.message().contains(what), "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_answers_equal_native_rank_for_raw_and_typed_tensors() {
    init();
    let (name, version) = model();
    let q = example_query();
    let golden = golden_set().cases.remove(0);
    let node = Node::start().await;
    let mut c = client(&node).await;

    for (what, query, candidates, top_k) in [
        (
            "example query",
            q.query.clone(),
            q.candidates.clone(),
            10u32,
        ),
        (
            "golden case 0",
            golden.query.clone(),
            golden.candidates.clone(),
            golden.top_k,
        ),
    ] {
        let want = native(&node, &query, &candidates, top_k).await;
        let rows = vec![(query, candidates)];
        for (form, req) in [
            ("typed", typed_request(&rows, Some(i64::from(top_k)))),
            ("raw", raw_request(&rows, Some(i64::from(top_k)))),
        ] {
            tracing::info!("--- {what}, {form} contents");
            let id = req.id.clone();
            let resp = c
                .model_infer(req)
                .await
                .unwrap_or_else(|s| panic!("{what} {form}: {s:?}"))
                .into_inner();
            assert_eq!(resp.model_name, name);
            assert_eq!(resp.model_version, version, "the agreed active version");
            assert_eq!(resp.id, id, "the request id is echoed");
            assert!(resp.outputs.iter().all(|t| t.contents.is_none()));
            let got = rows_of(&resp);
            assert_eq!(got.len(), 1);
            assert_same_ranking(&got[0], &want, &format!("{what}, {form}"));
        }
    }

    tracing::info!("--- top_k defaults to 10; a top_k above N returns all N");
    let rows = vec![(q.query.clone(), q.candidates[..5].to_vec())];
    let resp = c
        .model_infer(raw_request(
            &[(q.query.clone(), q.candidates.clone())],
            None,
        ))
        .await
        .expect("default top_k");
    assert_eq!(rows_of(resp.get_ref())[0].0.len(), 10);
    let resp = c
        .model_infer(raw_request(&rows, Some(50)))
        .await
        .expect("large top_k")
        .into_inner();
    assert_same_ranking(
        &rows_of(&resp)[0],
        &native(&node, &rows[0].0, &rows[0].1, 50).await,
        "top_k above N",
    );

    tracing::info!("--- explicit version, and one requested output");
    let mut req = typed_request(&rows, Some(3));
    req.model_version = version.clone();
    req.outputs = vec![InferRequestedOutputTensor {
        name: "scores".into(),
        parameters: HashMap::new(),
    }];
    let resp = c.model_infer(req).await.expect("scores only").into_inner();
    assert_eq!(resp.outputs.len(), 1);
    assert_eq!(resp.outputs[0].name, "scores");
    assert_eq!(resp.outputs[0].shape, vec![1, 3]);
    assert_eq!(resp.raw_output_contents.len(), 1);
    assert_eq!(resp.raw_output_contents[0].len(), 3 * 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_two_rows_ranks_each_row_as_rank_does_in_one_batch() {
    init();
    let q = example_query();
    let golden = golden_set().cases.remove(0);
    // One worker and a generous batching window: the two rows must share one batch.
    let node = Node::builder()
        .workers(1)
        .max_queue_delay_us(50_000)
        .request_timeout_ms(30_000)
        .start()
        .await;
    let mut c = client(&node).await;
    let n = q.candidates.len() / 2;
    let rows = vec![
        (q.query.clone(), q.candidates[..n].to_vec()),
        (golden.query.clone(), q.candidates[n..2 * n].to_vec()),
    ];
    let want = [
        native(&node, &rows[0].0, &rows[0].1, 7).await,
        native(&node, &rows[1].0, &rows[1].1, 7).await,
    ];
    let batches = |m: &rankd_tests::MetricsSnapshot| {
        (
            m.value("rankd_batch_size_count").unwrap_or(0.0),
            m.value("rankd_batch_size_sum").unwrap_or(0.0),
        )
    };
    let before = batches(&node.metrics().await);
    for (form, req) in [
        ("raw", raw_request(&rows, Some(7))),
        ("typed", typed_request(&rows, Some(7))),
    ] {
        let resp = c
            .model_infer(req)
            .await
            .unwrap_or_else(|s| panic!("{form}: {s:?}"))
            .into_inner();
        let got = rows_of(&resp);
        assert_eq!(got.len(), 2, "{form}");
        assert_eq!(resp.outputs[0].shape, vec![2, 7]);
        for (r, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_same_ranking(g, w, &format!("{form} row {r}"));
        }
    }
    let after = batches(&node.metrics().await);
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (2.0, 4.0),
        "two calls of two rows each ran as two batches of two"
    );
}

/// Sends `req` and returns its status, which must be an error.
async fn refused(c: &mut Client, req: ModelInferRequest, what: &str) -> tonic::Status {
    match c.model_infer(req).await {
        Ok(r) => panic!(
            "{what}: expected an error, got {:?}",
            r.into_inner().outputs
        ),
        Err(s) => s,
    }
}

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
