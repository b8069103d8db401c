//! A minimal search frontend on the failover client: connects to a rankd cluster, sends a
//! few Rank requests shaped like the demo model's input, and prints who served each one.
//!
//! ```sh
//! make cluster   # three local nodes with the demo model (deploy/cluster/)
//! cargo run -p rankd-proto --features client --example frontend -- \
//!     127.0.0.1:50051 127.0.0.1:50052 127.0.0.1:50053
//! ```
//!
//! Flags (defaults fit the demo model, `deploy/demo_model/export.py`):
//! `--query-dim 32`, `--item-count 100000`, `--candidates 200`, `--top-k 5`,
//! `--requests 5`, `--deadline-ms 1000`, `--hedge-ms N` (hedge after N ms; off by default),
//! `--dns host:port` (resolve the nodes from DNS instead of listing them).
//! `RUST_LOG=rankd_proto=debug` shows every ejection, re-admission, retry and hedge.

use std::collections::BTreeSet;
use std::error::Error;
use std::time::{Duration, Instant};

use rankd_proto::client::{ClientConfig, FailoverClient, HedgeConfig, HedgeDelay, Targets};
use rankd_proto::v1::RankRequest;

struct Args {
    addresses: Vec<String>,
    dns: Option<String>,
    query_dim: usize,
    item_count: i64,
    candidates: usize,
    top_k: u32,
    requests: usize,
    deadline: Duration,
    hedge: Option<Duration>,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        addresses: Vec::new(),
        dns: None,
        query_dim: 32,
        item_count: 100_000,
        candidates: 200,
        top_k: 5,
        requests: 5,
        deadline: Duration::from_millis(1000),
        hedge: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        if !arg.starts_with("--") {
            args.addresses.push(arg);
            continue;
        }
        let value = argv.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--dns" => args.dns = Some(value),
            "--query-dim" => args.query_dim = value.parse()?,
            "--item-count" => args.item_count = value.parse()?,
            "--candidates" => args.candidates = value.parse()?,
            "--top-k" => args.top_k = value.parse()?,
            "--requests" => args.requests = value.parse()?,
            "--deadline-ms" => args.deadline = Duration::from_millis(value.parse()?),
            "--hedge-ms" => args.hedge = Some(Duration::from_millis(value.parse()?)),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if args.addresses.is_empty() && args.dns.is_none() {
        args.addresses.push("127.0.0.1:50051".into());
    }
    if args.item_count < 1 || (args.candidates as i64) > args.item_count {
        return Err("--candidates must be between 1 and --item-count".into());
    }
    Ok(args)
}

/// A small deterministic generator (xorshift64*), so runs are repeatable without a
/// dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn demo_request(args: &Args, n: usize) -> RankRequest {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
    let query = (0..args.query_dim).map(|_| rng.unit()).collect();
    let mut ids = BTreeSet::new();
    while ids.len() < args.candidates {
        ids.insert((rng.next() % args.item_count as u64) as i64);
    }
    RankRequest {
        request_id: format!("frontend-{n}"),
        query,
        candidate_ids: ids.into_iter().collect(),
        top_k: args.top_k,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let args = parse_args()?;

    let config = ClientConfig {
        default_deadline: args.deadline,
        hedge: args.hedge.map(|delay| HedgeConfig {
            delay: HedgeDelay::Fixed(delay),
        }),
        ..ClientConfig::default()
    };
    let targets = match &args.dns {
        Some(name) => Targets::dns(name.clone(), Duration::from_secs(5)),
        None => Targets::from(args.addresses.clone()),
    };
    let client = FailoverClient::connect(targets, config).await?;
    if !client.wait_healthy(1, Duration::from_secs(5)).await {
        eprintln!("no healthy rankd node within 5 s:");
        for node in client.nodes() {
            eprintln!("  {} {:?}", node.address, node.ejection);
        }
        return Err("no healthy node".into());
    }

    for n in 0..args.requests {
        let started = Instant::now();
        match client.rank(demo_request(&args, n)).await {
            Ok(response) => {
                let fence = response.fence.unwrap_or_default();
                let top: Vec<String> = (response.items.iter())
                    .map(|item| format!("{}:{:.3}", item.id, item.score))
                    .collect();
                println!(
                    "{}: served by {} ({} {} term {} index {}) in {:?}; top {}",
                    response.request_id,
                    response.node_id,
                    response.model_name,
                    response.model_version,
                    fence.term,
                    fence.index,
                    started.elapsed(),
                    top.join(" ")
                );
            }
            Err(status) => println!("frontend-{n}: {:?} {}", status.code(), status.message()),
        }
    }

    println!("\nnodes:");
    for node in client.nodes() {
        let state = match &node.ejection {
            None if node.healthy => "healthy".to_owned(),
            None => "cooling down".to_owned(),
            Some(reason) => format!("ejected: {reason}"),
        };
        let heard = match node.last_heartbeat_age {
            Some(age) => format!("last heartbeat {age:?} ago"),
            None => "never heard from".to_owned(),
        };
        println!(
            "  {} {} ({state}; {heard})",
            node.address,
            node.node_id.as_deref().unwrap_or("?"),
        );
    }
    println!("stats: {:?}", client.stats());
    Ok(())
}
