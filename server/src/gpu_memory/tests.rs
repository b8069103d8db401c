//! The sampler loop against a scripted source: what reaches `/metrics`, and what is
//! dropped when the driver stops answering. NVML itself is exercised on the GPU machine
//! (deploy/gpu/check.sh).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{sample_loop, GpuSample, MemorySource};
use crate::metrics::Metrics;

type Step = Result<Vec<GpuSample>, String>;

/// Hands out the scripted results in order, then repeats the last one.
struct Script {
    steps: VecDeque<Step>,
    taken: Arc<Mutex<usize>>,
}

impl MemorySource for Script {
    fn sample(&mut self) -> Result<Vec<GpuSample>, String> {
        *self.taken.lock().expect("lock") += 1;
        if self.steps.len() > 1 {
            self.steps.pop_front().expect("non-empty")
        } else {
            self.steps.front().cloned().expect("non-empty")
        }
    }
}

fn gpu(gpu: u32, used: u64, process: Option<u64>) -> GpuSample {
    GpuSample {
        gpu,
        used,
        total: 141_000_000_000,
        process,
        busy_percent: Some(gpu * 10 + 5),
    }
}

fn series(metrics: &Metrics) -> Vec<String> {
    let mut lines: Vec<String> = metrics
        .encode()
        .lines()
        .filter(|l| {
            l.starts_with("rankd_gpu_memory_bytes{")
                || l.starts_with("rankd_gpu_utilization_ratio{")
        })
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// Runs the loop until `n` samples were taken, then returns the series at that point.
async fn after_samples(steps: Vec<Step>, n: usize) -> (Arc<Metrics>, Vec<String>) {
    let metrics = Arc::new(Metrics::new());
    let taken = Arc::new(Mutex::new(0));
    let script = Script {
        steps: steps.into(),
        taken: taken.clone(),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(sample_loop(
        script,
        metrics.clone(),
        Duration::from_secs(5),
        stopped,
    ));
    while *taken.lock().expect("lock") < n {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last sample's result is published right after it is taken.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let seen = series(&metrics);
    let _ = stop.send(true);
    task.await.expect("sampler task");
    (metrics, seen)
}

#[tokio::test(start_paused = true)]
async fn publishes_used_total_and_process_per_gpu() {
    let (_, seen) = after_samples(
        vec![Ok(vec![gpu(0, 5_000, Some(3_000)), gpu(1, 7, None)])],
        1,
    )
    .await;
    assert_eq!(
        seen,
        vec![
            r#"rankd_gpu_memory_bytes{gpu="0",kind="process"} 3000"#,
            r#"rankd_gpu_memory_bytes{gpu="0",kind="total"} 141000000000"#,
            r#"rankd_gpu_memory_bytes{gpu="0",kind="used"} 5000"#,
            r#"rankd_gpu_memory_bytes{gpu="1",kind="total"} 141000000000"#,
            r#"rankd_gpu_memory_bytes{gpu="1",kind="used"} 7"#,
            r#"rankd_gpu_utilization_ratio{gpu="0"} 0.05"#,
            r#"rankd_gpu_utilization_ratio{gpu="1"} 0.15"#,
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn later_samples_overwrite_and_drop_what_vanished() {
    let steps = vec![
        Ok(vec![gpu(0, 5_000, Some(3_000)), gpu(1, 7, None)]),
        Ok(vec![gpu(0, 9_000, None)]),
    ];
    let (_, seen) = after_samples(steps, 2).await;
    assert_eq!(
        seen,
        vec![
            r#"rankd_gpu_memory_bytes{gpu="0",kind="total"} 141000000000"#,
            r#"rankd_gpu_memory_bytes{gpu="0",kind="used"} 9000"#,
            r#"rankd_gpu_utilization_ratio{gpu="0"} 0.05"#,
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_driver_drops_the_series_and_recovery_restores_them() {
    let steps = vec![
        Ok(vec![gpu(0, 5_000, Some(3_000))]),
        Err("GPU is lost".to_owned()),
    ];
    let (_, seen) = after_samples(steps.clone(), 2).await;
    assert!(seen.is_empty(), "stale figures kept: {seen:?}");

    let mut recovering = steps;
    recovering.push(Ok(vec![gpu(0, 6_000, Some(4_000))]));
    let (_, seen) = after_samples(recovering, 3).await;
    assert_eq!(
        seen,
        vec![
            r#"rankd_gpu_memory_bytes{gpu="0",kind="process"} 4000"#,
            r#"rankd_gpu_memory_bytes{gpu="0",kind="total"} 141000000000"#,
            r#"rankd_gpu_memory_bytes{gpu="0",kind="used"} 6000"#,
            r#"rankd_gpu_utilization_ratio{gpu="0"} 0.05"#,
        ]
    );
}

/// NVML opens exactly where the NVIDIA kernel driver is loaded: CI and the dev VM have
/// none, so there the metric must stay off without a panic; the GPU machine has one.
#[test]
fn nvml_opens_where_the_driver_is_loaded() {
    let driver = std::path::Path::new("/proc/driver/nvidia/version").exists();
    match super::NvmlSource::open() {
        Ok(mut source) => {
            assert!(driver, "NVML opened without a loaded NVIDIA driver");
            let samples = source.sample().expect("NVML opened, so it samples");
            assert!(!samples.is_empty());
            assert!(samples.iter().all(|s| s.total > 0 && s.used <= s.total));
        }
        Err(e) => assert!(!driver, "the NVIDIA driver is loaded but NVML failed: {e}"),
    }
}
