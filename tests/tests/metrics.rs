//! The Prometheus endpoint: every documented series is exposed with sensible values.

use std::time::Duration;

use rankd_tests::{example_query, init, manifest, rank_request, test_device, Node};

const RANK_OK: &str = "rankd_requests_total{method=\"/rankd.v1.Ranker/Rank\",code=\"OK\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_is_exposed_after_a_rank_call() {
    init();
    let example = example_query();
    let manifest = manifest();
    let node = Node::start().await;

    tracing::info!("--- one Rank call, one call rejected for its expired deadline");
    let mut client = node.rank_client().await;
    let resp = client
        .rank(rank_request(&example.query, &example.candidates, 10))
        .await
        .expect("rank");
    assert_eq!(resp.into_inner().items.len(), 10);
    let mut expired = tonic::Request::new(rank_request(&example.query, &example.candidates, 10));
    expired.set_timeout(Duration::from_nanos(1));
    let err = node
        .raw_rank_client()
        .await
        .rank(expired)
        .await
        .expect_err("an expired deadline fails");
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");

    tracing::info!("--- scrape /metrics");
    let resp = node.http_get("/metrics").await;
    assert_eq!(resp.status, 200);
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "content-type {content_type:?}"
    );
    let m = node.metrics().await;

    let present = [
        "rankd_requests_total",
        "rankd_request_duration_seconds_bucket",
        "rankd_request_duration_seconds_sum",
        "rankd_request_duration_seconds_count",
        "rankd_queue_wait_seconds_bucket",
        "rankd_queue_wait_seconds_sum",
        "rankd_queue_wait_seconds_count",
        "rankd_batch_size_bucket",
        "rankd_batch_size_sum",
        "rankd_batch_size_count",
        "rankd_inference_seconds_bucket",
        "rankd_inference_seconds_sum",
        "rankd_inference_seconds_count",
        "rankd_inference_batches_total",
        "rankd_queue_depth",
        "rankd_rejected_total",
        "rankd_inference_errors_total",
        "rankd_model_info",
        "rankd_model_load_seconds",
        "rankd_ready",
    ];
    let missing: Vec<&str> = present
        .iter()
        .copied()
        .filter(|name| !m.has(name))
        .collect();
    assert!(
        missing.is_empty(),
        "series missing: {missing:?}\n{}",
        m.text
    );

    tracing::info!("--- other paths are 404");
    for path in ["/", "/metricsx", "/health", "/metrics/extra"] {
        let resp = node.http_get(path).await;
        assert_eq!(resp.status, 404, "GET {path}");
    }

    tracing::info!("--- values");
    // Every check runs, so one failure does not hide the next.
    let mut wrong = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            wrong.push(what);
        }
    };
    let at_least_one = [
        RANK_OK,
        "rankd_request_duration_seconds_count{method=\"/rankd.v1.Ranker/Rank\"}",
        "rankd_inference_batches_total",
        "rankd_batch_size_count",
        "rankd_queue_wait_seconds_count",
        "rankd_inference_seconds_count",
    ];
    for series in at_least_one {
        check(
            m.value_or_zero(series) >= 1.0,
            format!("{series} = {:?}, expected ≥ 1", m.value(series)),
        );
    }
    let exactly = [
        (
            "rankd_requests_total{method=\"/rankd.v1.Ranker/Rank\",code=\"DEADLINE_EXCEEDED\"}",
            1.0,
        ),
        ("rankd_rejected_total{reason=\"deadline_on_arrival\"}", 1.0),
        ("rankd_inference_errors_total", 0.0),
        ("rankd_ready", 1.0),
    ];
    for (series, want) in exactly {
        check(
            m.value(series) == Some(want),
            format!("{series} = {:?}, expected {want}", m.value(series)),
        );
    }
    let info = m.all("rankd_model_info");
    check(
        info.len() == 1,
        format!("exactly one rankd_model_info series expected: {info:?}"),
    );
    if let Some((labels, value)) = info.first() {
        let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
        check(
            *value == 1.0,
            format!("rankd_model_info = {value}, expected 1"),
        );
        check(
            Some(label("name").as_str()) == manifest["name"].as_str(),
            format!("model_info name {:?}", label("name")),
        );
        check(
            Some(label("version").as_str()) == manifest["version"].as_str(),
            format!("model_info version {:?}", label("version")),
        );
        check(
            label("precision") == "fp32",
            format!("model_info precision {:?}", label("precision")),
        );
        check(
            label("device").starts_with(&test_device()),
            format!("model_info device {:?}", label("device")),
        );
    }
    assert!(
        wrong.is_empty(),
        "wrong metric values:\n{}\n--- scrape:\n{}",
        wrong.join("\n"),
        m.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_load_seconds_reports_the_load_time() {
    init();
    let node = Node::start().await;
    tracing::info!("--- rankd_model_load_seconds is the time the model took to load");
    let load = node
        .metric_value("rankd_model_load_seconds")
        .await
        .expect("rankd_model_load_seconds");
    // Loading parses TorchScript, uploads the item table, warms up and replays the golden
    // set: it takes measurable time, so 0 means the gauge was never set.
    assert!(
        load > 0.0 && load.is_finite(),
        "rankd_model_load_seconds = {load}, expected the load time"
    );
    assert!(
        load < rankd_tests::STARTUP_TIMEOUT.as_secs_f64(),
        "rankd_model_load_seconds = {load}"
    );
}
