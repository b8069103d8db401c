//! `rankload drill` end to end, briefly: `follower-crash` and `corrupt-artifact` on a real
//! local 3-node cluster (the debug `rankd` next to this test). The drill must produce its
//! report (Markdown, JSON, one chart per scenario) and every objective must hold. The RTO
//! objective is set for debug builds on a two-core machine (a restarted node reloads the
//! demo model unoptimized); `make drill` gates the release build on the default 5 s.

use std::process::Command;

#[test]
fn follower_crash_and_corrupt_artifact_drills_report_and_hold_their_objectives() {
    let out_dir = tempfile::tempdir().expect("a report directory");
    let output = Command::new(env!("CARGO_BIN_EXE_rankload"))
        .args([
            "drill",
            "--scenario",
            "follower-crash",
            "--scenario",
            "corrupt-artifact",
            "--rate",
            "20",
            "--hold-s",
            "0.5",
            "--settle-s",
            "1",
            "--max-rto-ms",
            "120000",
            "--stem",
            "smoke",
            "--out-dir",
        ])
        .arg(out_dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("running rankload");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "rankload drill failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let md = std::fs::read_to_string(out_dir.path().join("smoke.md")).expect("the Markdown report");
    for scenario in ["follower-crash", "corrupt-artifact"] {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {scenario} |")))
            .unwrap_or_else(|| panic!("no table row for {scenario}:\n{md}"));
        assert!(row.ends_with("| PASS |"), "{row}");
        let chart = out_dir
            .path()
            .join("smoke-charts")
            .join(format!("{scenario}.svg"));
        let svg = std::fs::read_to_string(&chart).expect("a chart per scenario");
        assert!(svg.starts_with("<svg"), "{}", chart.display());
    }
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out_dir.path().join("smoke.json")).expect("the JSON report"),
    )
    .expect("valid JSON");
    let scenarios = json["scenarios"].as_array().expect("a scenario list");
    assert_eq!(scenarios.len(), 2);
    for s in scenarios {
        assert_eq!(s["failed_by_code"], serde_json::json!({}), "{s}");
        assert!(s["rto_ms"].as_f64().is_some(), "{s}");
        assert!(s["sent"].as_u64().unwrap_or(0) > 0, "{s}");
    }
    assert!(md.contains("Availability estimate"), "{md}");
}
