//! Finding nodes: DNS names, heartbeat members, bad targets.

use std::time::Duration;

use super::fake::FakeNode;
use super::{config, eventually, request, view, BEAT};
use crate::client::{ClientConfig, ClientError, FailoverClient, NodeOrigin, Targets};

#[tokio::test]
async fn a_dns_name_finds_the_node() {
    let a = FakeNode::start("a", BEAT);
    let name = format!("localhost:{}", a.addr.port());
    let client = FailoverClient::connect(Targets::dns(name, Duration::from_millis(50)), config())
        .await
        .expect("connect");
    let response = client.rank(request()).await.expect("rank");
    assert_eq!(response.node_id, "a");
    let node = view(&client, &a);
    assert_eq!(node.origin, NodeOrigin::Dns);
    assert!(node.healthy);
}

#[tokio::test]
async fn members_in_heartbeats_become_nodes() {
    let a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    *a.state.members.lock().expect("members") = vec![a.address(), b.address()];
    let config = ClientConfig {
        discover_members: true,
        ..config()
    };
    let client = FailoverClient::connect([a.address().as_str()], config)
        .await
        .expect("connect");
    eventually("b learned and admitted", || {
        client
            .nodes()
            .iter()
            .any(|n| n.address == b.address() && n.healthy && n.origin == NodeOrigin::Member)
    })
    .await;
    assert_eq!(client.nodes().len(), 2);
}

#[tokio::test]
async fn members_are_ignored_unless_discovery_is_on() {
    let a = FakeNode::start("a", BEAT);
    let b = FakeNode::start("b", BEAT);
    *a.state.members.lock().expect("members") = vec![b.address()];
    let client = FailoverClient::connect([a.address().as_str()], config())
        .await
        .expect("connect");
    eventually("a admitted", || view(&client, &a).healthy).await;
    for _ in 0..5 {
        assert_eq!(client.rank(request()).await.expect("rank").node_id, "a");
    }
    assert_eq!(client.nodes().len(), 1);
}

#[tokio::test]
async fn a_member_alias_of_a_known_node_is_dropped() {
    let a = FakeNode::start("a", BEAT);
    let alias = format!("localhost:{}", a.addr.port());
    *a.state.members.lock().expect("members") = vec![alias.clone()];
    let config = ClientConfig {
        discover_members: true,
        ..config()
    };
    let client = FailoverClient::connect([a.address().as_str()], config)
        .await
        .expect("connect");
    eventually("the alias was found out", || {
        client.inner.pool.is_alias(&alias)
    })
    .await;
    assert_eq!(client.nodes().len(), 1);
    for _ in 0..5 {
        client.rank(request()).await.expect("rank");
    }
    assert_eq!(client.nodes().len(), 1, "the alias came back");
    assert_eq!(client.nodes()[0].address, a.address());
}

#[tokio::test]
async fn bad_targets_are_rejected() {
    let empty: Vec<String> = Vec::new();
    let result = FailoverClient::connect(empty, ClientConfig::default()).await;
    assert!(matches!(result, Err(ClientError::NoTargets)));

    let result = FailoverClient::connect(["https://127.0.0.1:1"], ClientConfig::default()).await;
    assert!(matches!(result, Err(ClientError::InvalidAddress { .. })));

    let result = FailoverClient::connect(
        Targets::dns("localhost:1", Duration::ZERO),
        ClientConfig::default(),
    )
    .await;
    assert!(matches!(result, Err(ClientError::Config { .. })));

    let bad_config = ClientConfig {
        max_attempts: 0,
        ..ClientConfig::default()
    };
    let result = FailoverClient::connect(["127.0.0.1:1"], bad_config).await;
    assert!(matches!(
        result,
        Err(ClientError::Config {
            field: "max_attempts",
            ..
        })
    ));
}
