//! Three nodes under steady load from the failover client: `kill -9` of a follower and of
//! the leader, SIGSTOP of a node for 3 s, and a SIGTERM drain each fail no request, and the
//! client visibly fails over (ejects the node, serves from the others, takes it back).
//! Bad input is never retried. Outcomes only; latency during faults is a benchmark
//! (`rankload failover`).

use std::time::Duration;

use rankd_proto::client::{ClientConfig, FailoverClient};
use rankd_tests::{init, wait_until, Cluster, SteadyLoad, LOAD_TIMEOUT};
use tonic::Code;

/// Calls per second: steady, and light enough for debug builds on two cores.
const RATE: u32 = 40;
/// Each call's deadline. Generous: a debug-build node restarting next to the others slows
/// everyone; what must not happen is a failure.
const DEADLINE: Duration = Duration::from_secs(5);
/// A client-side state change (ejection, re-admission) may take this long to show.
const SEEN: Duration = Duration::from_secs(20);

fn healthy(client: &FailoverClient, node: &str) -> bool {
    client
        .nodes()
        .iter()
        .any(|n| n.node_id.as_deref() == Some(node) && n.healthy)
}

async fn wait_client_sees(client: &FailoverClient, node: &str, up: bool) {
    let what = format!(
        "the client to {} {node}",
        if up { "admit" } else { "eject" }
    );
    wait_until(&what, if up { LOAD_TIMEOUT } else { SEEN }, || async {
        healthy(client, node) == up
    })
    .await;
}

/// Waits until `node` has served `more` further calls of the load.
async fn wait_served(load: &SteadyLoad, node: &str, more: usize) {
    let base = load.snapshot().served_by().get(node).copied().unwrap_or(0);
    wait_until(
        &format!("{node} to serve {more} more calls"),
        LOAD_TIMEOUT,
        || async { load.snapshot().served_by().get(node).copied().unwrap_or(0) >= base + more },
    )
    .await;
}

/// Waits until `count` further calls have succeeded (on any node).
async fn wait_succeeded(load: &SteadyLoad, count: usize) {
    let ok = |l: &SteadyLoad| l.snapshot().served_by().values().sum::<usize>();
    let base = ok(load);
    wait_until(
        &format!("{count} more calls to succeed"),
        LOAD_TIMEOUT,
        || async { ok(load) >= base + count },
    )
    .await;
}

async fn serving_cluster() -> Cluster {
    let c = Cluster::start(3).await;
    c.serve_v1().await;
    c
}

fn name(id: u64) -> String {
    format!("node-{id}")
}

fn assert_no_failures(report: &rankd_tests::LoadReport) {
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{} of {} calls failed; first: {:?}",
        failures.len(),
        report.sent(),
        failures.first()
    );
    assert!(report.sent() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_follower_then_the_leader_fails_no_request() {
    init();
    let mut c = serving_cluster().await;
    let client = c.failover_client(ClientConfig::default(), 3).await;
    let load = SteadyLoad::start(client.clone(), c.example_request(), RATE, DEADLINE);
    for id in 1..=3 {
        wait_served(&load, &name(id), 1).await;
    }

    let leader = c.wait_leader().await;
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    for (role, victim) in [("follower", follower), ("leader", leader)] {
        tracing::info!("--- kill -9 the {role}, node {victim}");
        c.kill(victim).await;
        wait_client_sees(&client, &name(victim), false).await;
        wait_succeeded(&load, RATE as usize).await;
        tracing::info!("--- restart node {victim}: the client takes it back");
        c.restart(victim).await;
        wait_client_sees(&client, &name(victim), true).await;
        wait_served(&load, &name(victim), 5).await;
        c.wait_leader().await;
    }

    let report = load.stop().await;
    tracing::info!(sent = report.sent(), served_by = ?report.served_by(), stats = ?client.stats(), "load done");
    assert_no_failures(&report);
    let stats = client.stats();
    assert!(stats.ejections >= 2, "{stats:?}");
    assert!(stats.readmissions >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_and_a_drained_node_fail_no_request_and_bad_input_is_not_retried() {
    init();
    let mut c = serving_cluster().await;
    let client = c.failover_client(ClientConfig::default(), 3).await;

    tracing::info!("--- bad input: INVALID_ARGUMENT at once, sent to exactly one node");
    let mut bad = c.example_request();
    bad.query.pop();
    let err = client.rank(bad).await.expect_err("a short query");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let mut refused = 0.0;
    for id in 1..=3 {
        refused += c.node(id).metrics().await.value_or_zero(
            "rankd_requests_total{method=\"/rankd.v1.Ranker/Rank\",code=\"INVALID_ARGUMENT\"}",
        );
    }
    assert_eq!(refused, 1.0, "the bad call reached {refused} nodes");
    assert_eq!(client.stats().retries, 0, "{:?}", client.stats());

    let load = SteadyLoad::start(client.clone(), c.example_request(), RATE, DEADLINE);
    for id in 1..=3 {
        wait_served(&load, &name(id), 1).await;
    }

    tracing::info!("--- SIGSTOP node 2 for 3 s");
    let paused = std::time::Instant::now();
    c.pause(2);
    wait_client_sees(&client, "node-2", false).await;
    wait_succeeded(&load, RATE as usize).await;
    // The fault lasts 3 s (the scenario), not a wait on a condition.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(paused.elapsed())).await;
    tracing::info!("--- SIGCONT: node 2 rejoins");
    c.resume(2);
    wait_client_sees(&client, "node-2", true).await;
    wait_served(&load, "node-2", 5).await;

    tracing::info!("--- SIGTERM node 3: it drains and exits 0");
    let clean = c.terminate(3, Duration::from_secs(60)).await;
    assert!(clean, "node 3 did not exit 0 after SIGTERM");
    assert!(!healthy(&client, "node-3"), "{:?}", client.nodes());
    wait_succeeded(&load, RATE as usize).await;

    let report = load.stop().await;
    tracing::info!(sent = report.sent(), served_by = ?report.served_by(), stats = ?client.stats(), "load done");
    assert_no_failures(&report);
    let stats = client.stats();
    assert!(stats.ejections >= 2, "{stats:?}");
}
