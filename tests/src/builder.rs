//! [`NodeBuilder`]: one node's config file, flags and environment, and the ways to run it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::Command;

use crate::node::Node;
use crate::paths::{bundle_dir, rankd_bin, test_device};
use crate::STARTUP_TIMEOUT;

/// How to start one rankd node. Every setting ends up in a TOML config file written to the
/// node's own temporary directory; ports are passed as flags (`127.0.0.1:0` by default).
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    /// `"section.key"` (or a top-level `"key"`) → TOML literal.
    settings: BTreeMap<String, String>,
    env: Vec<(String, String)>,
    listen: String,
    metrics_listen: String,
    config_via_env: bool,
    /// How the harness's own clients reach the node when its client port speaks TLS.
    client_tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeBuilder {
    /// A node serving the test bundle on the test device, with a node id unique within this
    /// test binary.
    pub fn new() -> NodeBuilder {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        let id = format!(
            "test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        NodeBuilder {
            settings: BTreeMap::new(),
            env: Vec::new(),
            listen: "127.0.0.1:0".into(),
            metrics_listen: "127.0.0.1:0".into(),
            config_via_env: false,
            client_tls: None,
        }
        .node_id(&id)
        .bundle(&bundle_dir())
        .set_str("model.device", &test_device())
        .set_str("log.level", "info")
        // The peer port defaults to a fixed port; tests run in parallel, so bind port 0 (the
        // node reports the real one on its serving line as `peer=`).
        .set_str("cluster.peer_listen", "127.0.0.1:0")
        // Plaintext, anonymous admin: said explicitly, as rankd requires. The security
        // tests (tls_*.rs, auth_*.rs) replace these with certificates and tokens.
        .set_str("tls.mode", "insecure-dev")
        .set_str("auth.mode", "insecure-dev")
        // Promotions are not baked unless a test asks for a window (`bake_ms`, `--bake`):
        // a test that injects faults must not see its promotion undone behind its back.
        .set("bake.window_ms", "0")
    }

    /// Sets any config key to a TOML literal: `set("server.request_timeout_ms", "500")`,
    /// `set("model.precision", "\"fp16\"")`. Keys need not exist (to test that unknown keys
    /// are refused).
    pub fn set(mut self, key: &str, toml_literal: &str) -> Self {
        self.settings
            .insert(key.to_string(), toml_literal.to_string());
        self
    }

    /// Sets a config key to a string value.
    pub fn set_str(self, key: &str, value: &str) -> Self {
        let literal = toml_string(value);
        self.set(key, &literal)
    }

    /// Removes a key so the server's default applies.
    pub fn unset(mut self, key: &str) -> Self {
        self.settings.remove(key);
        self
    }

    pub fn node_id(self, id: &str) -> Self {
        self.set_str("node_id", id)
    }

    pub fn bundle(self, dir: &Path) -> Self {
        self.set_str("model.bundle", &dir.display().to_string())
    }

    pub fn max_candidates(self, n: usize) -> Self {
        self.set("batching.max_candidates", &n.to_string())
    }

    pub fn max_message_bytes(self, n: usize) -> Self {
        self.set("server.max_message_bytes", &n.to_string())
    }

    pub fn drain_delay_ms(self, ms: u64) -> Self {
        self.set("server.drain_delay_ms", &ms.to_string())
    }

    pub fn shutdown_grace_ms(self, ms: u64) -> Self {
        self.set("server.shutdown_grace_ms", &ms.to_string())
    }

    pub fn request_timeout_ms(self, ms: u64) -> Self {
        self.set("server.request_timeout_ms", &ms.to_string())
    }

    pub fn max_batch_size(self, n: usize) -> Self {
        self.set("batching.max_batch_size", &n.to_string())
    }

    pub fn max_queue_delay_us(self, us: u64) -> Self {
        self.set("batching.max_queue_delay_us", &us.to_string())
    }

    pub fn queue_capacity(self, n: usize) -> Self {
        self.set("batching.queue_capacity", &n.to_string())
    }

    pub fn workers(self, n: usize) -> Self {
        self.set("batching.workers", &n.to_string())
    }

    /// gRPC listen address flag (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.to_string();
        self
    }

    /// Metrics listen address flag (default `127.0.0.1:0`).
    pub fn metrics_listen(mut self, addr: &str) -> Self {
        self.metrics_listen = addr.to_string();
        self
    }

    /// An environment variable for the rankd process. The harness otherwise strips every
    /// inherited `RANKD_*` variable (and `RUST_LOG`) so the outer environment cannot leak in.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The TLS settings the harness's clients use for this node (its client port is TLS).
    pub fn client_tls(mut self, tls: tonic::transport::ClientTlsConfig) -> Self {
        self.client_tls = Some(tls);
        self
    }

    /// Name the config file through `RANKD_CONFIG` instead of `--config`.
    pub fn config_via_env(mut self) -> Self {
        self.config_via_env = true;
        self
    }

    /// The config file this builder writes.
    pub fn render_toml(&self) -> String {
        let mut top = String::new();
        let mut sections: BTreeMap<&str, String> = BTreeMap::new();
        for (key, value) in &self.settings {
            match key.split_once('.') {
                None => top.push_str(&format!("{key} = {value}\n")),
                Some((section, k)) => {
                    sections
                        .entry(section)
                        .or_default()
                        .push_str(&format!("{k} = {value}\n"));
                }
            }
        }
        for (section, body) in sections {
            top.push_str(&format!("\n[{section}]\n{body}"));
        }
        top
    }

    /// Starts the node and waits (up to [`STARTUP_TIMEOUT`]) for it to report serving.
    /// Panics, with the node's log, if it exits or hangs instead.
    pub async fn start(self) -> Node {
        let (dir, config) = self.write_config();
        let id = self.settings.get("node_id").cloned().unwrap_or_default();
        let mut cmd = self.command(&config, "serve");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("creating the node's stderr log");
        cmd.stdout(Stdio::piped()).stderr(stderr);
        tracing::info!(node = %id.trim_matches('"'), dir = %dir.path().display(), "starting rankd");
        Node::spawn(cmd, dir, config, stderr_path, self.client_tls.clone()).await
    }

    /// Runs `rankd serve` expecting it to refuse to start: waits for it to exit (up to
    /// [`STARTUP_TIMEOUT`]) and returns its exit code and output. Panics if it keeps running.
    pub async fn start_expect_failure(self) -> StartFailure {
        let (_dir, config) = self.write_config();
        let cmd = self.command(&config, "serve");
        run_to_exit(cmd, STARTUP_TIMEOUT).await
    }

    /// Runs `rankd --check-config` on this builder's config file.
    pub async fn check_config(self) -> ProcessOutput {
        let (_dir, config) = self.write_config();
        // `--check-config` is a flag of the top-level command, not a subcommand.
        let cmd = self.command(&config, "--check-config");
        run_to_exit(cmd, Duration::from_secs(30)).await
    }

    fn write_config(&self) -> (TempDir, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("rankd-test-")
            .tempdir()
            .expect("creating a temporary directory");
        // Every node keeps an encrypted store: give it a private data directory and its own
        // keyring unless the test chose them.
        let mut settings = self.clone();
        if !self.settings.contains_key("artifacts.keyring") {
            let keyring = dir.path().join("keyring.toml");
            write_keyring(&keyring, "test-key");
            settings = settings.set_str("artifacts.keyring", &keyring.display().to_string());
        }
        if !self.settings.contains_key("data_dir") {
            let data = dir.path().join("data");
            settings = settings.set_str("data_dir", &data.display().to_string());
        }
        let path = dir.path().join("rankd.toml");
        std::fs::write(&path, settings.render_toml()).expect("writing the node's config file");
        (dir, path)
    }

    fn command(&self, config: &Path, verb: &str) -> Command {
        let mut cmd = Command::new(rankd_bin());
        cmd.arg(verb);
        if !self.config_via_env {
            cmd.arg("--config").arg(config);
        }
        cmd.args([
            "--listen",
            &self.listen,
            "--metrics-listen",
            &self.metrics_listen,
        ]);
        scrub_env(&mut cmd);
        if self.config_via_env {
            cmd.env("RANKD_CONFIG", config);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        die_with_parent(&mut cmd);
        cmd
    }
}

/// Removes inherited `RANKD_*` variables (rankd reads every one of them as a config key) and
/// `RUST_LOG`, so the environment the tests run in cannot change what they test.
fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RANKD_") || key == "RUST_LOG" {
            cmd.env_remove(&key);
        }
    }
}

/// Writes a keyring (mode 0600) holding one fresh key named `id`, primary, replacing any
/// file already at `path` (tests swap keyrings between restarts).
pub fn write_keyring(path: &Path, id: &str) {
    let _ = std::fs::remove_file(path);
    rankd_artifact::keyring::write_new(path, id).expect("writing a keyring");
}

/// A TOML basic string. JSON string escapes are a subset of TOML's.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// Kill the node if the test process dies without running destructors (e.g. SIGKILL from a
/// test timeout), so no rankd outlives its test.
///
/// Linux delivers the signal when the *thread* that spawned the child exits. Nodes are
/// started from a test's own thread (or a runtime worker), which outlives the `Node`; do not
/// start one from `spawn_blocking`, whose idle threads exit after a few seconds.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

/// How a rankd process ended: its exit code (None if killed by a signal) and its output.
#[derive(Debug, Clone)]
pub struct ProcessOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A node that refused to start.
pub type StartFailure = ProcessOutput;

impl ProcessOutput {
    /// The one-line error rankd prints when it refuses to start. Asserts that stderr holds
    /// exactly one line starting with `rankd: ` and that it is the last line.
    pub fn error_line(&self) -> &str {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        let ours: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("rankd: "))
            .collect();
        assert_eq!(
            ours.len(),
            1,
            "expected exactly one `rankd: ` line on stderr, got:\n{}",
            self.stderr
        );
        assert_eq!(
            lines.last().copied(),
            Some(ours[0]),
            "the `rankd: ` line should be the last on stderr:\n{}",
            self.stderr
        );
        ours[0]
    }

    /// Asserts the exit code, showing the output when it differs.
    pub fn assert_code(&self, want: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(want),
            "rankd exit code\n--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `rankd` with `args` and extra environment `env` (on top of a scrubbed environment)
/// to completion.
pub async fn run_rankd(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> ProcessOutput {
    let mut cmd = Command::new(rankd_bin());
    cmd.args(args);
    scrub_env(&mut cmd);
    cmd.envs(env.iter().copied());
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    die_with_parent(&mut cmd);
    run_to_exit(cmd, timeout).await
}

async fn run_to_exit(mut cmd: Command, timeout: Duration) -> ProcessOutput {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawning rankd");
    // On timeout the future (and with it the child, kill_on_drop) is dropped: no leak.
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.expect("waiting for rankd");
            ProcessOutput {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        Err(_) => panic!("rankd was expected to exit but still ran after {timeout:?}"),
    }
}
