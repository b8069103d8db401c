//! Assembles one serving node from its config: load and validate the model, bind the ports,
//! start the inference workers, serve gRPC and metrics, and shut down in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rankd_kernels::{Bundle, KernelError, Ranker, TorchRanker};
use rankd_proto::v1::ranker_server::RankerServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;

use crate::config::{Config, ConfigError};
use crate::metrics::{self, Metrics, ModelLabels};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::service::RankService;
use crate::stack::{serving_stack, StackConfig};

/// Why a node did not start. Each maps to a distinct exit code so supervisors can tell a
/// bad config from a bad model from a busy port.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("model bundle {bundle}: {source}")]
    Model {
        bundle: String,
        #[source]
        source: KernelError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

impl StartError {
    /// sysexits: 64 usage/config, 65 data (the model bundle), 69 unavailable (ports).
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => 64,
            StartError::Model {
                source: KernelError::PrecisionUnsupported { .. } | KernelError::Device(_),
                ..
            } => 64,
            StartError::Model { .. } => 65,
            StartError::Bind { .. } => 69,
            StartError::Serve(_) => 1,
        }
    }
}

/// Loads the model, binds, and serves until `shutdown` resolves; then drains and returns.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
    let metrics = Arc::new(Metrics::new());
    let (ranker, load_seconds) = load_model(&cfg).await?;
    let info = ranker.info().clone();
    metrics.model_load_seconds.set(load_seconds);
    metrics
        .model_info
        .get_or_create(&ModelLabels {
            name: info.name.clone(),
            version: info.version.clone(),
            device: info.device.clone(),
            precision: info.precision.to_string(),
        })
        .set(1);

    let grpc = bind(cfg.server.listen).await?;
    let metrics_listener = bind(cfg.server.metrics_listen).await?;
    let grpc_addr = local_addr(&grpc, cfg.server.listen)?;
    let metrics_addr = local_addr(&metrics_listener, cfg.server.metrics_listen)?;

    let b = &cfg.batching;
    let scheduler = Arc::new(Scheduler::start(
        ranker,
        SchedulerConfig {
            max_batch_size: b.max_batch_size,
            max_batch_items: cfg.max_batch_items(&info.device),
            max_queue_delay: Duration::from_micros(b.max_queue_delay_us),
            queue_capacity: b.queue_capacity,
            workers: b.workers,
        },
        metrics.clone(),
    ));
    let rank = RankService::new(
        scheduler.clone(),
        info.clone(),
        cfg.node_id.clone(),
        b.max_candidates,
    );
    let rank = RankerServer::new(rank)
        .max_decoding_message_size(cfg.server.max_message_bytes)
        .max_encoding_message_size(cfg.server.max_message_bytes);
    let rank = serving_stack::<_, RankerServer<RankService>>(
        rank,
        &StackConfig {
            default_timeout: cfg.request_timeout(),
            max_concurrent: cfg.server.max_concurrent_requests,
        },
        metrics.clone(),
    );

    let (mut health, health_service) = tonic_health::server::health_reporter();
    set_serving(&health, &metrics, true).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rankd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ConfigError::Load(format!("reflection: {e}")))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rankd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ConfigError::Load(format!("reflection: {e}")))?;

    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = tokio::spawn(metrics::serve(metrics_listener, metrics.clone(), async {
        let _ = metrics_stopped.await;
    }));

    // Draining: stop reporting SERVING first, keep serving for the drain delay so load
    // balancers and clients move away, then stop accepting and finish in-flight calls.
    let (stop_grpc, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(rank)
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), async {
            let _ = grpc_stopped.await;
        });
    tokio::pin!(server);

    tracing::info!(node = %cfg.node_id, grpc = %grpc_addr, metrics = %metrics_addr,
        model = %info.name, version = %info.version, device = %info.device,
        precision = %info.precision, "serving");
    // One machine-readable line on stdout for supervisors and tests that bind port 0.
    println!(
        "rankd: serving grpc={grpc_addr} metrics={metrics_addr} node={}",
        cfg.node_id
    );

    tokio::select! {
        res = &mut server => return res.map_err(StartError::from),
        () = shutdown => {}
    }
    tracing::info!(
        drain_ms = cfg.server.drain_delay_ms,
        "shutdown requested: reporting NOT_SERVING and draining"
    );
    set_serving(&health, &metrics, false).await;
    tokio::select! {
        res = &mut server => return res.map_err(StartError::from),
        () = tokio::time::sleep(Duration::from_millis(cfg.server.drain_delay_ms)) => {}
    }
    // Clearing the statuses ends open Watch streams cleanly; otherwise every watcher would
    // hold the shutdown for the whole grace period.
    clear_health(&mut health).await;
    let _ = stop_grpc.send(());
    let grace = Duration::from_millis(cfg.server.shutdown_grace_ms);
    match tokio::time::timeout(grace, &mut server).await {
        Ok(res) => res?,
        // Long-lived streams (health Watch) never finish on their own.
        Err(_) => tracing::warn!(
            grace_ms = cfg.server.shutdown_grace_ms,
            "in-flight calls outlived the shutdown grace period"
        ),
    }
    let _ = stop_metrics.send(());
    let _ = metrics_task.await;
    // Every Rank call has returned or been abandoned; let the workers finish the queue.
    if let Ok(s) = Arc::try_unwrap(scheduler) {
        tokio::task::spawn_blocking(move || s.shutdown()).await.ok();
    }
    tracing::info!("stopped");
    Ok(())
}

async fn load_model(cfg: &Config) -> Result<(Arc<dyn Ranker>, f64), StartError> {
    let dir = cfg.model.bundle.clone();
    let engine = cfg.engine();
    let model_err = |source| StartError::Model {
        bundle: dir.display().to_string(),
        source,
    };
    // Loading parses files and runs the model: keep it off the async workers.
    let loaded = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            let bundle = Bundle::open(&dir)?;
            TorchRanker::load(&bundle, &engine)
        }
    })
    .await
    .map_err(|e| {
        model_err(KernelError::Torch(format!(
            "model loading thread failed: {e}"
        )))
    })?;
    let (ranker, secs) = loaded.map_err(model_err)?;
    tracing::info!(bundle = %dir.display(), seconds = secs, "model loaded, warmed up and validated");
    Ok((Arc::new(ranker), secs))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(l: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}

async fn clear_health(health: &mut HealthReporter) {
    health.clear_service_status("").await;
    health.clear_service_status(RANKER_SERVICE).await;
}

const RANKER_SERVICE: &str = <RankerServer<RankService> as tonic::server::NamedService>::NAME;

async fn set_serving(health: &HealthReporter, metrics: &Metrics, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    health.set_service_status(RANKER_SERVICE, status).await;
    metrics.ready.set(i64::from(serving));
}
