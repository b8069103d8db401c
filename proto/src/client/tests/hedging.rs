//! Hedging: a slow call gets a second attempt on another node after the delay.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::fake::{Behaviour, FakeNode};
use super::{config, eventually, healthy, request, BEAT};
use crate::client::{ClientConfig, FailoverClient, HedgeConfig, HedgeDelay, RetryBudgetConfig};

fn hedged(delay: Duration) -> ClientConfig {
    ClientConfig {
        default_deadline: Duration::from_secs(5),
        hedge: Some(HedgeConfig {
            delay: HedgeDelay::Fixed(delay),
        }),
        ..config()
    }
}

/// Starts slow `a` and not-yet-serving `b`, sends one call (which can only go to `a`), then
/// lets `b` in. Returns the call's handle and when it started.
async fn call_stuck_on_a(
    a: &FakeNode,
    b: &FakeNode,
    config: ClientConfig,
) -> (
    FailoverClient,
    tokio::task::JoinHandle<Result<crate::v1::RankResponse, tonic::Status>>,
    Instant,
) {
    b.state.set_serving(false, "loading");
    let client = FailoverClient::connect([a.address(), b.address()].to_vec(), config)
        .await
        .expect("connect");
    eventually("a admitted", || healthy(&client, a)).await;
    let started = Instant::now();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.rank(request()).await }
    });
    eventually("the call reached a", || a.state.calls() == 1).await;
    b.state.set_serving(true, "");
    eventually("b admitted", || healthy(&client, b)).await;
    (client, call, started)
}

#[tokio::test]
async fn a_slow_call_is_hedged_on_another_node_and_the_first_answer_wins() {
    let a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    a.state.set(Behaviour::Slow(Duration::from_secs(30)));
    let delay = Duration::from_millis(300);
    let (client, call, started) = call_stuck_on_a(&a, &b, hedged(delay)).await;
    assert_eq!(b.state.calls(), 0, "hedged before the delay");

    let response = call.await.expect("join").expect("the hedge answers");
    let elapsed = started.elapsed();
    assert_eq!(response.node_id, "b");
    assert!(
        elapsed >= delay,
        "answered after {elapsed:?}, before the hedge delay"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!((a.state.calls(), b.state.calls()), (1, 1));
    let stats = client.stats();
    assert_eq!((stats.hedges, stats.failovers, stats.retries), (1, 1, 0));
    eventually("the losing attempt on a was cancelled", || {
        a.state.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn the_first_attempt_wins_when_it_answers_first() {
    let a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    a.state.set(Behaviour::Slow(Duration::from_millis(400)));
    b.state.set(Behaviour::Slow(Duration::from_secs(30)));
    let (client, call, _) = call_stuck_on_a(&a, &b, hedged(Duration::from_millis(200))).await;

    let response = call.await.expect("join").expect("a answers");
    assert_eq!(response.node_id, "a");
    assert_eq!(b.state.calls(), 1, "the hedge was sent");
    let stats = client.stats();
    assert_eq!((stats.hedges, stats.failovers), (1, 0));
    eventually("the hedge on b was cancelled", || {
        b.state.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn hedges_are_paid_from_the_retry_budget() {
    let a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    a.state.set(Behaviour::Slow(Duration::from_millis(500)));
    let config = ClientConfig {
        retry_budget: RetryBudgetConfig {
            ratio: 0.0,
            min_per_sec: 0,
            ttl: Duration::from_secs(10),
        },
        ..hedged(Duration::from_millis(100))
    };
    let (client, call, _) = call_stuck_on_a(&a, &b, config).await;

    let response = call.await.expect("join").expect("a answers");
    assert_eq!(response.node_id, "a");
    assert_eq!(b.state.calls(), 0);
    let stats = client.stats();
    assert_eq!((stats.hedges, stats.budget_exhausted), (0, 1));
}
