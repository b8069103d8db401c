//! `rankload bench`: bare engine first, then the server, then ratios.

mod bare;
mod report;
mod server;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use rankd_kernels::{Bundle, DeviceSpec, EngineConfig, Precision};

pub use report::Report;

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Model bundle directory.
    #[arg(long, default_value = "models/demo")]
    pub bundle: PathBuf,
    /// The rankd binary to start for the server half.
    #[arg(long, default_value = "target/release/rankd")]
    pub rankd: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,
    /// libtorch intra-op threads for both halves (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub torch_threads: usize,
    /// The server's async runtime threads (0: tokio's default, one per core).
    #[arg(long, default_value_t = 0)]
    pub runtime_threads: usize,
    /// Server `batching.idle_spin_us`: how long an idle inference thread polls the queue
    /// before it sleeps.
    #[arg(long, default_value_t = 0)]
    pub idle_spin_us: u64,
    /// Server batch limit; the bare throughput baseline uses the same batch size.
    #[arg(long, default_value_t = 32)]
    pub max_batch_size: usize,
    /// Server `batching.max_batch_items` (0: the server's per-device default).
    #[arg(long, default_value_t = 0)]
    pub max_batch_items: usize,
    /// Candidate counts per request.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub candidates: Vec<usize>,
    /// Seconds per latency measurement.
    #[arg(long, default_value_t = 3.0)]
    pub latency_seconds: f64,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 5.0)]
    pub throughput_seconds: f64,
    /// Requests in flight while saturating the server.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// gRPC connections the saturating client spreads its requests over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-out/bench.json")]
    pub out: PathBuf,
    /// Free-form description of the machine, recorded in the report.
    #[arg(long, default_value = "")]
    pub machine: String,
}

impl BenchArgs {
    fn engine(&self) -> EngineConfig {
        EngineConfig {
            device: self.device,
            precision: self.precision,
            torch_threads: self.torch_threads,
            golden_tolerance: None,
            warmup_shapes: self
                .candidates
                .iter()
                .flat_map(|&n| [(1, n), (self.max_batch_size, n)])
                .collect(),
            warmup_iterations: 3,
        }
    }

    fn latency_window(&self) -> Duration {
        Duration::from_secs_f64(self.latency_seconds)
    }

    fn throughput_window(&self) -> Duration {
        Duration::from_secs_f64(self.throughput_seconds)
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let bundle = Bundle::open(&args.bundle)
        .with_context(|| format!("opening bundle {}", args.bundle.display()))?;
    eprintln!(
        "--- bare engine ({} {}, in process)",
        args.device, args.precision
    );
    let bare = bare::measure(&bundle, &args)?;
    eprintln!("--- server (rankd over loopback)");
    let served = server::measure(&bundle, &args, bare.torch_threads)?;
    let report = Report::new(&args, bundle.manifest.clone(), bare, served);
    report.print();
    report.write(&args.out)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// Deterministic request inputs shared by both halves, so they score the same work.
pub struct Workload {
    pub query: Vec<f32>,
    /// For each candidate count, a pool of distinct candidate lists to cycle through
    /// (different rows each call, as in production, rather than one cache-hot list).
    pub pools: Vec<(usize, Vec<Vec<i64>>)>,
}

impl Workload {
    pub fn new(bundle: &Bundle, counts: &[usize]) -> Result<Workload> {
        let m = &bundle.manifest;
        let query = bundle
            .golden
            .cases
            .first()
            .map(|c| c.query.clone())
            .unwrap_or_else(|| vec![0.5; m.query_dim]);
        let pools = counts
            .iter()
            .map(|&n| {
                anyhow::ensure!(n <= m.item_count, "{n} candidates > {} items", m.item_count);
                let lists = (0..64u64)
                    .map(|seed| candidate_list(n, m.item_count, seed))
                    .collect();
                Ok((n, lists))
            })
            .collect::<Result<_>>()?;
        Ok(Workload { query, pools })
    }

    pub fn lists(&self, n: usize) -> &[Vec<i64>] {
        self.pools
            .iter()
            .find(|(c, _)| *c == n)
            .map(|(_, l)| l.as_slice())
            .unwrap_or(&[])
    }
}

/// `n` distinct ids: an arithmetic walk with a stride coprime to the table size.
fn candidate_list(n: usize, items: usize, seed: u64) -> Vec<i64> {
    let items = items as u64;
    let mut stride = (seed.wrapping_mul(2_654_435_761) % items.max(2)).max(1);
    while gcd(stride, items) != 1 {
        stride += 1;
    }
    let start = seed.wrapping_mul(40_503) % items;
    (0..n as u64)
        .map(|i| ((start + i * stride) % items) as i64)
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::candidate_list;

    #[test]
    fn candidate_lists_are_distinct_and_in_range() {
        for seed in 0..10 {
            let l = candidate_list(1000, 100_000, seed);
            let mut s = l.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), 1000);
            assert!(l.iter().all(|&id| (0..100_000).contains(&id)));
        }
    }
}
