//! `rankload bench` end to end, with windows far too short to mean anything about speed: it
//! must start a real node, measure every row it reports, and compute each ratio from rows of
//! the same run. Speed itself is recorded in docs/benchmarks.md, never asserted here.

use std::process::Command;

use rankd_tests::{bundle_dir, init, rankd_bin, rankload_bin};
use serde_json::Value;

#[test]
fn the_benchmark_reports_every_row_and_ratio_from_one_run() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    tracing::info!("--- a short bench: bare engine, then a real node with polling workers");
    let status = Command::new(rankload_bin())
        .args(["bench", "--bundle"])
        .arg(bundle_dir())
        .arg("--rankd")
        .arg(rankd_bin())
        .args([
            "--torch-threads",
            "1",
            "--runtime-threads",
            "1",
            "--idle-spin-us",
            "500",
            "--candidates",
            "10,100",
            "--max-batch-size",
            "8",
            "--concurrency",
            "8",
            "--connections",
            "2",
            "--latency-seconds",
            "0.3",
            "--throughput-seconds",
            "0.3",
            "--machine",
            "test",
            "--out",
        ])
        .arg(&out)
        .status()
        .expect("running rankload bench");
    assert!(status.success(), "rankload bench failed: {status}");

    let report: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(report["idle_spin_us"], 500);
    // As set, and as the node reported them.
    assert_eq!(report["runtime_threads"], 1);
    assert_eq!(report["torch_threads"], 1);
    assert_eq!(report["runtime_threads_default"], false);
    assert_eq!(report["torch_threads_default"], false);
    let rows = |key: &str, side: &str| -> Vec<Value> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["side"] == side)
            .cloned()
            .collect()
    };
    let sizes = |rows: &[Value]| -> Vec<u64> {
        rows.iter()
            .map(|r| r["candidates"].as_u64().unwrap())
            .collect()
    };

    tracing::info!("--- every latency row was measured, for every size");
    assert_eq!(sizes(&rows("latency", "bare")), [10, 100]);
    assert_eq!(sizes(&rows("latency", "bare-gap")), [10, 100]);
    assert_eq!(sizes(&rows("latency", "floor")), [0, 10, 100]);
    assert_eq!(sizes(&rows("latency", "server")), [10, 100]);
    for row in report["latency"].as_array().unwrap() {
        assert!(row["count"].as_u64().unwrap() > 0, "no samples: {row}");
        let (p50, p99) = (
            row["p50_us"].as_f64().unwrap(),
            row["p99_us"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{row}");
    }

    tracing::info!("--- the saturated server answered every call");
    let served = rows("throughput", "server");
    assert_eq!(sizes(&served), [10, 100]);
    for t in &served {
        assert_eq!(t["errors"], 0, "{t}");
        assert!(t["items_per_s"].as_f64().unwrap() > 0.0, "{t}");
        assert!(t["mean_batch"].as_f64().unwrap() >= 1.0, "{t}");
    }

    tracing::info!("--- each ratio is built from the rows above");
    let ratios = report["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 2);
    for r in ratios {
        let n = r["candidates"].as_u64().unwrap();
        let p50 = |side: &str, n: u64| {
            rows("latency", side)
                .iter()
                .find(|l| l["candidates"] == n)
                .map(|l| l["p50_us"].as_f64().unwrap())
                .unwrap()
        };
        let overhead = p50("server", n) - p50("bare", n);
        assert_eq!(r["p50_overhead_us"].as_f64().unwrap(), overhead);
        assert_eq!(
            r["overhead_beyond_transport_us"].as_f64().unwrap(),
            overhead - p50("floor", n)
        );
        let best_bare = rows("throughput", "bare")
            .iter()
            .filter(|t| t["candidates"] == n)
            .map(|t| t["items_per_s"].as_f64().unwrap())
            .fold(0.0, f64::max);
        assert_eq!(r["bare_items_per_s"].as_f64().unwrap(), best_bare);
    }
}
