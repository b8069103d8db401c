//! Retries, the retry budget and the deadline.

use std::time::{Duration, Instant};

use tonic::Code;

use super::fake::{Behaviour, FakeNode};
use super::{config, connect, eventually, healthy, request, view, BEAT};
use crate::client::{ClientConfig, EjectReason, FailoverClient, RetryBudgetConfig};

/// Calls until `failing` has answered at least `hits` of them; every call must succeed on
/// `good`. Between calls, waits for `failing` to be back in the balancer so it gets hit.
async fn call_until_hit(client: &FailoverClient, failing: &FakeNode, good: &FakeNode, hits: usize) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while failing.state.calls() < hits {
        assert!(
            Instant::now() < give_up,
            "{} was never picked",
            failing.address()
        );
        let response = client.rank(request()).await.expect("the call fails over");
        assert_eq!(response.node_id, good.state.node_id);
        eventually("the failing node is back", || healthy(client, failing)).await;
    }
}

#[tokio::test]
async fn unavailable_is_retried_on_another_node_and_ejects() {
    let a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    a.state.set(Behaviour::Fail(Code::Unavailable));
    let client = connect(&[&a, &b], config()).await;

    call_until_hit(&client, &a, &b, 3).await;
    let stats = client.stats();
    let a_calls = a.state.calls() as u64;
    assert_eq!(stats.retries, a_calls, "one retry per UNAVAILABLE");
    assert_eq!(stats.failovers, a_calls);
    assert_eq!(stats.ejections, a_calls, "each UNAVAILABLE ejects a");
    assert_eq!(stats.failures, 0);
    assert_eq!(b.state.calls() as u64, stats.calls, "every call ended on b");
}

#[tokio::test]
async fn resource_exhausted_is_retried_on_another_node_and_cools_down() {
    let a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    a.state.set(Behaviour::Fail(Code::ResourceExhausted));
    let client = connect(&[&a, &b], config()).await;

    call_until_hit(&client, &a, &b, 3).await;
    let stats = client.stats();
    let a_calls = a.state.calls() as u64;
    assert_eq!(stats.retries, a_calls);
    assert_eq!(stats.failovers, a_calls);
    assert_eq!(stats.cooldowns, a_calls);
    assert_eq!(
        stats.ejections, 0,
        "an overloaded node is rested, not ejected"
    );
    assert_eq!(b.state.calls() as u64, stats.calls);
}

#[tokio::test]
async fn a_resting_node_takes_no_calls() {
    let a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    a.state.set(Behaviour::Fail(Code::ResourceExhausted));
    let config = ClientConfig {
        overload_cooldown: Duration::from_secs(30),
        ..config()
    };
    let client = connect(&[&a, &b], config).await;
    while a.state.calls() == 0 {
        assert_eq!(client.rank(request()).await.expect("rank").node_id, "b");
    }
    let node = view(&client, &a);
    assert!(node.cooling_down && !node.healthy && node.ejection.is_none());
    for _ in 0..10 {
        assert_eq!(client.rank(request()).await.expect("rank").node_id, "b");
    }
    assert_eq!(a.state.calls(), 1);
}

#[tokio::test]
async fn invalid_argument_is_returned_at_once() {
    let a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    for node in [&a, &b] {
        node.state.set(Behaviour::Fail(Code::InvalidArgument));
    }
    let client = connect(&[&a, &b], config()).await;

    let status = client.rank(request()).await.expect_err("bad input");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        a.state.calls() + b.state.calls(),
        1,
        "exactly one node saw it"
    );
    let stats = client.stats();
    assert_eq!((stats.retries, stats.ejections, stats.failures), (0, 0, 1));
    assert!(healthy(&client, &a) && healthy(&client, &b));
}

#[tokio::test]
async fn when_every_node_failed_the_last_error_returns_at_once() {
    // A serving heartbeat re-admits an ejected node at once: with the usual 20 ms beat the
    // ejections below could be undone before they are looked at on a busy machine.
    let slow_beat = Duration::from_secs(5);
    let a = FakeNode::start("a", slow_beat);
    let b = FakeNode::start("b", slow_beat);
    for node in [&a, &b] {
        node.state.set(Behaviour::Fail(Code::Unavailable));
    }
    let client = connect(&[&a, &b], config()).await;

    let started = Instant::now();
    let status = client.rank(request()).await.expect_err("all fail");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "waited for the deadline"
    );
    assert_eq!((a.state.calls(), b.state.calls()), (1, 1));
    for node in [&a, &b] {
        let reason = view(&client, node).ejection;
        assert!(
            matches!(reason, Some(EjectReason::CallUnavailable(_))),
            "{reason:?}"
        );
    }
}

#[tokio::test]
async fn an_empty_budget_stops_retries() {
    let nodes = [
        FakeNode::start("a", BEAT),
        FakeNode::start("b", BEAT),
        FakeNode::start("c", BEAT),
    ];
    for node in &nodes {
        node.state.set(Behaviour::Fail(Code::Unavailable));
    }
    // No floor; one retry per two calls: a retry costs two deposits.
    let config = ClientConfig {
        retry_budget: RetryBudgetConfig {
            ratio: 0.5,
            min_per_sec: 0,
            ttl: Duration::from_secs(10),
        },
        ..config()
    };
    let client = connect(&[&nodes[0], &nodes[1], &nodes[2]], config).await;
    let seen = || nodes.iter().map(|n| n.state.calls()).sum::<usize>();

    let status = client.rank(request()).await.expect_err("fails");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(seen(), 1, "one deposit does not pay for a retry");
    let stats = client.stats();
    assert_eq!((stats.retries, stats.budget_exhausted), (0, 1));

    eventually("all nodes back", || {
        client.nodes().iter().all(|n| n.healthy)
    })
    .await;
    let status = client.rank(request()).await.expect_err("fails");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(seen(), 3, "two deposits pay for exactly one retry");
    let stats = client.stats();
    assert_eq!((stats.retries, stats.budget_exhausted), (1, 2));
}

/// Parses a `grpc-timeout` header value ("199987u") into a Duration.
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tokio::test]
async fn the_deadline_is_propagated_and_respected() {
    let a = FakeNode::start("a", BEAT);
    a.state.set(Behaviour::Slow(Duration::from_secs(10)));
    let client = connect(&[&a], config()).await;

    let started = Instant::now();
    let status = client
        .rank_with_deadline(request(), Duration::from_millis(200))
        .await
        .expect_err("too slow");
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(700), "{elapsed:?}");

    let sent = a
        .state
        .timeouts
        .lock()
        .map(|t| t.clone())
        .unwrap_or_default();
    assert_eq!(sent.len(), 1);
    let sent = grpc_timeout(&sent[0]).expect("a grpc-timeout header");
    assert!(
        sent <= Duration::from_millis(200) && sent > Duration::from_millis(100),
        "{sent:?}"
    );
    eventually("the abandoned call was cancelled on the node", || {
        a.state.cancelled.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn a_call_waits_for_a_healthy_node_until_its_deadline() {
    let a = FakeNode::start("a", BEAT);
    a.state.set_serving(false, "loading");
    let client = FailoverClient::connect([a.address().as_str()], config())
        .await
        .expect("connect");

    let started = Instant::now();
    let status = client
        .rank_with_deadline(request(), Duration::from_millis(150))
        .await
        .expect_err("nothing healthy");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(status.code(), Code::Unavailable);
    let expected = format!("no healthy rankd node among [{}]", a.address());
    assert_eq!(status.message(), expected);
    assert_eq!(a.state.calls(), 0);

    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.rank(request()).await }
    });
    a.state.set_serving(true, "");
    let response = waiting.await.expect("join").expect("served once a is up");
    assert_eq!(response.node_id, "a");

    // Any Duration is a valid deadline: zero fails at once, huge ones do not overflow.
    let zero = client.rank_with_deadline(request(), Duration::ZERO).await;
    assert_eq!(
        zero.map_err(|s| s.code()).err(),
        Some(Code::DeadlineExceeded)
    );
    let forever = client.rank_with_deadline(request(), Duration::MAX).await;
    assert_eq!(forever.expect("rank").node_id, "a");
}
