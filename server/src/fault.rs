//! Fault injection for drills and tests: make one node slow or failing on purpose.
//!
//! A gray failure is a node that answers, slowly or wrongly, while its heartbeats keep
//! arriving; only comparing it with its peers shows it. To create one for real, an
//! operator (admin role, audited) calls `InjectFault` on a node: every Rank call that node
//! serves then waits `latency` first and/or fails with INTERNAL at `error_ratio`. Nothing is
//! replicated: the fault lives in this process until it is cleared, expires, or the node
//! restarts. Health stays SERVING, as it would in a real gray failure.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Status;

use crate::metrics::Metrics;

/// What the node is told to do wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    pub latency: Duration,
    /// Share of calls that fail, in [0, 1].
    pub error_ratio: f64,
    /// When the fault clears by itself; `None`: only when cleared.
    pub until: Option<Instant>,
}

#[derive(Default)]
struct State {
    fault: Option<Fault>,
    /// Errors owed: the ratio is added per call and an error is returned whenever a whole
    /// one is owed, so the share is exact and reproducible rather than random.
    owed: f64,
}

#[derive(Default)]
pub struct FaultInjector {
    state: Mutex<State>,
    /// Where the fault in force is shown (`rankd_fault_injected_*`); updated on every
    /// change, including an expiry, so a cleared drill never lingers on a dashboard.
    metrics: Option<Arc<Metrics>>,
}

impl FaultInjector {
    pub fn new() -> FaultInjector {
        FaultInjector::default()
    }

    /// An injector whose fault is shown in `metrics`.
    pub fn reporting(metrics: Arc<Metrics>) -> FaultInjector {
        FaultInjector {
            metrics: Some(metrics),
            ..FaultInjector::default()
        }
    }

    fn report(&self, fault: Option<Fault>) {
        if let Some(m) = &self.metrics {
            m.fault
                .latency
                .set(fault.map_or(0.0, |f| f.latency.as_secs_f64()));
            m.fault
                .error_ratio
                .set(fault.map_or(0.0, |f| f.error_ratio));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets (or with `None` clears) the fault.
    pub fn set(&self, fault: Option<Fault>) {
        let mut s = self.lock();
        s.fault = fault;
        s.owed = 0.0;
        self.report(fault);
    }

    /// The fault in force now, if any (an expired one is cleared).
    pub fn current(&self) -> Option<Fault> {
        let mut s = self.lock();
        if s.fault
            .and_then(|f| f.until)
            .is_some_and(|u| Instant::now() >= u)
        {
            s.fault = None;
            self.report(None);
        }
        s.fault
    }

    /// Applies the fault to one call: waits, then fails it if an error is owed.
    pub async fn apply(&self, node: &str) -> Result<(), Status> {
        let Some(fault) = self.current() else {
            return Ok(());
        };
        if !fault.latency.is_zero() {
            tokio::time::sleep(fault.latency).await;
        }
        let fail = {
            let mut s = self.lock();
            s.owed += fault.error_ratio;
            let fail = s.owed >= 1.0;
            if fail {
                s.owed -= 1.0;
            }
            fail
        };
        if fail {
            return Err(Status::internal(format!(
                "injected fault on node {node} (InjectFault, error_ratio {})",
                fault.error_ratio
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn latency_and_an_exact_error_share_until_it_expires() {
        let f = FaultInjector::new();
        assert!(f.apply("n1").await.is_ok(), "no fault: nothing happens");
        f.set(Some(Fault {
            latency: Duration::from_millis(200),
            error_ratio: 0.25,
            until: None,
        }));
        let start = tokio::time::Instant::now();
        let mut failed = 0;
        for _ in 0..8 {
            if let Err(s) = f.apply("n1").await {
                assert_eq!(s.code(), tonic::Code::Internal);
                assert!(s.message().contains("injected fault on node n1"));
                failed += 1;
            }
        }
        assert_eq!(failed, 2, "a quarter of 8 calls");
        assert_eq!(start.elapsed(), Duration::from_millis(1600));
        f.set(None);
        assert!(f.current().is_none());
    }

    #[test]
    fn the_gauges_follow_the_fault_and_its_expiry() {
        let m = Arc::new(Metrics::new());
        let f = FaultInjector::reporting(m.clone());
        f.set(Some(Fault {
            latency: Duration::from_millis(100),
            error_ratio: 0.5,
            until: Some(Instant::now()),
        }));
        assert_eq!(m.fault.error_ratio.get(), 0.5);
        assert_eq!(m.fault.latency.get(), 0.1);
        assert!(f.current().is_none(), "already expired");
        assert_eq!(m.fault.error_ratio.get(), 0.0);
        assert_eq!(m.fault.latency.get(), 0.0);
    }

    #[test]
    fn an_expired_fault_clears_itself() {
        let f = FaultInjector::new();
        f.set(Some(Fault {
            latency: Duration::ZERO,
            error_ratio: 1.0,
            until: Some(Instant::now()),
        }));
        assert!(f.current().is_none());
    }
}
