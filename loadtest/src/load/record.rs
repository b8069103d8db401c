//! What a load run records: one entry per call, and the per-second timeline and window
//! statistics computed from them. Shared by `rankload load` and the drills.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One call, as the generator saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call {
    /// Scheduled send time, in microseconds from the start of the run. Latency counts from
    /// here (open loop: no coordinated omission).
    pub at_us: u64,
    /// From the scheduled send time to the answer, in microseconds.
    pub latency_us: u64,
    /// `OK` or the gRPC code name (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, ...).
    pub code: String,
    /// The model version that answered (empty on failure).
    pub version: String,
    /// The node that answered (empty on failure).
    pub node: String,
}

impl Call {
    pub fn ok(&self) -> bool {
        self.code == "OK"
    }
}

/// One second of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Second {
    /// Seconds from the start of the run.
    pub t: u64,
    pub sent: u64,
    pub ok: u64,
    /// Failed calls by gRPC code name.
    pub failed: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Successful calls by model version served.
    pub versions: BTreeMap<String, u64>,
}

/// Latency and outcome over a stretch of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Window {
    pub sent: u64,
    pub ok: u64,
    pub failed: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Everything a run recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    /// Calls per second asked for.
    pub rate: u32,
    pub duration_s: f64,
    /// "failover client" or "plain channel".
    pub client: String,
    pub calls: Vec<Call>,
}

impl LoadResult {
    /// Calls scheduled in `[from, to)`.
    pub fn window(&self, from: Duration, to: Duration) -> Window {
        let (from, to) = (from.as_micros() as u64, to.as_micros() as u64);
        window_of(
            self.calls
                .iter()
                .filter(|c| c.at_us >= from && c.at_us < to),
        )
    }

    pub fn overall(&self) -> Window {
        window_of(self.calls.iter())
    }

    /// One entry per second from 0 to the last scheduled call.
    pub fn timeline(&self) -> Vec<Second> {
        let last = self.calls.iter().map(|c| c.at_us / 1_000_000).max();
        let Some(last) = last else {
            return Vec::new();
        };
        (0..=last)
            .map(|t| {
                let calls: Vec<&Call> = self
                    .calls
                    .iter()
                    .filter(|c| c.at_us / 1_000_000 == t)
                    .collect();
                let w = window_of(calls.iter().copied());
                let mut versions = BTreeMap::new();
                for c in calls.iter().filter(|c| c.ok()) {
                    *versions.entry(c.version.clone()).or_insert(0) += 1;
                }
                Second {
                    t,
                    sent: w.sent,
                    ok: w.ok,
                    failed: w.failed,
                    p50_ms: w.p50_ms,
                    p99_ms: w.p99_ms,
                    max_ms: w.max_ms,
                    versions,
                }
            })
            .collect()
    }
}

/// Percentiles from an HDR histogram (microsecond resolution, 3 significant digits).
fn window_of<'a>(calls: impl Iterator<Item = &'a Call>) -> Window {
    let mut w = Window::default();
    // 1 µs to one hour; longer latencies saturate at an hour.
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .expect("valid histogram bounds");
    for c in calls {
        w.sent += 1;
        if c.ok() {
            w.ok += 1;
        } else {
            *w.failed.entry(c.code.clone()).or_insert(0) += 1;
        }
        hist.saturating_record(c.latency_us.max(1));
    }
    if w.sent > 0 {
        let ms = |us: u64| us as f64 / 1000.0;
        w.p50_ms = ms(hist.value_at_quantile(0.5));
        w.p99_ms = ms(hist.value_at_quantile(0.99));
        w.max_ms = ms(hist.max());
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(at_ms: u64, latency_ms: u64, code: &str) -> Call {
        Call {
            at_us: at_ms * 1000,
            latency_us: latency_ms * 1000,
            code: code.into(),
            version: if code == "OK" {
                "1".into()
            } else {
                String::new()
            },
            node: String::new(),
        }
    }

    #[test]
    fn timeline_and_windows_count_every_call_once() {
        let r = LoadResult {
            calls: vec![
                call(0, 2, "OK"),
                call(500, 4, "OK"),
                call(1200, 100, "UNAVAILABLE"),
                call(2100, 3, "OK"),
            ],
            ..Default::default()
        };
        let t = r.timeline();
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].sent, t[0].ok), (2, 2));
        assert_eq!(t[1].failed.get("UNAVAILABLE"), Some(&1));
        assert_eq!(t[2].versions.get("1"), Some(&1));
        let w = r.window(Duration::from_millis(400), Duration::from_millis(2000));
        assert_eq!((w.sent, w.ok), (2, 1));
        assert!((w.max_ms - 100.0).abs() < 0.5, "{w:?}");
        assert_eq!(r.overall().sent, 4);
    }
}
