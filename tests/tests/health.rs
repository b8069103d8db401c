//! grpc.health.v1: the whole server and the Ranker service report SERVING once a node is up.

use std::time::Duration;

use rankd_tests::{init, Node, ServingStatus};
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;

const RANKER: &str = "rankd.v1.Ranker";

/// A node that is up but not ready (here: waiting for `cluster init`) is alive: the
/// liveness service says SERVING while readiness says NOT_SERVING, so a liveness probe never
/// restarts it for loading or waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_ready_is_still_alive() {
    init();
    let node = Node::builder()
        .unset("model.bundle")
        .set_str("cluster.bootstrap", "join")
        .start()
        .await;
    assert_eq!(node.health(RANKER).await, ServingStatus::NotServing);
    assert_eq!(node.health("").await, ServingStatus::NotServing);
    assert_eq!(node.health("rankd.liveness").await, ServingStatus::Serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_node_reports_serving() {
    init();
    let node = Node::start().await;

    tracing::info!("--- Check: overall and per-service status");
    assert_eq!(node.health("").await, ServingStatus::Serving);
    assert_eq!(node.health(RANKER).await, ServingStatus::Serving);

    assert_eq!(node.health("rankd.liveness").await, ServingStatus::Serving);

    tracing::info!("--- Check: an unknown service is NOT_FOUND");
    let err = node
        .health_check("no.such.Service")
        .await
        .expect_err("an unknown service must not report a status");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    tracing::info!("--- Watch: the first message is the current status");
    let mut client = node.health_client().await;
    for service in ["", RANKER] {
        let mut stream = client
            .watch(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap_or_else(|s| panic!("Watch({service:?}): {s:?}"))
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("Watch({service:?}) sent nothing"))
            .expect("the stream stays open")
            .expect("a status message");
        assert_eq!(first.status(), ServingStatus::Serving, "Watch({service:?})");
    }
}
