//! Heartbeats: every node's peer table marks a peer down when it crashes, hangs (SIGSTOP)
//! or is cut off, and up again when it is back. The table shows in the metrics and in
//! cluster status. Outcomes only: how fast detection is belongs to the benchmarks
//! (`rankload failover`).

use std::time::Duration;

use rankd_tests::{init, node_status, wait_until, Cluster};

/// How long a state change may take to show: detection needs ~300 ms; the margin is for
/// debug builds on a busy two-core machine.
const SEEN: Duration = Duration::from_secs(20);

/// Waits until every node in `on` counts `peer` as `up`.
async fn wait_seen(c: &Cluster, on: &[u64], peer: u64, up: bool) {
    for &id in on {
        let what = format!(
            "node {id} to count node {peer} {}",
            if up { "up" } else { "down" }
        );
        wait_until(&what, SEEN, || async {
            c.peer_up(id, peer).await == Some(up)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_marked_down_on_crash_hang_and_partition_and_up_when_back() {
    init();
    let mut c = Cluster::start(3).await;
    tracing::info!("--- every node counts both peers up");
    for id in 1..=3 {
        let others: Vec<u64> = (1..=3).filter(|&p| p != id).collect();
        for &p in &others {
            wait_seen(&c, &[id], p, true).await;
        }
        let up = c.node(id).metric_value("rankd_peers_up").await;
        assert_eq!(up, Some(2.0), "node {id}");
    }
    let st = c.status(1).await;
    assert_eq!(st.reported_by, 1);
    for id in 2..=3 {
        let n = node_status(&st, id).expect("listed");
        assert!(n.heartbeat_known && n.heartbeat_up, "node {id}: {n:?}");
        assert!(
            n.heartbeat_age_ms < SEEN.as_millis() as u64,
            "node {id}: {n:?}"
        );
    }

    tracing::info!("--- SIGSTOP node 3: hung with its sockets open");
    c.pause(3);
    wait_seen(&c, &[1, 2], 3, false).await;
    let st = c.status(1).await;
    let n3 = node_status(&st, 3).expect("listed");
    assert!(n3.heartbeat_known && !n3.heartbeat_up, "{n3:?}");
    tracing::info!("--- SIGCONT: it answers again and is back up");
    c.resume(3);
    wait_seen(&c, &[1, 2], 3, true).await;
    wait_seen(&c, &[3], 1, true).await;

    tracing::info!("--- cut node 2 off from the others");
    c.partition(&[2], &[1, 3]);
    wait_seen(&c, &[1, 3], 2, false).await;
    wait_seen(&c, &[2], 1, false).await;
    wait_seen(&c, &[2], 3, false).await;
    tracing::info!("--- heal");
    c.heal();
    wait_seen(&c, &[1, 3], 2, true).await;
    wait_seen(&c, &[2], 1, true).await;

    tracing::info!("--- kill -9 node 1");
    c.kill(1).await;
    wait_seen(&c, &[2, 3], 1, false).await;
    let failovers = c
        .node(2)
        .metrics()
        .await
        .value_or_zero("rankd_failovers_total{peer=\"1\"}");
    assert!(
        failovers >= 1.0,
        "node 2 counted no failover away from node 1"
    );
    tracing::info!("--- restart it");
    c.restart(1).await;
    wait_seen(&c, &[2, 3], 1, true).await;
    wait_seen(&c, &[1], 2, true).await;
    c.wait_leader().await;
}
