//! Prometheus series for one node, and the HTTP endpoint that serves them.
//!
//! Label values come only from fixed sets (method paths we serve, gRPC code names), never
//! from request content, so a client cannot blow up the series count.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

mod fault;
mod host;
pub mod quality;
mod security;
pub use fault::FaultMetrics;
pub use host::HostMetrics;
pub use quality::QualityMetrics;
pub use security::{AuthMetrics, DeniedLabels, PortLabel, PortResult, SurfaceLabel, TlsMetrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodCode {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub name: String,
    pub version: String,
    pub device: String,
    pub precision: String,
}

/// Every `reason` label `rankd_rejected_total` can carry.
pub const REJECT_REASONS: [&str; 6] = [
    "overloaded",
    "queue_full",
    "queue_wait",
    "deadline_on_arrival",
    "deadline_in_queue",
    "caller_gone",
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~6.5 s
    Histogram::new(exponential_buckets(50e-6, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<MethodCode, Counter>,
    pub request_duration: HistogramFamily<MethodLabel>,
    pub queue_wait: Histogram,
    pub batch_size: Histogram,
    pub inference: Histogram,
    pub inference_batches: Counter,
    pub queue_depth: Gauge,
    /// Threads each pool was started with, so an operator can see the sizing took effect.
    pub threads: Family<PoolLabel, Gauge>,
    pub rejected: Family<Reason, Counter>,
    pub inference_errors: Counter,
    pub model_info: Family<ModelLabels, Gauge>,
    pub model_load_seconds: Gauge<f64, AtomicU64>,
    pub ready: Gauge,
    pub artifact_verifications: Family<Outcome, Counter>,
    /// Unix time of the last CreateBackup that succeeded on this node (0: none since start).
    pub backup_last_success: Gauge<f64, AtomicU64>,
    pub raft: RaftGauges,
    pub peers: PeerMetrics,
    /// Written by `gpu_memory`; empty on hosts without an NVIDIA driver.
    pub gpu_memory: Family<GpuMemoryLabel, Gauge>,
    /// Written by `gpu_memory` too: the share of the last sample period each GPU was busy.
    pub gpu_utilization: Family<GpuLabel, Gauge<f64, AtomicU64>>,
    pub tls: TlsMetrics,
    pub auth: AuthMetrics,
    pub host: HostMetrics,
    pub quality: QualityMetrics,
    pub fault: FaultMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuMemoryLabel {
    /// NVML's device index.
    pub gpu: String,
    /// used | total | process
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    /// `runtime` (gRPC and metrics), `inference` (worker threads) or `torch` (libtorch
    /// intra-op threads each worker's forward pass uses).
    pub pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabel {
    /// NVML's device index.
    pub gpu: String,
}

/// The node's view of consensus, refreshed by the readiness loop.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabels {
    /// Why this node did not serve the call itself: not_ready | lagging | queue_full.
    pub reason: &'static str,
    /// ok | error (the peer answered with an error) | no_peer (none healthy; served or
    /// refused locally).
    pub result: &'static str,
}

/// The peer table and server-side failover, as metrics.
#[derive(Default)]
pub struct PeerMetrics {
    pub heartbeat_age: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    pub up: Family<PeerLabel, Gauge>,
    pub peers_up: Gauge,
    pub failovers: Family<PeerLabel, Counter>,
    pub forwards: Family<ForwardLabels, Counter>,
    /// 1 while this node judges the member (itself included) degraded against its peers.
    pub degraded: Family<PeerLabel, Gauge>,
    /// Times a member was judged degraded.
    pub degradations: Family<PeerLabel, Counter>,
    /// Probe calls this node sent a degraded peer, by how they ended.
    pub probes: Family<ProbeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub peer: String,
    /// ok | error | timeout
    pub result: &'static str,
}

impl PeerMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "peer_heartbeat_age_seconds",
            "Seconds since this node last heard a heartbeat from each peer",
            self.heartbeat_age.clone(),
        );
        registry.register(
            "peer_up",
            "1 while this node counts the peer up (heartbeats within the miss limit)",
            self.up.clone(),
        );
        registry.register(
            "peers_up",
            "Peers this node counts up",
            self.peers_up.clone(),
        );
        registry.register(
            "failovers",
            "Times a peer was marked down, so forwarding moved away from it",
            self.failovers.clone(),
        );
        registry.register(
            "forwards",
            "Rank calls this node forwarded to a peer instead of serving, by reason and result",
            self.forwards.clone(),
        );
        registry.register(
            "peer_degraded",
            "1 while this node judges the member (itself included) degraded: slow or failing against its peers while its heartbeats arrive",
            self.degraded.clone(),
        );
        registry.register(
            "peer_degradations",
            "Times this node judged the member degraded",
            self.degradations.clone(),
        );
        registry.register(
            "peer_probes",
            "Probe Rank calls this node sent a peer it judges degraded, by result (ok, error, timeout)",
            self.probes.clone(),
        );
    }
}

#[derive(Default)]
pub struct RaftGauges {
    pub term: Gauge,
    /// 0 while no leader is known.
    pub leader: Gauge,
    pub is_leader: Gauge,
    pub commit_index: Gauge,
    pub applied_index: Gauge,
    /// Log index of the activation this node serves (the fence's index); 0 when none.
    pub serving_fence_index: Gauge,
    pub lagging: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub result: &'static str,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rankd");
        let requests = Family::<MethodCode, Counter>::default();
        registry.register(
            "requests",
            "gRPC requests served, by method and status code",
            requests.clone(),
        );
        let request_duration: HistogramFamily<MethodLabel> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request arrival to response headers, by method",
            request_duration.clone(),
        );
        let queue_wait = latency_histogram();
        registry.register(
            "queue_wait_seconds",
            "Time a request waited in the batching queue before its batch ran",
            queue_wait.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register(
            "batch_size",
            "Requests per forward pass",
            batch_size.clone(),
        );
        let inference = latency_histogram();
        registry.register(
            "inference_seconds",
            "Time of one batch on the device: gather, forward, top-k, copy back",
            inference.clone(),
        );
        let inference_batches = Counter::default();
        registry.register(
            "inference_batches",
            "Forward passes run",
            inference_batches.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Requests waiting for an inference worker",
            queue_depth.clone(),
        );
        let threads = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "threads",
            "Threads in each of this node's pools (runtime: gRPC and metrics; inference: workers; torch: libtorch intra-op threads per worker)",
            threads.clone(),
        );
        let rejected = Family::<Reason, Counter>::default();
        // Present from the start, so rate() and alerts work before the first refusal.
        for reason in REJECT_REASONS {
            let _ = rejected.get_or_create(&Reason { reason });
        }
        registry.register(
            "rejected",
            "Rank requests refused before inference, by reason",
            rejected.clone(),
        );
        let inference_errors = Counter::default();
        registry.register(
            "inference_errors",
            "Requests that failed inside the engine",
            inference_errors.clone(),
        );
        let model_info = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "model_info",
            "The model this node serves (value 1)",
            model_info.clone(),
        );
        let model_load_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "model_load_seconds",
            "Seconds the active model took to load, warm up and validate",
            model_load_seconds.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 while the node reports SERVING", ready.clone());
        let artifact_verifications = Family::<Outcome, Counter>::default();
        for result in ["ok", "failed"] {
            let _ = artifact_verifications.get_or_create(&Outcome { result });
        }
        registry.register(
            "artifact_verifications",
            "Stored artifacts re-verified by the scrub, by result",
            artifact_verifications.clone(),
        );
        let backup_last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "backup_last_success_timestamp_seconds",
            "Unix time of the last backup this node created successfully (0: none since it started)",
            backup_last_success.clone(),
        );
        let gpu_memory = Family::<GpuMemoryLabel, Gauge>::default();
        registry.register(
            "gpu_memory_bytes",
            "GPU memory from the driver, by NVML index: used (by anyone), total, process (this rankd); absent without an NVIDIA driver",
            gpu_memory.clone(),
        );
        let gpu_utilization = Family::<GpuLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "gpu_utilization_ratio",
            "Share of the last sample period each GPU was running a kernel (NVML, any process); absent without an NVIDIA driver",
            gpu_utilization.clone(),
        );
        let raft = RaftGauges::default();
        for (name, help, g) in [
            ("raft_term", "Current Raft term", &raft.term),
            (
                "raft_leader",
                "Id of the leader this node follows (0: none known)",
                &raft.leader,
            ),
            ("raft_is_leader", "1 while this node leads", &raft.is_leader),
            (
                "raft_commit_index",
                "Highest log index this node knows committed",
                &raft.commit_index,
            ),
            (
                "raft_applied_index",
                "Highest log index applied to the registry here",
                &raft.applied_index,
            ),
            (
                "serving_fence_index",
                "Log index of the activation this node serves (0: none)",
                &raft.serving_fence_index,
            ),
            (
                "lagging",
                "1 while this node may have missed registry changes (no leader contact)",
                &raft.lagging,
            ),
        ] {
            registry.register(name, help, g.clone());
        }
        let peers = PeerMetrics::default();
        peers.register(&mut registry);
        let tls = TlsMetrics::default();
        tls.register(&mut registry);
        let auth = AuthMetrics::default();
        auth.register(&mut registry);
        let host = HostMetrics::default();
        host.register(&mut registry);
        let quality = QualityMetrics::default();
        quality.register(&mut registry);
        let fault = FaultMetrics::default();
        fault.register(&mut registry);
        Metrics {
            fault,
            quality,
            registry,
            raft,
            peers,
            artifact_verifications,
            backup_last_success,
            gpu_memory,
            gpu_utilization,
            tls,
            auth,
            host,
            requests,
            request_duration,
            queue_wait,
            batch_size,
            inference,
            inference_batches,
            queue_depth,
            threads,
            rejected,
            inference_errors,
            model_info,
            model_load_seconds,
            ready,
        }
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&Reason { reason }).inc();
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Serves `GET /metrics` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: std::sync::Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &metrics)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    if req.uri().path() != "/metrics" {
        *resp.status_mut() = StatusCode::NOT_FOUND;
    } else if req.method() != Method::GET {
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    } else {
        *resp.body_mut() = Full::new(Bytes::from(metrics.encode()));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
    }
    resp
}

/// Binds the metrics port; separate from `serve` so bind errors surface at startup.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The alert rules and the dashboard (deploy/) query this exact name.
    #[test]
    fn backup_gauge_is_exposed_under_its_documented_name() {
        let m = Metrics::new();
        let text = m.encode();
        assert!(text.contains("# TYPE rankd_backup_last_success_timestamp_seconds gauge"));
        assert!(text.contains("\nrankd_backup_last_success_timestamp_seconds 0"));
        m.backup_last_success.set(1_790_000_000.5);
        assert!(m
            .encode()
            .contains("\nrankd_backup_last_success_timestamp_seconds 1790000000.5\n"));
    }
}
