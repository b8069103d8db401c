//! A gray failure: one follower answers every Rank call 150 ms late (the admin InjectFault
//! call; its health stays SERVING and its heartbeats keep coming, so liveness sees nothing).
//! The nodes must judge it degraded against its peers, and the failover client must stop
//! sending it calls; once the fault is cleared it must come back into rotation.
//!
//! Measured: injection to the cluster status (asked of another node) naming the node
//! degraded (detection), injection to the failover client holding it out (RTO: from then on
//! the users' latency is back to normal), clearing to the status no longer naming it, and
//! the client's p99 and the slow node's share of the calls in each stretch.

use std::time::{Duration, Instant};

use rankd_proto::admin::v1::InjectFaultRequest;
use rankd_tests::node_status;

use crate::drill::env::DrillEnv;
use crate::drill::model::{ObjectiveCheck, ScenarioResult};
use crate::drill::phase::Phase;
use crate::load::record::{Call, LoadResult};

pub const NAME: &str = "gray-node";
/// Added to every Rank call the slow node serves.
const LATENCY_MS: u32 = 150;
/// How long the fault stays after its detection, at least (`--hold-s` when longer): longer
/// than the 10 s outlier window, so the node's readmission once its window empties, and its
/// detection again, are in the figures.
const HOLD_AFTER_DETECTION: Duration = Duration::from_secs(15);
/// Longest wait for the node to be judged degraded, and for it to come back once cleared.
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// The fault clears by itself after this long, should the drill die before clearing it.
const SAFETY_S: u32 = 300;
const POLL: Duration = Duration::from_millis(100);

/// What the polls saw while the fault was on.
#[derive(Debug, Default)]
struct Watch {
    /// When the status first named the node degraded, with the reason given.
    detected: Option<(Instant, String)>,
    /// When the failover client first held it out.
    client_out: Option<Instant>,
    /// Status flips from degraded back to not degraded while the fault was on.
    readmissions: u32,
    /// The last verdict seen in the status.
    degraded: bool,
}

/// Whether `observer`'s cluster status names `victim` degraded (with why); `None` when
/// it does not answer.
async fn status_degraded(env: &DrillEnv, observer: u64, victim: u64) -> Option<(bool, String)> {
    let st = env.cluster().try_status(observer).await.ok()?;
    let n = node_status(&st, victim)?;
    Some((n.degraded, n.degraded_reason.clone()))
}

/// Whether the failover client holds the node out as degraded.
fn client_degraded(env: &DrillEnv, node_id: &str, addr: &str) -> bool {
    env.client
        .nodes()
        .iter()
        .any(|n| (n.node_id.as_deref() == Some(node_id) || n.address == addr) && n.degraded)
}

/// Latency and the node's share of the successful calls over `[from, to)` of the load.
#[derive(Debug, Clone, PartialEq)]
pub struct Stretch {
    pub sent: u64,
    pub p99_ms: f64,
    /// Successful calls answered by the node, and by all.
    pub by_node: u64,
    pub ok: u64,
}

impl Stretch {
    pub fn share_pct(&self) -> f64 {
        if self.ok == 0 {
            0.0
        } else {
            self.by_node as f64 * 100.0 / self.ok as f64
        }
    }

    pub fn describe(&self, what: &str, seconds: f64) -> String {
        if self.sent == 0 {
            return format!("{what} ({seconds:.1} s): no calls");
        }
        format!(
            "{what} ({seconds:.1} s): p99 {:.1} ms, the slow node answered {} of {} calls \
             ({:.1} %)",
            self.p99_ms,
            self.by_node,
            self.ok,
            self.share_pct()
        )
    }
}

pub fn stretch(load: &LoadResult, node: &str, from: Duration, to: Duration) -> Stretch {
    let w = load.window(from, to);
    let (from, to) = (from.as_micros() as u64, to.as_micros() as u64);
    let by_node = load
        .calls
        .iter()
        .filter(|c: &&Call| c.at_us >= from && c.at_us < to && c.ok() && c.node == node)
        .count() as u64;
    Stretch {
        sent: w.sent,
        p99_ms: w.p99_ms,
        by_node,
        ok: w.ok,
    }
}

pub async fn gray_node(env: &mut DrillEnv) -> ScenarioResult {
    let leader = env.leader().await;
    let victim = env.follower().await;
    // Asked of another node than the slow one: the leader.
    let observer = leader;
    let addr = env.cluster().node(victim).grpc_addr().to_string();
    let hold = HOLD_AFTER_DETECTION.max(env.hold);
    let degradations = env.client.stats().degradations;
    let mut p = Phase::start(env).await;
    let t0 = p.fault();
    let injected = env
        .cluster()
        .admin(victim)
        .await
        .inject_fault(InjectFaultRequest {
            latency_ms: LATENCY_MS,
            error_ratio: 0.0,
            duration_s: SAFETY_S,
            clear: false,
        })
        .await
        .map(tonic::Response::into_inner);
    let node_id = match &injected {
        Ok(r) => r.node_id.clone(),
        Err(s) => {
            p.notes.push(format!(
                "InjectFault on node {victim} failed: {:?}: {}",
                s.code(),
                s.message()
            ));
            String::new()
        }
    };

    // Detection, then the hold: the status and the client polled every 100 ms.
    let mut w = Watch::default();
    let mut hold_until: Option<Instant> = None;
    let detect_limit = t0 + WAIT_LIMIT;
    if injected.is_ok() {
        loop {
            let now = Instant::now();
            if let Some((degraded, reason)) = status_degraded(env, observer, victim).await {
                if degraded && w.detected.is_none() {
                    w.detected = Some((now, reason));
                    hold_until = Some(now + hold);
                }
                if w.degraded && !degraded {
                    w.readmissions += 1;
                }
                w.degraded = degraded;
            }
            if w.client_out.is_none() && client_degraded(env, &node_id, &addr) {
                w.client_out = Some(now);
            }
            if hold_until.map_or(now >= detect_limit, |h| now >= h) {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    // Clear, and wait for the node to be back in rotation.
    let cleared = Instant::now();
    let clear = env
        .cluster()
        .admin(victim)
        .await
        .inject_fault(InjectFaultRequest {
            clear: true,
            ..Default::default()
        })
        .await;
    if let Err(s) = &clear {
        p.notes.push(format!(
            "clearing the fault on node {victim} failed: {:?}: {}",
            s.code(),
            s.message()
        ));
    }
    p.repaired();
    let mut back: Option<Instant> = None;
    let mut client_back: Option<Instant> = None;
    while cleared.elapsed() < WAIT_LIMIT && (back.is_none() || client_back.is_none()) {
        let now = Instant::now();
        if back.is_none() {
            if let Some((false, _)) = status_degraded(env, observer, victim).await {
                back = Some(now);
            }
        }
        if client_back.is_none() && !client_degraded(env, &node_id, &addr) {
            client_back = Some(now);
        }
        tokio::time::sleep(POLL).await;
    }
    // Full service for the users: the client holds the slow node out.
    p.mark_recovered(w.client_out);
    p.detection_ms = w
        .detected
        .as_ref()
        .map(|(at, _)| at.duration_since(t0).as_secs_f64() * 1000.0);
    let ms = |from: Instant, to: Option<Instant>| {
        to.map(|t| t.saturating_duration_since(from).as_secs_f64() * 1000.0)
    };
    let undegraded_ms = ms(cleared, back);
    let client_back_ms = ms(cleared, client_back);
    tokio::time::sleep(env.settle).await;

    match &w.detected {
        Some((_, reason)) => p.notes.push(format!(
            "node {observer}'s cluster status named node {victim} degraded {:.0} ms after the \
             injection: {reason}",
            p.detection_ms.unwrap_or_default()
        )),
        None => p.notes.push(format!(
            "node {observer}'s cluster status never named node {victim} degraded within {} s",
            WAIT_LIMIT.as_secs()
        )),
    }
    p.notes.push(match w.client_out {
        Some(at) => format!(
            "the failover client held node {victim} out {:.0} ms after the injection; it \
             counted {} degradation(s) over the scenario",
            at.duration_since(t0).as_secs_f64() * 1000.0,
            env.client.stats().degradations.saturating_sub(degradations)
        ),
        None => format!("the failover client never held node {victim} out"),
    });
    p.notes.push(format!(
        "while the fault was on, the status showed node {victim} readmitted (no longer \
         degraded) {} time(s)",
        w.readmissions
    ));
    p.notes.push(format!(
        "after the fault was cleared: no longer degraded in the status after {}, back in the \
         client's rotation after {}",
        undegraded_ms.map_or("(never, within 60 s)".into(), |v| format!("{v:.0} ms")),
        client_back_ms.map_or("(never, within 60 s)".into(), |v| format!("{v:.0} ms"))
    ));

    // The stretches, on the load's clock.
    let at = |i: Instant| p.offset(i);
    let marks = (
        at(t0),
        w.client_out.map(at),
        at(cleared),
        client_back.map(at),
    );
    let fault = format!(
        "InjectFault on node {victim} (a follower): every Rank call it serves waits {LATENCY_MS} \
         ms, no errors, health SERVING; cleared {:.1} s after its detection",
        hold.as_secs_f64()
    );
    let (mut r, load) = p.finish_with_load(NAME, fault, "").await;
    let end = Duration::from_secs_f64(load.duration_s) + Duration::from_secs(60);
    let (inject, out, clear_at, back_at) = marks;
    let mut stretches = vec![("before", Duration::ZERO, inject)];
    match out {
        Some(out) => {
            stretches.push(("injection to the client holding it out", inject, out));
            stretches.push(("held out, fault on", out, clear_at));
        }
        None => stretches.push(("fault on (never held out)", inject, clear_at)),
    }
    match back_at {
        Some(b) => {
            stretches.push(("fault cleared, still held out", clear_at, b));
            stretches.push(("back in rotation", b, end));
        }
        None => stretches.push(("fault cleared", clear_at, end)),
    }
    for (what, from, to) in stretches {
        let s = stretch(&load, &node_id, from, to);
        let secs = to
            .min(Duration::from_secs_f64(load.duration_s))
            .saturating_sub(from);
        r.notes.push(s.describe(what, secs.as_secs_f64()));
    }
    r.objectives.push(ObjectiveCheck {
        what: "slow node judged degraded".into(),
        limit: format!("within {} s of the injection", WAIT_LIMIT.as_secs()),
        measured: r
            .detection_ms
            .map_or("never".into(), |v| format!("{v:.0} ms")),
        held: r.detection_ms.is_some(),
    });
    r.objectives.push(ObjectiveCheck {
        what: "back in rotation once cleared".into(),
        limit: format!("within {} s of clearing", WAIT_LIMIT.as_secs()),
        measured: match (undegraded_ms, client_back_ms) {
            (Some(a), Some(b)) => format!("status {a:.0} ms, client {b:.0} ms"),
            _ => "not seen".into(),
        },
        held: undegraded_ms.is_some() && client_back_ms.is_some(),
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(at_ms: u64, latency_ms: u64, node: &str) -> Call {
        Call {
            at_us: at_ms * 1000,
            latency_us: latency_ms * 1000,
            code: if node.is_empty() { "UNAVAILABLE" } else { "OK" }.into(),
            version: "1".into(),
            node: node.into(),
        }
    }

    #[test]
    fn a_stretch_counts_the_nodes_share_of_successful_calls() {
        let load = LoadResult {
            calls: vec![
                call(0, 3, "node-1"),
                call(100, 150, "node-2"),
                call(200, 3, "node-3"),
                call(300, 2000, ""),
                call(400, 3, "node-2"),
                call(1500, 3, "node-2"),
            ],
            ..Default::default()
        };
        let s = stretch(&load, "node-2", Duration::ZERO, Duration::from_secs(1));
        assert_eq!((s.sent, s.ok, s.by_node), (5, 4, 2));
        assert!((s.share_pct() - 50.0).abs() < 1e-9);
        let none = stretch(
            &load,
            "node-2",
            Duration::from_secs(5),
            Duration::from_secs(6),
        );
        assert_eq!((none.sent, none.share_pct()), (0, 0.0));
        assert!(none.describe("after", 1.0).contains("no calls"));
    }
}
