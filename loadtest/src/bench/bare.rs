//! The baseline: `rankd-kernels` called directly in this process, no network, no queue.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rankd_kernels::{Bundle, RankInput, Ranker, TorchRanker};

use super::report::{Latency, Throughput};
use super::{BenchArgs, Workload};

pub struct BareResults {
    /// libtorch intra-op threads the bare engine ran with.
    pub torch_threads: usize,
    pub latency: Vec<Latency>,
    pub throughput: Vec<Throughput>,
}

pub fn measure(bundle: &Bundle, args: &BenchArgs) -> Result<BareResults> {
    let (ranker, load_s) =
        TorchRanker::load(bundle, &args.engine()).context("loading the model in process")?;
    let torch_threads = rankd_kernels::intra_op_threads();
    eprintln!(
        "    loaded on {} in {load_s:.2} s, {torch_threads} libtorch thread(s)",
        ranker.info().device
    );
    let work = Workload::new(bundle, &args.candidates)?;
    let mut latency = Vec::new();
    let mut throughput = Vec::new();
    for &n in &args.candidates {
        let l = single_requests(&ranker, &work, n, args, None)?;
        eprintln!(
            "    1 x {n}: p50 {:.0} us, p99 {:.0} us",
            l.p50_us, l.p99_us
        );
        latency.push(l);
        let l = single_requests(&ranker, &work, n, args, Some(IDLE_GAP))?;
        eprintln!(
            "    1 x {n} after {} us idle: p50 {:.0} us, p99 {:.0} us",
            IDLE_GAP.as_micros(),
            l.p50_us,
            l.p99_us
        );
        latency.push(l);

        for batch in batch_sizes(args.max_batch_size) {
            let t = throughput_at(&ranker, &work, n, batch, args)?;
            eprintln!("    {batch} x {n}: {:.3e} items/s", t.items_per_s);
            throughput.push(t);
        }
    }
    Ok(BareResults {
        torch_threads,
        latency,
        throughput,
    })
}

/// The pause before each call of the `bare-gap` row. A server's forward pass follows an
/// idle gap like this one (the round trip of the previous answer and the arrival of the
/// next call); the thread sleeps through it and its caches go cold. The row shows what that
/// alone costs the bare engine, apart from anything the server adds.
pub const IDLE_GAP: Duration = Duration::from_micros(250);

/// Single requests, one after another (`gap`: sleeping that long before each). Only the
/// forward pass is timed.
fn single_requests(
    ranker: &TorchRanker,
    work: &Workload,
    n: usize,
    args: &BenchArgs,
    gap: Option<Duration>,
) -> Result<Latency> {
    let lists = work.lists(n);
    let mut hist = Latency::histogram();
    let end = Instant::now() + args.latency_window();
    let mut i = 0;
    while Instant::now() < end {
        let input = RankInput {
            query: &work.query,
            candidates: &lists[i % lists.len()],
            top_k: 10,
        };
        if let Some(gap) = gap {
            std::thread::sleep(gap);
        }
        let start = Instant::now();
        ranker.rank_batch(&[input]).context("bare forward")?;
        hist.record(start.elapsed().as_micros() as u64).ok();
        i += 1;
    }
    let side = if gap.is_some() { "bare-gap" } else { "bare" };
    Ok(Latency::from_histogram(side, 1, n, &hist))
}

fn batch_sizes(max: usize) -> Vec<usize> {
    let mut v = vec![1, 4, 8, max];
    v.sort_unstable();
    v.dedup();
    v
}

fn throughput_at(
    ranker: &TorchRanker,
    work: &Workload,
    n: usize,
    batch: usize,
    args: &BenchArgs,
) -> Result<Throughput> {
    let lists = work.lists(n);
    let start = Instant::now();
    let end = start + args.throughput_window();
    let (mut calls, mut i) = (0u64, 0usize);
    while Instant::now() < end {
        let inputs: Vec<RankInput<'_>> = (0..batch)
            .map(|j| RankInput {
                query: &work.query,
                candidates: &lists[(i + j) % lists.len()],
                top_k: 10,
            })
            .collect();
        ranker.rank_batch(&inputs).context("bare batch")?;
        calls += 1;
        i += batch;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Throughput {
        side: "bare".into(),
        batch,
        candidates: n,
        items_per_s: (calls as f64 * batch as f64 * n as f64) / secs,
        requests_per_s: calls as f64 * batch as f64 / secs,
        mean_batch: batch as f64,
        errors: 0,
    })
}
