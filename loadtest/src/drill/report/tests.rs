//! `write` end to end on a sample drill: files, table rows and verdicts, JSON round trip,
//! charts.

use std::collections::BTreeMap;
use std::fs;

use super::*;
use crate::drill::model::{AvailabilityInputs, ObjectiveCheck, Objectives};
use crate::load::record::{Second, Window};

fn window(sent: u64, failed: u64, p50: f64, p99: f64, max: f64) -> Window {
    let mut f = BTreeMap::new();
    if failed > 0 {
        f.insert("UNAVAILABLE".to_string(), failed);
    }
    Window {
        sent,
        ok: sent - failed,
        failed: f,
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
    }
}

fn timeline(secs: u64, bad: std::ops::Range<u64>) -> Vec<Second> {
    (0..secs)
        .map(|t| {
            let failed = if bad.contains(&t) { 7 } else { 0 };
            let mut f = BTreeMap::new();
            if failed > 0 {
                f.insert("UNAVAILABLE".to_string(), failed);
            }
            let mut versions = BTreeMap::new();
            versions.insert("3".to_string(), 100 - failed);
            Second {
                t,
                sent: 100,
                ok: 100 - failed,
                failed: f,
                p50_ms: 2.0,
                p99_ms: if bad.contains(&t) { 180.0 } else { 6.0 },
                max_ms: 20.0,
                versions,
            }
        })
        .collect()
}

fn sample() -> DrillReport {
    let follower = ScenarioResult {
        name: "follower-crash".into(),
        fault: "SIGKILL node 2 (a follower), restart after 3 s".into(),
        fault_start_s: 5.0,
        fault_end_s: 8.0,
        detection_ms: Some(412.0),
        rto_ms: Some(3900.0),
        before: window(500, 0, 2.0, 5.0, 9.0),
        during: window(300, 0, 2.2, 6.5, 15.0),
        after: window(700, 0, 2.0, 5.1, 10.0),
        sent: 1500,
        timeline: timeline(15, 0..0),
        notes: vec!["no wrong answer served".into()],
        ..Default::default()
    };
    let mut by_code = BTreeMap::new();
    by_code.insert("UNAVAILABLE".to_string(), 14);
    let partition = ScenarioResult {
        name: "leader-partition".into(),
        fault: "isolate the leader | peers only".into(),
        isolation: "per-node TCP proxy on the peer port".into(),
        fault_start_s: 5.0,
        fault_end_s: 10.0,
        detection_ms: Some(950.0),
        rto_ms: Some(7200.0),
        divergence_ms: Some(1300.0),
        before: window(500, 0, 2.0, 5.0, 9.0),
        during: window(500, 14, 2.4, 180.0, 950.0),
        after: window(500, 0, 2.0, 5.0, 9.0),
        failed_by_code: by_code,
        sent: 1500,
        timeline: timeline(15, 6..8),
        objectives: vec![ObjectiveCheck {
            what: "wrong answers".into(),
            limit: "≤ 0".into(),
            measured: "0".into(),
            held: true,
        }],
        ..Default::default()
    };
    let mut outage = ScenarioResult {
        name: "full-restart".into(),
        fault: "SIGTERM every node, start all three".into(),
        outage_expected: true,
        fault_start_s: 2.0,
        fault_end_s: 6.0,
        rto_ms: Some(4100.0),
        before: window(200, 0, 2.0, 5.0, 9.0),
        during: window(400, 280, 1.0, 3.0, 5.0),
        after: window(300, 0, 2.0, 5.0, 9.0),
        sent: 900,
        timeline: timeline(9, 2..6),
        ..Default::default()
    };
    outage.failed_by_code.insert("UNAVAILABLE".into(), 280);
    let skipped = ScenarioResult {
        name: "disk-full".into(),
        fault: "fill the data volume".into(),
        skipped: Some("needs a local cluster; target is an existing one".into()),
        ..Default::default()
    };
    let mut report = DrillReport {
        machine: "2 vCPU, 8 GiB, Linux x86_64".into(),
        date: "2026-11-28 01:30 UTC".into(),
        target: "local 3-node cluster (real rankd processes)".into(),
        rate: 100,
        objectives: Objectives::default(),
        availability: AvailabilityInputs {
            failures_per_node_year: 12.0,
            replicas: 3,
        },
        scenarios: vec![follower, partition, outage, skipped],
    };
    for s in &mut report.scenarios {
        objectives::check(s, &report.objectives);
    }
    report
}

/// The summary-table row of a scenario, by its first cell.
fn row<'a>(md: &'a str, name: &str) -> &'a str {
    let prefix = format!("| {name} |");
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(rows.len(), 1, "one row for {name} in\n{md}");
    rows[0]
}

#[test]
fn report_write_produces_markdown_json_and_charts() {
    let report = sample();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("reports");
    let w = write(&report, &out, "drill").expect("write");

    assert_eq!(w.markdown, out.join("drill.md"));
    assert_eq!(w.json, out.join("drill.json"));
    assert_eq!(
        w.charts,
        vec![
            out.join("drill-charts/follower-crash.svg"),
            out.join("drill-charts/leader-partition.svg"),
            out.join("drill-charts/full-restart.svg"),
        ]
    );
    assert!(!out.join("drill-charts/disk-full.svg").exists());

    let md = fs::read_to_string(&w.markdown).expect("md");
    assert!(md.starts_with("# rankd disaster-recovery drill — 2026-11-28 01:30 UTC"));
    assert!(md.contains("- Load: 100 calls/s"));
    assert!(
        md.contains("- Result: **FAIL** — 2 pass, 1 fail, 1 skipped"),
        "{md}"
    );

    let follower = row(&md, "follower-crash");
    assert!(follower.ends_with("| PASS |"), "{follower}");
    assert!(
        follower.contains("| 412 | 3900 | 0 | 0 | none seen |"),
        "{follower}"
    );
    assert!(follower.contains("| 2.0 / 2.2 / 2.0 | 5.0 / 6.5 / 5.1 |"));

    let partition = row(&md, "leader-partition");
    assert!(partition.ends_with("| FAIL |"), "{partition}");
    assert!(partition.contains("isolate the leader \\| peers only"));
    assert!(partition.contains("| 14 (UNAVAILABLE 14) |"), "{partition}");
    assert!(partition.contains("| 1300 ms |"));

    let outage = row(&md, "full-restart");
    assert!(outage.ends_with("| PASS |"), "{outage}");
    assert!(
        outage.contains("| 280 (UNAVAILABLE 280), outage expected |"),
        "{outage}"
    );
    assert!(md.contains("- Whole-service outage on purpose: failed requests are reported"));
    assert!(md.contains("**Whole-service outages, not in MTTR**: full-restart (RTO 4.10 s)"));

    let skipped = row(&md, "disk-full");
    assert!(
        skipped.contains("SKIPPED: needs a local cluster"),
        "{skipped}"
    );

    assert!(md.contains("- Isolation: per-node TCP proxy on the peer port"));
    assert!(md.contains("- no wrong answer served"));
    assert!(
        md.contains("- **MISSED** — RTO: 7200 ms; limit ≤ 5000 ms"),
        "{md}"
    );
    assert!(md.contains("- held — wrong answers: 0; limit ≤ 0"));
    assert!(md.contains("![follower-crash timeline](drill-charts/follower-crash.svg)"));
    assert!(md.contains("![leader-partition timeline](drill-charts/leader-partition.svg)"));
    assert!(!md.contains("disk-full.svg"));
    assert!(md.contains("## Availability estimate"));
    assert!(md.contains("MTTR = 7.20 s — the **longest** RTO measured (`leader-partition`)"));
    assert!(md.contains("`make drill` (or `rankload drill --all`)"));

    for chart in &w.charts {
        let svg = fs::read_to_string(chart).expect("svg");
        assert!(svg.starts_with("<svg"), "{chart:?}");
        assert!(svg.contains(chart::FAULT_START_LABEL), "{chart:?}");
        assert!(svg.contains(chart::FAULT_END_LABEL), "{chart:?}");
    }

    let json = fs::read_to_string(&w.json).expect("json");
    let back: DrillReport = serde_json::from_str(&json).expect("round trip");
    assert_eq!(
        serde_json::to_string(&back).expect("json"),
        serde_json::to_string(&report).expect("json")
    );
    assert!(fs::read_to_string(&w.charts[0])
        .expect("svg")
        .contains("fault injected (5.0 s)"));
    assert_eq!(back.scenarios.len(), 4);
    assert!(back.scenarios[2].outage_expected);
    assert_eq!(back.scenarios[1].timeline.len(), 15);
    assert!(!back.scenarios[1].passed());
}

#[test]
fn report_write_is_deterministic() {
    let report = sample();
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let wa = write(&report, a.path(), "r").expect("write a");
    let wb = write(&report, b.path(), "r").expect("write b");
    let read = |p: &std::path::Path| fs::read(p).expect("read");
    assert_eq!(read(&wa.markdown), read(&wb.markdown));
    assert_eq!(read(&wa.json), read(&wb.json));
    for (x, y) in wa.charts.iter().zip(&wb.charts) {
        assert_eq!(read(x), read(y));
    }
}

#[test]
fn report_write_rejects_path_like_stems_and_names_charts_uniquely() {
    let dir = tempfile::tempdir().expect("tempdir");
    for stem in ["", "..", "a/b", "a\\b"] {
        let err = write(&sample(), dir.path(), stem).expect_err(stem);
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
    let named = |n: &str| ScenarioResult {
        name: n.into(),
        ..Default::default()
    };
    let names = chart_file_names(&[
        named("x-3"),
        named("x"),
        named("x"),
        named("../../etc/passwd"),
        named(""),
    ]);
    let names: Vec<String> = names.into_iter().flatten().collect();
    assert_eq!(
        names,
        [
            "x-3.svg",
            "x.svg",
            "x-4.svg",
            "-..-etc-passwd.svg",
            "scenario.svg"
        ]
    );
}

#[test]
fn report_write_empty_report() {
    let mut report = sample();
    report.scenarios.clear();
    let dir = tempfile::tempdir().expect("tempdir");
    let w = write(&report, dir.path(), "empty drill").expect("write");
    assert!(w.charts.is_empty());
    let md = fs::read_to_string(&w.markdown).expect("md");
    assert!(md.contains("Not estimated: no single-failure scenario measured an RTO"));
}
