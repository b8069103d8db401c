//! `rankctl -o json`: every result a script reads is JSON on stdout (the protobuf JSON
//! mapping of the response), and progress lines stay off stdout.

use std::process::Command;

use rankd_tests::{bundle_dir, init, rankctl_bin, Node};
use serde_json::Value;

fn rankctl_json(args: &[&str]) -> Value {
    let out = Command::new(rankctl_bin())
        .args(["-o", "json"])
        .args(args)
        .output()
        .expect("running rankctl");
    assert!(
        out.status.success(),
        "rankctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "rankctl {args:?} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_json_on_stdout() {
    init();
    let node = Node::start().await;
    let addr = node.endpoint();
    let query = bundle_dir().join("example_query.json");

    let rank = rankctl_json(&[
        "rank",
        "--addr",
        &addr,
        "--query-file",
        query.to_str().unwrap(),
        "--top-k",
        "3",
    ]);
    assert_eq!(rank["items"].as_array().map(Vec::len), Some(3), "{rank}");
    assert_eq!(rank["nodeId"], node.id(), "{rank}");
    assert!(rank["fence"]["modelVersion"].is_string(), "{rank}");

    let health = rankctl_json(&["health", "--addr", &addr]);
    assert_eq!(health[""], "SERVING", "{health}");
    assert_eq!(health["rankd.v1.Ranker"], "SERVING", "{health}");

    let models = rankctl_json(&["models", "--addr", &addr]);
    let first = &models[0];
    assert_eq!(first["active"], true, "{models}");
    assert!(
        first["sha256"].as_str().is_some_and(|s| s.len() == 64),
        "{models}"
    );

    let status = rankctl_json(&["cluster", "status", "--addr", &addr]);
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );

    let history = rankctl_json(&["history", "--addr", &addr]);
    assert!(history.is_array(), "{history}");
}
