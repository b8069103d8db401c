//! Runs the real exporter (`deploy/demo_model/export.py`, PyTorch in `.venv`) to make
//! compressed bundles for tests, the same way `rankctl compress` and operators do.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::paths::workspace_root;

/// The Python that `make run`/`make test` installed torch into.
pub fn python() -> PathBuf {
    let venv = workspace_root().join(".venv").join("bin").join("python");
    assert!(
        venv.is_file(),
        "no {}: run `make test` (it installs torch into .venv)",
        venv.display()
    );
    venv
}

pub fn exporter() -> PathBuf {
    workspace_root()
        .join("deploy")
        .join("demo_model")
        .join("export.py")
}

/// `export.py compress --from parent --method method --out out --no-bench [extra...]`;
/// panics with the exporter's output when it fails. Returns `out`.
pub fn compress(parent: &Path, method: &str, out: &Path, extra: &[&str]) -> PathBuf {
    tracing::info!(method, parent = %parent.display(), "exporter: compress");
    let output = Command::new(python())
        .arg(exporter())
        .arg("compress")
        .arg("--from")
        .arg(parent)
        .arg("--method")
        .arg(method)
        .arg("--out")
        .arg(out)
        .arg("--no-bench")
        .args(extra)
        .env("PYTHONHASHSEED", "0")
        .output()
        .expect("running the exporter");
    assert!(
        output.status.success(),
        "export.py compress --method {method} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    out.to_path_buf()
}
