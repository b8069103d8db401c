//! Ejection and re-admission driven by the heartbeat stream and by the transport.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tonic::Code;

use super::fake::{Behaviour, FakeNode};
use super::{config, connect, eventually, healthy, request, view, BEAT};
use crate::client::{ClientConfig, EjectReason, FailoverClient};

#[tokio::test]
async fn nodes_start_ejected_until_a_serving_heartbeat() {
    let a = FakeNode::start("a", BEAT);
    a.state.set_serving(false, "loading");
    let client = FailoverClient::connect([a.address().as_str()], config())
        .await
        .expect("connect");
    eventually("a reported loading", || {
        view(&client, &a).ejection == Some(EjectReason::NotServing("loading".into()))
    })
    .await;
    let node = view(&client, &a);
    assert!(!node.healthy);
    assert_eq!(node.node_id.as_deref(), Some("a"));

    a.state.set_serving(true, "");
    eventually("a is admitted", || healthy(&client, &a)).await;
    let node = view(&client, &a);
    assert_eq!(node.ejection, None);
    assert_eq!(node.fence.map(|f| f.model_version), Some("v1".to_owned()));
    let response = client.rank(request()).await.expect("rank");
    assert_eq!(response.node_id, "a");
    let stats = client.stats();
    assert_eq!(
        (stats.ejections, stats.readmissions),
        (0, 0),
        "a first admission is neither"
    );
}

#[tokio::test]
async fn lapsed_heartbeats_eject_on_the_nodes_cadence_and_resumed_ones_readmit() {
    let a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    // The fallback cadence would take 3 s to lapse; a reports 20 ms × 5.
    a.state.missed_limit.store(5, Ordering::SeqCst);
    let config = ClientConfig {
        heartbeat_interval: Duration::from_secs(1),
        ..config()
    };
    let client = connect(&[&a, &b], config).await;

    let silenced = Instant::now();
    a.state.beating.store(false, Ordering::SeqCst);
    eventually("a lapsed", || {
        matches!(view(&client, &a).ejection, Some(EjectReason::Lapsed { .. }))
    })
    .await;
    assert!(
        silenced.elapsed() < Duration::from_secs(1),
        "lapse took {:?}; the reported cadence was not used",
        silenced.elapsed()
    );
    assert!(!view(&client, &a).healthy);
    assert!(healthy(&client, &b));
    let a_calls = a.state.calls();
    for _ in 0..5 {
        assert_eq!(client.rank(request()).await.expect("rank").node_id, "b");
    }
    assert_eq!(a.state.calls(), a_calls, "a lapsed node took calls");

    a.state.beating.store(true, Ordering::SeqCst);
    eventually("a re-admitted", || healthy(&client, &a)).await;
    let stats = client.stats();
    assert_eq!((stats.ejections, stats.readmissions), (1, 1));
}

#[tokio::test]
async fn a_draining_node_is_ejected_and_readmitted_when_serving_again() {
    let a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    let client = connect(&[&a, &b], config()).await;

    a.state.set_serving(false, "draining");
    eventually("a is ejected as draining", || {
        view(&client, &a).ejection == Some(EjectReason::NotServing("draining".into()))
    })
    .await;
    for _ in 0..5 {
        assert_eq!(client.rank(request()).await.expect("rank").node_id, "b");
    }
    assert_eq!(a.state.calls(), 0);

    a.state.set_serving(true, "");
    eventually("a re-admitted", || healthy(&client, &a)).await;
    let stats = client.stats();
    assert_eq!((stats.ejections, stats.readmissions), (1, 1));
}

#[tokio::test]
async fn a_killed_node_is_ejected_and_readmitted_after_restart() {
    let mut a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    let client = connect(&[&a, &b], config()).await;

    a.kill();
    eventually("a is ejected", || !view(&client, &a).healthy).await;
    let reason = view(&client, &a).ejection;
    assert!(
        matches!(
            reason,
            Some(
                EjectReason::StreamFailed(_)
                    | EjectReason::StreamEnded
                    | EjectReason::Unreachable(_)
                    | EjectReason::Lapsed { .. }
            )
        ),
        "{reason:?}"
    );
    for _ in 0..5 {
        assert_eq!(client.rank(request()).await.expect("rank").node_id, "b");
    }

    a.restart();
    eventually("a re-admitted after restart", || healthy(&client, &a)).await;
    assert_eq!(client.stats().readmissions, 1);
}

/// The connection breaks under a running Rank call: the attempt fails in transport, is
/// retried on the other node, and the call succeeds there.
#[tokio::test]
async fn a_transport_error_under_a_call_fails_over_to_another_node() {
    let mut a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    a.state.set(Behaviour::Slow(Duration::from_secs(30)));
    b.state.set_serving(false, "loading");
    let client = FailoverClient::connect([a.address(), b.address()].to_vec(), config())
        .await
        .expect("connect");
    eventually("a admitted", || healthy(&client, &a)).await;

    let call = tokio::spawn({
        let client = client.clone();
        async move { client.rank(request()).await }
    });
    eventually("the call reached a", || a.state.calls() == 1).await;
    b.state.set_serving(true, "");
    eventually("b admitted", || healthy(&client, &b)).await;

    a.kill();
    let response = call.await.expect("join").expect("the call fails over");
    assert_eq!(response.node_id, "b");
    let stats = client.stats();
    assert_eq!((stats.retries, stats.failovers, stats.failures), (1, 1, 0));
    assert!(!view(&client, &a).healthy);
    assert!(stats.ejections >= 1);
}

/// Rank to a node whose process is gone fails with a transport status that the client
/// classifies as retryable (not a final UNKNOWN): checked here on a real connect failure.
#[tokio::test]
async fn connect_refused_is_a_transport_error() {
    let mut a = FakeNode::start("a", BEAT);
    let address = a.address();
    a.kill();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect_lazy();
    let mut ranker = crate::v1::ranker_client::RankerClient::new(channel);
    let status = ranker.rank(request()).await.expect_err("nothing listens");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        crate::client::error::classify(&status),
        crate::client::error::Failure::Transport
    );
}

/// A node that hangs with a call in flight (Rank never answers, heartbeats go silent): the
/// call does not wait for its deadline, it moves to another node once the node lapses.
#[tokio::test]
async fn a_call_in_flight_to_a_node_that_hangs_moves_on_when_it_lapses() {
    let a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    a.state.missed_limit.store(5, Ordering::SeqCst);
    a.state.set(Behaviour::Slow(Duration::from_secs(30)));
    b.state.set_serving(false, "loading");
    let config = ClientConfig {
        default_deadline: Duration::from_secs(20),
        ..config()
    };
    let client = FailoverClient::connect([a.address(), b.address()].to_vec(), config)
        .await
        .expect("connect");
    eventually("a admitted", || healthy(&client, &a)).await;

    let started = Instant::now();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.rank(request()).await }
    });
    eventually("the call reached a", || a.state.calls() == 1).await;
    b.state.set_serving(true, "");
    eventually("b admitted", || healthy(&client, &b)).await;

    // a hangs: its heartbeats stop, its Rank call never returns.
    a.state.beating.store(false, Ordering::SeqCst);
    let response = call.await.expect("join").expect("the call moves to b");
    assert_eq!(response.node_id, "b");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the call waited {:?}: it sat on the hung node",
        started.elapsed()
    );
    assert!(matches!(
        view(&client, &a).ejection,
        Some(EjectReason::Lapsed { .. })
    ));
    let stats = client.stats();
    assert_eq!((stats.retries, stats.failovers, stats.failures), (1, 1, 0));
}

#[tokio::test]
async fn a_node_named_degraded_gets_no_calls_unless_it_is_the_last_one() {
    let a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    let client = connect(&[&a, &b], config()).await;

    a.state.degraded.lock().unwrap().push(b.address());
    eventually("b held out", || view(&client, &b).degraded).await;
    assert!(!view(&client, &b).healthy);
    let before = b.state.calls();
    for _ in 0..20 {
        assert_eq!(client.rank(request()).await.expect("rank").node_id, "a");
    }
    assert_eq!(b.state.calls(), before, "a degraded node gets no calls");
    assert_eq!(client.stats().degradations, 1);

    // Both named: holding both out would leave nothing, so neither is.
    a.state.degraded.lock().unwrap().push(a.address());
    eventually("both back", || healthy(&client, &a) && healthy(&client, &b)).await;
    assert!(!view(&client, &a).degraded && !view(&client, &b).degraded);

    a.state.degraded.lock().unwrap().clear();
    eventually("b recovered", || {
        healthy(&client, &b) && !view(&client, &b).degraded
    })
    .await;
}
