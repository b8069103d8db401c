//! `rankload`: measures rankd.
//!
//! `rankload bench` compares, in one run on one machine, the bare engine (`rankd-kernels`
//! in process) with a real `rankd` over loopback, so every figure comes with a baseline
//! measured under the same conditions.

mod bench;
mod crypto;
mod drill;
mod failover;
mod load;
mod registry;
mod summary;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rankload", version, about = "Benchmarks for rankd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bare-engine vs server: latency of single requests and throughput at saturation.
    Bench(bench::BenchArgs),
    /// Artifact encryption and decryption throughput against bare AES-256-GCM.
    Crypto(crypto::CryptoArgs),
    /// Peak memory and throughput sealing and opening a large bundle through files.
    ArtifactRss(crypto::RssArgs),
    /// The replicated registry on a real 3-node cluster: promotion commit latency,
    /// activation skew, leader failover and catch-up.
    Registry(registry::RegistryArgs),
    /// Heartbeat failover on a real 3-node cluster: detection time per fault, what the
    /// failover client sees during each fault, and its overhead against a plain channel.
    Failover(failover::FailoverArgs),
    /// Steady open-loop load at a fixed rate against running nodes: latency from each
    /// call's scheduled time, failures by code, versions and nodes served, per second.
    Load(load::cli::LoadArgs),
    /// Disaster-recovery drills: real faults under steady load, with a report (Markdown,
    /// JSON, charts) and objectives that set the exit code.
    Drill(drill::DrillArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => bench::run(args),
        Command::Crypto(args) => crypto::run(args),
        Command::ArtifactRss(args) => crypto::rss(args),
        Command::Registry(args) => registry::run(args),
        Command::Failover(args) => failover::run(args),
        Command::Load(args) => load::cli::run(args),
        Command::Drill(args) => drill::run(args),
    }
}
