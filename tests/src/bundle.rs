//! Test inputs from the model bundle, and helpers to build broken copies of it.

use std::fs;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::paths::bundle_dir;

/// One golden case: a fixed query with the ranking the exporter recorded for it.
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenCase {
    pub query: Vec<f32>,
    pub candidates: Vec<i64>,
    pub top_k: u32,
    pub expected_ids: Vec<i64>,
    pub expected_scores: Vec<f32>,
}

/// `golden.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenSet {
    pub cases: Vec<GoldenCase>,
}

/// `example_query.json`: a valid query and candidate list (no expected answer).
#[derive(Debug, Clone, Deserialize)]
pub struct ExampleQuery {
    pub query: Vec<f32>,
    pub candidates: Vec<i64>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The test bundle's golden set.
pub fn golden_set() -> GoldenSet {
    let set: GoldenSet = read_json(&bundle_dir().join("golden.json"));
    assert!(
        !set.cases.is_empty(),
        "the bundle's golden set has no cases"
    );
    set
}

/// The test bundle's example query.
pub fn example_query() -> ExampleQuery {
    read_json(&bundle_dir().join("example_query.json"))
}

/// Copies every file of the test bundle into `dst` (created if needed), so a test can break
/// the copy without touching the shared bundle.
pub fn copy_bundle(dst: &Path) {
    let src = bundle_dir();
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("creating {}: {e}", dst.display()));
    let entries = fs::read_dir(&src).unwrap_or_else(|e| panic!("listing {}: {e}", src.display()));
    for entry in entries {
        let entry = entry.expect("a directory entry");
        if entry.file_type().expect("a file type").is_file() {
            let to = dst.join(entry.file_name());
            fs::copy(entry.path(), &to).unwrap_or_else(|e| {
                panic!("copying {} → {}: {e}", entry.path().display(), to.display())
            });
        }
    }
}

/// Rewrites `dir/manifest.json` through `edit`.
pub fn rewrite_manifest(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("manifest.json");
    let mut manifest: Value = read_json(&path);
    edit(&mut manifest);
    let text = serde_json::to_string_pretty(&manifest).expect("a JSON value serializes");
    fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_hex(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    hex::encode(Sha256::digest(&bytes))
}

/// Records the current SHA-256 of `dir/file` in the manifest, so the file passes the
/// checksum check and whatever is wrong with it is found by the next check.
pub fn update_sha(dir: &Path, file: &str) {
    let sha = sha256_hex(&dir.join(file));
    rewrite_manifest(dir, |m| {
        m["files"][file] = Value::String(sha);
    });
}

/// The test bundle's `manifest.json`.
pub fn manifest() -> Value {
    read_json(&bundle_dir().join("manifest.json"))
}
