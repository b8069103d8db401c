//! Integration-test harness for rankd: real `rankd` processes on loopback, driven through a
//! small readable API (in the spirit of TiKV's cluster tests).
//!
//! ```no_run
//! # async fn demo() {
//! use rankd_tests::{example_query, init, rank_request, Node};
//! init();
//! let node = Node::builder().max_candidates(2000).start().await;
//! let q = example_query();
//! let resp = node
//!     .rank_client()
//!     .await
//!     .rank(rank_request(&q.query, &q.candidates, 10))
//!     .await
//!     .expect("rank");
//! assert_eq!(resp.into_inner().items.len(), 10);
//! assert_eq!(node.metric_value("rankd_ready").await, Some(1.0));
//! # }
//! ```
//!
//! What the harness relies on, and where it looks:
//! - the binary: `$RANKD_BIN`, else `<target dir>/<profile>/rankd` next to the test
//!   executable (build it with `cargo build --bins`);
//! - the model bundle: `$RANKD_TEST_BUNDLE`, else `<workspace>/models/demo` (`make model`);
//! - the device: `$RANKD_TEST_DEVICE`, else `cpu`, so results do not depend on whether the
//!   machine has a GPU. Set `RANKD_TEST_DEVICE=cuda` to run the same suite on one.
//!
//! Every node binds port 0 (gRPC, metrics and peer port) and the harness reads the real
//! ports from the one line rankd prints on stdout, so test binaries and tests may run in
//! parallel. Tests wait on predicates ([`wait_until`], [`wait_for`]), never on fixed sleeps.
//!
//! Replicated clusters: [`Cluster`] starts several nodes (`cluster.bootstrap = "join"`),
//! forms them with InitCluster and drives them through the admin API: upload, promote,
//! rollback, status, membership; `kill` (SIGKILL) and `restart`; `partition`/`heal` cut peer
//! links for real through a [`PeerProxy`] in front of every node's peer port (nodes dial
//! peers from their own loopback IP, so each proxy tells them apart). See `cluster.rs`.

mod builder;
mod bundle;
mod cluster;
pub mod exporter;
mod load;
mod metrics;
mod node;
mod paths;
mod pki;
mod proxy;
mod raw;
pub mod secrets;
mod site;
mod tmpfs;
mod upload;

use std::future::Future;
use std::sync::Once;
use std::time::{Duration, Instant};

pub use builder::{run_rankd, write_keyring, NodeBuilder, ProcessOutput, StartFailure};
pub use bundle::{
    copy_bundle, example_query, golden_set, manifest, rewrite_manifest, sha256_hex, update_sha,
    ExampleQuery, GoldenCase, GoldenSet,
};
pub use cluster::{
    is_deadline, node_status, same_fence, Bearer, CallerAdmin, Cluster, ClusterBuilder, Security,
    ELECTION_TIMEOUT, LOAD_TIMEOUT, RPC_TIMEOUT,
};
pub use load::{LoadReport, Outcome, SteadyLoad};
pub use metrics::{http_get, HttpResponse, MetricsSnapshot};
pub use node::Node;
pub use paths::{bundle_dir, rankctl_bin, rankd_bin, rankload_bin, test_device, workspace_root};
pub use pki::{IssuedCert, TestPki};
pub use proxy::PeerProxy;
pub use raw::{raw_rank_client, RawH2};
pub use site::Site;
pub use tmpfs::Tmpfs;
pub use upload::{pack_bundle, upload_dir, upload_dir_overriding, upload_messages};

pub use rankd_proto::v1::{RankRequest, RankResponse, ScoredItem};
pub use tonic_health::pb::health_check_response::ServingStatus;

/// Model load on a debug build (golden replay and warmup included) can take a while on a
/// busy two-core machine; this bounds how long a node may take to print its serving line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Installs a test log subscriber once per test binary. Call at the top of every test.
/// Honours `RUST_LOG` (default `info`); output is captured by libtest unless `--nocapture`.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Polls `check` until it returns true; panics naming `what` if `timeout` passes first.
///
/// The poll interval is short (20 ms) and only bounds how quickly a change is noticed: the
/// test's correctness depends on the predicate, never on the timing.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            tracing::debug!(
                what,
                waited_ms = start.elapsed().as_millis() as u64,
                "condition met"
            );
            return;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it returns `Ok(value)` and returns the value; panics naming `what`,
/// with the last `Err` it gave (a description of what it saw), if `timeout` passes first.
///
/// Like [`wait_until`], but a timeout says *why* the condition never held.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => {
                tracing::debug!(
                    what,
                    waited_ms = start.elapsed().as_millis() as u64,
                    "condition met"
                );
                return v;
            }
            Err(seen) => seen,
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting until {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Rank request for `candidates` with `top_k`, no request id (the server generates one).
pub fn rank_request(query: &[f32], candidates: &[i64], top_k: u32) -> RankRequest {
    RankRequest {
        request_id: String::new(),
        query: query.to_vec(),
        candidate_ids: candidates.to_vec(),
        top_k,
    }
}

/// Asserts that `resp` ranks exactly `case.expected_ids`, in order, with every score within
/// `tolerance` of the golden score. `context` names the call in failure messages.
pub fn assert_matches_golden(
    resp: &RankResponse,
    case: &GoldenCase,
    tolerance: f32,
    context: &str,
) {
    let ids: Vec<i64> = resp.items.iter().map(|i| i.id).collect();
    assert_eq!(
        ids, case.expected_ids,
        "{context}: ranked ids differ from the golden set"
    );
    for (pos, (item, want)) in resp.items.iter().zip(&case.expected_scores).enumerate() {
        assert!(
            (item.score - want).abs() <= tolerance,
            "{context}: item {pos} (id {}) scored {}, golden {want} (tolerance {tolerance})",
            item.id,
            item.score
        );
    }
}
