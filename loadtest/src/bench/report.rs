//! Figures, ratios against the in-run baseline, and their printed and JSON forms.

use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use rankd_kernels::Manifest;
use serde::Serialize;

use super::bare::BareResults;
use super::server::ServerResults;
use super::BenchArgs;

/// Targets from the project's acceptance criteria for a CPU machine.
const THROUGHPUT_TARGET: f64 = 0.85;
const OVERHEAD_TARGET_US: f64 = 150.0;

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub side: String,
    pub batch: usize,
    pub candidates: usize,
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Server side only: mean time queued and mean batch time, from the node's metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_queue_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_inference_us: Option<f64>,
}

impl Latency {
    pub fn histogram() -> Histogram<u64> {
        // 1 µs .. 60 s at 3 significant digits; bounds are fixed so creation cannot fail.
        Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds")
    }

    pub fn from_histogram(
        side: &str,
        batch: usize,
        candidates: usize,
        h: &Histogram<u64>,
    ) -> Latency {
        Latency {
            side: side.into(),
            batch,
            candidates,
            count: h.len(),
            p50_us: h.value_at_quantile(0.5) as f64,
            p99_us: h.value_at_quantile(0.99) as f64,
            max_us: h.max() as f64,
            server_queue_us: None,
            server_inference_us: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub side: String,
    pub batch: usize,
    pub candidates: usize,
    pub items_per_s: f64,
    pub requests_per_s: f64,
    /// For the server: the mean batch its scheduler formed.
    pub mean_batch: f64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub candidates: usize,
    pub server_p50_us: f64,
    pub bare_p50_us: f64,
    pub p50_overhead_us: f64,
    pub overhead_ok: bool,
    /// The p50 overhead less the round trip of a refused request of the same size: what the
    /// queue, the server's (colder) forward pass and the answer add beyond gRPC transport
    /// and validation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overhead_beyond_transport_us: Option<f64>,
    pub server_items_per_s: f64,
    pub bare_items_per_s: f64,
    /// The bare batch size that gave `bare_items_per_s`.
    pub bare_batch: usize,
    pub throughput_ratio: f64,
    pub throughput_ok: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub model: String,
    pub device: String,
    pub precision: String,
    pub max_batch_size: usize,
    pub concurrency: usize,
    /// What both halves ran with, as the node reported it (`rankd_threads`).
    pub torch_threads: usize,
    pub runtime_threads: usize,
    /// The thread counts were left at 0 (each library's default) rather than set.
    pub torch_threads_default: bool,
    pub runtime_threads_default: bool,
    pub idle_spin_us: u64,
    pub machine: String,
    pub latency: Vec<Latency>,
    pub throughput: Vec<Throughput>,
    pub ratios: Vec<Ratio>,
}

impl Report {
    pub fn new(
        args: &BenchArgs,
        manifest: Manifest,
        bare: BareResults,
        served: ServerResults,
    ) -> Report {
        let ratios = args
            .candidates
            .iter()
            .filter_map(|&n| {
                let lat = |side: &str| {
                    bare.latency
                        .iter()
                        .chain(&served.latency)
                        .find(|l| l.side == side && l.candidates == n && l.batch == 1)
                };
                let (b, s) = (lat("bare")?, lat("server")?);
                // The strictest baseline: the bare engine at its best measured batch size.
                let bare_tp = bare
                    .throughput
                    .iter()
                    .filter(|t| t.candidates == n)
                    .max_by(|a, b| a.items_per_s.total_cmp(&b.items_per_s))?;
                let srv_tp = served.throughput.iter().find(|t| t.candidates == n)?;
                let overhead = s.p50_us - b.p50_us;
                let floor = served
                    .latency
                    .iter()
                    .find(|l| l.side == "floor" && l.candidates == n);
                let ratio = srv_tp.items_per_s / bare_tp.items_per_s;
                Some(Ratio {
                    candidates: n,
                    server_p50_us: s.p50_us,
                    bare_p50_us: b.p50_us,
                    p50_overhead_us: overhead,
                    overhead_ok: overhead <= OVERHEAD_TARGET_US,
                    overhead_beyond_transport_us: floor.map(|f| overhead - f.p50_us),
                    server_items_per_s: srv_tp.items_per_s,
                    bare_items_per_s: bare_tp.items_per_s,
                    bare_batch: bare_tp.batch,
                    throughput_ratio: ratio,
                    throughput_ok: ratio >= THROUGHPUT_TARGET,
                })
            })
            .collect();
        Report {
            model: format!(
                "{} v{} ({} items, dq {}, di {})",
                manifest.name,
                manifest.version,
                manifest.item_count,
                manifest.query_dim,
                manifest.item_dim
            ),
            device: args.device.to_string(),
            precision: args.precision.to_string(),
            max_batch_size: args.max_batch_size,
            concurrency: args.concurrency,
            torch_threads: served.torch_threads,
            runtime_threads: served.runtime_threads,
            torch_threads_default: args.torch_threads == 0,
            runtime_threads_default: args.runtime_threads == 0,
            idle_spin_us: args.idle_spin_us,
            machine: args.machine.clone(),
            latency: bare.latency.into_iter().chain(served.latency).collect(),
            throughput: bare
                .throughput
                .into_iter()
                .chain(served.throughput)
                .collect(),
            ratios,
        }
    }

    pub fn print(&self) {
        println!(
            "\nrankload bench: {} on {} {} (torch threads {}{}, runtime threads {}{}, idle spin {} us)",
            self.model,
            self.device,
            self.precision,
            self.torch_threads,
            default(self.torch_threads_default),
            self.runtime_threads,
            default(self.runtime_threads_default),
            self.idle_spin_us
        );
        println!("\nlatency (one request at a time)");
        println!(
            "{:<8} {:>6} {:>10} {:>9} {:>10} {:>10} {:>10}",
            "side", "batch", "candidates", "count", "p50 us", "p99 us", "max us"
        );
        for l in &self.latency {
            println!(
                "{:<8} {:>6} {:>10} {:>9} {:>10.0} {:>10.0} {:>10.0}",
                l.side, l.batch, l.candidates, l.count, l.p50_us, l.p99_us, l.max_us
            );
        }
        println!("\nthroughput");
        println!(
            "{:<8} {:>6} {:>10} {:>14} {:>12} {:>10} {:>7}",
            "side", "batch", "candidates", "items/s", "requests/s", "mean batch", "errors"
        );
        for t in &self.throughput {
            println!(
                "{:<8} {:>6} {:>10} {:>14.4e} {:>12.0} {:>10.1} {:>7}",
                t.side,
                t.batch,
                t.candidates,
                t.items_per_s,
                t.requests_per_s,
                t.mean_batch,
                t.errors
            );
        }
        println!("\nratios (server vs bare, same run)");
        for r in &self.ratios {
            println!(
                "  {} candidates: p50 overhead {:+.0} us (target <= {OVERHEAD_TARGET_US:.0}: {}), throughput {:.3}x bare's best (batch {}) (target >= {THROUGHPUT_TARGET}: {})",
                r.candidates,
                r.p50_overhead_us,
                verdict(r.overhead_ok),
                r.throughput_ratio,
                r.bare_batch,
                verdict(r.throughput_ok),
            );
            if let Some(beyond) = r.overhead_beyond_transport_us {
                println!(
                    "    of which beyond the round trip of a refused {}-id request (queue, colder forward pass, answer): {beyond:+.0} us",
                    r.candidates
                );
            }
        }
        if let Some(floor) = self.latency.iter().find(|l| l.side == "floor") {
            println!(
                "  transport floor (gRPC round trip refused before the queue, client in this process): p50 {:.0} us",
                floor.p50_us
            );
        }
        for gap in self.latency.iter().filter(|l| l.side == "bare-gap") {
            println!(
                "  bare forward after {} us idle ({} candidates): p50 {:.0} us",
                super::bare::IDLE_GAP.as_micros(),
                gap.candidates,
                gap.p50_us
            );
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn default(left_to_default: bool) -> &'static str {
    if left_to_default {
        " (default)"
    } else {
        ""
    }
}
