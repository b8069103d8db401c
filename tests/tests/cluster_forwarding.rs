//! Server-side failover: a node that cannot serve a Rank call itself (its keyring cannot open
//! the active version; its queue is full) forwards it once to a healthy peer, and the answer
//! says who served it. A call that was already forwarded is never forwarded again.

use rankd_proto::v1::ranker_client::RankerClient;
use rankd_tests::{
    init, rank_request, same_fence, wait_for, wait_until, Cluster, ServingStatus, LOAD_TIMEOUT,
};
use tonic::Code;

const FORWARDS_OK: &str = "rankd_forwards_total{reason=\"not_ready\",result=\"ok\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_ready_forwards_rank_once_to_a_healthy_peer() {
    init();
    // Node 3's keyring lacks the cluster key: it can never load what the others serve.
    let c = Cluster::builder(3).own_keyring(3).start().await;
    c.upload(1, "1").await;
    c.wait_ready_on(1, &[1, 2], "1").await;
    let resp = c.must_promote_majority(1, "1").await;
    let fence = resp.fence.expect("a fence");
    c.wait_serving_fence(1, &fence).await;
    c.wait_serving_fence(2, &fence).await;
    assert_eq!(c.health(3).await.unwrap(), ServingStatus::NotServing);

    tracing::info!("--- Rank on node 3 is answered by a healthy peer");
    // Node 3 forwards once it has heard a heartbeat from a ready peer.
    let answer = wait_for("node 3 to forward", LOAD_TIMEOUT, || async {
        c.rank(3).await.map_err(|s| format!("{s:?}"))
    })
    .await;
    assert_eq!(answer.forwarded_by, "node-3", "{answer:?}");
    assert!(
        answer.node_id == "node-1" || answer.node_id == "node-2",
        "{answer:?}"
    );
    let f = answer.fence.clone().expect("the serving node's fence");
    assert!(same_fence(&f, &fence), "{f:?} vs {fence:?}");
    let direct = c.rank(1).await.expect("node 1 serves");
    assert_eq!(
        answer.items, direct.items,
        "the same model, the same answer"
    );
    assert!(direct.forwarded_by.is_empty(), "{direct:?}");
    let forwarded = c.node(3).metrics().await.value_or_zero(FORWARDS_OK);
    assert!(forwarded >= 1.0, "{FORWARDS_OK} = {forwarded}");

    tracing::info!("--- a call already forwarded once is refused, not passed on");
    let q = rankd_tests::example_query();
    let mut req = tonic::Request::new(rank_request(&q.query, &q.candidates, 5));
    req.metadata_mut()
        .insert("rankd-forwarded-by", "node-9".parse().unwrap());
    let err = RankerClient::new(c.channel(3))
        .rank(req)
        .await
        .expect_err("node 3 cannot serve, and may not forward");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let after = c.node(3).metrics().await.value_or_zero(FORWARDS_OK);
    assert_eq!(after, forwarded, "the marked call was forwarded anyway");

    tracing::info!("--- bad input is refused by whoever serves it, with the exact code");
    let mut bad = rank_request(&q.query[1..], &q.candidates, 5);
    bad.request_id = "bad-dims".into();
    let err = RankerClient::new(c.channel(3))
        .rank(bad)
        .await
        .expect_err("wrong query dimension");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    tracing::info!("--- when no peer is ready, node 3 answers UNAVAILABLE itself");
    let mut c = c;
    c.kill(1).await;
    c.kill(2).await;
    wait_until("node 3 to stop forwarding", LOAD_TIMEOUT, || async {
        matches!(c.rank(3).await, Err(s) if s.code() == Code::Unavailable)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_queue_is_full_forwards_the_overflow() {
    init();
    // Node 3 holds one waiting call at most; its peers have the default queue.
    let c = Cluster::builder(3)
        .set_on(3, "batching.max_batch_size", "1")
        .set_on(3, "batching.queue_capacity", "1")
        .start()
        .await;
    c.upload(1, "1").await;
    let fence = c.must_promote(1, "1").await;
    c.wait_all_serving(&fence).await;

    tracing::info!("--- bursts at node 3 until its queue overflows");
    let q = rankd_tests::example_query();
    let overflowed = wait_for("node 3 to forward its overflow", LOAD_TIMEOUT, || async {
        let calls = (0..32).map(|i| {
            let mut client = RankerClient::new(c.channel(3));
            let mut req = rank_request(&q.query, &q.candidates, 5);
            req.request_id = format!("burst-{i}");
            async move { client.rank(req).await.map(tonic::Response::into_inner) }
        });
        let answers = futures::future::join_all(calls).await;
        let mut forwarded = Vec::new();
        for a in answers {
            // Every call is answered: by node 3, or by the peer it forwarded to.
            let a = a.map_err(|s| format!("a burst call failed: {s:?}"))?;
            if !a.forwarded_by.is_empty() {
                forwarded.push(a);
            }
        }
        if forwarded.is_empty() {
            Err("node 3 kept up with the burst".to_string())
        } else {
            Ok(forwarded)
        }
    })
    .await;
    for a in &overflowed {
        assert_eq!(a.forwarded_by, "node-3", "{a:?}");
        assert_ne!(a.node_id, "node-3", "{a:?}");
        assert!(same_fence(a.fence.as_ref().unwrap(), &fence), "{a:?}");
    }
    let m = c.node(3).metrics().await;
    let full = m.value_or_zero("rankd_forwards_total{reason=\"queue_full\",result=\"ok\"}");
    assert!(
        full >= overflowed.len() as f64,
        "{full} < {}",
        overflowed.len()
    );
}
