//! Wire compatibility with real Triton clients: the unchanged `tritonclient[grpc]` package
//! from PyPI (pinned in deploy/requirements.txt, installed into `.venv` by `make venv`)
//! talks to a real node through tests/oip/tritonclient_check.py, which compares its answers
//! with the native Rank API's and rankd's `inference` proto with the one tritonclient ships.
//!
//! This test fails, never skips, when the venv or tritonclient is missing: a compatibility
//! claim that is not checked is not worth making.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rankd_tests::{bundle_dir, init, manifest, rank_request, workspace_root, Node};

/// The venv, the interpreter start and a few gRPC calls; generous for a busy 2-core machine.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
const TOP_K: u32 = 10;

/// `.venv/bin/python`, after checking that it can import tritonclient's gRPC client.
async fn venv_python() -> PathBuf {
    let python = workspace_root().join(".venv").join("bin").join("python");
    assert!(
        python.is_file(),
        "{} does not exist: run `make venv` (it installs deploy/requirements.txt, tritonclient[grpc] included)",
        python.display()
    );
    let probe = tokio::process::Command::new(&python)
        .args(["-c", "import tritonclient.grpc, numpy"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        probe.status.success(),
        "tritonclient[grpc] is not installed in .venv: run `make venv` (deploy/requirements.txt pins it)\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    python
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_talks_to_rankd_and_gets_rank_answers() {
    init();
    let python = venv_python().await;
    let query_file = bundle_dir().join("example_query.json");
    let query = rankd_tests::example_query();
    let node = Node::start().await;

    tracing::info!("--- the native Rank answer for the example query");
    let native = node
        .rank_client()
        .await
        .rank(rank_request(&query.query, &query.candidates, TOP_K))
        .await
        .expect("native rank")
        .into_inner();
    let m = manifest();
    let expect = serde_json::json!({
        "model_name": m["name"],
        "model_version": native.model_version,
        "top_k": TOP_K,
        "ids": native.items.iter().map(|i| i.id).collect::<Vec<_>>(),
        "scores": native.items.iter().map(|i| i.score).collect::<Vec<_>>(),
    });
    let dir = tempfile::tempdir().expect("a temp dir");
    let expect_path = dir.path().join("expect.json");
    let descriptors = dir.path().join("rankd_descriptor_set.bin");
    write(&expect_path, expect.to_string().as_bytes());
    write(&descriptors, rankd_proto::FILE_DESCRIPTOR_SET);

    tracing::info!("--- tritonclient_check.py against {}", node.grpc_addr());
    let script = workspace_root()
        .join("tests")
        .join("oip")
        .join("tritonclient_check.py");
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(&script)
        .arg("--addr")
        .arg(node.grpc_addr().to_string())
        .arg("--query-file")
        .arg(&query_file)
        .arg("--expect-json")
        .arg(&expect_path)
        .arg("--descriptor-set")
        .arg(&descriptors)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} ran past {SCRIPT_TIMEOUT:?}", script.display()))
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    tracing::info!("tritonclient_check.py stdout:\n{stdout}");
    assert!(
        out.status.success(),
        "tritonclient_check.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("tritonclient: all checks passed"),
        "the script did not finish its checks:\n{stdout}"
    );
}
