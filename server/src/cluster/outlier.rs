//! Gray failures: a node that answers, slowly or with errors, while its heartbeats keep
//! arriving. Liveness cannot see it; only comparing the node with its peers can.
//!
//! Every node judges every member (itself included) from the same inputs, the signals each
//! heartbeat carries: calls, error share and p99 over `outlier.window_ms`. A node is
//! degraded when, with at least `min_calls` calls in the window, its p99 is above
//! `latency_ratio` times the median p99 of its judged peers and `min_latency_gap_ms` above it,
//! or its error share is `error_margin` above theirs. Peers without enough calls are not
//! compared with, and a node with no judged peer is never degraded: there is nothing
//! "normal" to compare with, and a cluster-wide slowdown is not a gray failure.
//!
//! A verdict of degraded holds until the node is judged again on enough calls: clients stop
//! calling it, so its window thins out, and too few calls are no evidence that it recovered.
//! The peers' probe calls (`cluster::probe`) refill the window, and it is judged afresh.

use std::collections::BTreeMap;

use rankd_raft::NodeId;

use crate::quality::OutlierConfig;

/// One node's signals over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signals {
    pub calls: u32,
    pub error_ratio: f64,
    pub p99_ms: f64,
}

impl Signals {
    /// The signals a heartbeat carries (this node's own included: see
    /// `NodeState::peer_heartbeat`).
    pub fn of(hb: &rankd_proto::peer::v1::PeerHeartbeat) -> Signals {
        Signals {
            calls: hb.recent_calls,
            error_ratio: hb.error_ratio,
            p99_ms: hb.p99_us as f64 / 1e3,
        }
    }
}

/// The degraded nodes, each with why; `before` is the last verdict.
pub fn judge(
    nodes: &[(NodeId, Signals)],
    before: &BTreeMap<NodeId, String>,
    cfg: &OutlierConfig,
) -> BTreeMap<NodeId, String> {
    let judged: Vec<&(NodeId, Signals)> = nodes
        .iter()
        .filter(|(_, s)| s.calls >= cfg.min_calls)
        .collect();
    let mut out: BTreeMap<NodeId, String> = nodes
        .iter()
        .filter(|(_, s)| s.calls < cfg.min_calls)
        .filter_map(|(id, _)| before.get(id).map(|why| (*id, why.clone())))
        .collect();
    for (id, s) in &judged {
        let peers: Vec<&Signals> = judged
            .iter()
            .filter(|(p, _)| p != id)
            .map(|(_, s)| s)
            .collect();
        if peers.is_empty() {
            continue;
        }
        let p99 = median(peers.iter().map(|p| p.p99_ms));
        let errors = median(peers.iter().map(|p| p.error_ratio));
        if s.p99_ms > cfg.latency_ratio * p99 && s.p99_ms - p99 >= cfg.min_latency_gap_ms {
            out.insert(
                *id,
                format!(
                    "p99 {:.1} ms against its peers' median {:.1} ms (over {} calls)",
                    s.p99_ms, p99, s.calls
                ),
            );
        } else if s.error_ratio > errors + cfg.error_margin {
            out.insert(
                *id,
                format!(
                    "error share {:.3} against its peers' median {:.3} (over {} calls)",
                    s.error_ratio, errors, s.calls
                ),
            );
        }
    }
    out
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(calls: u32, error_ratio: f64, p99_ms: f64) -> Signals {
        Signals {
            calls,
            error_ratio,
            p99_ms,
        }
    }

    fn judge(nodes: &[(NodeId, Signals)], cfg: &OutlierConfig) -> BTreeMap<NodeId, String> {
        super::judge(nodes, &BTreeMap::new(), cfg)
    }

    #[test]
    fn a_verdict_holds_until_the_node_is_judged_again_on_enough_calls() {
        let cfg = OutlierConfig::default();
        let before = BTreeMap::from([(2, "p99 105.0 ms".to_string())]);
        let starved = [(1, s(200, 0.0, 4.0)), (2, s(12, 0.0, 150.0))];
        let d = super::judge(&starved, &before, &cfg);
        assert_eq!(d.get(&2).map(String::as_str), Some("p99 105.0 ms"));
        let healed = [(1, s(200, 0.0, 4.0)), (2, s(80, 0.0, 4.5))];
        assert!(super::judge(&healed, &before, &cfg).is_empty());
    }

    #[test]
    fn a_slow_node_among_healthy_peers_is_degraded() {
        let cfg = OutlierConfig::default();
        let d = judge(
            &[
                (1, s(200, 0.0, 4.0)),
                (2, s(200, 0.0, 105.0)),
                (3, s(200, 0.0, 5.0)),
            ],
            &cfg,
        );
        assert_eq!(d.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert!(d[&2].contains("p99 105.0 ms"), "{}", d[&2]);
    }

    #[test]
    fn a_failing_node_is_degraded_and_healthy_peers_are_not() {
        let cfg = OutlierConfig::default();
        let d = judge(&[(1, s(200, 0.0, 4.0)), (2, s(200, 0.3, 4.0))], &cfg);
        assert_eq!(d.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert!(d[&2].contains("error share 0.300"), "{}", d[&2]);
    }

    #[test]
    fn small_gaps_few_calls_and_lone_nodes_are_not_judged() {
        let cfg = OutlierConfig::default();
        // 4x slower but only 6 ms apart: noise at this scale.
        assert!(judge(&[(1, s(200, 0.0, 2.0)), (2, s(200, 0.0, 8.0))], &cfg).is_empty());
        // Too few calls on the slow node.
        assert!(judge(&[(1, s(200, 0.0, 2.0)), (2, s(10, 0.0, 900.0))], &cfg).is_empty());
        // No peer with enough calls to compare with.
        assert!(judge(&[(1, s(5, 0.0, 2.0)), (2, s(200, 0.9, 900.0))], &cfg).is_empty());
        // The whole cluster slow together is not a gray failure.
        assert!(judge(
            &[
                (1, s(200, 0.0, 300.0)),
                (2, s(200, 0.0, 310.0)),
                (3, s(200, 0.0, 290.0))
            ],
            &cfg
        )
        .is_empty());
    }
}
