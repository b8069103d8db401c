//! A node refuses to start on a model bundle it cannot serve: exit code 65 and one line on
//! stderr naming the problem. Each test breaks its own copy of the bundle.

use std::fs;
use std::path::Path;

use rankd_tests::{copy_bundle, init, rewrite_manifest, update_sha, Node, StartFailure};
use serde_json::Value;

/// sysexits EX_DATAERR: the model bundle cannot be served.
const EX_DATAERR: i32 = 65;

/// Copies the bundle into a fresh directory, lets `break_it` damage it, and starts a node on it.
async fn start_on_broken_bundle(step: &str, break_it: impl FnOnce(&Path)) -> StartFailure {
    init();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bundle = dir.path().join("bundle");
    copy_bundle(&bundle);
    tracing::info!("--- {step}");
    break_it(&bundle);
    Node::builder().bundle(&bundle).start_expect_failure().await
}

/// Asserts exit 65 and that the error line contains every one of `words`.
fn assert_refused(out: &StartFailure, words: &[&str]) {
    out.assert_code(EX_DATAERR);
    let line = out.error_line();
    for word in words {
        assert!(line.contains(word), "{word:?} not in {line:?}");
    }
    tracing::info!(line, "refused as expected");
}

#[tokio::test]
async fn missing_model_file() {
    let out = start_on_broken_bundle("delete model.pt", |b| {
        fs::remove_file(b.join("model.pt")).unwrap();
    })
    .await;
    assert_refused(&out, &["model.pt"]);
}

#[tokio::test]
async fn model_file_that_is_not_torchscript() {
    let out = start_on_broken_bundle("replace model.pt with garbage, checksum updated", |b| {
        fs::write(b.join("model.pt"), b"this is not a TorchScript archive\n").unwrap();
        update_sha(b, "model.pt");
    })
    .await;
    assert_refused(&out, &["model.pt", "not a loadable TorchScript module"]);
}

#[tokio::test]
async fn checksum_mismatch() {
    let out = start_on_broken_bundle("flip one byte in the middle of model.pt", |b| {
        let path = b.join("model.pt");
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&path, bytes).unwrap();
    })
    .await;
    assert_refused(&out, &["model.pt", "sha256", "does not match"]);
}

#[tokio::test]
async fn manifest_query_dim_that_does_not_fit_the_model() {
    let out = start_on_broken_bundle("manifest query_dim 32 → 31", |b| {
        rewrite_manifest(b, |m| m["query_dim"] = Value::from(31));
    })
    .await;
    assert_refused(&out, &["query_dim"]);
}

#[tokio::test]
async fn manifest_item_dim_that_does_not_fit_the_items() {
    let out = start_on_broken_bundle("manifest item_dim 64 → 63", |b| {
        rewrite_manifest(b, |m| m["item_dim"] = Value::from(63));
    })
    .await;
    assert_refused(&out, &["item_dim"]);
}

#[tokio::test]
async fn golden_set_the_model_does_not_reproduce() {
    let out = start_on_broken_bundle("swap the top two expected ids of golden case 0", |b| {
        let path = b.join("golden.json");
        let mut golden: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let ids = golden["cases"][0]["expected_ids"].as_array_mut().unwrap();
        ids.swap(0, 1);
        fs::write(&path, serde_json::to_vec(&golden).unwrap()).unwrap();
        update_sha(b, "golden.json");
    })
    .await;
    assert_refused(&out, &["golden"]);
}

#[tokio::test]
async fn missing_manifest() {
    let out = start_on_broken_bundle("delete manifest.json", |b| {
        fs::remove_file(b.join("manifest.json")).unwrap();
    })
    .await;
    assert_refused(&out, &["manifest.json"]);
}

#[tokio::test]
async fn bundle_directory_that_does_not_exist() {
    init();
    tracing::info!("--- point the node at a directory that does not exist");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-bundle");
    let out = Node::builder()
        .bundle(&missing)
        .start_expect_failure()
        .await;
    assert_refused(&out, &["no-such-bundle"]);
}
