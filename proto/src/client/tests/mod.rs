//! Tests of the failover client against real in-process tonic servers ([`fake`]), with
//! heartbeats every 20 ms so that ejection and re-admission take tens of milliseconds.
//! Tests wait on conditions ([`eventually`]), never on fixed sleeps.

mod calls;
mod discovery;
mod fake;
mod health;
mod hedging;

use std::time::Duration;

use super::{ClientConfig, FailoverClient, NodeInfo};
use crate::v1::RankRequest;
use fake::FakeNode;

/// The fakes' heartbeat interval.
const BEAT: Duration = Duration::from_millis(20);

/// Client settings scaled to [`BEAT`]; the fallback cadence is the fakes' own.
fn config() -> ClientConfig {
    ClientConfig {
        default_deadline: Duration::from_secs(3),
        connect_timeout: Duration::from_millis(500),
        heartbeat_interval: BEAT,
        resubscribe_after: Duration::from_millis(300),
        reconnect_backoff_min: Duration::from_millis(10),
        reconnect_backoff_max: Duration::from_millis(100),
        overload_cooldown: Duration::from_millis(40),
        discover_members: false,
        ..ClientConfig::default()
    }
}

fn request() -> RankRequest {
    RankRequest {
        request_id: "test".into(),
        query: vec![0.5; 4],
        candidate_ids: vec![10, 11, 12, 13],
        top_k: 2,
    }
}

/// Polls `condition` every 5 ms until it holds; panics after 5 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The client's view of `node`.
fn view(client: &FailoverClient, node: &FakeNode) -> NodeInfo {
    let address = node.address();
    client
        .nodes()
        .into_iter()
        .find(|n| n.address == address)
        .unwrap_or_else(|| panic!("the client does not know {address}"))
}

fn healthy(client: &FailoverClient, node: &FakeNode) -> bool {
    client
        .nodes()
        .iter()
        .any(|n| n.address == node.address() && n.healthy)
}

/// Connects to `nodes` and waits until all of them are healthy.
async fn connect(nodes: &[&FakeNode], config: ClientConfig) -> FailoverClient {
    let addresses: Vec<String> = nodes.iter().map(|n| n.address()).collect();
    let client = FailoverClient::connect(addresses, config)
        .await
        .expect("connect");
    assert!(
        client
            .wait_healthy(nodes.len(), Duration::from_secs(5))
            .await,
        "nodes never became healthy: {:?}",
        client.nodes()
    );
    client
}
