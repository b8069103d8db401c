//! Gray failures: a node made slow (its heartbeats keep arriving, its health stays SERVING)
//! is judged degraded against its peers, in cluster status and metrics; the failover
//! client stops sending it calls; once the fault clears, it recovers and gets its share
//! again.

use std::time::Duration;

use rankd_proto::admin::v1::InjectFaultRequest;
use rankd_proto::client::ClientConfig;
use rankd_tests::{init, wait_for, wait_until, Cluster, LoadReport, SteadyLoad};

const RATE: u32 = 60;

/// The share of the successful calls scheduled in `[from, to)` that `node` served.
fn share(report: &LoadReport, node: &str, from: Duration, to: Duration) -> (f64, usize) {
    let served: Vec<&String> = report
        .outcomes
        .iter()
        .filter(|o| o.at >= from && o.at < to)
        .filter_map(|o| o.result.as_ref().ok())
        .collect();
    let mine = served.iter().filter(|n| n.as_str() == node).count();
    (mine as f64 / served.len().max(1) as f64, served.len())
}

async fn degraded_in_status(c: &Cluster, via: u64, id: u64) -> Result<String, String> {
    let st = c.try_status(via).await.map_err(|s| s.to_string())?;
    let n = st
        .nodes
        .iter()
        .find(|n| n.id == id)
        .ok_or_else(|| format!("no node {id}"))?;
    if n.degraded {
        Ok(n.degraded_reason.clone())
    } else {
        Err(format!(
            "node {id} not degraded: p99 {:.1} ms over {} calls",
            n.p99_ms, n.recent_calls
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_is_degraded_loses_its_traffic_and_recovers() {
    init();
    let c = Cluster::builder(3)
        .set("outlier.window_ms", "2000")
        .set("outlier.min_calls", "10")
        .start()
        .await;
    c.serve_v1().await;
    let client = c.failover_client(ClientConfig::default(), 3).await;
    let load = SteadyLoad::start(
        client.clone(),
        c.example_request(),
        RATE,
        Duration::from_secs(2),
    );
    let slow = c.node(3).id().to_string();

    tracing::info!("--- healthy: every node takes a share");
    wait_until("3 s of healthy load", Duration::from_secs(30), || async {
        load.elapsed() >= Duration::from_secs(3)
    })
    .await;
    let before = load.elapsed();
    let (healthy_share, n) = share(&load.snapshot(), &slow, Duration::from_secs(1), before);
    assert!(n > 50, "{n} calls");
    assert!(
        healthy_share > 0.15,
        "node 3 served {healthy_share:.2} while healthy"
    );
    assert!(degraded_in_status(&c, 1, 3).await.is_err());

    tracing::info!("--- node 3 answers every call 120 ms late");
    c.admin(3)
        .await
        .inject_fault(InjectFaultRequest {
            latency_ms: 120,
            ..Default::default()
        })
        .await
        .expect("inject");
    let why = wait_for("node 3 degraded", Duration::from_secs(30), || async {
        degraded_in_status(&c, 1, 3).await
    })
    .await;
    assert!(why.contains("p99"), "{why}");
    assert_eq!(
        c.node(1)
            .metric_value("rankd_peer_degraded{peer=\"3\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        c.node(3)
            .metric_value("rankd_peer_degraded{peer=\"3\"}")
            .await,
        Some(1.0),
        "the node sees itself degraded too"
    );
    wait_until(
        "the client holds node 3 out",
        Duration::from_secs(10),
        || async {
            client
                .nodes()
                .iter()
                .any(|n| n.degraded && n.node_id.as_deref() == Some(slow.as_str()))
        },
    )
    .await;
    assert!(client.stats().degradations >= 1);

    let held = load.elapsed();
    wait_until(
        "4 s of load while degraded",
        Duration::from_secs(30),
        || async { load.elapsed() >= held + Duration::from_secs(4) },
    )
    .await;
    let (gray_share, n) = share(&load.snapshot(), &slow, held, held + Duration::from_secs(4));
    tracing::info!(healthy_share, gray_share, n, "node 3's share of calls");
    assert!(n > 100, "{n} calls");
    assert!(
        gray_share < healthy_share / 2.0,
        "a degraded node's share drops: {gray_share:.3} against {healthy_share:.3} while healthy"
    );
    // Twice the window since detection, with clients holding it out: the peers' probe
    // calls keep the evidence fresh, so the verdict does not lapse while it is still slow.
    let still = degraded_in_status(&c, 2, 3)
        .await
        .expect("still degraded while slow");
    assert!(still.contains("p99"), "{still}");
    let probes = c
        .node(1)
        .metric_value("rankd_peer_probes_total{peer=\"3\",result=\"ok\"}")
        .await
        .unwrap_or(0.0);
    assert!(probes > 0.0, "node 1 probes the degraded node");

    tracing::info!("--- the fault clears: node 3 recovers and gets calls again");
    c.admin(3)
        .await
        .inject_fault(InjectFaultRequest {
            clear: true,
            ..Default::default()
        })
        .await
        .expect("clear");
    wait_until(
        "node 3 no longer degraded",
        Duration::from_secs(30),
        || async {
            degraded_in_status(&c, 1, 3).await.is_err()
                && client.nodes().iter().any(|n| {
                    !n.degraded && n.healthy && n.node_id.as_deref() == Some(slow.as_str())
                })
        },
    )
    .await;
    let healed = load.elapsed();
    wait_until(
        "3 s of load after recovery",
        Duration::from_secs(30),
        || async { load.elapsed() >= healed + Duration::from_secs(3) },
    )
    .await;
    let report = load.stop().await;
    let (after_share, _) = share(&report, &slow, healed, healed + Duration::from_secs(3));
    assert!(
        after_share > 0.15,
        "a recovered node takes its share again: {after_share:.3}"
    );
    assert!(
        report.failures().is_empty(),
        "slow is not failed: {:?}",
        &report.failures()[..report.failures().len().min(5)]
    );
}
