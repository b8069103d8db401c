//! InjectFault: one node's Rank calls become slow or fail at an exact share, its health stays
//! SERVING (a gray failure), the fault shows in metrics, and it clears on request or expiry.
//! Bad parameters are INVALID_ARGUMENT and change nothing.

use std::time::{Duration, Instant};

use rankd_proto::admin::v1::InjectFaultRequest;
use rankd_tests::{init, wait_until, Cluster, ServingStatus};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_can_be_made_slow_or_failing_and_healed() {
    init();
    let c = Cluster::start(1).await;
    c.serve_v1().await;
    let mut admin = c.admin(1).await;

    tracing::info!("--- nonsense is refused and injects nothing");
    for bad in [
        InjectFaultRequest {
            error_ratio: 1.5,
            ..Default::default()
        },
        InjectFaultRequest {
            latency_ms: 600_000,
            ..Default::default()
        },
        InjectFaultRequest::default(),
    ] {
        let err = admin.inject_fault(bad).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    c.rank(1).await.expect("no fault yet");

    tracing::info!("--- half the calls fail, every call waits 150 ms");
    let resp = admin
        .inject_fault(InjectFaultRequest {
            latency_ms: 150,
            error_ratio: 0.5,
            ..Default::default()
        })
        .await
        .expect("inject")
        .into_inner();
    assert!(resp.active);
    assert_eq!(resp.node_id, c.node(1).id());
    let mut failed = 0;
    for _ in 0..10 {
        let start = Instant::now();
        let res = c.rank(1).await;
        assert!(start.elapsed() >= Duration::from_millis(150));
        if let Err(s) = res {
            assert_eq!(s.code(), Code::Internal, "{s:?}");
            assert!(s.message().contains("injected fault"), "{s:?}");
            failed += 1;
        }
    }
    assert_eq!(failed, 5, "exactly half of 10 calls");
    assert_eq!(
        c.health(1).await.expect("health"),
        ServingStatus::Serving,
        "a gray failure keeps its health"
    );
    let m = c.node(1).metrics().await;
    assert_eq!(m.value("rankd_fault_injected_error_ratio"), Some(0.5));
    assert_eq!(m.value("rankd_fault_injected_latency_seconds"), Some(0.15));

    tracing::info!("--- clear heals it");
    admin
        .inject_fault(InjectFaultRequest {
            clear: true,
            ..Default::default()
        })
        .await
        .expect("clear");
    for _ in 0..4 {
        c.rank(1).await.expect("healed");
    }

    tracing::info!("--- a fault with a duration clears by itself");
    admin
        .inject_fault(InjectFaultRequest {
            error_ratio: 1.0,
            duration_s: 1,
            ..Default::default()
        })
        .await
        .expect("inject");
    assert!(c.rank(1).await.is_err());
    wait_until("the fault to expire", Duration::from_secs(10), || async {
        c.rank(1).await.is_ok()
    })
    .await;
}
