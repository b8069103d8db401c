//! Bad requests get precise statuses, and the node keeps serving after every one of them.

use std::collections::HashSet;
use std::time::Duration;

use prost::Message;
use rankd_proto::v1::ranker_client::RankerClient;
use rankd_tests::{
    assert_matches_golden, golden_set, init, manifest, GoldenCase, Node, RankRequest,
};
use tonic::transport::Channel;
use tonic::Code;

const MAX_CANDIDATES: usize = 2000;
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

fn request(query: Vec<f32>, candidates: Vec<i64>, top_k: u32) -> RankRequest {
    RankRequest {
        request_id: String::new(),
        query,
        candidate_ids: candidates,
        top_k,
    }
}

/// One bad request and what the node must answer.
struct Case {
    name: &'static str,
    request: RankRequest,
    code: Code,
    message: String,
    /// Larger than max_message_bytes on the wire (checked before sending).
    oversize: bool,
}

fn case(name: &'static str, request: RankRequest, code: Code, message: impl Into<String>) -> Case {
    Case {
        name,
        request,
        code,
        message: message.into(),
        oversize: false,
    }
}

fn cases(good: &GoldenCase, item_count: i64) -> Vec<Case> {
    let q = good.query.clone();
    let c = good.candidates.clone();
    let with_feature = |index: usize, value: f32| {
        let mut q = q.clone();
        q[index] = value;
        q
    };
    let mut c_big_id = c.clone();
    c_big_id[3] = item_count;
    let mut c_negative = c.clone();
    c_negative[0] = -1;
    let too_many: Vec<i64> = (0..=MAX_CANDIDATES as i64).collect();
    // Ids ≥ 16384 take three bytes each as varints: 30 000 of them are ~90 KB encoded.
    let oversize: Vec<i64> = (16_384..16_384 + 30_000).collect();
    vec![
        case(
            "query too short",
            request(q[..31].to_vec(), c.clone(), 10),
            Code::InvalidArgument,
            "query: expected 32 features, got 31",
        ),
        case(
            "query too long",
            request([q.clone(), vec![0.5]].concat(), c.clone(), 10),
            Code::InvalidArgument,
            "query: expected 32 features, got 33",
        ),
        case(
            "empty query",
            request(Vec::new(), c.clone(), 10),
            Code::InvalidArgument,
            "query: expected 32 features, got 0",
        ),
        case(
            "NaN feature",
            request(with_feature(5, f32::NAN), c.clone(), 10),
            Code::InvalidArgument,
            "query[5]: feature is NaN",
        ),
        case(
            "+Inf feature",
            request(with_feature(0, f32::INFINITY), c.clone(), 10),
            Code::InvalidArgument,
            "query[0]: feature is inf",
        ),
        case(
            "-Inf feature",
            request(with_feature(31, f32::NEG_INFINITY), c.clone(), 10),
            Code::InvalidArgument,
            "query[31]: feature is -inf",
        ),
        case(
            "no candidates",
            request(q.clone(), Vec::new(), 10),
            Code::InvalidArgument,
            "candidate_ids: must not be empty",
        ),
        case(
            "id past the item table",
            request(q.clone(), c_big_id, 10),
            Code::InvalidArgument,
            format!("candidate_ids[3]: id {item_count} is not in the item table"),
        ),
        case(
            "negative id",
            request(q.clone(), c_negative, 10),
            Code::InvalidArgument,
            "candidate_ids[0]: id -1 is not in the item table",
        ),
        case(
            "more candidates than max_candidates",
            request(q.clone(), too_many, 10),
            Code::OutOfRange,
            format!(
                "candidate_ids: {} candidates exceed this server's limit of {MAX_CANDIDATES}",
                MAX_CANDIDATES + 1
            ),
        ),
        Case {
            oversize: true,
            // tonic's own decode limit; its message names the limit it enforced.
            ..case(
                "encoded request larger than max_message_bytes",
                request(q.clone(), oversize, 10),
                Code::OutOfRange,
                MAX_MESSAGE_BYTES.to_string(),
            )
        },
        case(
            "top_k zero",
            request(q.clone(), c.clone(), 0),
            Code::InvalidArgument,
            "top_k: must be at least 1",
        ),
        case(
            "duplicate id",
            request(q.clone(), vec![10, 20, 30, 20, 40], 3),
            Code::InvalidArgument,
            "candidate_ids[3]: id 20 duplicates candidate_ids[1]",
        ),
    ]
}

/// A good call must still succeed, with the golden answer.
async fn assert_still_serving(client: &mut RankerClient<Channel>, good: &GoldenCase, after: &str) {
    let req = request(good.query.clone(), good.candidates.clone(), good.top_k);
    let resp = client
        .rank(req)
        .await
        .unwrap_or_else(|s| panic!("a good call after `{after}` failed: {s:?}"))
        .into_inner();
    assert_matches_golden(&resp, good, 1e-3, &format!("good call after `{after}`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_statuses_and_the_node_keeps_serving() {
    init();
    let good = golden_set().cases.remove(0);
    let item_count = manifest()["item_count"].as_i64().expect("item_count");
    let node = Node::builder()
        .max_candidates(MAX_CANDIDATES)
        .max_message_bytes(MAX_MESSAGE_BYTES)
        .start()
        .await;
    let mut client = node.rank_client().await;
    assert_still_serving(&mut client, &good, "start").await;

    let mut failures = Vec::new();
    for case in cases(&good, item_count) {
        tracing::info!("--- {}", case.name);
        let size = case.request.encoded_len();
        if case.oversize {
            assert!(size > MAX_MESSAGE_BYTES, "{}: only {size} bytes", case.name);
        } else {
            assert!(
                size < MAX_MESSAGE_BYTES,
                "{}: {size} bytes would hit the size limit",
                case.name
            );
        }
        match client.rank(case.request).await {
            Ok(resp) => failures.push(format!(
                "{}: expected {:?}, got OK with {} items",
                case.name,
                case.code,
                resp.into_inner().items.len()
            )),
            Err(s) if s.code() != case.code || !s.message().contains(&case.message) => failures
                .push(format!(
                    "{}: expected {:?} containing {:?}, got {:?} {:?}",
                    case.name,
                    case.code,
                    case.message,
                    s.code(),
                    s.message()
                )),
            Err(s) => {
                tracing::info!(code = ?s.code(), message = s.message(), "refused as expected")
            }
        }
        assert_still_serving(&mut client, &good, case.name).await;
    }
    assert!(
        failures.is_empty(),
        "wrong answers:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_k_beyond_the_candidates_returns_them_all_ranked() {
    init();
    let good = golden_set().cases.remove(0);
    let node = Node::start().await;
    let mut client = node.rank_client().await;

    for top_k in [6, 100, u32::MAX] {
        tracing::info!("--- 5 candidates, top_k {top_k}");
        let candidates = good.candidates[..5].to_vec();
        let resp = client
            .rank(request(good.query.clone(), candidates.clone(), top_k))
            .await
            .unwrap_or_else(|s| panic!("top_k {top_k}: {s:?}"))
            .into_inner();
        let ids: HashSet<i64> = resp.items.iter().map(|i| i.id).collect();
        assert_eq!(resp.items.len(), 5, "every candidate comes back once");
        assert_eq!(ids, candidates.iter().copied().collect::<HashSet<_>>());
        assert!(
            resp.items.windows(2).all(|w| w[0].score >= w[1].score),
            "scores descend: {:?}",
            resp.items
        );
        assert!(resp.items.iter().all(|i| i.score.is_finite()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_deadline_is_refused_without_running_the_model() {
    init();
    let good = golden_set().cases.remove(0);
    // A node of its own: no other test's traffic moves its inference counter.
    let node = Node::start().await;
    let mut client = node.rank_client().await;
    const BATCHES: &str = "rankd_inference_batches_total";
    const REJECTED: &str = "rankd_rejected_total{reason=\"deadline_on_arrival\"}";

    let before = node.metrics().await;
    let batches_before = before.value(BATCHES).expect(BATCHES);
    let rejected_before = before.value_or_zero(REJECTED);

    tracing::info!("--- a call whose deadline (1 ns) expired on arrival");
    // tonic's Channel would time the call out locally; this client leaves it to the server.
    let mut raw = node.raw_rank_client().await;
    let mut req = tonic::Request::new(request(good.query.clone(), good.candidates.clone(), 10));
    req.set_timeout(Duration::from_nanos(1));
    let err = raw.rank(req).await.expect_err("an expired call must fail");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");

    let after = node.metrics().await;
    assert_eq!(
        after.value(BATCHES),
        Some(batches_before),
        "the model must not run"
    );
    assert_eq!(after.value_or_zero(REJECTED), rejected_before + 1.0);

    tracing::info!("--- the next call runs the model once");
    assert_still_serving(&mut client, &good, "expired deadline").await;
    assert_eq!(node.metric_value(BATCHES).await, Some(batches_before + 1.0));
}
