//! A bad model promoted under load: a version that ranks like the active one but scores
//! every item 3 higher (the exporter's `shift:3` drill transform: it passes the golden set
//! and the NDCG guard, so only live drift can tell), promoted with a bake window. The leader's
//! bake watch must see the drift and roll back by itself within the window.
//!
//! Drift needs a reference: at the switch each node hands the new version the scores the
//! outgoing one served, if it served at least 1000 (each call's top k count, not its
//! candidates: 200 calls of the drill's top-5 query per node). The drill therefore waits,
//! under load, until every node has (its `rankd_scores_observed` gauge) before promoting.
//!
//! Measured: promotion commit to rollback commit (both from the replicated history), the
//! calls the bad version answered, the history entry's breach (signal, node, value,
//! threshold), and the usual latency and failures. RTO counts from the promotion to every
//! node serving the previous version again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rankd_proto::admin::v1::{
    Fence, HistoryEntry, HistoryRequest, PromoteRequest, PromoteResponse, RollbackRequest,
};
use rankd_tests::exporter::compress;
use rankd_tests::upload_dir;
use tonic::Code;

use crate::drill::env::DrillEnv;
use crate::drill::model::{ObjectiveCheck, ScenarioResult};
use crate::drill::phase::Phase;
use crate::load::record::Call;

pub const NAME: &str = "bad-model";
/// The exporter's drill transform: every score +3, the same ranking.
const METHOD: &str = "shift:3";
/// Past the window's end, how long the drill still waits for the verdict to commit.
const VERDICT_GRACE: Duration = Duration::from_secs(10);
/// Who the history names for the drill's own actions.
const BY: &str = "rankload drill";
/// Scores (each call's top k, as returned) the outgoing version must have served on a node
/// for that node to give the new version a drift baseline at the switch (rankd's
/// `MIN_BASELINE`). Without one the new version takes its own first scores as the
/// reference, and drift cannot be seen in that bake.
const BASELINE_SCORES: f64 = 1000.0;
/// Longest wait for that baseline under the drill's load.
const BASELINE_LIMIT: Duration = Duration::from_secs(60);

fn skipped(why: String) -> ScenarioResult {
    ScenarioResult {
        name: NAME.into(),
        skipped: Some(why),
        ..Default::default()
    }
}

/// Runs the exporter off the runtime; its panics (a failed export) come back as text.
async fn export_bad_version(parent: PathBuf, out: PathBuf) -> Result<PathBuf, String> {
    let job = tokio::task::spawn_blocking(move || compress(&parent, METHOD, &out, &[]));
    job.await.map_err(|e| {
        if e.is_panic() {
            let p = e.into_panic();
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the exporter panicked".into())
        } else {
            "the exporter's task was cancelled".into()
        }
    })
}

fn manifest_version(dir: &Path) -> Option<String> {
    let text = std::fs::read(dir.join("manifest.json")).ok()?;
    let m: serde_json::Value = serde_json::from_slice(&text).ok()?;
    m["version"].as_str().map(str::to_string)
}

async fn history(env: &DrillEnv, id: u64) -> Result<Vec<HistoryEntry>, String> {
    let mut req = tonic::Request::new(HistoryRequest {});
    req.set_timeout(Duration::from_secs(10));
    env.cluster()
        .admin(id)
        .await
        .history(req)
        .await
        .map(|r| r.into_inner().entries)
        .map_err(|s| format!("History on node {id}: {:?}: {}", s.code(), s.message()))
}

/// The bad version's promotion in the history, and the bake's verdict on it, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub promoted_at_ms: u64,
    /// "rollback" or "baked"; `None` while the bake runs (or when nothing judged it).
    pub verdict: Option<HistoryEntry>,
}

/// The last promotion of `version`, and the first entry after it that ended its bake: the
/// bake watch's rollback away from it or its "baked" mark.
pub fn find_verdict(entries: &[HistoryEntry], version: &str) -> Option<Verdict> {
    let at = entries
        .iter()
        .rposition(|e| e.action == "promote" && e.to_version == version)?;
    let verdict = entries[at + 1..]
        .iter()
        .find(|e| {
            (e.action == "rollback" && e.from_version == version)
                || (e.action == "baked" && e.to_version == version)
        })
        .cloned();
    Some(Verdict {
        promoted_at_ms: entries[at].at_ms,
        verdict,
    })
}

/// What a bake-watch rollback's detail names: "automatic, during the bake of M: SIGNAL on
/// node N: MEASURED against a threshold of THRESHOLD".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    pub signal: String,
    pub node: u64,
    pub measured: String,
    pub threshold: String,
}

pub fn parse_breach(detail: &str) -> Option<Breach> {
    let (_, rest) = detail.split_once("during the bake of ")?;
    let (_, breach) = rest.split_once(": ")?;
    let (signal, rest) = breach.split_once(" on node ")?;
    let (node, rest) = rest.split_once(": ")?;
    let (measured, threshold) = rest.split_once(" against a threshold of ")?;
    let node = node.trim().parse().ok()?;
    let named = |s: &str| !s.trim().is_empty();
    (named(signal) && named(measured) && named(threshold)).then(|| Breach {
        signal: signal.trim().into(),
        node,
        measured: measured.trim().into(),
        threshold: threshold.trim().into(),
    })
}

/// Successful calls answered by `version`, and the first and last scheduled time (µs from
/// the load's start) at which one was.
pub fn served_by_version(calls: &[Call], version: &str) -> (u64, Option<(u64, u64)>) {
    let mut n = 0;
    let mut span: Option<(u64, u64)> = None;
    for c in calls.iter().filter(|c| c.ok() && c.version == version) {
        n += 1;
        span = Some(span.map_or((c.at_us, c.at_us), |(a, b)| {
            (a.min(c.at_us), b.max(c.at_us))
        }));
    }
    (n, span)
}

/// Waits until every live node has served [`BASELINE_SCORES`] scores of `version` (its
/// `rankd_scores_observed` gauge, exported every 2 s); `None` when they have, else what
/// each node had at the limit.
async fn wait_baseline(env: &DrillEnv, version: &str) -> Option<String> {
    let series = format!("rankd_scores_observed{{version=\"{version}\"}}");
    let until = Instant::now() + BASELINE_LIMIT;
    loop {
        let mut seen = Vec::new();
        for id in env.cluster().live_ids() {
            let n = env
                .cluster()
                .node(id)
                .metrics()
                .await
                .value_or_zero(&series);
            seen.push((id, n));
        }
        if seen.iter().all(|&(_, n)| n >= BASELINE_SCORES) {
            return None;
        }
        if Instant::now() >= until {
            let each: Vec<String> = seen
                .iter()
                .map(|(id, n)| format!("node {id} {n:.0}"))
                .collect();
            return Some(format!("scores of {version} served: {}", each.join(", ")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn bad_model(env: &mut DrillEnv) -> ScenarioResult {
    let good = env.active().await.unwrap_or_else(|| env.fence.clone());
    let bake = env.bake;
    let bake_ms = u64::try_from(bake.as_millis()).unwrap_or(u64::MAX);

    // Built, uploaded and loaded everywhere before the load starts: the exporter is Python
    // and takes seconds, and the promotion itself should be the only thing measured.
    let work = match tempfile::Builder::new()
        .prefix("rankd-drill-bad-")
        .tempdir()
    {
        Ok(w) => w,
        Err(e) => return skipped(format!("no work directory: {e}")),
    };
    let parent = env.cluster().version_dir(&good.model_version);
    let built = export_bad_version(parent, work.path().join("bad")).await;
    let dir = match built {
        Ok(d) => d,
        Err(why) => return skipped(format!("export.py compress --method {METHOD}: {why}")),
    };
    let Some(bad) = manifest_version(&dir) else {
        return skipped(format!(
            "the exporter wrote no version in {}",
            dir.display()
        ));
    };
    let leader = env.leader().await;
    match upload_dir(&mut env.cluster().admin(leader).await, &dir).await {
        Ok(_) => {}
        // A second run against the same cluster: the version is already registered.
        Err(s) if s.code() == Code::AlreadyExists => {}
        Err(s) => {
            return skipped(format!(
                "uploading {bad} was refused: {:?}: {}",
                s.code(),
                s.message()
            ))
        }
    }
    env.cluster().wait_ready_everywhere(leader, &bad).await;

    let mut p = Phase::start(env).await;
    let waited = Instant::now();
    let short = wait_baseline(env, &good.model_version).await;
    p.notes.push(match &short {
        None => format!(
            "every node had served {BASELINE_SCORES:.0} scores of {} (the drift baseline) \
             {:.1} s into the load's steady part",
            good.model_version,
            (env.settle + waited.elapsed()).as_secs_f64()
        ),
        Some(why) => format!(
            "promoted without a full drift baseline after {} s of load: {why}",
            BASELINE_LIMIT.as_secs()
        ),
    });
    let t0 = p.fault();
    let req = PromoteRequest {
        bake_ms: Some(bake_ms),
        requested_by: BY.into(),
        ..env.cluster().promote_request(&bad)
    };
    let answer = env.cluster().promote(leader, req).await;
    let promoted_after = t0.elapsed();
    let status_after = env.cluster().try_status(leader).await.ok();

    // The verdict: the active version leaves the bad one (the bake watch rolled back), or the
    // window passes with the bad version still active.
    let until = t0 + bake + VERDICT_GRACE;
    let mut rolled_back: Option<(Instant, Fence)> = None;
    if answer.is_ok() {
        while Instant::now() < until {
            if let Some(f) = env.active().await {
                if f.model_version != bad {
                    rolled_back = Some((Instant::now(), f));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut by_hand = None;
    if answer.is_ok() && rolled_back.is_none() {
        // Put the cluster back for the scenarios after this one; RTO then includes the wait.
        let req = RollbackRequest {
            expect_version: bad.clone(),
            requested_by: BY.into(),
        };
        by_hand = Some(env.cluster().rollback(leader, req).await);
    }
    p.repaired();
    p.recover(env).await;

    let entries = history(env, leader).await;
    let verdict = entries.as_ref().ok().and_then(|e| find_verdict(e, &bad));
    let rollback = verdict
        .as_ref()
        .and_then(|v| v.verdict.as_ref().map(|e| (v.promoted_at_ms, e)))
        .filter(|(_, e)| e.action == "rollback" && e.by == "bake-watch");
    let commit_to_rollback_ms = rollback.map(|(at, e)| e.at_ms.saturating_sub(at));
    let breach = rollback.and_then(|(_, e)| parse_breach(&e.detail));

    match &answer {
        Ok(PromoteResponse {
            fence,
            bake_until_ms,
            commit_ms,
            ..
        }) => p.notes.push(format!(
            "promoted {bad} (fence {}) with a bake of {bake_ms} ms: the call took {:.0} ms \
             (commit {commit_ms:.1} ms after readiness); bake_until_ms {bake_until_ms}; status \
             then showed baking_version {:?}",
            fence.as_ref().map_or("none".into(), |f| format!(
                "term {}, index {}",
                f.term, f.index
            )),
            promoted_after.as_secs_f64() * 1000.0,
            status_after
                .as_ref()
                .map_or("(no status)", |s| s.baking_version.as_str()),
        )),
        Err(s) => p.notes.push(format!(
            "the promotion of {bad} was refused: {:?}: {}",
            s.code(),
            s.message()
        )),
    }
    match (&entries, &verdict) {
        (Err(why), _) => p.notes.push(why.clone()),
        (Ok(_), None) => p
            .notes
            .push(format!("the history has no promotion of {bad}")),
        (Ok(_), Some(Verdict { verdict: None, .. })) => p.notes.push(format!(
            "the history has no verdict on the bake of {bad} (no rollback, no \"baked\")"
        )),
        (
            Ok(_),
            Some(Verdict {
                promoted_at_ms,
                verdict: Some(e),
            }),
        ) => p.notes.push(format!(
            "history: {} by {} {} ms after the promotion's commit, {} → {}: {}",
            e.action,
            e.by,
            e.at_ms.saturating_sub(*promoted_at_ms),
            if e.from_version.is_empty() {
                "-"
            } else {
                e.from_version.as_str()
            },
            e.to_version,
            if e.detail.is_empty() {
                "(no detail)"
            } else {
                e.detail.as_str()
            }
        )),
    }
    p.notes.push(match &breach {
        Some(b) => format!(
            "the rollback names the breach: signal {}, node {}, value {}, threshold {}",
            b.signal, b.node, b.measured, b.threshold
        ),
        None if rollback.is_some() => {
            "the rollback's detail does not name signal, node, value and threshold".into()
        }
        None => "no automatic rollback to read a breach from".into(),
    });
    if let Some((at, f)) = &rolled_back {
        p.notes.push(format!(
            "the load's cluster status showed version {} active again {:.0} ms after the \
             Promote call began",
            f.model_version,
            at.duration_since(t0).as_secs_f64() * 1000.0
        ));
    }
    if let Some(r) = &by_hand {
        p.notes.push(format!(
            "no automatic rollback within {} ms of the promotion (+{} s grace): rolled back by \
             the drill ({})",
            bake_ms,
            VERDICT_GRACE.as_secs(),
            match r {
                Ok(_) => "ok".to_string(),
                Err(s) => format!("{:?}: {}", s.code(), s.message()),
            }
        ));
    }

    let fault = format!(
        "promote {bad} (the active {}, {METHOD}: every score +3, same ranking; passes the \
         golden set and the NDCG guard) with a {:.0} s bake window",
        good.model_version,
        bake.as_secs_f64()
    );
    let (mut r, load) = p.finish_with_load(NAME, fault, "").await;
    let (served, span) = served_by_version(&load.calls, &bad);
    r.notes.push(match span {
        Some((a, b)) => format!(
            "{served} calls answered by {bad}, scheduled from {:.1} s to {:.1} s of the load",
            a as f64 / 1e6,
            b as f64 / 1e6
        ),
        None => format!("no call answered by {bad}"),
    });
    r.objectives.push(ObjectiveCheck {
        what: "automatic rollback within the bake window".into(),
        limit: format!("≤ {bake_ms} ms from the promotion's commit"),
        measured: match (commit_to_rollback_ms, &breach) {
            (Some(ms), Some(b)) => format!("{ms} ms ({} on node {})", b.signal, b.node),
            (Some(ms), None) => format!("{ms} ms"),
            (None, _) => "no automatic rollback".into(),
        },
        held: commit_to_rollback_ms.is_some_and(|ms| ms <= bake_ms),
    });
    r.objectives.push(ObjectiveCheck {
        what: "the rollback names the breach".into(),
        limit: "signal, node, value and threshold".into(),
        measured: breach.as_ref().map_or("not named".into(), |b| {
            format!(
                "{} on node {}: {} against {}",
                b.signal, b.node, b.measured, b.threshold
            )
        }),
        held: breach.is_some(),
    });
    // The drill's own fault has no detection apart from the verdict: promotion commit to
    // rollback commit is the time the cluster took to notice and act.
    r.detection_ms = commit_to_rollback_ms.map(|ms| ms as f64);
    // Every node served the bad version; its recovery is bounded by the bake window, not
    // by the failover objective for one node's fault.
    r.every_replica = true;
    r.rto_limit_ms = Some(bake_ms as f64);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str, by: &str, at_ms: u64, from: &str, to: &str) -> HistoryEntry {
        HistoryEntry {
            action: action.into(),
            by: by.into(),
            at_ms,
            from_version: from.into(),
            to_version: to.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_verdict_is_the_first_end_of_the_last_promotion() {
        let h = [
            entry("promote", "tests", 100, "", "1"),
            entry("promote", "drill", 1_000, "1", "1-shift3"),
            entry("rollback", "bake-watch", 4_500, "1-shift3", "1"),
            entry("promote", "drill", 9_000, "1", "1-shift3"),
            entry("baked", "bake-watch", 39_000, "", "1-shift3"),
        ];
        let v = find_verdict(&h, "1-shift3").expect("promoted");
        assert_eq!(v.promoted_at_ms, 9_000, "the last promotion counts");
        assert_eq!(v.verdict.as_ref().map(|e| e.action.as_str()), Some("baked"));

        let v = find_verdict(&h[..3], "1-shift3").expect("promoted");
        assert_eq!(v.promoted_at_ms, 1_000);
        let e = v.verdict.expect("a rollback");
        assert_eq!((e.action.as_str(), e.at_ms), ("rollback", 4_500));

        let v = find_verdict(&h[..2], "1-shift3").expect("promoted");
        assert_eq!(v.verdict, None, "still baking");
        assert_eq!(find_verdict(&h, "2"), None);
    }

    #[test]
    fn a_rollback_detail_names_signal_node_value_and_threshold() {
        let d = "automatic, during the bake of demo-ranker@1-shift3: drift on node 2: PSI 3.120 \
                 against a threshold of PSI 0.500";
        assert_eq!(
            parse_breach(d),
            Some(Breach {
                signal: "drift".into(),
                node: 2,
                measured: "PSI 3.120".into(),
                threshold: "PSI 0.500".into(),
            })
        );
        assert_eq!(parse_breach("rolled back by an operator"), None);
        assert_eq!(
            parse_breach("automatic, during the bake of m@2: drift: PSI 3 against x"),
            None
        );
    }

    #[test]
    fn calls_served_by_a_version_are_counted_with_their_span() {
        let call = |at_ms: u64, code: &str, version: &str| Call {
            at_us: at_ms * 1000,
            latency_us: 1000,
            code: code.into(),
            version: version.into(),
            node: "node-1".into(),
        };
        let calls = [
            call(0, "OK", "1"),
            call(10, "OK", "bad"),
            call(20, "UNAVAILABLE", ""),
            call(30, "OK", "bad"),
            call(40, "OK", "1"),
        ];
        assert_eq!(
            served_by_version(&calls, "bad"),
            (2, Some((10_000, 30_000)))
        );
        assert_eq!(served_by_version(&calls, "2"), (0, None));
    }
}
