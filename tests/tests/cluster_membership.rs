//! Membership: a node added as a learner receives the registry (as a snapshot: the log it
//! would need is purged) and the artifacts and serves the active version; a removed node
//! leaves the status for good, and its id is never accepted again.

use rankd_proto::admin::v1::AddNodeRequest;
use rankd_tests::{init, node_status, wait_for, Cluster, ELECTION_TIMEOUT};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joins_serves_and_once_removed_its_id_is_retired() {
    init();
    // Snapshot every 4 entries and keep no more log than that behind it, so by the time node
    // 4 joins, the leader can only bring it up to date with a snapshot.
    let mut c = Cluster::builder(3)
        .set("raft.snapshot_every", "4")
        .start()
        .await;
    c.upload(1, "1").await;
    let f1 = c.must_promote(1, "1").await;
    c.wait_all_serving(&f1).await;
    c.upload(2, "2").await;
    c.wait_ready_everywhere(1, "2").await;

    tracing::info!("--- add node 4 as a learner");
    let id = c.add_node().await;
    assert_eq!(id, 4);
    let st = wait_for("node 4 listed as a learner", ELECTION_TIMEOUT, || async {
        let st = c.try_status(1).await.map_err(|s| format!("{s:?}"))?;
        match node_status(&st, 4) {
            Some(n) if n.role == "learner" => Ok(st.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let n4 = node_status(&st, 4).unwrap();
    assert!(!n4.voter, "{n4:?}");
    assert_eq!(st.nodes.iter().filter(|n| n.voter).count(), 3, "{st:?}");
    assert_eq!(n4.peer_addr, c.member(4).peer_addr);

    tracing::info!("--- it fetches the active version from its peers and serves it");
    c.wait_serving_fence(4, &f1).await;
    assert!(
        c.node(4)
            .log()
            .contains("installed a registry snapshot from the leader"),
        "node 4 should have caught up from a snapshot"
    );
    let own = c.status(4).await;
    assert_eq!(own.active.as_ref(), Some(&f1), "{own:?}");

    tracing::info!("--- remove node 4");
    let st = c.remove_node(4).await;
    assert!(node_status(&st, 4).is_none(), "{st:?}");
    assert!(st.removed_ids.contains(&4), "{st:?}");
    for id in 1..=3 {
        let st = c.status(id).await;
        assert!(
            node_status(&st, 4).is_none() && st.removed_ids.contains(&4),
            "node {id}: {st:?}"
        );
        assert_eq!(st.nodes.len(), 3, "node {id}: {st:?}");
    }
    c.kill(4).await;

    tracing::info!("--- the id 4 is refused from now on");
    let err = c
        .admin(2)
        .await
        .add_node(AddNodeRequest {
            member: Some(c.member(4)),
            voter: false,
        })
        .await
        .expect_err("a removed id must not come back");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains('4'), "{err:?}");

    tracing::info!("--- the three voters still promote");
    let f2 = c.must_promote(3, "2").await;
    c.wait_all_serving(&f2).await;
}
