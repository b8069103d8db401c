//! `rankload registry`: what the replicated registry costs, on a real 3-node cluster over
//! loopback (the integration-test harness starts the `rankd` processes and the per-node
//! peer proxies).
//!
//! - Promotion commit latency: from the leader seeing the last required ReportReady
//!   applied to the Promote entry committing (the `commit_ms` the leader reports).
//! - Activation skew: first to last node switching, from each node's own apply timestamp
//!   (`activated_at_ms` in cluster status), over many promotions. The nodes share one
//!   clock here, so the skew is not blurred by clock offsets.
//! - Leader failover: from `kill -9` of the leader until a survivor's own metrics name a new
//!   leader (polled every 10 ms), and until the survivors answer linearizable admin reads
//!   naming it (GetClusterStatus, polled every 50 ms).
//! - Catch-up: from restarting the killed node until it serves the active fence.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use rankd_tests::Cluster;
use serde::Serialize;

use crate::summary::Summary;

#[derive(Args, Clone)]
pub struct RegistryArgs {
    /// Promotions to time (alternating between two versions every node holds loaded).
    #[arg(long, default_value_t = 20)]
    pub promotions: usize,
    /// Leader kills to time (each followed by a restart and catch-up).
    #[arg(long, default_value_t = 5)]
    pub failovers: usize,
    #[arg(long, default_value = "bench-out/registry.json")]
    pub out: PathBuf,
    #[arg(long, default_value = "")]
    pub machine: String,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    promotions: usize,
    commit_ms: Summary,
    promote_call_ms: Summary,
    skew_ms: Summary,
    failover_ms: Summary,
    admin_reads_back_ms: Summary,
    catch_up_ms: Summary,
}

pub fn run(args: RegistryArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = rt.block_on(measure(&args));
    let text = [
        report.commit_ms.line("promotion commit after last ready"),
        report.promote_call_ms.line("Promote call (client side)"),
        report.skew_ms.line("activation skew (first to last)"),
        report.failover_ms.line("new leader elected after kill -9"),
        report.admin_reads_back_ms.line("admin reads answer again"),
        report.catch_up_ms.line("restarted node serves the fence"),
    ]
    .join("\n");
    println!("rankload registry: 3 nodes on loopback\n{text}");
    crate::summary::write_json(&args.out, &report)
}

async fn measure(args: &RegistryArgs) -> Report {
    eprintln!("--- starting 3 nodes, uploading and promoting two versions");
    let mut c = Cluster::start(3).await;
    c.serve_v1().await;
    c.upload(2, "2").await;
    c.wait_ready_everywhere(1, "2").await;

    eprintln!("--- {} promotions", args.promotions);
    let (mut commit, mut call, mut skew) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.promotions {
        let version = if i % 2 == 0 { "2" } else { "1" };
        let via = (i as u64 % 3) + 1;
        let started = Instant::now();
        let resp = c
            .promote(via, c.promote_request(version))
            .await
            .unwrap_or_else(|s| panic!("promotion {i} of {version}: {s:?}"));
        call.push(started.elapsed().as_secs_f64() * 1000.0);
        commit.push(resp.commit_ms);
        let fence = resp.fence.expect("a fence");
        c.wait_all_serving(&fence).await;
        let st = c.status(1).await;
        let at: Vec<u64> = st
            .nodes
            .iter()
            .filter(|n| n.activated_index == fence.index)
            .map(|n| n.activated_at_ms)
            .collect();
        assert_eq!(at.len(), 3, "every node reports the activation: {st:?}");
        let (lo, hi) = (at.iter().min(), at.iter().max());
        if let (Some(lo), Some(hi)) = (lo, hi) {
            skew.push((hi - lo) as f64);
        }
    }

    eprintln!("--- {} leader failovers", args.failovers);
    let (mut failover, mut reads_back, mut catch_up) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.failovers {
        let leader = c.wait_leader().await;
        let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
        let killed = Instant::now();
        c.kill(leader).await;
        loop {
            let seen = c.node(others[0]).metric_value("rankd_raft_leader").await;
            if seen.is_some_and(|l| l != 0.0 && l != leader as f64) {
                break;
            }
            assert!(
                killed.elapsed() < std::time::Duration::from_secs(30),
                "no new leader within 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        failover.push(killed.elapsed().as_secs_f64() * 1000.0);
        c.wait_new_leader(&others, leader).await;
        reads_back.push(killed.elapsed().as_secs_f64() * 1000.0);
        let active = c.status(others[0]).await.active.expect("an active version");
        let restarted = Instant::now();
        c.restart(leader).await;
        c.wait_serving_fence(leader, &active).await;
        catch_up.push(restarted.elapsed().as_secs_f64() * 1000.0);
    }

    Report {
        machine: args.machine.clone(),
        promotions: args.promotions,
        commit_ms: Summary::of(commit),
        promote_call_ms: Summary::of(call),
        skew_ms: Summary::of(skew),
        failover_ms: Summary::of(failover),
        admin_reads_back_ms: Summary::of(reads_back),
        catch_up_ms: Summary::of(catch_up),
    }
}
