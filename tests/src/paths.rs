//! Where the binary under test, the workspace and the model bundle are.

use std::path::{Path, PathBuf};

/// The workspace root: this crate lives in `<root>/tests`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// The `rankd` binary to test: `$RANKD_BIN`, else the one built next to this test executable
/// (`<target>/<profile>/deps/<test>` → `<target>/<profile>/rankd`).
///
/// Panics with instructions when it is missing: integration tests run the real binary, and
/// `cargo test` does not build other crates' binaries for us.
pub fn rankd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RANKD_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "RANKD_BIN={} is not a file", p.display());
        return p;
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // deps/ → profile dir (debug, release, or a custom profile).
    let profile_dir = exe
        .parent()
        .and_then(|deps| {
            if deps.file_name().is_some_and(|n| n == "deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("the test executable lives in <target>/<profile>/deps");
    let bin = profile_dir.join("rankd");
    assert!(
        bin.is_file(),
        "the rankd binary is not built: {} does not exist.\n\
         Build it first with `cargo build --bins` (same profile as the tests), \
         or point RANKD_BIN at a rankd binary.",
        bin.display()
    );
    bin
}

/// The model bundle the tests serve: `$RANKD_TEST_BUNDLE`, else `<workspace>/models/demo`.
pub fn bundle_dir() -> PathBuf {
    let dir = std::env::var_os("RANKD_TEST_BUNDLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("models").join("demo"));
    assert!(
        dir.join("manifest.json").is_file(),
        "no model bundle at {}: export the demo bundle with `make model` \
         (or point RANKD_TEST_BUNDLE at a bundle directory)",
        dir.display()
    );
    dir
}

/// The device nodes are started on: `$RANKD_TEST_DEVICE`, else `cpu`.
pub fn test_device() -> String {
    std::env::var("RANKD_TEST_DEVICE").unwrap_or_else(|_| "cpu".to_string())
}

/// `rankctl`, next to the `rankd` binary the tests use.
pub fn rankctl_bin() -> PathBuf {
    sibling_bin("rankctl")
}

/// `rankload`, next to the `rankd` binary the tests use.
pub fn rankload_bin() -> PathBuf {
    sibling_bin("rankload")
}

fn sibling_bin(name: &str) -> PathBuf {
    let bin = rankd_bin().with_file_name(name);
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build --bins`",
        bin.display()
    );
    bin
}
