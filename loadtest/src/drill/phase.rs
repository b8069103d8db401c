//! The shape every scenario shares: steady load, a quiet stretch, the fault, the repair,
//! the wait for full service, a quiet stretch, and the figures computed from the load.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::load::generator::{Generator, LoadClient, LoadSpec};
use crate::load::record::{Call, LoadResult};

use super::env::DrillEnv;
use super::model::ScenarioResult;

/// A scenario in progress.
pub struct Phase {
    gen: Generator,
    /// When the load started, on the same clock as the marks below.
    started: Instant,
    fault_start: Option<Instant>,
    fault_end: Option<Instant>,
    recovered: Option<Instant>,
    /// Where RTO counts from when not the fault: the start of a planned recovery (the
    /// cold start after a deliberate full outage).
    recovery_from: Option<Instant>,
    pub detection_ms: Option<f64>,
    pub notes: Vec<String>,
    pub rpo_lost: u64,
}

impl Phase {
    /// Starts the load and lets it run for the settle time before anything happens.
    pub async fn start(env: &DrillEnv) -> Phase {
        let gen = Generator::start(
            LoadClient::Failover(env.client.clone()),
            LoadSpec {
                rate: env.rate,
                deadline: Duration::from_secs(2),
                request: env.request.clone(),
            },
        );
        let started = Instant::now() - gen.elapsed();
        tokio::time::sleep(env.settle).await;
        Phase {
            gen,
            started,
            fault_start: None,
            fault_end: None,
            recovered: None,
            recovery_from: None,
            detection_ms: None,
            notes: Vec::new(),
            rpo_lost: 0,
        }
    }

    /// Marks the fault's injection (call just before injecting) and returns its instant.
    pub fn fault(&mut self) -> Instant {
        let now = Instant::now();
        self.fault_start = Some(now);
        now
    }

    /// RTO counts from now rather than from the fault: for outages taken on purpose, where
    /// what matters is how long bringing the service back takes.
    pub fn recovery_starts(&mut self) {
        self.recovery_from = Some(Instant::now());
    }

    /// Marks the repair (the fault's end).
    pub fn repaired(&mut self) {
        self.fault_end = Some(Instant::now());
    }

    /// Waits for full service (every node SERVING the agreed version), then the settle time.
    pub async fn recover(&mut self, env: &DrillEnv) {
        self.recovered = env.wait_recovered().await;
        if self.recovered.is_none() {
            self.notes
                .push("the cluster did not return to full service within 180 s".into());
        }
        tokio::time::sleep(env.settle).await;
    }

    /// Marks full service reached at `at` (for scenarios whose repair is not "every node
    /// SERVING": a repair that happens while every node keeps serving).
    pub fn mark_recovered(&mut self, at: Option<Instant>) {
        self.recovered = at;
        if at.is_none() {
            self.notes
                .push("the repair was not seen within 180 s".into());
        }
    }

    /// Time from the start of the load to `at` (zero for an instant before it): where `at`
    /// falls in the load's record, for windows of its own ([`LoadResult::window`]).
    pub fn offset(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.started)
    }

    /// Stops the load and computes the scenario's figures.
    pub async fn finish(self, name: &str, fault: String, isolation: &str) -> ScenarioResult {
        self.finish_with_load(name, fault, isolation).await.0
    }

    /// [`finish`](Self::finish), also returning every call the load recorded, for figures of
    /// the scenario's own (which version or node answered when).
    pub async fn finish_with_load(
        self,
        name: &str,
        fault: String,
        isolation: &str,
    ) -> (ScenarioResult, LoadResult) {
        let result = self.gen.stop().await;
        let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(self.started));
        let start = since(self.fault_start).unwrap_or_default();
        let end = since(self.fault_end).unwrap_or(start);
        let recovered = since(self.recovered);
        let rto_from = since(self.recovery_from).unwrap_or(start);
        let total = Duration::from_secs_f64(result.duration_s.max(0.0)) + Duration::from_secs(60);
        let back = recovered.unwrap_or(total).max(end);
        let overall = result.overall();
        let r = ScenarioResult {
            name: name.into(),
            fault,
            isolation: isolation.into(),
            skipped: None,
            outage_expected: false,
            every_replica: false,
            rto_limit_ms: None,
            fault_start_s: start.as_secs_f64(),
            fault_end_s: end.as_secs_f64(),
            detection_ms: self.detection_ms,
            rto_ms: recovered.map(|r| (r.saturating_sub(rto_from)).as_secs_f64() * 1000.0),
            rpo_lost_promotions: self.rpo_lost,
            divergence_ms: divergence_ms(&result.calls),
            before: result.window(Duration::ZERO, start),
            during: result.window(start, back),
            after: result.window(back, total),
            failed_by_code: overall.failed.clone(),
            sent: overall.sent,
            timeline: result.timeline(),
            notes: self.notes,
            objectives: Vec::new(),
        };
        (r, result)
    }
}

/// The longest stretch during which the load saw two versions served: for each pair of
/// versions, the overlap of the spans over which each was seen. `None` with one version.
pub fn divergence_ms(calls: &[Call]) -> Option<f64> {
    let mut spans: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.ok()) {
        let e = spans
            .entry(c.version.as_str())
            .or_insert((c.at_us, c.at_us));
        e.0 = e.0.min(c.at_us);
        e.1 = e.1.max(c.at_us);
    }
    let spans: Vec<(u64, u64)> = spans.into_values().collect();
    let mut worst: Option<u64> = None;
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            let overlap = a.1.min(b.1).saturating_sub(a.0.max(b.0));
            worst = Some(worst.map_or(overlap, |w| w.max(overlap)));
        }
    }
    worst.map(|us| us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(at_ms: u64, version: &str) -> Call {
        Call {
            at_us: at_ms * 1000,
            latency_us: 1000,
            code: "OK".into(),
            version: version.into(),
            node: String::new(),
        }
    }

    #[test]
    fn divergence_is_the_overlap_of_version_spans() {
        assert_eq!(divergence_ms(&[ok(0, "1"), ok(10, "1")]), None);
        // v1 seen until 120 ms, v2 from 100 ms: 20 ms of both.
        let calls = [ok(0, "1"), ok(120, "1"), ok(100, "2"), ok(300, "2")];
        assert_eq!(divergence_ms(&calls), Some(20.0));
        // A clean switch: no overlap.
        let calls = [ok(0, "1"), ok(99, "1"), ok(100, "2")];
        assert_eq!(divergence_ms(&calls), Some(0.0));
    }
}
