//! `rankload failover`: heartbeat failover on a real 3-node cluster over loopback (the
//! integration-test harness starts the `rankd` processes and the per-node peer proxies).
//!
//! - Detection: from injecting a crash (`kill -9`), a hang (SIGSTOP) or a partition (the
//!   per-node TCP proxies cut the node's peer links both ways) until each survivor's own
//!   peer table marks the node down ([`detect`]).
//! - What clients see: steady open-loop load through the failover client, with hedging at
//!   the p95 latency, while one node is crashed, hung, partitioned or drained and then
//!   brought back ([`faults`]): failed calls and latency p50/p99/max, from each call's
//!   scheduled send time.
//! - Client overhead: the failover client against a plain tonic channel at saturation,
//!   both on one node, in alternating rounds of the same run ([`overhead`]).

pub mod detect;
mod faults;
mod overhead;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use rankd_proto::client::{ClientConfig, HedgeConfig, HedgeDelay};
use rankd_tests::Cluster;
use serde::Serialize;

use crate::summary::Summary;
use detect::Fault;
use faults::{FaultReport, Scenario};
use overhead::OverheadReport;

#[derive(Args, Clone)]
pub struct FailoverArgs {
    /// Injections per fault kind for the detection figures (victims rotate).
    #[arg(long, default_value_t = 6)]
    pub reps: usize,
    /// Calls per second of steady load during the fault scenarios.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// How long each fault lasts, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub hold_s: f64,
    /// Load before the fault and after the repair, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub settle_s: f64,
    /// Closed-loop callers for the overhead comparison.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds per overhead round (each round runs the plain channel, then the client).
    #[arg(long, default_value_t = 5.0)]
    pub round_s: f64,
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Run only these fault scenarios (follower-crash, leader-crash, hang, partition,
    /// drain), and skip detection and overhead; for investigating one scenario.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    #[arg(long, default_value = "bench-out/failover.json")]
    pub out: PathBuf,
    #[arg(long, default_value = "")]
    pub machine: String,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    heartbeat_interval_ms: u64,
    missed_limit: u32,
    detection_ms: Vec<(String, Summary)>,
    faults: Vec<FaultReport>,
    overhead: OverheadReport,
}

pub fn run(args: FailoverArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = rt.block_on(measure(&args));
    let mut text = vec![format!(
        "rankload failover: 3 nodes on loopback, heartbeat {} ms x {} missed",
        report.heartbeat_interval_ms, report.missed_limit
    )];
    text.extend(
        report
            .detection_ms
            .iter()
            .map(|(what, s)| s.line(&format!("detected: {what}"))),
    );
    text.extend(report.faults.iter().map(FaultReport::line));
    let o = &report.overhead;
    text.push(format!(
        "overhead at saturation ({} callers, one node): plain {:.0} rps, failover client {:.0} rps, ratio {:.3} (errors {} / {})",
        o.concurrency, o.plain_rps, o.client_rps, o.ratio, o.plain_errors, o.client_errors
    ));
    println!("{}", text.join("\n"));
    crate::summary::write_json(&args.out, &report)
}

async fn measure(args: &FailoverArgs) -> Report {
    eprintln!("--- starting 3 nodes, uploading and promoting the demo model");
    let mut c = Cluster::start(3).await;
    c.serve_v1().await;

    let mut detection_ms = Vec::new();
    let only = !args.only.is_empty();
    for fault in Fault::ALL.into_iter().filter(|_| !only) {
        eprintln!("--- detection: {} x{}", fault.name(), args.reps);
        detection_ms.push((
            fault.name().to_string(),
            detect::measure(&mut c, fault, args.reps).await,
        ));
    }

    let client = c
        .failover_client(
            ClientConfig {
                hedge: Some(HedgeConfig {
                    delay: HedgeDelay::p95(),
                }),
                ..ClientConfig::default()
            },
            3,
        )
        .await;
    let mut faults = Vec::new();
    for scenario in Scenario::ALL
        .into_iter()
        .filter(|s| !only || args.only.iter().any(|o| o == s.key()))
    {
        faults.push(
            faults::run(
                &mut c,
                &client,
                scenario,
                args.rate,
                Duration::from_secs_f64(args.hold_s),
                Duration::from_secs_f64(args.settle_s),
            )
            .await,
        );
    }
    drop(client);

    let overhead = if only {
        OverheadReport::default()
    } else {
        eprintln!("--- overhead at saturation");
        let node = c.node(1).grpc_addr().to_string();
        overhead::measure(
            &node,
            &c.example_request(),
            args.concurrency,
            args.round_s,
            args.rounds,
        )
        .await
    };
    Report {
        machine: args.machine.clone(),
        heartbeat_interval_ms: 100,
        missed_limit: 3,
        detection_ms,
        faults,
        overhead,
    }
}
