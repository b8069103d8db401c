//! Disaster-recovery drills: real faults injected into a running cluster under steady load,
//! measured for what users would have seen.
//!
//! `rankload drill --scenario NAME` (repeatable) or `--all` brings up its own local cluster:
//! three real `rankd` processes through the integration-test harness, each with its own data
//! directory and a TCP proxy in front of its peer port, the demo model uploaded and
//! promoted. Each scenario runs under open-loop load through the failover client and reports
//! detection time, recovery time (RTO), failed requests by code, lost acknowledged
//! promotions (RPO), the version divergence window and latency before, during and after
//! the fault ([`model::ScenarioResult`]). The report ([`report`]) is Markdown and JSON
//! with one timeline chart per scenario; the run exits non-zero when an objective is missed.
//!
//! Two scenarios fault quality rather than liveness: `gray-node` slows one follower's Rank
//! calls (admin InjectFault) and measures the peers judging it degraded and the failover
//! client holding it out; `bad-model` promotes a drifted version with a bake window
//! (`--bake-s`) and measures the leader's automatic rollback.
//!
//! With `--addrs`, the drill targets an existing cluster instead, through its client
//! addresses, with faults injected by commands the operator gives (`--hook-kill`,
//! `--hook-start`, `--hook-stop`, `--hook-cont`; [`remote`]). Scenarios whose faults cannot
//! be injected that way (files, peer links, a fresh cluster) are reported as skipped, with
//! the reason.

pub mod model;
pub mod report;

mod control;
mod env;
mod phase;
mod remote;
mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use env::DrillEnv;
use model::{AvailabilityInputs, DrillReport, Objectives, ScenarioResult};

#[derive(Args, Clone)]
pub struct DrillArgs {
    /// A scenario to run (repeatable): follower-crash, leader-crash, hang,
    /// partition-leader, corrupt-artifact, wrong-key, gray-node, bad-model,
    /// promote-during-leader-crash, full-restart, restore-from-backup.
    #[arg(long = "scenario")]
    pub scenarios: Vec<String>,
    /// Run every scenario.
    #[arg(long)]
    pub all: bool,
    /// An existing cluster's client addresses (comma-separated) instead of a local one.
    #[arg(long, value_delimiter = ',')]
    pub addrs: Vec<String>,
    /// Against an existing cluster: the query every call sends.
    #[arg(long, default_value = "models/demo/example_query.json")]
    pub query_file: PathBuf,
    /// Against an existing cluster: shell commands that inject faults on its hosts, with
    /// `{id}` (Raft id) and `{addr}` (client address) replaced. Kill a node's process:
    #[arg(long)]
    pub hook_kill: Option<String>,
    /// ... start it again:
    #[arg(long)]
    pub hook_start: Option<String>,
    /// ... freeze it (SIGSTOP):
    #[arg(long)]
    pub hook_stop: Option<String>,
    /// ... resume it (SIGCONT):
    #[arg(long)]
    pub hook_cont: Option<String>,
    /// Calls per second of steady load during each scenario.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// How long each fault lasts, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub hold_s: f64,
    /// Load before each fault and after recovery, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub settle_s: f64,
    /// bad-model: the bake window its promotion asks for, in seconds; the automatic
    /// rollback must come within it.
    #[arg(long, default_value_t = env::DEFAULT_BAKE.as_secs_f64())]
    pub bake_s: f64,
    /// Objective: most failed requests per scenario (whole-cluster outages excepted).
    #[arg(long, default_value_t = 0)]
    pub max_failed: u64,
    /// Objective: longest recovery time, in milliseconds.
    #[arg(long, default_value_t = 5000.0)]
    pub max_rto_ms: f64,
    /// Objective: most acknowledged promotions lost.
    #[arg(long, default_value_t = 0)]
    pub max_rpo: u64,
    /// Availability estimate: failures per node per year.
    #[arg(long, default_value_t = 12.0)]
    pub failures_per_node_year: f64,
    /// Where the report goes: `<out-dir>/<stem>.md`, `.json` and `<stem>-charts/`.
    #[arg(long, default_value = "bench-out")]
    pub out_dir: PathBuf,
    #[arg(long, default_value = "drills")]
    pub stem: String,
    #[arg(long, default_value = "")]
    pub machine: String,
}

pub fn run(args: DrillArgs) -> Result<()> {
    let names: Vec<String> = if args.all {
        scenarios::ALL.iter().map(|s| s.to_string()).collect()
    } else {
        args.scenarios.clone()
    };
    if names.is_empty() {
        bail!("name a scenario with --scenario NAME, or pass --all");
    }
    if let Some(bad) = names.iter().find(|n| !scenarios::is_known(n)) {
        bail!(
            "unknown scenario {bad:?}; known: {}",
            scenarios::ALL.join(", ")
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let objectives = Objectives {
        max_failed_requests: args.max_failed,
        max_rto_ms: args.max_rto_ms,
        max_rpo: args.max_rpo,
    };
    let mut results = rt.block_on(drive(&args, &names));
    for r in &mut results {
        report::objectives::check(r, &objectives);
    }
    let report = DrillReport {
        machine: args.machine.clone(),
        date: utc_now(),
        target: if args.addrs.is_empty() {
            "local 3-node cluster: real rankd processes started by the drill".into()
        } else {
            format!("existing cluster at {}", args.addrs.join(", "))
        },
        rate: args.rate,
        objectives,
        availability: AvailabilityInputs {
            failures_per_node_year: args.failures_per_node_year,
            replicas: 3,
        },
        scenarios: results,
    };
    let written = report::write(&report, &args.out_dir, &args.stem)
        .with_context(|| format!("writing the report under {}", args.out_dir.display()))?;
    for r in &report.scenarios {
        let verdict = match (&r.skipped, r.passed()) {
            (Some(why), _) => format!("SKIPPED ({why})"),
            (None, true) => "PASS".into(),
            (None, false) => "FAIL".into(),
        };
        println!(
            "{:<28} {verdict:<8} RTO {:>9} ms  failed {:>4}  RPO {}",
            r.name,
            r.rto_ms.map_or("-".into(), |v| format!("{v:.0}")),
            r.failed(),
            r.rpo_lost_promotions
        );
    }
    println!("report: {}", written.markdown.display());
    let missed: Vec<&str> = report
        .scenarios
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.name.as_str())
        .collect();
    if !missed.is_empty() {
        bail!("objectives missed in: {}", missed.join(", "));
    }
    Ok(())
}

async fn drive(args: &DrillArgs, names: &[String]) -> Vec<ScenarioResult> {
    let hold = Duration::from_secs_f64(args.hold_s);
    let settle = Duration::from_secs_f64(args.settle_s);
    let mut env = if args.addrs.is_empty() {
        eprintln!("--- starting a 3-node cluster and promoting the demo model");
        DrillEnv::local(args.rate, hold, settle).await
    } else {
        let hooks = remote::Hooks {
            kill: args.hook_kill.clone(),
            start: args.hook_start.clone(),
            stop: args.hook_stop.clone(),
            cont: args.hook_cont.clone(),
        };

        let request =
            crate::load::cli::read_request(&args.query_file, None, 10).map_err(|e| e.to_string());
        let env = match request {
            Ok(request) => match remote::Remote::connect(args.addrs.clone(), hooks).await {
                Ok(target) => DrillEnv::remote(target, request, args.rate, hold, settle).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match env {
            Ok(env) => env,
            Err(why) => {
                return names
                    .iter()
                    .map(|n| ScenarioResult {
                        name: n.clone(),
                        skipped: Some(format!("the existing cluster cannot be drilled: {why}")),
                        ..Default::default()
                    })
                    .collect()
            }
        }
    };
    env.bake = Duration::from_secs_f64(args.bake_s.max(0.0));
    let mut results = Vec::new();
    for name in names {
        eprintln!("--- drill: {name}");
        let r = scenarios::run(name, &mut env).await;
        eprintln!(
            "    RTO {:?} ms, failed {}, detection {:?} ms",
            r.rto_ms.map(|v| v.round()),
            r.failed(),
            r.detection_ms.map(|v| v.round())
        );
        results.push(r);
    }
    results
}

/// `YYYY-MM-DD HH:MMZ`, from the system's `date` (this tool runs where the cluster does).
fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%MZ"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown date".into(), |s| s.trim().to_string())
}
