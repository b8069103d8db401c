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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_node_reports_its_error_share_and_p99_in_status_and_metrics() {
    init();
    let c = Cluster::start(1).await;
    c.serve_v1().await;
    for _ in 0..10 {
        c.rank(1).await.expect("healthy");
    }
    let healthy = c.status(1).await;
    let me = rankd_tests::node_status(&healthy, 1).expect("node 1 in status");
    assert_eq!(me.error_ratio, 0.0);
    assert!(me.recent_calls >= 10, "{me:?}");

    tracing::info!("--- a quarter of the calls fail and every call waits 250 ms");
    c.admin(1)
        .await
        .inject_fault(InjectFaultRequest {
            latency_ms: 250,
            error_ratio: 0.25,
            ..Default::default()
        })
        .await
        .expect("inject");
    for _ in 0..30 {
        let _ = c.rank(1).await;
    }
    let st = c.status(1).await;
    let me = rankd_tests::node_status(&st, 1).expect("node 1 in status");
    // 30 calls under the fault: exactly 7 failed (0.25 x 30, rounded down); every call since
    // the node started is in the window.
    assert!(me.recent_calls >= 40, "{me:?}");
    let failed = me.error_ratio * f64::from(me.recent_calls);
    assert!((failed - 7.0).abs() < 1e-6, "{me:?}");
    assert!(me.p99_ms >= 250.0, "{me:?}");
    wait_until("the live metrics", Duration::from_secs(10), || async {
        let m = c.node(1).metrics().await;
        let calls = m.value("rankd_live_calls").unwrap_or(0.0);
        m.value("rankd_live_error_ratio")
            .is_some_and(|v| calls >= 40.0 && (v * calls - 7.0).abs() < 1e-6)
            && m.value("rankd_live_p99_seconds").is_some_and(|v| v >= 0.25)
    })
    .await;
}
