//! Pure output formatting for the cluster commands: tables, JSON, fences, times.

use std::sync::OnceLock;
use std::time::Duration;

use rankd_proto::admin::v1::{
    AuditEntry, ClusterStatus, Fence, HistoryEntry, NodeStatus, PromoteResponse,
};
use serde_json::{json, Value};

/// How results are printed (`-o`): tables for people, or JSON for scripts. JSON is the
/// protobuf JSON mapping of the response message (camelCase fields, 64-bit integers as
/// strings), the same any protobuf JSON parser reads; progress lines go to stderr then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

/// Set once, from the command line, before any command runs.
pub fn set_output(o: Output) {
    let _ = OUTPUT.set(o);
}

pub fn json_output() -> bool {
    OUTPUT.get().copied().unwrap_or_default() == Output::Json
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A progress or status line: stdout for tables, stderr with `-o json` (stdout carries only
/// the JSON result).
pub fn note(line: &str) {
    if json_output() {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

pub fn fence_text(f: &Fence) -> String {
    format!(
        "{} {} (term {}, index {})",
        f.model_name, f.model_version, f.term, f.index
    )
}

/// The status as the table `cluster status` prints, summary lines first.
pub fn render_status(s: &ClusterStatus) -> String {
    let mut out = String::new();
    let leader = if s.leader_id == 0 {
        "none".to_string()
    } else {
        s.leader_id.to_string()
    };
    out.push_str(&format!(
        "leader {leader}, term {} (heartbeats as node {} sees them)\n",
        s.term, s.reported_by
    ));
    let active = s.active.as_ref().map_or("none".to_string(), fence_text);
    out.push_str(&format!("active   {active}\n"));
    out.push_str(&format!("previous {}\n", or_dash(&s.previous_version)));
    if !s.baking_version.is_empty() {
        out.push_str(&format!(
            "baking   {} until {}\n",
            s.baking_version,
            rfc3339_utc(s.bake_until_ms)
        ));
    }
    if !s.removed_ids.is_empty() {
        let ids: Vec<String> = s.removed_ids.iter().map(u64::to_string).collect();
        out.push_str(&format!("removed  {}\n", ids.join(", ")));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = s.nodes.iter().map(|n| node_row(n, s.reported_by)).collect();
    out.push_str(&table(NODE_COLUMNS, &rows));
    for n in s.nodes.iter().filter(|n| n.degraded) {
        out.push_str(&format!("node {}: degraded: {}\n", n.id, n.degraded_reason));
    }
    for n in &s.nodes {
        for st in n.stages.iter().filter(|st| st.stage != "ready") {
            let detail = if st.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", st.detail)
            };
            out.push_str(&format!(
                "node {}: {} {} {}{detail}\n",
                n.id, st.name, st.version, st.stage
            ));
        }
    }
    out
}

/// Header and whether the column is right-aligned (numbers).
const NODE_COLUMNS: &[(&str, bool)] = &[
    ("id", true),
    ("api", false),
    ("role", false),
    ("voter", false),
    ("term", true),
    ("commit", true),
    ("applied", true),
    ("active", false),
    ("loaded", false),
    ("health", false),
    ("heartbeat", true),
    ("queue", true),
];

fn node_row(n: &NodeStatus, reported_by: u64) -> Vec<String> {
    vec![
        n.id.to_string(),
        n.api_addr.clone(),
        n.role.clone(),
        if n.voter { "yes" } else { "no" }.to_string(),
        n.term.to_string(),
        n.commit_index.to_string(),
        n.applied_index.to_string(),
        or_dash(&n.active_version).to_string(),
        or_dash(&n.loaded_versions.join(",")).to_string(),
        n.health.clone(),
        heartbeat_text(n, reported_by),
        n.queue_depth.to_string(),
    ]
}

/// `self` for the answering node, the age for a peer it counts up, `down (age)` for one
/// it does not, `never` for one it has not heard.
fn heartbeat_text(n: &NodeStatus, reported_by: u64) -> String {
    match (n.heartbeat_known, n.heartbeat_up, n.heartbeat_age_ms) {
        _ if n.id == reported_by => "self".into(),
        (false, _, _) => "never".into(),
        (true, true, ms) => format!("{ms}ms"),
        (true, false, ms) => format!("down {ms}ms"),
    }
}

pub fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// A plain-text table: columns as wide as their widest cell, two spaces apart.
pub fn table(columns: &[(&str, bool)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let (w, right) = (widths.get(i).copied().unwrap_or(0), columns[i].1);
            if i > 0 {
                text.push_str("  ");
            }
            if right {
                text.push_str(&format!("{cell:>w$}"));
            } else {
                text.push_str(&format!("{cell:<w$}"));
            }
        }
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    let mut out = line(&mut columns.iter().map(|(h, _)| *h));
    for row in rows {
        out.push_str(&line(
            &mut row.iter().take(columns.len()).map(String::as_str),
        ));
    }
    out
}

fn fence_json(f: &Fence) -> Value {
    json!({
        "model_name": f.model_name,
        "model_version": f.model_version,
        "term": f.term,
        "index": f.index,
    })
}

/// The whole response, field for field (prost messages do not implement Serialize).
pub fn status_json(s: &ClusterStatus) -> Value {
    let nodes: Vec<Value> = s
        .nodes
        .iter()
        .map(|n| {
            let stages: Vec<Value> = n
                .stages
                .iter()
                .map(|st| {
                    json!({
                        "name": st.name,
                        "version": st.version,
                        "stage": st.stage,
                        "detail": st.detail,
                    })
                })
                .collect();
            json!({
                "id": n.id,
                "api_addr": n.api_addr,
                "peer_addr": n.peer_addr,
                "role": n.role,
                "voter": n.voter,
                "term": n.term,
                "commit_index": n.commit_index,
                "applied_index": n.applied_index,
                "active_version": n.active_version,
                "loaded_versions": n.loaded_versions,
                "health": n.health,
                "stages": stages,
                "activated_at_ms": n.activated_at_ms,
                "activated_index": n.activated_index,
                "heartbeat_known": n.heartbeat_known,
                "heartbeat_up": n.heartbeat_up,
                "heartbeat_age_ms": n.heartbeat_age_ms,
                "queue_depth": n.queue_depth,
                "in_flight": n.in_flight,
                "error_ratio": n.error_ratio,
                "p99_ms": n.p99_ms,
                "recent_calls": n.recent_calls,
                "degraded": n.degraded,
                "degraded_reason": n.degraded_reason,
            })
        })
        .collect();
    json!({
        "leader_id": s.leader_id,
        "term": s.term,
        "active": s.active.as_ref().map(fence_json),
        "previous_version": s.previous_version,
        "nodes": nodes,
        "removed_ids": s.removed_ids,
        "reported_by": s.reported_by,
        "baking_version": s.baking_version,
        "bake_until_ms": s.bake_until_ms,
    })
}

/// The committed fence, timings, and the members that were not ready.
pub fn outcome(verb: &str, resp: &PromoteResponse, elapsed: Duration) -> String {
    let fence = resp
        .fence
        .as_ref()
        .map_or("(no fence returned)".to_string(), fence_text);
    // A rollback waits for no readiness: its commit time is the whole proposal.
    let commit = if verb.starts_with("rolled back") {
        format!("committed in {:.1} ms", resp.commit_ms)
    } else {
        format!("commit {:.1} ms after the last ready", resp.commit_ms)
    };
    let mut out = format!(
        "{verb} {fence} in {:.0} ms; {commit}\n",
        elapsed.as_secs_f64() * 1e3,
    );
    for n in &resp.not_ready {
        out.push_str(&format!(
            "not ready: node {}: {}\n",
            n.id,
            or_dash(&n.reason)
        ));
    }
    out
}

const HISTORY_COLUMNS: &[(&str, bool)] = &[
    ("index", true),
    ("term", true),
    ("action", false),
    ("model", false),
    ("from", false),
    ("to", false),
    ("by", false),
    ("time", false),
    ("detail", false),
];

pub fn history_table(entries: &[HistoryEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.index.to_string(),
                e.term.to_string(),
                e.action.clone(),
                or_dash(&e.model_name).to_string(),
                or_dash(&e.from_version).to_string(),
                or_dash(&e.to_version).to_string(),
                or_dash(&e.by).to_string(),
                rfc3339_utc(e.at_ms),
                e.detail.clone(),
            ]
        })
        .collect();
    table(HISTORY_COLUMNS, &rows)
}

const AUDIT_COLUMNS: &[(&str, bool)] = &[
    ("at", false),
    ("node", true),
    ("principal", false),
    ("role", false),
    ("action", false),
    ("target", false),
    ("result", false),
];

/// The audit trail: one row per admin action, with the failure message after the code.
pub fn audit_table(entries: &[AuditEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let result = if e.message.is_empty() {
                e.code.clone()
            } else {
                format!("{}: {}", e.code, e.message)
            };
            vec![
                rfc3339_utc(e.at_ms),
                e.node.to_string(),
                e.principal.clone(),
                e.role.clone(),
                e.action.clone(),
                or_dash(&e.target).to_string(),
                result,
            ]
        })
        .collect();
    table(AUDIT_COLUMNS, &rows)
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC, to the second:
/// `2026-11-27T00:00:00Z`.
pub fn rfc3339_utc(at_ms: u64) -> String {
    let secs = at_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rankd_proto::admin::v1::{NodeNotReady, VersionStage};

    #[test]
    fn formats_known_epochs() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(999), "1970-01-01T00:00:00Z");
        // `date -u -d @1795737600` → Fri Nov 27 00:00:00 UTC 2026
        assert_eq!(rfc3339_utc(1_795_737_600_000), "2026-11-27T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_709_164_800_000), "2024-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(4_107_542_399_000), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339_utc(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(946_684_799_000), "1999-12-31T23:59:59Z");
    }

    fn sample() -> ClusterStatus {
        ClusterStatus {
            leader_id: 1,
            term: 3,
            active: Some(Fence {
                model_name: "demo-ranker".into(),
                model_version: "2".into(),
                term: 3,
                index: 17,
            }),
            previous_version: "1".into(),
            nodes: vec![NodeStatus {
                id: 1,
                api_addr: "127.0.0.1:50051".into(),
                role: "leader".into(),
                voter: true,
                term: 3,
                commit_index: 17,
                applied_index: 17,
                active_version: "2".into(),
                loaded_versions: vec!["1".into(), "2".into()],
                health: "SERVING".into(),
                heartbeat_known: true,
                heartbeat_up: true,
                heartbeat_age_ms: 42,
                queue_depth: 3,
                stages: vec![VersionStage {
                    name: "demo-ranker".into(),
                    version: "3".into(),
                    stage: "failed".into(),
                    detail: "golden mismatch".into(),
                }],
                ..Default::default()
            }],
            removed_ids: vec![4],
            baking_version: String::new(),
            bake_until_ms: 0,
            reported_by: 2,
        }
    }

    #[test]
    fn renders_status_table() {
        let text = render_status(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "leader 1, term 3 (heartbeats as node 2 sees them)"
        );
        assert_eq!(lines[1], "active   demo-ranker 2 (term 3, index 17)");
        assert_eq!(lines[2], "previous 1");
        assert_eq!(lines[3], "removed  4");
        assert_eq!(
            lines[5],
            "id  api              role    voter  term  commit  applied  active  loaded  health   heartbeat  queue"
        );
        assert_eq!(
            lines[6],
            " 1  127.0.0.1:50051  leader  yes       3      17       17  2       1,2     SERVING       42ms      3"
        );
        assert_eq!(lines[7], "node 1: demo-ranker 3 failed (golden mismatch)");
    }

    #[test]
    fn status_json_has_every_field() {
        let v = status_json(&sample());
        assert_eq!(v["active"]["index"], 17);
        assert_eq!(v["nodes"][0]["loaded_versions"][1], "2");
        assert_eq!(v["nodes"][0]["stages"][0]["stage"], "failed");
        assert_eq!(v["removed_ids"][0], 4);
        assert_eq!(v["nodes"][0]["heartbeat_age_ms"], 42);
        assert_eq!(v["reported_by"], 2);
        let none = status_json(&ClusterStatus::default());
        assert!(none["active"].is_null());
    }

    #[test]
    fn outcome_names_fence_and_stragglers() {
        let resp = PromoteResponse {
            fence: Some(Fence {
                model_name: "demo-ranker".into(),
                model_version: "2".into(),
                term: 3,
                index: 17,
            }),
            not_ready: vec![NodeNotReady {
                id: 3,
                reason: "unreachable".into(),
            }],
            commit_ms: 4.31,
            bake_until_ms: 0,
        };
        assert_eq!(
            outcome("promoted", &resp, Duration::from_millis(812)),
            "promoted demo-ranker 2 (term 3, index 17) in 812 ms; commit 4.3 ms after the last ready\n\
             not ready: node 3: unreachable\n"
        );
    }

    #[test]
    fn history_rows() {
        let e = HistoryEntry {
            action: "promote".into(),
            by: "ops".into(),
            at_ms: 1_795_737_600_000,
            from_version: "1".into(),
            to_version: "2".into(),
            model_name: "demo".into(),
            term: 3,
            index: 17,
            detail: String::new(),
        };
        let text = history_table(&[e]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "index  term  action   model  from  to  by   time                  detail"
        );
        assert_eq!(
            lines[1],
            "   17     3  promote  demo   1     2   ops  2026-11-27T00:00:00Z"
        );
    }
}
