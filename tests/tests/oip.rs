//! The Open Inference Protocol (`inference.GRPCInferenceService`) against a real node: every
//! RPC, and ModelInfer answers equal to the native Rank API's (raw and typed tensors, one row
//! and a batch). Malformed requests are in oip_errors.rs.

mod oip_support;

use std::collections::HashMap;

use rankd_proto::inference::model_infer_request::InferRequestedOutputTensor;
use rankd_proto::inference::{
    ModelMetadataRequest, ModelReadyRequest, ServerLiveRequest, ServerMetadataRequest,
    ServerReadyRequest,
};
use rankd_tests::{example_query, golden_set, init, manifest, rank_request, Node, RankResponse};
use tonic::Code;

use oip_support::*;

/// Both APIs run the same model on the same device: scores agree to float noise at most.
const SCORE_TOLERANCE: f32 = 1e-4;

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
