//! Recent Rank outcomes: the error share and p99 latency a bake window or an outlier
//! comparison judges a node (or one version on it) by.
//!
//! The window is time-based (the reader passes it), so a node that stops getting traffic
//! forgets its old calls and is judged afresh once calls come back; that is how a degraded
//! node that the clients stopped sending to gets a second chance. At most [`WINDOW`] calls
//! are kept, so under heavy traffic the window is the last [`WINDOW`] calls instead.
//!
//! Only failures that are the node's doing count as errors (INTERNAL, UNAVAILABLE,
//! DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNKNOWN); a caller's bad request is not the node's
//! fault and is left out of both figures.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::Code;

/// Most calls kept.
pub const WINDOW: usize = 4096;

#[derive(Default)]
pub struct LiveSignals {
    /// (when it ended, failed, latency in µs), oldest first.
    calls: Mutex<VecDeque<(Instant, bool, u32)>>,
}

/// A point-in-time view of the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Live {
    pub calls: usize,
    pub error_ratio: f64,
    pub p99: Duration,
}

/// Whether a call that ended with `code` failed because of the node.
pub fn is_node_error(code: Code) -> bool {
    matches!(
        code,
        Code::Internal
            | Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Unknown
    )
}

impl LiveSignals {
    pub fn new() -> LiveSignals {
        LiveSignals::default()
    }

    /// Records one call's outcome (`None`: OK) and how long it took.
    pub fn record(&self, error: Option<Code>, took: Duration) {
        let failed = match error {
            None => false,
            Some(c) if is_node_error(c) => true,
            Some(_) => return,
        };
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        let mut g = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() == WINDOW {
            g.pop_front();
        }
        g.push_back((Instant::now(), failed, micros));
    }

    /// The calls that ended within the last `window`.
    pub fn snapshot(&self, window: Duration) -> Live {
        let now = Instant::now();
        let mut g = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        while g
            .front()
            .is_some_and(|(t, _, _)| now.saturating_duration_since(*t) > window)
        {
            g.pop_front();
        }
        let n = g.len();
        if n == 0 {
            return Live {
                calls: 0,
                error_ratio: 0.0,
                p99: Duration::ZERO,
            };
        }
        let errors = g.iter().filter(|(_, f, _)| *f).count();
        let mut lat: Vec<u32> = g.iter().map(|&(_, _, l)| l).collect();
        drop(g);
        lat.sort_unstable();
        // Nearest rank: the smallest value at or above 99% of the calls.
        let idx = ((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1;
        Live {
            calls: n,
            error_ratio: errors as f64 / n as f64,
            p99: Duration::from_micros(u64::from(lat[idx])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    #[test]
    fn node_errors_count_and_caller_mistakes_do_not() {
        let s = LiveSignals::new();
        for i in 0..100u64 {
            s.record(None, Duration::from_millis(i + 1));
        }
        s.record(Some(Code::Internal), Duration::from_millis(1));
        s.record(Some(Code::InvalidArgument), Duration::from_millis(1));
        let l = s.snapshot(LONG);
        assert_eq!(l.calls, 101);
        assert!((l.error_ratio - 1.0 / 101.0).abs() < 1e-12);
        // 101 calls (1..=100 ms and one 1 ms error): the 100th smallest is 99 ms.
        assert_eq!(l.p99, Duration::from_millis(99));
    }

    #[test]
    fn the_window_forgets_old_calls() {
        let s = LiveSignals::new();
        for _ in 0..WINDOW {
            s.record(Some(Code::Unavailable), Duration::from_millis(1));
        }
        for _ in 0..WINDOW {
            s.record(None, Duration::from_millis(1));
        }
        assert_eq!(s.snapshot(LONG).error_ratio, 0.0);
    }

    #[test]
    fn calls_older_than_the_window_are_forgotten() {
        let s = LiveSignals::new();
        s.record(Some(Code::Internal), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(30));
        s.record(None, Duration::from_millis(1));
        let recent = s.snapshot(Duration::from_millis(20));
        assert_eq!(recent.calls, 1);
        assert_eq!(recent.error_ratio, 0.0);
        assert_eq!(s.snapshot(LONG).calls, 1, "what aged out is dropped");
    }
}
