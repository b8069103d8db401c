//! Node configuration: one TOML file, overridden by `RANKD_*` environment variables
//! (nested keys with `__`, e.g. `RANKD_MODEL__DEVICE=cpu`), overridden in turn by CLI flags.
//!
//! `validate()` rejects combinations that would misbehave at run time rather than letting
//! the node start and fail later.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use rankd_kernels::{DeviceSpec, EngineConfig, Precision};
use rankd_raft::RaftTiming;
use serde::{Deserialize, Serialize};

/// A configuration that cannot be used. The binary exits with code 64 on this.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(String),
    #[error("invalid config: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Stable name of this node, reported in every response.
    pub node_id: String,
    /// Where the node keeps its encrypted model store.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub artifacts: ArtifactsConfig,
    pub backup: BackupConfig,
    pub model: ModelConfig,
    pub batching: BatchingConfig,
    pub log: LogConfig,
    pub cluster: ClusterConfig,
    /// Consensus timing (heartbeat, election timeouts), validated against each other.
    pub raft: RaftTiming,
    /// TLS per port (docs/security.md).
    pub tls: crate::tls::TlsConfig,
    /// Admin credentials and roles, per-client rate limits.
    pub auth: crate::auth::AuthConfig,
    /// The quality guard for compressed versions (docs/compression.md).
    pub compression: crate::compression::CompressionConfig,
    /// Live model-quality monitoring (docs/operations.md).
    pub quality: crate::quality::QualityConfig,
    /// The probation after a promotion and its automatic rollback (docs/quality.md).
    pub bake: crate::quality::BakeConfig,
    /// Gray-failure detection: nodes compared with their peers (docs/quality.md).
    pub outlier: crate::quality::OutlierConfig,
}

/// How this node takes part in the replicated registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bootstrap {
    /// A node with no Raft state makes itself a one-node cluster (the single-node setup:
    /// `make run`, and an operator who never runs `rankctl cluster init`).
    Single,
    /// A node with no Raft state waits to be named in `rankctl cluster init` or added with
    /// `rankctl cluster add-node`.
    Join,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's Raft id: positive, unique in the cluster, never reused after removal.
    pub id: u64,
    /// Address of the peer port (Raft, artifact replication, forwarded writes).
    pub peer_listen: SocketAddr,
    /// `host:port` other nodes use to reach the peer port; empty: the bound peer address.
    pub advertise_peer: String,
    /// `host:port` clients are redirected to; empty: the bound `server.listen` address.
    pub advertise_api: String,
    pub bootstrap: Bootstrap,
    /// A follower that has heard nothing from a leader for this long may have missed a
    /// promotion: it reports NOT_SERVING until it hears from one again.
    pub lag_timeout_ms: u64,
    /// How long a promotion waits for every required node to report ready.
    pub ready_timeout_ms: u64,
    /// Every node sends a heartbeat to every peer this often.
    pub heartbeat_interval_ms: u64,
    /// A peer is marked down after this many heartbeat intervals without hearing from it,
    /// so detection takes about `heartbeat_interval_ms * heartbeat_missed`.
    pub heartbeat_missed: u32,
    /// Forward a Rank call this node cannot serve itself (not ready, lagging, queue full)
    /// once to a healthy peer.
    pub forward_rank: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            id: 1,
            peer_listen: SocketAddr::from(([127, 0, 0, 1], 50061)),
            advertise_peer: String::new(),
            advertise_api: String::new(),
            bootstrap: Bootstrap::Single,
            lag_timeout_ms: 3000,
            ready_timeout_ms: 120_000,
            heartbeat_interval_ms: 100,
            heartbeat_missed: 3,
            forward_rank: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC address for Rank, health and reflection (and the admin API unless
    /// `admin_listen` is set).
    pub listen: SocketAddr,
    /// A separate port for the admin API (with its own `[tls.admin]`), so it can be
    /// firewalled apart from client traffic. Unset: admin shares `listen`.
    pub admin_listen: Option<SocketAddr>,
    /// A plaintext port serving only `grpc.health.v1`, for probes that cannot speak TLS
    /// (Kubernetes' native gRPC probes). It reveals serving status and nothing else.
    pub health_listen: Option<SocketAddr>,
    /// HTTP/2 streams one client connection may have open at once; more are refused by
    /// the transport (REFUSED_STREAM) before any handler runs.
    pub max_concurrent_streams: u32,
    /// HTTP address for Prometheus `/metrics`.
    pub metrics_listen: SocketAddr,
    /// Deadline applied when the client sends none; a client's own deadline is capped by it.
    pub request_timeout_ms: u64,
    /// Rank calls in flight at once; beyond this new calls are shed at once.
    pub max_concurrent_requests: usize,
    /// Largest encoded request accepted; larger ones get OUT_OF_RANGE.
    pub max_message_bytes: usize,
    /// After SIGTERM, how long the node keeps serving while reporting NOT_SERVING, so load
    /// balancers move traffic away before connections close.
    pub drain_delay_ms: u64,
    /// After the drain delay, how long in-flight requests get to finish before exit.
    pub shutdown_grace_ms: u64,
    /// Async runtime worker threads for gRPC and metrics; 0 means one per core. Inference
    /// runs on its own threads, so on small machines fewer runtime threads leave the
    /// cores to the model.
    pub runtime_threads: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactsConfig {
    /// Keyring file (mode 0600): the primary key encrypts, any listed key decrypts.
    pub keyring: PathBuf,
    /// Plaintext bytes per encrypted segment.
    pub segment_bytes: u32,
    /// Seconds between background re-verifications of every stored artifact; 0 disables.
    pub scrub_interval_s: u64,
    /// Largest bundle UploadModel accepts.
    pub max_upload_bytes: u64,
    /// Free space an upload must leave on the data directory's filesystem: an upload that
    /// would not fit with this much to spare is refused (RESOURCE_EXHAUSTED) before it
    /// writes anything.
    pub min_free_bytes: u64,
    /// Stored versions kept besides the active and previous ones (which are never
    /// removed); older ones are deleted after each upload and activation.
    pub retain_versions: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Where CreateBackup writes: a directory (or `file:///dir`), or `s3://bucket/prefix`
    /// with credentials from the `AWS_*` environment. Unset disables backups on this node.
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A bundle directory (manifest.json, model.pt, items.safetensors, golden.json) to
    /// import into the store at startup and activate. Unset: serve the store's active
    /// version, or nothing until one is uploaded and activated.
    pub bundle: Option<PathBuf>,
    pub device: DeviceSpec,
    pub precision: Precision,
    /// libtorch intra-op threads; 0 keeps libtorch's default (one per core).
    pub torch_threads: usize,
    /// Golden replay score tolerance; unset uses the precision's default.
    pub golden_tolerance: Option<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Most requests coalesced into one forward pass.
    pub max_batch_size: usize,
    /// Most scored rows per forward pass (requests × longest candidate list). 0 picks by
    /// device: 4096 on CPU, where larger batches fall out of cache and get slower, and
    /// 1048576 on CUDA.
    pub max_batch_items: usize,

    /// Longest a request waits for others to join its batch. Only spent while more
    /// requests are already on their way in; a lone request runs at once.
    pub max_queue_delay_us: u64,
    /// Requests waiting for a worker; when full, Rank answers RESOURCE_EXHAUSTED.
    pub queue_capacity: usize,
    /// Longest a request may wait in the queue before a worker takes it; past it the call
    /// is answered RESOURCE_EXHAUSTED, so the client retries on a less busy replica while
    /// its deadline still allows. 0: bounded only by the call's deadline.
    pub max_queue_wait_ms: u64,
    /// Inference threads, each running whole batches.
    pub workers: usize,
    /// How long an idle inference thread polls the queue before it sleeps. A sleeping
    /// thread costs the next request a wakeup (tens of µs on a VM) and runs its model
    /// colder; a polling one answers at once but keeps a core busy while it polls. 0 (the
    /// default) sleeps at once; worth raising only where each worker has a core to spare.
    pub idle_spin_us: u64,
    /// Most candidates in one request; more get OUT_OF_RANGE.
    pub max_candidates: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `rankd_server=debug`.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: "rankd-1".into(),
            data_dir: PathBuf::from("data"),
            server: ServerConfig::default(),
            artifacts: ArtifactsConfig::default(),
            backup: BackupConfig::default(),
            model: ModelConfig::default(),
            batching: BatchingConfig::default(),
            log: LogConfig::default(),
            cluster: ClusterConfig::default(),
            raft: RaftTiming::default(),
            tls: Default::default(),
            auth: Default::default(),
            compression: Default::default(),
            quality: Default::default(),
            bake: Default::default(),
            outlier: Default::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            admin_listen: None,
            health_listen: None,
            max_concurrent_streams: 256,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            request_timeout_ms: 1000,
            max_concurrent_requests: 1024,
            max_message_bytes: 4 << 20,
            drain_delay_ms: 1000,
            shutdown_grace_ms: 10_000,
            runtime_threads: 0,
        }
    }
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        ArtifactsConfig {
            keyring: PathBuf::from("keyring.toml"),
            segment_bytes: 1 << 20,
            scrub_interval_s: 3600,
            max_upload_bytes: 16 << 30,
            min_free_bytes: 256 << 20,
            retain_versions: 5,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            bundle: None,
            device: DeviceSpec::Auto,
            precision: Precision::Fp32,
            torch_threads: 0,
            golden_tolerance: None,
        }
    }
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            max_batch_size: 32,
            max_batch_items: 0,
            max_queue_delay_us: 500,
            queue_capacity: 1024,
            max_queue_wait_ms: 0,
            workers: 1,
            idle_spin_us: 0,
            max_candidates: 4096,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Upper bounds that keep a typo from allocating the machine away.
const MAX_BATCH: usize = 4096;
const MAX_CANDIDATES: usize = 1 << 20;
const MAX_QUEUE_DELAY_US: u64 = 100_000;
const MAX_IDLE_SPIN_US: u64 = 10_000;

impl ClusterConfig {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
}

impl Config {
    /// Defaults, then the TOML file (if any), then `RANKD_*` variables, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: impl Serialize) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        let cfg: Config = fig
            // RANKD_CONFIG names the file itself (a clap flag), not a key inside it.
            .merge(Env::prefixed("RANKD_").ignore(&["config"]).split("__"))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string().replace('\n', "; ")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: String| Err(ConfigError::Invalid { field, reason });
        if self.node_id.trim().is_empty() {
            return bad("node_id", "must not be empty".into());
        }
        let s = &self.server;
        if s.listen == s.metrics_listen && s.listen.port() != 0 {
            return bad(
                "server.metrics_listen",
                "must differ from server.listen".into(),
            );
        }
        if s.request_timeout_ms == 0 {
            return bad("server.request_timeout_ms", "must be positive".into());
        }
        if s.max_concurrent_requests == 0 {
            return bad("server.max_concurrent_requests", "must be positive".into());
        }
        if s.runtime_threads > 256 {
            return bad("server.runtime_threads", "must be at most 256".into());
        }
        if s.max_message_bytes < 1024 {
            return bad("server.max_message_bytes", "must be at least 1024".into());
        }
        let b = &self.batching;
        if !(1..=MAX_BATCH).contains(&b.max_batch_size) {
            return bad(
                "batching.max_batch_size",
                format!("must be in 1..={MAX_BATCH}"),
            );
        }
        if b.max_queue_delay_us > MAX_QUEUE_DELAY_US {
            return bad(
                "batching.max_queue_delay_us",
                format!("must be at most {MAX_QUEUE_DELAY_US} (100 ms); longer only adds latency"),
            );
        }
        if b.queue_capacity < b.max_batch_size {
            return bad(
                "batching.queue_capacity",
                "must be at least batching.max_batch_size".into(),
            );
        }
        if b.workers == 0 || b.workers > 64 {
            return bad("batching.workers", "must be in 1..=64".into());
        }
        if b.idle_spin_us > MAX_IDLE_SPIN_US {
            return bad(
                "batching.idle_spin_us",
                format!(
                    "must be at most {MAX_IDLE_SPIN_US} (10 ms); longer only keeps a core busy"
                ),
            );
        }
        if !(1..=MAX_CANDIDATES).contains(&b.max_candidates) {
            return bad(
                "batching.max_candidates",
                format!("must be in 1..={MAX_CANDIDATES}"),
            );
        }
        let a = &self.artifacts;
        if !(4096..=16 << 20).contains(&a.segment_bytes) {
            return bad(
                "artifacts.segment_bytes",
                "must be between 4096 and 16777216".into(),
            );
        }
        if a.max_upload_bytes < 1 << 20 {
            return bad(
                "artifacts.max_upload_bytes",
                "must be at least 1 MiB".into(),
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty".into());
        }
        if self.model.device == DeviceSpec::Cpu && self.model.precision.is_half() {
            return bad(
                "model.precision",
                format!(
                    "{} needs CUDA; use fp32 with device cpu",
                    self.model.precision
                ),
            );
        }
        if let Some(t) = self.model.golden_tolerance {
            if !(t.is_finite() && t > 0.0) {
                return bad("model.golden_tolerance", "must be a positive number".into());
            }
        }
        if self.log.level.trim().is_empty() {
            return bad("log.level", "must not be empty".into());
        }
        let c = &self.cluster;
        if c.id == 0 {
            return bad("cluster.id", "must be positive".into());
        }
        if c.peer_listen == s.listen && c.peer_listen.port() != 0 {
            return bad(
                "cluster.peer_listen",
                "must differ from server.listen".into(),
            );
        }
        if c.lag_timeout_ms <= self.raft.election_timeout_max_ms {
            return bad(
                "cluster.lag_timeout_ms",
                format!(
                    "must exceed raft.election_timeout_max_ms ({}), or every election would \
                     take followers out of service",
                    self.raft.election_timeout_max_ms
                ),
            );
        }
        if c.ready_timeout_ms == 0 {
            return bad("cluster.ready_timeout_ms", "must be positive".into());
        }
        if !(10..=10_000).contains(&c.heartbeat_interval_ms) {
            return bad(
                "cluster.heartbeat_interval_ms",
                "must be between 10 and 10000: faster floods the peer port, slower cannot \
                 notice a dead peer before clients do"
                    .into(),
            );
        }
        if c.heartbeat_missed < 2 {
            return bad(
                "cluster.heartbeat_missed",
                "must be at least 2: one late heartbeat (a GC pause, a busy CPU) must not \
                 take a healthy peer out of service"
                    .into(),
            );
        }
        if let Err(e) = self.raft.validate() {
            return bad("raft", e.to_string());
        }
        for (field, addr) in [
            ("server.admin_listen", s.admin_listen),
            ("server.health_listen", s.health_listen),
        ] {
            if let Some(a) = addr {
                if a.port() != 0 && [s.listen, s.metrics_listen, c.peer_listen].contains(&a) {
                    return bad(
                        field,
                        "must differ from the client, metrics and peer addresses".into(),
                    );
                }
            }
        }
        if let (Some(a), Some(h)) = (s.admin_listen, s.health_listen) {
            if a == h && a.port() != 0 {
                return bad(
                    "server.health_listen",
                    "must differ from server.admin_listen".into(),
                );
            }
        }
        if s.max_concurrent_streams == 0 {
            return bad("server.max_concurrent_streams", "must be positive".into());
        }
        if let Err((field, reason)) = self.tls.validate(s.admin_listen.is_some()) {
            return bad(field, reason);
        }
        let admin_tls = if s.admin_listen.is_some() {
            &self.tls.admin
        } else {
            &self.tls.client
        };
        let client_ca = admin_tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if let Err((field, reason)) = self.auth.validate(client_ca) {
            return bad(field, reason);
        }
        if let Err(reason) = self.compression.validate() {
            return bad("compression.max_ndcg_drop_pct", reason);
        }
        for check in [
            self.quality.validate(),
            self.bake.validate(),
            self.outlier.validate(),
        ] {
            if let Err((field, reason)) = check {
                return bad(field, reason);
            }
        }
        if self.auth.mode == crate::tls::SecurityMode::Required && self.tls.peer.is_none() {
            return bad(
                "tls.peer",
                "is needed with auth.mode = \"required\": nodes forward admin calls to the \
                 leader over the peer port, and only mutual TLS tells a node from an impostor there"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.server.request_timeout_ms)
    }

    /// `batching.max_batch_items`, resolved for the device the model landed on.
    pub fn max_batch_items(&self, device: &str) -> usize {
        match self.batching.max_batch_items {
            0 if device.starts_with("cuda") => 1 << 20,
            0 => 4096,
            n => n,
        }
    }

    pub fn engine(&self) -> EngineConfig {
        let b = &self.batching;
        EngineConfig {
            device: self.model.device,
            precision: self.model.precision,
            torch_threads: self.model.torch_threads,
            golden_tolerance: self.model.golden_tolerance,
            // The shapes the scheduler will really produce: single requests and full batches.
            warmup_shapes: vec![(1, 100), (1, 1000), (b.max_batch_size, 100)],
            warmup_iterations: 3,
        }
    }
}

#[cfg(test)]
mod tests;
