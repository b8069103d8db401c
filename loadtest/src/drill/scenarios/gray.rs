//! A gray failure: one follower answers every Rank call 150 ms late (the admin InjectFault
//! call; its health stays SERVING and its heartbeats keep coming, so liveness sees nothing).
//! Its peers must judge it degraded, the failover client must hold it out, and once the
//! fault is cleared it must come back into rotation.
//!
//! Measured: injection to the cluster status (asked of another node, the leader) naming the
//! node degraded (detection); every change of that verdict while the fault is on (the fault
//! stays 15 s past its detection, longer than the 10 s outlier window, so what happens once
//! the node's window empties is in the figures); clearing to the node back in rotation in
//! the status and the client; clearing to the node's first answer to the load (RTO: every
//! node answering again; it counts from the clearing since the fault lasts as long as the
//! drill holds it); and the client's p99 and the slow node's share of the calls in each
//! stretch.

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
/// than the outlier window, so what happens once the node's window empties is seen.
const HOLD_AFTER_DETECTION: Duration = Duration::from_secs(15);
/// rankd's `outlier.window_ms` (its default, which the drill cluster keeps): a degraded
/// node is judged again, and readmitted, once its calls in the window fall below
/// `outlier.min_calls`.
const OUTLIER_WINDOW: Duration = Duration::from_secs(10);
/// RTO limit of this scenario, from the clearing: a node still degraded then is readmitted
/// once its outlier window has emptied, so the window plus the drill's default RTO limit of
/// 5 s.
const RTO_LIMIT: Duration = Duration::from_secs(OUTLIER_WINDOW.as_secs() + 5);
/// Load kept after the node is back in rotation.
const AFTER_CLEAR: Duration = Duration::from_secs(10);
/// Longest wait for the node to be judged degraded, and for it to come back once cleared.
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// The fault clears by itself after this long, should the drill die before clearing it.
const SAFETY_S: u32 = 300;
const POLL: Duration = Duration::from_millis(100);

/// One change of the status's verdict on the slow node.
#[derive(Debug, Clone)]
struct Flip {
    at: Instant,
    degraded: bool,
    /// The reason given, or the node's own figures (last 1024 calls) when not degraded.
    why: String,
}

/// The observer's verdict on `victim` (`None`: no answer), with the reason or, when not
/// degraded, the node's own recent figures.
async fn verdict(env: &DrillEnv, observer: u64, victim: u64) -> Option<(bool, String)> {
    let st = env.cluster().try_status(observer).await.ok()?;
    let n = node_status(&st, victim)?;
    Some(if n.degraded {
        (true, n.degraded_reason.clone())
    } else {
        (
            false,
            format!("its last {} calls: p99 {:.1} ms", n.recent_calls, n.p99_ms),
        )
    })
}

/// Whether the failover client holds the node out as degraded.
fn client_degraded(env: &DrillEnv, node_id: &str, addr: &str) -> bool {
    env.client
        .nodes()
        .iter()
        .any(|n| (n.node_id.as_deref() == Some(node_id) || n.address == addr) && n.degraded)
}

/// Polls the status and the client every [`POLL`] until `stop` says so, recording every
/// flip of the status's verdict and the client's.
struct Watch<'a> {
    env: &'a DrillEnv,
    observer: u64,
    victim: u64,
    node_id: String,
    addr: String,
    flips: Vec<Flip>,
    client_flips: Vec<(Instant, bool)>,
}

impl Watch<'_> {
    fn degraded(&self) -> bool {
        self.flips.last().is_some_and(|f| f.degraded)
    }

    fn client_degraded(&self) -> bool {
        self.client_flips.last().is_some_and(|f| f.1)
    }

    async fn poll_until(&mut self, mut stop: impl FnMut(&Self, Instant) -> bool) {
        loop {
            let now = Instant::now();
            if let Some((degraded, why)) = verdict(self.env, self.observer, self.victim).await {
                if self
                    .flips
                    .last()
                    .map_or(degraded, |f| f.degraded != degraded)
                {
                    self.flips.push(Flip {
                        at: now,
                        degraded,
                        why,
                    });
                }
            }
            let client = client_degraded(self.env, &self.node_id, &self.addr);
            if client != self.client_degraded() {
                self.client_flips.push((now, client));
            }
            if stop(self, now) {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }
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
            "{what} ({seconds:.1} s): client p99 {:.1} ms, the slow node answered {} of {} calls \
             ({:.1} %)",
            self.p99_ms,
            self.by_node,
            self.ok,
            self.share_pct()
        )
    }
}

/// When (from the load's start) `node` first answered a call scheduled at or after `from`.
pub fn first_answer(load: &LoadResult, node: &str, from: Duration) -> Option<Duration> {
    let from = from.as_micros() as u64;
    load.calls
        .iter()
        .filter(|c| c.at_us >= from && c.ok() && c.node == node)
        .map(|c| c.at_us)
        .min()
        .map(Duration::from_micros)
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
    let mut w = Watch {
        env,
        observer,
        victim,
        node_id: node_id.clone(),
        addr,
        flips: Vec::new(),
        client_flips: Vec::new(),
    };
    // Detection, then the hold.
    if injected.is_ok() {
        w.poll_until(|w, now| match w.flips.iter().find(|f| f.degraded) {
            Some(first) => now >= first.at + hold,
            None => now >= t0 + WAIT_LIMIT,
        })
        .await;
    }
    let detected = w.flips.iter().find(|f| f.degraded).cloned();
    let degraded_at_clear = (w.degraded(), w.client_degraded());
    let fault_flips = w.flips.len();

    // Clear, and wait for the node to be back in rotation in the status and the client.
    p.recovery_starts();
    let cleared = Instant::now();
    let clear = w
        .env
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
    w.poll_until(|w, now| (!w.degraded() && !w.client_degraded()) || now >= cleared + WAIT_LIMIT)
        .await;
    let back = (!w.degraded() && !w.client_degraded()).then(|| {
        let last = |t: Option<Instant>| t.unwrap_or(cleared).max(cleared);
        last(w.flips.last().map(|f| f.at)).max(last(w.client_flips.last().map(|c| c.0)))
    });
    let Watch {
        flips,
        client_flips,
        ..
    } = w;
    p.mark_recovered(back);
    p.detection_ms = detected
        .as_ref()
        .map(|f| f.at.duration_since(t0).as_secs_f64() * 1000.0);
    // Long enough for the client's latency estimate of the node to forget its slow answers
    // (peak EWMA, 2 s time constant: ~7 s for 150 ms against ~4 ms), so its first answer
    // after the clearing, and its share coming back, are in the record.
    tokio::time::sleep(AFTER_CLEAR.max(env.settle)).await;

    let since = |at: Instant| at.saturating_duration_since(t0).as_secs_f64();
    let cleared_s = since(cleared);
    match &detected {
        Some(f) => p.notes.push(format!(
            "node {observer}'s cluster status named node {victim} degraded {:.0} ms after the \
             injection: {}",
            since(f.at) * 1000.0,
            f.why
        )),
        None => p.notes.push(format!(
            "node {observer}'s cluster status never named node {victim} degraded within {} s",
            WAIT_LIMIT.as_secs()
        )),
    }
    let flip_text = |f: &Flip| {
        format!(
            "{:.1} s {}{} ({})",
            since(f.at),
            if f.degraded {
                "degraded"
            } else {
                "not degraded"
            },
            if since(f.at) >= cleared_s {
                ", fault cleared"
            } else {
                ""
            },
            f.why
        )
    };
    p.notes.push(format!(
        "node {observer}'s verdict on node {victim}, in seconds from the injection (fault \
         cleared at {cleared_s:.1} s): {}",
        flips.iter().map(flip_text).collect::<Vec<_>>().join("; ")
    ));
    let client_text: Vec<String> = client_flips
        .iter()
        .map(|(at, d)| {
            format!(
                "{:.1} s {}",
                since(*at),
                if *d { "held out" } else { "back in rotation" }
            )
        })
        .collect();
    p.notes.push(format!(
        "the failover client, in seconds from the injection: {}; {} degradation(s) counted",
        if client_text.is_empty() {
            "never held the node out".to_string()
        } else {
            client_text.join("; ")
        },
        env.client.stats().degradations.saturating_sub(degradations)
    ));
    if detected.is_some() && !degraded_at_clear.0 {
        let lapsed = flips[..fault_flips]
            .iter()
            .rev()
            .find(|f| !f.degraded)
            .map(|f| since(f.at));
        p.notes.push(format!(
            "the status no longer named node {victim} degraded while the fault was still on \
             (from {:.1} s), and did not again before the clearing: the window of calls it \
             is judged on had emptied (the client's balancer sends a slow node next to \
             nothing)",
            lapsed.unwrap_or_default()
        ));
    }
    let rotation_ms = back.map(|b| b.duration_since(cleared).as_secs_f64() * 1000.0);
    p.notes.push(format!(
        "after the clearing: back in rotation (status and client) after {} (status said \
         degraded at the clearing: {}, client held it out: {})",
        rotation_ms.map_or("(never, within 60 s)".into(), |v| format!("{v:.0} ms")),
        degraded_at_clear.0,
        degraded_at_clear.1
    ));

    // The stretches, on the load's clock.
    let inject = p.offset(t0);
    let detect = detected.as_ref().map(|f| p.offset(f.at));
    let clear_at = p.offset(cleared);
    let back_at = back.map(|b| p.offset(b));
    let fault = format!(
        "InjectFault on node {victim} (a follower): every Rank call it serves waits \
         {LATENCY_MS} ms, no errors, health SERVING; cleared {:.0} s after its detection; \
         RTO: clearing to the node's first answer",
        hold.as_secs_f64()
    );
    let (mut r, load) = p.finish_with_load(NAME, fault, "").await;
    let end = Duration::from_secs_f64(load.duration_s);
    let mut stretches = vec![("before", Duration::ZERO, inject)];
    match detect {
        Some(d) => {
            stretches.push(("injection to detection", inject, d));
            stretches.push(("detected, fault on", d, clear_at));
        }
        None => stretches.push(("fault on, never detected", inject, clear_at)),
    }
    match back_at {
        Some(b) => {
            stretches.push(("cleared, until back in rotation", clear_at, b));
            stretches.push(("back in rotation", b, end));
        }
        None => stretches.push(("cleared", clear_at, end)),
    }
    for (what, from, to) in stretches.into_iter().filter(|(_, from, to)| to > from) {
        let s = stretch(&load, &node_id, from, to);
        r.notes
            .push(s.describe(what, to.saturating_sub(from).as_secs_f64()));
    }
    // Full service again: the node answers the load's calls. RTO counts from the clearing
    // to its first answer after it.
    let first = first_answer(&load, &node_id, clear_at);
    r.rto_ms = first.map(|f| f.saturating_sub(clear_at).as_secs_f64() * 1000.0);
    r.notes.push(match first {
        Some(f) => format!(
            "first call answered by node {victim} after the clearing: {:.1} s after it",
            f.saturating_sub(clear_at).as_secs_f64()
        ),
        None => format!("node {victim} answered no call after the clearing"),
    });
    r.rto_limit_ms = Some(RTO_LIMIT.as_secs_f64() * 1000.0);
    r.objectives.push(ObjectiveCheck {
        what: "slow node judged degraded".into(),
        limit: format!("within {} s of the injection", WAIT_LIMIT.as_secs()),
        measured: r
            .detection_ms
            .map_or("never".into(), |v| format!("{v:.0} ms")),
        held: r.detection_ms.is_some(),
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
        assert_eq!(
            first_answer(&load, "node-2", Duration::from_millis(150)),
            Some(Duration::from_millis(400))
        );
        assert_eq!(
            first_answer(&load, "node-3", Duration::from_millis(300)),
            None
        );
    }
}
