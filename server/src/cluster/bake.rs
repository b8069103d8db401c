//! The bake watch: while a promotion is on probation, the leader reads every node's live
//! signals and ends the bake by itself (see `rankd_raft::registry::bake`).
//!
//! Every node runs this loop; only the leader acts, and it acts on the replicated bake
//! (version, window end), so a new leader picks up a bake where the old one left it.
//!
//! Signals come from the heartbeats (the leader's own from memory), each about the baked
//! activation only: a node still serving the old version, or not heard from, says nothing.
//! Per node, in order:
//! - `error_ratio`: its failed share of the calls on the version over the outlier window,
//!   once it has `bake.min_calls`;
//! - `p99`: their p99 latency, likewise;
//! - `golden`: its last golden replay of the version failed a case or agreed below
//!   `bake.min_golden_agreement`;
//! - `drift`: the version's score PSI against the scores served before the switch.
//!
//! The first breach found is committed as the verdict (a rollback). With none by the window's
//! end, the verdict marks the version baked and records which nodes each signal could be
//! judged on: a bake in which no node served enough calls, or no baseline existed, says so.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rankd_proto::peer::v1::PeerHeartbeat;
use rankd_raft::{Breach, Command, NodeId};

use super::{now_ms, Cluster};
use crate::quality::BakeConfig;

/// Reads the signals every `bake.check_interval_ms` until `stop` changes.
pub async fn run(cluster: Arc<Cluster>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let cfg = cluster.bake.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.check_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut coverage = Coverage::default();
    // The last failure to commit a verdict: a retry that fails the same way is not logged
    // again, so a stuck verdict (the previous version not ready somewhere) is one line, not
    // four a second.
    let mut last_failure: Option<String> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if !cluster.is_leader() {
            continue;
        }
        let Some(bake) = cluster.applied().registry.baking.clone() else {
            continue;
        };
        let signals = gather(&cluster, bake.index);
        if coverage.index != bake.index {
            coverage = Coverage {
                index: bake.index,
                ..Coverage::default()
            };
        }
        coverage.note(&signals, &cfg);
        let breach = judge(&signals, &cfg);
        let now = now_ms();
        if breach.is_none() && now < bake.until_ms {
            continue;
        }
        let required = if breach.is_some() {
            let state = cluster.applied();
            super::promote::live_members(&cluster, &state).await
        } else {
            Vec::new()
        };
        if last_failure.is_none() {
            match &breach {
                Some(b) => {
                    tracing::warn!(model = %bake.model, breach = %b.describe(), "bake breached: rolling back")
                }
                None => tracing::info!(model = %bake.model, "bake window passed: baked"),
            }
        }
        let verdict = Command::BakeVerdict {
            model: bake.model.clone(),
            breach,
            required,
            at_ms: now,
            summary: coverage.summary(),
        };
        match cluster.propose(verdict).await {
            Ok(_) => last_failure = None,
            // The next tick retries with fresh signals; a rejection means the bake ended
            // otherwise (an operator switched versions) and the next tick finds none.
            Err(e) => {
                let e = e.to_string();
                if last_failure.as_deref() != Some(e.as_str()) {
                    tracing::warn!(model = %bake.model, error = %e, "bake verdict not committed; retrying");
                }
                last_failure = Some(e);
            }
        }
    }
}

/// Which nodes each signal could be judged on during one bake, so a clean verdict says
/// what it rests on (a node short of calls, or a version without a baseline from the one
/// before it, is not judged).
#[derive(Default)]
struct Coverage {
    index: u64,
    rates: BTreeSet<NodeId>,
    golden: BTreeSet<NodeId>,
    drift: BTreeSet<NodeId>,
    seen: BTreeSet<NodeId>,
}

impl Coverage {
    fn note(&mut self, signals: &[PeerHeartbeat], cfg: &BakeConfig) {
        for hb in signals {
            self.seen.insert(hb.node_id);
            if hb.version_calls >= cfg.min_calls {
                self.rates.insert(hb.node_id);
            }
            if hb.golden != 0 {
                self.golden.insert(hb.node_id);
            }
            if hb.drift_psi >= 0.0 {
                self.drift.insert(hb.node_id);
            }
        }
    }

    fn summary(&self) -> String {
        let list = |s: &BTreeSet<NodeId>| {
            if s.is_empty() {
                "none".to_string()
            } else {
                s.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        format!(
            "judged on nodes: error share and p99 {}; golden {}; drift {} (of {} serving it)",
            list(&self.rates),
            list(&self.golden),
            list(&self.drift),
            self.seen.len()
        )
    }
}

/// Each node's heartbeat, if it serves the activation at `index`.
fn gather(cluster: &Cluster, index: u64) -> Vec<PeerHeartbeat> {
    let now = tokio::time::Instant::now();
    let mut out = vec![cluster.node.peer_heartbeat()];
    for id in cluster.peer_table.up_ids() {
        if let Some(hb) = cluster.peer_table.view(id, now).and_then(|v| v.status) {
            out.push(hb);
        }
    }
    out.retain(|hb| hb.fence_index == index);
    out
}

/// The first signal over its threshold, if any.
pub fn judge(nodes: &[PeerHeartbeat], cfg: &BakeConfig) -> Option<Breach> {
    let breach = |signal: &str, node: NodeId, measured: String, threshold: String| Breach {
        signal: signal.into(),
        node,
        measured,
        threshold,
    };
    for hb in nodes {
        let node = hb.node_id;
        let judged = hb.version_calls >= cfg.min_calls;
        let calls = hb.version_calls;
        if judged && hb.version_error_ratio > cfg.max_error_ratio {
            return Some(breach(
                "error_ratio",
                node,
                format!("{:.3} of {calls} calls", hb.version_error_ratio),
                format!("{:.3}", cfg.max_error_ratio),
            ));
        }
        let p99_ms = hb.version_p99_us as f64 / 1e3;
        if judged && p99_ms > cfg.max_p99_ms {
            return Some(breach(
                "p99",
                node,
                format!("{p99_ms:.1} ms over {calls} calls"),
                format!("{:.1} ms", cfg.max_p99_ms),
            ));
        }
        if hb.golden == 2 || (hb.golden == 1 && hb.golden_agreement < cfg.min_golden_agreement) {
            return Some(breach(
                "golden",
                node,
                format!("replay failed, top-k agreement {:.3}", hb.golden_agreement),
                format!(
                    "every case within tolerance, agreement {:.3}",
                    cfg.min_golden_agreement
                ),
            ));
        }
        if hb.drift_psi > cfg.max_drift_psi {
            return Some(breach(
                "drift",
                node,
                format!("PSI {:.3}", hb.drift_psi),
                format!("PSI {:.3}", cfg.max_drift_psi),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(node: NodeId) -> PeerHeartbeat {
        PeerHeartbeat {
            node_id: node,
            version_calls: 500,
            version_error_ratio: 0.0,
            version_p99_us: 3_000,
            golden: 1,
            golden_agreement: 1.0,
            drift_psi: 0.02,
            ..Default::default()
        }
    }

    #[test]
    fn healthy_nodes_breach_nothing() {
        let cfg = BakeConfig::default();
        assert_eq!(judge(&[healthy(1), healthy(2)], &cfg), None);
        // Nothing measured yet is no breach either.
        let unknown = PeerHeartbeat {
            node_id: 3,
            drift_psi: -1.0,
            ..Default::default()
        };
        assert_eq!(judge(&[unknown], &cfg), None);
    }

    #[test]
    fn each_signal_is_named_with_its_node_and_figures() {
        let cfg = BakeConfig::default();
        type Spoil = fn(&mut PeerHeartbeat);
        let cases: [(&str, Spoil); 4] = [
            ("error_ratio", |h| h.version_error_ratio = 0.2),
            ("p99", |h| h.version_p99_us = 400_000),
            ("golden", |h| {
                h.golden = 2;
                h.golden_agreement = 0.4
            }),
            ("drift", |h| h.drift_psi = 3.0),
        ];
        for (signal, spoil) in cases {
            let mut bad = healthy(2);
            spoil(&mut bad);
            let b = judge(&[healthy(1), bad], &cfg).expect(signal);
            assert_eq!(b.signal, signal);
            assert_eq!(b.node, 2);
            assert!(!b.measured.is_empty() && !b.threshold.is_empty());
        }
    }

    #[test]
    fn error_share_and_latency_need_enough_calls() {
        let cfg = BakeConfig::default();
        let mut few = healthy(1);
        few.version_calls = cfg.min_calls - 1;
        few.version_error_ratio = 1.0;
        few.version_p99_us = 10_000_000;
        assert_eq!(judge(&[few], &cfg), None);
    }
}
