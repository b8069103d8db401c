//! What a client sees during a fault: steady open-loop load through the failover client
//! (hedging on), a fault injected into one node for a while, then repaired. Every call
//! scheduled from the injection until a short settling time after the repair counts.

use std::time::Duration;

use rankd_proto::client::FailoverClient;
use rankd_tests::{Cluster, SteadyLoad};
use serde::Serialize;

use super::detect::{self, Fault};

/// One scenario's figures.
#[derive(Serialize)]
pub struct FaultReport {
    pub scenario: String,
    pub sent: usize,
    pub failed: usize,
    pub first_failure: Option<String>,
    /// When the first and last failed calls were scheduled, in seconds from the injection
    /// (the repair came `hold` seconds after it).
    pub failures_from_s: Option<f64>,
    pub failures_until_s: Option<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Successful calls per serving node during the window.
    pub served_by: std::collections::BTreeMap<String, usize>,
}

impl FaultReport {
    pub fn line(&self) -> String {
        format!(
            "{:<28} sent {:>5}  failed {:>3}   p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms",
            self.scenario, self.sent, self.failed, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Scenario {
    Fault { fault: Fault, leader: bool },
    Drain,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Fault {
            fault: Fault::Crash,
            leader: false,
        },
        Scenario::Fault {
            fault: Fault::Crash,
            leader: true,
        },
        Scenario::Fault {
            fault: Fault::Hang,
            leader: false,
        },
        Scenario::Fault {
            fault: Fault::Partition,
            leader: true,
        },
        Scenario::Drain,
    ];

    /// Short name for `--only`.
    pub fn key(self) -> &'static str {
        match self {
            Scenario::Fault {
                fault: Fault::Crash,
                leader: false,
            } => "follower-crash",
            Scenario::Fault {
                fault: Fault::Crash,
                leader: true,
            } => "leader-crash",
            Scenario::Fault {
                fault: Fault::Hang, ..
            } => "hang",
            Scenario::Fault {
                fault: Fault::Partition,
                ..
            } => "partition",
            Scenario::Drain => "drain",
        }
    }

    fn name(self) -> String {
        match self {
            Scenario::Fault { fault, leader } => {
                format!(
                    "{} of {}",
                    fault.name(),
                    if leader { "leader" } else { "follower" }
                )
            }
            Scenario::Drain => "SIGTERM drain".into(),
        }
    }
}

/// Runs one scenario: `settle` of load before, the fault for `hold`, the repair, `settle`
/// after. Returns the calls scheduled from the injection to the end.
pub async fn run(
    c: &mut Cluster,
    client: &FailoverClient,
    scenario: Scenario,
    rate: u32,
    hold: Duration,
    settle: Duration,
) -> FaultReport {
    let leader = c.wait_leader().await;
    let victim = match scenario {
        Scenario::Fault { leader: true, .. } => leader,
        _ => (1..=3).find(|&i| i != leader).unwrap_or(1),
    };
    eprintln!("--- {} (node {victim})", scenario.name());
    let load = SteadyLoad::start(
        client.clone(),
        c.example_request(),
        rate,
        Duration::from_secs(2),
    );
    tokio::time::sleep(settle).await;
    let from = load.elapsed();
    match scenario {
        Scenario::Fault { fault, .. } => {
            detect::inject(c, fault, victim).await;
            tokio::time::sleep(hold).await;
            detect::repair(c, fault, victim).await;
        }
        Scenario::Drain => {
            c.terminate(victim, Duration::from_secs(60)).await;
            tokio::time::sleep(hold).await;
            c.restart(victim).await;
        }
    }
    // Back in the client's balancer before the window closes, so re-admission is covered.
    let name = format!("node-{victim}");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !client
        .nodes()
        .iter()
        .any(|n| n.node_id.as_deref() == Some(name.as_str()) && n.healthy)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(settle).await;
    let report = load.stop().await;
    let window: Vec<_> = report.outcomes.iter().filter(|o| o.at >= from).collect();
    let mut lat: Vec<f64> = window
        .iter()
        .map(|o| o.latency.as_secs_f64() * 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let failures: Vec<_> = window.iter().filter(|o| o.result.is_err()).collect();
    let mut served_by = std::collections::BTreeMap::new();
    for o in &window {
        if let Ok(n) = &o.result {
            *served_by.entry(n.clone()).or_insert(0) += 1;
        }
    }
    FaultReport {
        scenario: scenario.name(),
        sent: window.len(),
        failed: failures.len(),
        first_failure: failures.first().and_then(|o| o.result.clone().err()),
        failures_from_s: failures.first().map(|o| (o.at - from).as_secs_f64()),
        failures_until_s: failures.last().map(|o| (o.at - from).as_secs_f64()),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: lat.last().copied().unwrap_or(0.0),
        served_by,
    }
}
