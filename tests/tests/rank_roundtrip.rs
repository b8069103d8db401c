//! Rank round trips against a real node: golden rankings, response metadata, and many
//! concurrent calls coalescing into batches without changing any answer.

use rankd_tests::{assert_matches_golden, golden_set, init, manifest, Node, RankRequest};

/// Scores may differ from the exporter's by float noise (batching, BLAS paths).
const SCORE_TOLERANCE: f32 = 1e-3;

fn golden_request(case: &rankd_tests::GoldenCase, request_id: &str) -> RankRequest {
    RankRequest {
        request_id: request_id.to_string(),
        query: case.query.clone(),
        candidate_ids: case.candidates.clone(),
        top_k: case.top_k,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_cases_rank_exactly_as_exported() {
    init();
    let golden = golden_set();
    let manifest = manifest();
    let node = Node::start().await;
    let mut client = node.rank_client().await;

    for (i, case) in golden.cases.iter().enumerate() {
        tracing::info!(
            "--- golden case {i}: {} candidates, top {}",
            case.candidates.len(),
            case.top_k
        );
        let id = format!("golden-{i}");
        let resp = client
            .rank(golden_request(case, &id))
            .await
            .unwrap_or_else(|s| panic!("golden case {i}: {s:?}"))
            .into_inner();
        assert_matches_golden(&resp, case, SCORE_TOLERANCE, &format!("golden case {i}"));
        assert_eq!(resp.request_id, id, "the client's request id is echoed");
        assert_eq!(resp.model_name, manifest["name"].as_str().unwrap());
        assert_eq!(resp.model_version, manifest["version"].as_str().unwrap());
        assert_eq!(resp.node_id, node.id());
        let fence = resp.fence.as_ref().expect("every response carries a fence");
        assert_eq!(
            fence.model_version, resp.model_version,
            "the fence names the version that answered"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_generated_when_absent() {
    init();
    let case = golden_set().cases.remove(0);
    let node = Node::start().await;
    let mut client = node.rank_client().await;

    tracing::info!("--- two calls without a request id");
    let first = client
        .rank(golden_request(&case, ""))
        .await
        .expect("rank")
        .into_inner();
    let second = client
        .rank(golden_request(&case, ""))
        .await
        .expect("rank")
        .into_inner();
    assert!(!first.request_id.is_empty(), "a request id is generated");
    assert!(!second.request_id.is_empty(), "a request id is generated");
    assert_ne!(
        first.request_id, second.request_id,
        "generated request ids are unique"
    );
    assert_matches_golden(&first, &case, SCORE_TOLERANCE, "first call");
    assert_matches_golden(&second, &case, SCORE_TOLERANCE, "second call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_batch_without_changing_answers() {
    init();
    const CLIENTS: usize = 4;
    const CALLS_PER_CLIENT: usize = 16;
    const TOTAL: usize = CLIENTS * CALLS_PER_CLIENT;
    const MAX_BATCH: usize = 16;
    let golden = golden_set();
    // A generous server deadline: this test is about answers, not about a slow CI machine.
    let node = Node::builder()
        .max_batch_size(MAX_BATCH)
        .max_queue_delay_us(2_000)
        .request_timeout_ms(30_000)
        .start()
        .await;

    tracing::info!("--- {TOTAL} calls in parallel from {CLIENTS} connections");
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = node.rank_client().await;
        for n in 0..CALLS_PER_CLIENT {
            let mut client = client.clone();
            let index = (c * CALLS_PER_CLIENT + n) % golden.cases.len();
            let case = golden.cases[index].clone();
            let id = format!("c{c}-n{n}");
            tasks.push(tokio::spawn(async move {
                let resp = client.rank(golden_request(&case, &id)).await;
                (id, index, case, resp)
            }));
        }
    }
    for task in tasks {
        let (id, index, case, resp) = task.await.expect("the call task");
        let resp = resp
            .unwrap_or_else(|s| panic!("call {id}: {s:?}"))
            .into_inner();
        assert_eq!(resp.request_id, id, "each response answers its own request");
        assert_matches_golden(
            &resp,
            &case,
            SCORE_TOLERANCE,
            &format!("call {id} (golden case {index})"),
        );
    }

    tracing::info!("--- batching metrics account for every call");
    let m = node.metrics().await;
    let ok = m.value("rankd_requests_total{method=\"/rankd.v1.Ranker/Rank\",code=\"OK\"}");
    assert_eq!(ok, Some(TOTAL as f64));
    let batched_requests = m
        .value("rankd_batch_size_sum")
        .expect("rankd_batch_size_sum");
    let batches = m
        .value("rankd_batch_size_count")
        .expect("rankd_batch_size_count");
    assert_eq!(
        batched_requests, TOTAL as f64,
        "every call ran in exactly one batch"
    );
    assert_eq!(m.value("rankd_inference_batches_total"), Some(batches));
    assert!(
        batches <= TOTAL as f64,
        "{batches} batches for {TOTAL} calls"
    );
    assert!(
        batches >= (TOTAL / MAX_BATCH) as f64,
        "{batches} batches for {TOTAL} calls cannot respect max_batch_size {MAX_BATCH}"
    );
    let within_max: f64 = m
        .all("rankd_batch_size_bucket")
        .iter()
        .find(|(labels, _)| {
            labels.get("le").and_then(|le| le.parse::<f64>().ok()) == Some(MAX_BATCH as f64)
        })
        .map(|(_, v)| *v)
        .expect("a batch-size bucket at max_batch_size");
    assert_eq!(
        within_max, batches,
        "no batch is larger than max_batch_size {MAX_BATCH}"
    );
    // Whether calls actually coalesced depends on timing; report it, do not assert it.
    tracing::info!(
        calls = TOTAL,
        batches,
        mean_batch = batched_requests / batches,
        "batching observed"
    );
}
