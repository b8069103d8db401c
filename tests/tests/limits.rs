//! Limits on hostile or runaway clients that are not about one request's content (message
//! size, candidates and upload size are in bad_input.rs and models.rs): the per-client
//! rate limit and the concurrent streams one connection may hold.

use std::net::IpAddr;
use std::time::Duration;

use rankd_proto::v1::ranker_client::RankerClient;
use rankd_tests::{example_query, init, is_deadline, rank_request, Node};
use tonic::transport::Endpoint;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A client connection from source address `from`.
fn client_from(node: &Node, from: &str) -> RankerClient<tonic::transport::Channel> {
    let ip: IpAddr = from.parse().expect("an IP");
    let channel = Endpoint::from_shared(node.endpoint())
        .expect("an endpoint")
        .local_address(Some(ip))
        .connect_lazy();
    RankerClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_is_refused_and_others_are_not() {
    init();
    let node = Node::builder()
        .set("auth.rank_rate_per_client", "5")
        .start()
        .await;
    let q = example_query();
    let req = || rank_request(&q.query, &q.candidates, 3);

    tracing::info!("--- 20 calls back to back from 127.0.0.1: the bucket holds 5");
    let mut busy = client_from(&node, "127.0.0.1");
    let mut refused = Vec::new();
    for _ in 0..20 {
        if let Err(s) = busy.rank(req()).await {
            refused.push(s);
        }
    }
    assert!(!refused.is_empty(), "the rate limit never applied");
    for s in &refused {
        assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
        assert!(s.message().contains("rate limit"), "{}", s.message());
    }

    tracing::info!("--- another client (127.0.0.2) is served at once");
    client_from(&node, "127.0.0.2")
        .rank(req())
        .await
        .expect("another client has its own bucket");
    let counted = node
        .metric_value("rankd_rate_limited_total{surface=\"rank\"}")
        .await;
    assert_eq!(counted, Some(refused.len() as f64));

    tracing::info!("--- the server kept serving");
    assert_eq!(node.health("").await, rankd_tests::ServingStatus::Serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_may_hold_only_so_many_streams() {
    init();
    let node = Node::builder()
        .set("server.max_concurrent_streams", "1")
        .start()
        .await;
    let q = example_query();
    let channel = node.channel().await;

    tracing::info!("--- a Watch stream takes the connection's only stream");
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .expect("watch")
        .into_inner();
    watch
        .message()
        .await
        .expect("the first status")
        .expect("a status");

    tracing::info!("--- a call on the same connection cannot start before its deadline");
    let mut req = tonic::Request::new(rank_request(&q.query, &q.candidates, 3));
    req.set_timeout(Duration::from_millis(500));
    let err = RankerClient::new(channel.clone())
        .rank(req)
        .await
        .expect_err("no stream left on this connection");
    assert!(is_deadline(&err), "{err:?}");

    tracing::info!("--- another connection is served, and so is this one once the stream ends");
    node.rank_client()
        .await
        .rank(rank_request(&q.query, &q.candidates, 3))
        .await
        .expect("a new connection");
    drop(watch);
    RankerClient::new(channel)
        .rank(rank_request(&q.query, &q.candidates, 3))
        .await
        .expect("the stream was released");
}
