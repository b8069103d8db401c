//! Nodes killed with `kill -9`: a dead follower does not hold promotions up and catches up
//! when it comes back; a leader killed while a promotion is in flight leaves the cluster
//! agreeing on one active version, and never loses a promotion it acknowledged.

use std::time::Duration;

use rankd_tests::{
    init, is_deadline, node_status, same_fence, wait_for, Cluster, ELECTION_TIMEOUT,
};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_follower_does_not_block_promotion_and_catches_up_on_restart() {
    init();
    let mut c = Cluster::start(3).await;
    c.upload(1, "1").await;
    let f1 = c.must_promote(1, "1").await;
    c.wait_all_serving(&f1).await;

    let leader = c.wait_leader().await;
    let follower = c.live_ids().into_iter().find(|&i| i != leader).unwrap();
    let other = c
        .live_ids()
        .into_iter()
        .find(|&i| i != leader && i != follower)
        .unwrap();
    tracing::info!("--- kill -9 follower {follower} (leader {leader})");
    c.kill(follower).await;
    wait_for(
        &format!("the leader to see node {follower} down"),
        ELECTION_TIMEOUT,
        || async {
            let st = c.try_status(leader).await.map_err(|s| format!("{s:?}"))?;
            let n = node_status(&st, follower).ok_or("not listed")?;
            if n.health == "UNREACHABLE" || n.role == "unreachable" {
                Ok(())
            } else {
                Err(format!("{n:?}"))
            }
        },
    )
    .await;

    tracing::info!("--- upload and promote v2 while it is down: it commits without it");
    c.upload(other, "2").await;
    let resp = c
        .promote(other, c.promote_request("2"))
        .await
        .unwrap_or_else(|s| panic!("promoting 2 with node {follower} down: {s:?}"));
    let f2 = resp.fence.expect("a fence");
    assert_eq!(f2.model_version, "2");
    assert!(
        resp.not_ready.iter().any(|n| n.id == follower),
        "the dead node should be listed as not ready: {:?}",
        resp.not_ready
    );
    c.wait_all_serving(&f2).await;

    tracing::info!("--- restart it: it fetches v2 from a peer and serves the cluster's fence");
    c.restart(follower).await;
    c.wait_serving_fence(follower, &f2).await;
    let st = c.status(follower).await;
    assert_eq!(st.active.as_ref(), Some(&f2), "{st:?}");
    assert_eq!(st.nodes.len(), 3, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_promotion_never_loses_an_acknowledged_promotion() {
    init();
    // A short readiness wait, so a promotion that cannot finish answers soon.
    let mut c = Cluster::builder(3).ready_timeout_ms(30_000).start().await;
    c.upload(1, "1").await;
    let f1 = c.must_promote(1, "1").await;
    c.wait_all_serving(&f1).await;
    let leader = c.wait_leader().await;
    let via = c.live_ids().into_iter().find(|&i| i != leader).unwrap();

    tracing::info!("--- upload v2 through follower {via} and promote it there, in the background");
    c.upload(via, "2").await;
    let mut admin = c.admin(via).await;
    let req = c.promote_request("2");
    let call = tokio::spawn(async move { admin.promote(req).await.map(|r| r.into_inner()) });

    tracing::info!("--- kill -9 the leader ({leader}) as soon as the promotion is under way");
    wait_for(
        "the promotion to be under way",
        Duration::from_secs(60),
        || async {
            if call.is_finished() {
                return Ok(());
            }
            let st = c.try_status(via).await.map_err(|s| format!("{s:?}"))?;
            let started = st.nodes.iter().any(|n| {
                n.stages.iter().any(|s| s.version == "2")
                    || n.loaded_versions.iter().any(|v| v == "2")
            });
            if started {
                Ok(())
            } else {
                Err(format!("no node reports v2 yet: {:?}", st.nodes))
            }
        },
    )
    .await;
    c.kill(leader).await;

    tracing::info!("--- the survivors elect a new leader");
    let survivors = c.live_ids();
    let new_leader = c.wait_new_leader(&survivors, leader).await;
    tracing::info!(new_leader, "new leader");

    let outcome = tokio::time::timeout(Duration::from_secs(120), call)
        .await
        .expect("the promote call answers within its readiness timeout")
        .expect("the promote task does not panic");
    tracing::info!(?outcome, "promote outcome");

    tracing::info!("--- the new leader's registry is the truth; every survivor serves it");
    let active = c
        .status(new_leader)
        .await
        .active
        .expect("a version stays active");
    match &outcome {
        Ok(resp) => assert_eq!(
            resp.fence.as_ref(),
            Some(&active),
            "an acknowledged promotion must survive the leader's death"
        ),
        Err(s) => {
            assert!(
                active == f1 || active.model_version == "2",
                "after a failed promotion ({s:?}) the active version is v1 or v2, got {active:?}"
            );
            // The follower lost its leader mid-call: the caller must be able to tell that
            // retrying is safe (UNAVAILABLE), not get an opaque UNKNOWN.
            assert!(
                matches!(s.code(), Code::Unavailable | Code::FailedPrecondition) || is_deadline(s),
                "a promotion cut short by the leader's death: {s:?}"
            );
        }
    }
    c.wait_all_serving(&active).await;

    tracing::info!("--- the old leader comes back and agrees");
    c.restart(leader).await;
    c.wait_serving_fence(leader, &active).await;
    for id in 1..=3 {
        let f = c.serving_fence(id).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            same_fence(&f, &active),
            "node {id} serves {f:?}, not {active:?}"
        );
        let st = c.status(id).await;
        assert_eq!(st.active.as_ref(), Some(&active), "node {id}: {st:?}");
    }
}
