//! Graceful shutdown: on SIGTERM a node reports NOT_SERVING at once, keeps answering Rank for
//! the drain delay so traffic can move away, then exits 0.

use std::time::{Duration, Instant};

use rankd_tests::{
    assert_matches_golden, golden_set, init, wait_until, Node, RankRequest, ServingStatus,
};
use tokio_stream::StreamExt;
use tonic::Streaming;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const RANKER: &str = "rankd.v1.Ranker";

async fn next_status(
    stream: &mut Streaming<HealthCheckResponse>,
    within: Duration,
) -> ServingStatus {
    tokio::time::timeout(within, stream.next())
        .await
        .unwrap_or_else(|_| panic!("no health update within {within:?}"))
        .expect("the Watch stream is still open")
        .expect("a health update")
        .status()
}

async fn watch(node: &Node, service: &str) -> Streaming<HealthCheckResponse> {
    node.health_client()
        .await
        .watch(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .expect("Health/Watch")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reports_not_serving_keeps_ranking_through_the_drain_then_exits_0() {
    init();
    const DRAIN: Duration = Duration::from_millis(2_500);
    let good = golden_set().cases.remove(0);
    let request = || RankRequest {
        request_id: String::new(),
        query: good.query.clone(),
        candidate_ids: good.candidates.clone(),
        top_k: good.top_k,
    };
    let mut node = Node::builder()
        .drain_delay_ms(DRAIN.as_millis() as u64)
        .start()
        .await;
    let mut client = node.rank_client().await;
    let mut health = node.health_client().await;
    let mut watch_ranker = watch(&node, RANKER).await;
    assert_eq!(
        next_status(&mut watch_ranker, Duration::from_secs(10)).await,
        ServingStatus::Serving
    );
    client.rank(request()).await.expect("rank before SIGTERM");

    tracing::info!("--- SIGTERM");
    let sent = Instant::now();
    node.sigterm();

    tracing::info!("--- Watch sees NOT_SERVING promptly");
    assert_eq!(
        next_status(&mut watch_ranker, DRAIN).await,
        ServingStatus::NotServing
    );
    let noticed = sent.elapsed();
    for service in ["", RANKER] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .expect("Health/Check during the drain")
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::NotServing, "Check({service:?})");
    }
    wait_until("rankd_ready is 0", DRAIN, || async {
        node.metric_value("rankd_ready").await == Some(0.0)
    })
    .await;

    tracing::info!("--- Rank still answers during the drain, on old and new connections");
    let resp = client
        .rank(request())
        .await
        .expect("rank during the drain")
        .into_inner();
    assert_matches_golden(&resp, &good, 1e-3, "existing connection during the drain");
    let mut fresh = node.rank_client().await;
    let resp = fresh
        .rank(request())
        .await
        .expect("rank on a new connection during the drain")
        .into_inner();
    assert_matches_golden(&resp, &good, 1e-3, "new connection during the drain");
    let served_by = sent.elapsed();
    assert!(
        served_by < DRAIN,
        "the drain-time calls finished {served_by:?} after SIGTERM, not within the {DRAIN:?} drain"
    );

    tracing::info!("--- exit 0 after the drain");
    drop(watch_ranker);
    let status = node.wait_exit(DRAIN + Duration::from_secs(15)).await;
    let exited = sent.elapsed();
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", node.log());
    assert!(
        exited >= DRAIN,
        "exited {exited:?} after SIGTERM, before the {DRAIN:?} drain ended"
    );
    tracing::info!(?noticed, ?served_by, ?exited, "shutdown timeline");
}

/// Frontends (and rankd's own failover client) keep a health Watch open on every node. Such
/// a stream never ends by itself, so it must not hold the node up for the whole
/// `shutdown_grace_ms` (default 10 s) on every restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_health_watch_does_not_delay_exit() {
    init();
    const DRAIN: Duration = Duration::from_millis(200);
    const EXIT_BOUND: Duration = Duration::from_secs(5);
    let mut node = Node::builder()
        .drain_delay_ms(DRAIN.as_millis() as u64)
        .start()
        .await;
    let mut watch_all = watch(&node, "").await;
    assert_eq!(
        next_status(&mut watch_all, Duration::from_secs(10)).await,
        ServingStatus::Serving
    );

    tracing::info!("--- SIGTERM with a Watch stream open");
    let sent = Instant::now();
    node.sigterm();
    assert_eq!(
        next_status(&mut watch_all, Duration::from_secs(5)).await,
        ServingStatus::NotServing
    );

    tracing::info!("--- the node exits 0 within {EXIT_BOUND:?}, ending the stream");
    let status = node.wait_exit(EXIT_BOUND).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    tracing::info!(exited_after = ?sent.elapsed(), "exited");
    let end = tokio::time::timeout(Duration::from_secs(5), watch_all.next())
        .await
        .expect("the Watch stream ends when the node exits");
    assert!(
        !matches!(end, Some(Ok(_))),
        "no further status after exit: {end:?}"
    );
}
