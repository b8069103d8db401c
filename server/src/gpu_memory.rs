//! GPU memory and utilisation on `/metrics`, as the driver (NVML) reports them:
//! `rankd_gpu_utilization_ratio{gpu}`, the share of the driver's last sample period the GPU
//! ran a kernel (any process's), and
//! `rankd_gpu_memory_bytes{gpu, kind}` with `kind` one of
//! - `used`: device memory in use by anyone on that GPU,
//! - `total`: installed device memory,
//! - `process`: what this rankd process holds (libtorch's caching allocator keeps freed
//!   blocks, so this is the high-water mark of the model and its batches, not live tensors).
//!
//! `gpu` is NVML's index, which ignores `CUDA_VISIBLE_DEVICES`; on a host where the two
//! differ, `used` for the GPU whose `process` is non-zero is the one rankd runs on.
//!
//! NVML is loaded at run time from the driver (`libnvidia-ml.so.1`). On a host without it
//! (every CPU host) the sampler logs once and the metric is absent, rather than reporting
//! zeros that would look like an idle GPU. Sampling runs on the blocking pool: a wedged
//! driver can stall an NVML call, and that must not stall a runtime thread.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Nvml;

use crate::metrics::{GpuLabel, GpuMemoryLabel, Metrics};

/// How often the gauges are refreshed: well under any Prometheus scrape interval, and NVML
/// memory queries cost microseconds.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Memory figures for one GPU at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuSample {
    pub gpu: u32,
    pub used: u64,
    pub total: u64,
    /// None when the driver does not say (this process has no context there, or the
    /// driver hides per-process figures, e.g. inside some containers).
    pub process: Option<u64>,
    /// Percent of the driver's last sample period a kernel ran; None when it does not say.
    pub busy_percent: Option<u32>,
}

/// Where samples come from: NVML in the server, a scripted source in unit tests.
pub trait MemorySource: Send + 'static {
    fn sample(&mut self) -> Result<Vec<GpuSample>, String>;
}

/// The driver's view, through NVML.
pub struct NvmlSource {
    nvml: Nvml,
    pid: u32,
}

impl NvmlSource {
    /// Fails on hosts without the NVIDIA driver; the caller then leaves the metric out.
    pub fn open() -> Result<NvmlSource, nvml_wrapper::error::NvmlError> {
        Ok(NvmlSource {
            nvml: Nvml::init()?,
            pid: std::process::id(),
        })
    }
}

impl MemorySource for NvmlSource {
    fn sample(&mut self) -> Result<Vec<GpuSample>, String> {
        let count = self.nvml.device_count().map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(count as usize);
        for gpu in 0..count {
            let device = self
                .nvml
                .device_by_index(gpu)
                .map_err(|e| format!("gpu {gpu}: {e}"))?;
            let memory = device
                .memory_info()
                .map_err(|e| format!("gpu {gpu}: {e}"))?;
            let process = device.running_compute_processes().ok().and_then(|procs| {
                procs.into_iter().find(|p| p.pid == self.pid).and_then(|p| {
                    match p.used_gpu_memory {
                        UsedGpuMemory::Used(bytes) => Some(bytes),
                        UsedGpuMemory::Unavailable => None,
                    }
                })
            });
            out.push(GpuSample {
                gpu,
                used: memory.used,
                total: memory.total,
                process,
                busy_percent: device.utilization_rates().ok().map(|u| u.gpu),
            });
        }
        Ok(out)
    }
}

/// Opens NVML and samples until `stop` changes. Returns at once, leaving the metric out,
/// when the host has no NVIDIA driver.
pub async fn run(metrics: Arc<Metrics>, stop: tokio::sync::watch::Receiver<bool>) {
    match NvmlSource::open() {
        Ok(source) => sample_loop(source, metrics, SAMPLE_INTERVAL, stop).await,
        Err(e) => {
            tracing::info!(error = %e, "no NVIDIA driver here: rankd_gpu_memory_bytes is not exported")
        }
    }
}

/// Refreshes the gauges every `interval`. A failed sample drops the series instead of
/// leaving stale figures behind, and is logged once per run of failures.
pub async fn sample_loop<S: MemorySource>(
    source: S,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut source = Some(source);
    let mut failing = false;
    let mut shown = HashSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        let Some(mut s) = source.take() else { return };
        let job = tokio::task::spawn_blocking(move || {
            let r = s.sample();
            (s, r)
        });
        // Shutdown does not wait on a driver call that hangs.
        let joined = tokio::select! {
            _ = stop.changed() => return,
            joined = job => joined,
        };
        let Ok((s, result)) = joined else {
            // The sampler panicked inside the driver library; give up on the metric.
            metrics.gpu_memory.clear();
            metrics.gpu_utilization.clear();
            return;
        };
        source = Some(s);
        match result {
            Ok(samples) => {
                failing = false;
                publish(&metrics, &samples, &mut shown);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "GPU memory sample failed; series dropped until it works again");
                }
                failing = true;
                publish(&metrics, &[], &mut shown);
            }
        }
    }
}

/// Sets the gauges from `samples` and removes the series `shown` had that this sample lacks
/// (a GPU that vanished, a `process` figure the driver stopped reporting), so nothing
/// lingers with its last value. Series present in both are overwritten in place, so a
/// scrape never sees them missing.
fn publish(metrics: &Metrics, samples: &[GpuSample], shown: &mut HashSet<GpuMemoryLabel>) {
    let mut now = HashSet::new();
    for s in samples {
        let gpu = s.gpu.to_string();
        let figures = [
            ("used", Some(s.used)),
            ("total", Some(s.total)),
            ("process", s.process),
        ];
        for (kind, bytes) in figures {
            let Some(bytes) = bytes else { continue };
            let label = GpuMemoryLabel {
                gpu: gpu.clone(),
                kind,
            };
            metrics
                .gpu_memory
                .get_or_create(&label)
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            now.insert(label);
        }
    }
    let busy: HashSet<String> = samples
        .iter()
        .filter_map(|s| {
            let p = s.busy_percent?;
            let gpu = s.gpu.to_string();
            metrics
                .gpu_utilization
                .get_or_create(&GpuLabel { gpu: gpu.clone() })
                .set(f64::from(p.min(100)) / 100.0);
            Some(gpu)
        })
        .collect();
    for stale in shown.difference(&now) {
        metrics.gpu_memory.remove(stale);
    }
    for gpu in shown.iter().map(|l| &l.gpu).filter(|g| !busy.contains(*g)) {
        metrics
            .gpu_utilization
            .remove(&GpuLabel { gpu: gpu.clone() });
    }
    *shown = now;
}

#[cfg(test)]
mod tests;
