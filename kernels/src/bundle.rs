//! The on-disk model bundle: `manifest.json`, `model.pt`, `items.safetensors`, `golden.json`.
//!
//! Opening a bundle reads and checks the manifest and verifies the SHA-256 of every file it
//! lists before anything is handed to libtorch, so a truncated or swapped file is reported
//! as such rather than as a confusing TorchScript parse error.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::KernelError;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const MODEL_FILE: &str = "model.pt";
pub const ITEMS_FILE: &str = "items.safetensors";
pub const GOLDEN_FILE: &str = "golden.json";
/// The one tensor `items.safetensors` must hold: row i is the feature vector of item id i.
pub const ITEMS_TENSOR: &str = "items";
/// Optional: the held-out queries with graded labels that compression is measured on.
pub const EVAL_FILE: &str = "eval.json";

const REQUIRED_FILES: [&str; 3] = [MODEL_FILE, ITEMS_FILE, GOLDEN_FILE];
const SUPPORTED_FORMAT: u32 = 1;

/// `manifest.json`. Unknown keys (training notes and the like) are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    pub version: String,
    pub query_dim: usize,
    pub item_dim: usize,
    pub item_count: usize,
    /// The precision the bundle is stored in (see [`StoredPrecision`]); serving precision
    /// is the node's choice, except that an int8 bundle serves only as itself on a CPU.
    pub precision: String,
    pub created_at: String,
    /// File name to lower-case hex SHA-256.
    pub files: BTreeMap<String, String>,
    /// Where a compressed version came from; absent for a trained or packaged model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
    /// int8 bundles: `"static"` (activation scales fixed at export, so a request's scores
    /// do not depend on its batch) or `"dynamic"` (scales per forward pass). Anything but
    /// `"static"` makes the engine rank each request in its own pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
}

/// A compressed bundle's parent and the transform that produced it, as the exporter wrote
/// them. The server checks the parent exists and measures the quality itself; it never
/// trusts the exporter's own report for the guard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// The parent's version (same model name).
    pub parent: String,
    /// "int8", "prune", "distill", "fp16" or "bf16".
    pub method: String,
    #[serde(default)]
    pub params: serde_json::Value,
}

/// How the weights (and, for half precision, the item table) are stored in the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredPrecision {
    Fp32,
    Fp16,
    Bf16,
    /// Linear layers dynamically quantised to int8: fbgemm CPU kernels, no CUDA support.
    Int8,
}

impl StoredPrecision {
    fn parse(s: &str) -> Result<StoredPrecision, KernelError> {
        match s {
            "fp32" => Ok(StoredPrecision::Fp32),
            "fp16" => Ok(StoredPrecision::Fp16),
            "bf16" => Ok(StoredPrecision::Bf16),
            "int8" => Ok(StoredPrecision::Int8),
            other => Err(KernelError::Manifest(format!(
                "precision {other:?} is not one of fp32, fp16, bf16, int8"
            ))),
        }
    }
}

impl Manifest {
    /// The stored precision; [`Bundle::open`] has already rejected unknown values.
    pub fn stored_precision(&self) -> StoredPrecision {
        StoredPrecision::parse(&self.precision).unwrap_or(StoredPrecision::Fp32)
    }

    fn check(&self) -> Result<(), KernelError> {
        StoredPrecision::parse(&self.precision)?;
        if let Some(l) = &self.lineage {
            if l.parent.trim().is_empty() || l.method.trim().is_empty() {
                return Err(KernelError::Manifest(
                    "lineage needs a parent version and a method".into(),
                ));
            }
            if l.parent == self.version {
                return Err(KernelError::Manifest(format!(
                    "lineage: version {} names itself as its parent",
                    self.version
                )));
            }
        }
        let bad = |m: String| Err(KernelError::Manifest(m));
        if self.format_version != SUPPORTED_FORMAT {
            return bad(format!(
                "format_version {} is not supported (expected {SUPPORTED_FORMAT})",
                self.format_version
            ));
        }
        if self.name.trim().is_empty() {
            return bad("name is empty".into());
        }
        if self.version.trim().is_empty() {
            return bad("version is empty".into());
        }
        for (field, v) in [
            ("query_dim", self.query_dim),
            ("item_dim", self.item_dim),
            ("item_count", self.item_count),
        ] {
            if v == 0 {
                return bad(format!("{field} must be positive"));
            }
        }
        for f in REQUIRED_FILES {
            if !self.files.contains_key(f) {
                return bad(format!("files has no sha256 for {f}"));
            }
        }
        Ok(())
    }
}

/// One golden case: a fixed query whose ranking the exporter recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenCase {
    pub query: Vec<f32>,
    pub candidates: Vec<i64>,
    pub top_k: usize,
    pub expected_ids: Vec<i64>,
    pub expected_scores: Vec<f32>,
}

/// `golden.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenSet {
    pub cases: Vec<GoldenCase>,
}

/// A bundle whose manifest parsed and whose files match their checksums.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub golden: GoldenSet,
}

impl Bundle {
    /// Reads the manifest, verifies every listed file's SHA-256 and parses the golden set.
    pub fn open(dir: impl AsRef<Path>) -> Result<Bundle, KernelError> {
        let dir = dir.as_ref().to_path_buf();
        let manifest: Manifest = read_json(&dir.join(MANIFEST_FILE))?;
        manifest.check()?;
        for (file, expected) in &manifest.files {
            if file.contains('/') || file.contains("..") {
                return Err(KernelError::Manifest(format!(
                    "files: {file:?} is not a plain file name"
                )));
            }
            let actual = sha256_file(&dir.join(file))?;
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(KernelError::Checksum {
                    file: file.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let golden: GoldenSet = read_json(&dir.join(GOLDEN_FILE))?;
        Ok(Bundle {
            dir,
            manifest,
            golden,
        })
    }

    /// Every file that makes up the bundle: the manifest, then each file it lists. This is
    /// what is packed, sealed and streamed as one unit.
    pub fn file_names(&self) -> Vec<&str> {
        let mut files = vec![MANIFEST_FILE];
        files.extend(self.manifest.files.keys().map(String::as_str));
        files
    }

    pub fn model_path(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    pub fn items_path(&self) -> PathBuf {
        self.dir.join(ITEMS_FILE)
    }

    /// The bundle's held-out set, when its manifest lists one (its checksum was verified by
    /// [`Bundle::open`]).
    pub fn eval_set(&self) -> Result<Option<crate::quality::EvalSet>, KernelError> {
        if !self.manifest.files.contains_key(EVAL_FILE) {
            return Ok(None);
        }
        let set: crate::quality::EvalSet = read_json(&self.dir.join(EVAL_FILE))?;
        set.check(&self.manifest)?;
        Ok(Some(set))
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, KernelError> {
    let bytes = fs::read(path).map_err(|source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| KernelError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Streams the file through SHA-256 so memory stays flat for large item tables.
pub fn sha256_file(path: &Path) -> Result<String, KernelError> {
    let io = |source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_bundle(dir: &Path, model: &[u8]) -> Manifest {
        fs::write(dir.join(MODEL_FILE), model).unwrap();
        fs::write(dir.join(ITEMS_FILE), b"items").unwrap();
        fs::write(dir.join(GOLDEN_FILE), br#"{"cases":[]}"#).unwrap();
        let mut files = BTreeMap::new();
        for f in REQUIRED_FILES {
            files.insert(f.to_string(), sha256_file(&dir.join(f)).unwrap());
        }
        let m = Manifest {
            format_version: 1,
            name: "m".into(),
            version: "1".into(),
            query_dim: 2,
            item_dim: 3,
            item_count: 4,
            precision: "fp32".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            files,
            lineage: None,
            quantization: None,
        };
        fs::write(dir.join(MANIFEST_FILE), serde_json::to_vec(&m).unwrap()).unwrap();
        m
    }

    #[test]
    fn opens_a_consistent_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let m = write_bundle(dir.path(), b"model");
        let b = Bundle::open(dir.path()).unwrap();
        assert_eq!(b.manifest, m);
        assert!(b.golden.cases.is_empty());
    }

    #[test]
    fn a_changed_file_fails_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), b"model");
        fs::write(dir.path().join(MODEL_FILE), b"modeL").unwrap();
        let err = Bundle::open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, KernelError::Checksum { file, .. } if file == MODEL_FILE),
            "{err}"
        );
    }

    #[test]
    fn zero_dimensions_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = write_bundle(dir.path(), b"model");
        m.query_dim = 0;
        fs::write(
            dir.path().join(MANIFEST_FILE),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        let err = Bundle::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("query_dim must be positive"), "{err}");
    }

    #[test]
    fn unknown_precision_and_self_parent_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = write_bundle(dir.path(), b"model");
        m.precision = "int4".into();
        fs::write(
            dir.path().join(MANIFEST_FILE),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        let err = Bundle::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("precision \"int4\""), "{err}");

        m.precision = "int8".into();
        m.lineage = Some(Lineage {
            parent: m.version.clone(),
            method: "int8".into(),
            params: serde_json::Value::Null,
        });
        fs::write(
            dir.path().join(MANIFEST_FILE),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        let err = Bundle::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("names itself as its parent"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), b"model");
        fs::remove_file(dir.path().join(MODEL_FILE)).unwrap();
        let err = Bundle::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model.pt"), "{err}");
    }
}
