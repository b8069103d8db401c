//! Cluster-wide promotion and rollback on three real nodes: every node switches to the same
//! activation (one fence: version, term, log index), any node accepts the call, a stale
//! expectation or an unknown version changes nothing, and the history records it all.

use rankd_proto::admin::v1::{Fence, PromoteRequest, RollbackRequest};
use rankd_tests::{init, Cluster};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_and_rollback_switch_every_node_to_one_fence() {
    init();
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    tracing::info!(leader, "cluster up");

    tracing::info!("--- before any promotion nothing is active");
    let st = c.status(2).await;
    assert!(
        st.active
            .as_ref()
            .is_none_or(|f| f.model_version.is_empty()),
        "{st:?}"
    );

    tracing::info!("--- upload v1 on node 1 and promote it there");
    let v1 = c.upload(1, "1").await;
    assert_eq!(v1.state, "ready", "{v1:?}");
    let f1 = c.must_promote(1, "1").await;
    assert!(f1.term > 0 && f1.index > 0, "{f1:?}");
    assert_eq!(f1.model_name, c.model_name());

    tracing::info!("--- every node serves v1 under the same fence");
    c.wait_all_serving(&f1).await;
    for id in 1..=3 {
        let st = c.status(id).await;
        assert_eq!(st.active.as_ref(), Some(&f1), "node {id}'s view: {st:?}");
    }

    tracing::info!("--- upload v2 on node 2, promote it through node 3");
    c.upload(2, "2").await;
    let via = if leader == 3 { 2 } else { 3 };
    let resp = c
        .promote(via, c.promote_request("2"))
        .await
        .unwrap_or_else(|s| panic!("promoting 2 through node {via}: {s:?}"));
    assert!(resp.not_ready.is_empty(), "{:?}", resp.not_ready);
    let f2 = resp.fence.expect("a fence");
    assert_eq!(f2.model_version, "2");
    assert!(f2.index > f1.index, "{f2:?} after {f1:?}");
    c.wait_all_serving(&f2).await;

    tracing::info!("--- a stale expectation is FAILED_PRECONDITION and changes nothing");
    let err = c
        .promote(
            1,
            PromoteRequest {
                expect_version: "1".into(),
                ..c.promote_request("1")
            },
        )
        .await
        .expect_err("v1 is not active any more");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    tracing::info!("--- an unknown version is NOT_FOUND");
    let err = c
        .promote(2, c.promote_request("99"))
        .await
        .expect_err("version 99 was never uploaded");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_active_everywhere(&c, &f2).await;

    tracing::info!("--- a rollback expecting the wrong version is refused");
    let err = c
        .rollback(
            3,
            RollbackRequest {
                expect_version: "1".into(),
                requested_by: "tests".into(),
            },
        )
        .await
        .expect_err("v2 is active, not v1");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_active_everywhere(&c, &f2).await;

    tracing::info!("--- rollback (expecting v2) brings v1 back everywhere, under a new fence");
    let resp = c
        .rollback(
            2,
            RollbackRequest {
                expect_version: "2".into(),
                requested_by: "tests".into(),
            },
        )
        .await
        .unwrap_or_else(|s| panic!("rollback: {s:?}"));
    let f3 = resp.fence.expect("a fence");
    assert_eq!(f3.model_version, "1");
    assert!(f3.index > f2.index, "{f3:?} after {f2:?}");
    c.wait_all_serving(&f3).await;

    tracing::info!("--- every node reports the same history: promote 1, promote 2, rollback");
    let want = vec![
        (
            "promote".to_string(),
            "".to_string(),
            "1".to_string(),
            f1.index,
        ),
        ("promote".into(), "1".into(), "2".into(), f2.index),
        ("rollback".into(), "2".into(), "1".into(), f3.index),
    ];
    for id in 1..=3 {
        let h = c.history(id).await;
        let got: Vec<(String, String, String, u64)> = h
            .iter()
            .map(|e| {
                (
                    e.action.clone(),
                    e.from_version.clone(),
                    e.to_version.clone(),
                    e.index,
                )
            })
            .collect();
        assert_eq!(got, want, "history on node {id}: {h:#?}");
        assert!(h.iter().all(|e| e.by == "tests" && e.at_ms > 0), "{h:#?}");
        assert!(h.iter().all(|e| e.model_name == c.model_name()), "{h:#?}");
    }
}

/// Every node's status names `fence` as active and its previous version is untouched.
async fn assert_active_everywhere(c: &Cluster, fence: &Fence) {
    for id in c.live_ids() {
        let st = c.status(id).await;
        assert_eq!(st.active.as_ref(), Some(fence), "node {id}: {st:?}");
        let f = c
            .serving_fence(id)
            .await
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
        assert!(rankd_tests::same_fence(&f, fence), "node {id} serves {f:?}");
    }
}
