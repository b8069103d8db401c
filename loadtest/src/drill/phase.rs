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

/// The longest time two nodes served different versions at once, as the load saw it. Each
/// node's answers, in scheduled order, make segments of one version each; the divergence is
/// the longest overlap between two segments of different versions (on different nodes,
/// since one node's segments follow each other). A version served before and after another
/// (a rollback) is two segments, so the stretch in between is no divergence unless some
/// node still served the old version meanwhile. `None` when the load saw one version.
pub fn divergence_ms(calls: &[Call]) -> Option<f64> {
    let mut ok: Vec<&Call> = calls.iter().filter(|c| c.ok()).collect();
    ok.sort_by_key(|c| c.at_us);
    // (node, version, first, last), in order of each node's first answer of the segment.
    let mut segments: Vec<(&str, &str, u64, u64)> = Vec::new();
    let mut open: BTreeMap<&str, usize> = BTreeMap::new();
    for c in ok {
        match open.get(c.node.as_str()) {
            Some(&i) if segments[i].1 == c.version => segments[i].3 = c.at_us,
            _ => {
                open.insert(c.node.as_str(), segments.len());
                segments.push((c.node.as_str(), c.version.as_str(), c.at_us, c.at_us));
            }
        }
    }
    let mut worst: Option<u64> = None;
    for (i, a) in segments.iter().enumerate() {
        for b in segments[i + 1..].iter().filter(|b| b.1 != a.1) {
            let overlap = a.3.min(b.3).saturating_sub(a.2.max(b.2));
            worst = Some(worst.map_or(overlap, |w| w.max(overlap)));
        }
    }
    worst.map(|us| us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(at_ms: u64, version: &str, node: &str) -> Call {
        Call {
            at_us: at_ms * 1000,
            latency_us: 1000,
            code: "OK".into(),
            version: version.into(),
            node: node.into(),
        }
    }

    #[test]
    fn divergence_is_the_overlap_of_version_segments_across_nodes() {
        assert_eq!(divergence_ms(&[ok(0, "1", "a"), ok(10, "1", "b")]), None);
        // Node a served v1 until 120 ms, node b v2 from 100 ms: 20 ms of both.
        let calls = [
            ok(0, "1", "a"),
            ok(120, "1", "a"),
            ok(100, "2", "b"),
            ok(300, "2", "b"),
        ];
        assert_eq!(divergence_ms(&calls), Some(20.0));
        // A clean switch: no overlap.
        let calls = [ok(0, "1", "a"), ok(99, "1", "b"), ok(100, "2", "a")];
        assert_eq!(divergence_ms(&calls), Some(0.0));
    }

    #[test]
    fn a_rollback_is_no_divergence_unless_nodes_disagree() {
        // Both nodes switch to v2 at 1000 ms and back to v1 at 7000 ms, within 10 ms.
        let mut calls = Vec::new();
        for t in (0..10_000).step_by(30) {
            for (node, skew) in [("a", 0), ("b", 10)] {
                let v = if (1000 + skew..7000 + skew).contains(&t) {
                    "2"
                } else {
                    "1"
                };
                calls.push(ok(t, v, node));
            }
        }
        let d = divergence_ms(&calls).expect("two versions");
        assert!(d <= 30.0, "only the switches' skew: {d}");
        // Node b stays on v1 throughout: it disagrees with a for the whole 6 s.
        let calls: Vec<Call> = calls
            .into_iter()
            .map(|mut c| {
                if c.node == "b" {
                    c.version = "1".into();
                }
                c
            })
            .collect();
        let d = divergence_ms(&calls).expect("two versions");
        assert!((5900.0..=6000.0).contains(&d), "{d}");
    }
}
