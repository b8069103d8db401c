//! A real network partition (peer links cut at each node's proxy): a leader cut off from
//! the majority cannot promote, the majority elects a new leader and promotes, and once the
//! partition heals the old leader follows the majority's activation.

use std::time::Duration;

use rankd_proto::admin::v1::PromoteRequest;
use rankd_tests::{init, is_deadline, Cluster};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_leader_cannot_promote_and_follows_the_majority_after_healing() {
    init();
    let c = Cluster::start(3).await;
    c.upload(1, "1").await;
    let f1 = c.must_promote(1, "1").await;
    c.wait_all_serving(&f1).await;

    tracing::info!("--- store v2 and v3 everywhere before the partition");
    c.upload(1, "2").await;
    c.upload(1, "3").await;
    c.wait_ready_everywhere(1, "2").await;
    c.wait_ready_everywhere(1, "3").await;

    tracing::info!("--- peer traffic flows only between cluster members, through the proxies");
    let members = c.member_ips();
    for id in 1..=3 {
        let sources = c.proxy(id).sources();
        assert!(
            sources.iter().all(|ip| members.contains(ip)),
            "node {id}'s proxy saw connections from {sources:?}; nodes must dial peers from \
             their cluster.peer_listen IP ({members:?})"
        );
        assert!(!sources.is_empty(), "no peer ever reached node {id}");
    }

    let old = c.wait_leader().await;
    let majority: Vec<u64> = c.live_ids().into_iter().filter(|&i| i != old).collect();
    tracing::info!("--- partition leader {old} from {majority:?}");
    c.partition(&[old], &majority);

    tracing::info!("--- a promotion sent to the cut-off leader fails");
    let mut req = tonic::Request::new(PromoteRequest {
        ready_timeout_ms: 5_000,
        ..c.promote_request("3")
    });
    req.set_timeout(Duration::from_secs(30));
    let result = c.admin(old).await.promote(req).await;
    let err = match result {
        Ok(resp) => panic!(
            "a leader without a majority acknowledged a promotion: {:?}",
            resp.into_inner()
        ),
        Err(e) => e,
    };
    tracing::info!(?err, "minority promote refused");
    assert!(
        matches!(err.code(), Code::Unavailable | Code::FailedPrecondition) || is_deadline(&err),
        "{err:?}"
    );

    tracing::info!("--- the majority elects a new leader; v1 is still active there");
    let new = c.wait_new_leader(&majority, old).await;
    for &id in &majority {
        let st = c.status(id).await;
        assert_eq!(st.active.as_ref(), Some(&f1), "node {id}: {st:?}");
    }

    tracing::info!("--- a promotion through the majority succeeds (new leader {new})");
    let f2 = c.must_promote(majority[1], "2").await;
    assert!(
        f2.term > f1.term,
        "{f2:?} should be in a later term than {f1:?}"
    );
    for &id in &majority {
        c.wait_serving_fence(id, &f2).await;
    }

    tracing::info!("--- heal: the old leader catches up and serves the majority's fence");
    c.heal();
    c.wait_serving_fence(old, &f2).await;
    let st = c.status(old).await;
    assert_eq!(st.active.as_ref(), Some(&f2), "{st:?}");
    assert_ne!(st.leader_id, 0, "{st:?}");

    tracing::info!("--- v3 never became active anywhere");
    for id in 1..=3 {
        let h = c.history(id).await;
        let to: Vec<&str> = h.iter().map(|e| e.to_version.as_str()).collect();
        assert_eq!(to, ["1", "2"], "history on node {id}: {h:#?}");
    }
}
