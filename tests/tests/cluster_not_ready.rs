//! A node that cannot load a version blocks a default (all live nodes) promotion, which is
//! refused naming the node and its reason, and nobody switches; a MAJORITY promotion goes
//! through and reports the node as not ready.

use rankd_tests::{init, node_status, wait_for, Cluster, ServingStatus, LOAD_TIMEOUT};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_decrypt_blocks_promotion_unless_the_policy_is_majority() {
    init();
    // Node 3's keyring lacks the cluster key: it can fetch the artifacts but not open them.
    let c = Cluster::builder(3).own_keyring(3).start().await;

    tracing::info!("--- upload v1 on node 1; node 3 fails to load it");
    c.upload(1, "1").await;
    let detail = wait_for("node 3 to report v1 failed", LOAD_TIMEOUT, || async {
        let st = c.try_status(1).await.map_err(|s| format!("{s:?}"))?;
        let n3 = node_status(&st, 3).ok_or("node 3 not listed")?;
        match n3.stages.iter().find(|s| s.version == "1") {
            Some(s) if s.stage == "failed" => Ok(s.detail.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    tracing::info!(detail, "node 3's reason");
    assert!(!detail.is_empty());
    c.wait_ready_on(1, &[1, 2], "1").await;

    tracing::info!("--- a default promotion is FAILED_PRECONDITION naming node 3");
    let err = c
        .promote(2, c.promote_request("1"))
        .await
        .expect_err("node 3 cannot load v1");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("node 3"), "{err:?}");
    assert!(
        !err.message().contains("node 1") && !err.message().contains("node 2"),
        "only node 3 is at fault: {err:?}"
    );

    tracing::info!("--- nobody switched: no active version, nobody SERVING");
    for id in 1..=3 {
        let st = c.status(id).await;
        assert!(
            st.active
                .as_ref()
                .is_none_or(|f| f.model_version.is_empty()),
            "node {id}: {st:?}"
        );
        assert_eq!(
            c.health(id).await.unwrap(),
            ServingStatus::NotServing,
            "node {id}"
        );
        let err = c.rank(id).await.expect_err("nothing is active");
        assert_eq!(err.code(), Code::Unavailable, "node {id}: {err:?}");
    }
    assert!(c.history(1).await.is_empty());

    tracing::info!("--- with policy MAJORITY it goes through, reporting node 3 not ready");
    let resp = c.must_promote_majority(1, "1").await;
    let fence = resp.fence.expect("a fence");
    assert_eq!(fence.model_version, "1");
    let ids: Vec<u64> = resp.not_ready.iter().map(|n| n.id).collect();
    assert_eq!(ids, [3], "{:?}", resp.not_ready);
    assert!(!resp.not_ready[0].reason.is_empty(), "{:?}", resp.not_ready);

    c.wait_serving_fence(1, &fence).await;
    c.wait_serving_fence(2, &fence).await;
    tracing::info!("--- node 3 knows the active version but cannot serve it");
    let st = c.status(3).await;
    assert_eq!(st.active.as_ref(), Some(&fence), "{st:?}");
    assert_eq!(c.health(3).await.unwrap(), ServingStatus::NotServing);
}
