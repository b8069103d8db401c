//! Assembles one serving node from its config: open the encrypted store, import and
//! activate the configured bundle (if any), load the active version, bind the ports, start
//! the inference workers, serve gRPC and metrics, and shut down in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rankd_artifact::{ArtifactError, Keyring, Store};
use rankd_kernels::{EngineConfig, KernelError};
use rankd_proto::admin::v1::admin_server::AdminServer;
use rankd_proto::v1::ranker_server::RankerServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::admin::{install, AdminService};
use crate::config::{Config, ConfigError};
use crate::health::Readiness;
use crate::metrics::{self, Metrics, Outcome};
use crate::model::{load_stored, store_and_validate, LoadError, Loaded, ModelSlot};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::service::RankService;
use crate::stack::{serving_stack, StackConfig};

/// Why a node did not start. Each maps to a distinct exit code so supervisors can tell a
/// bad config from a bad model from a busy port.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Keyring(ArtifactError),
    #[error("{what}: {source}")]
    Model {
        what: String,
        #[source]
        source: LoadError,
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
    /// sysexits: 64 usage/config, 65 data (the model or the store), 69 unavailable (ports).
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) | StartError::Keyring(_) => 64,
            StartError::Model {
                source:
                    LoadError::Kernel(KernelError::PrecisionUnsupported { .. } | KernelError::Device(_)),
                ..
            } => 64,
            StartError::Model { .. } => 65,
            StartError::Bind { .. } => 69,
            StartError::Serve(_) => 1,
        }
    }
}

/// Opens the store, loads the model, binds, and serves until `shutdown` resolves; then
/// drains and returns.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
    let metrics = Arc::new(Metrics::new());
    let keyring = Keyring::load(&cfg.artifacts.keyring).map_err(StartError::Keyring)?;
    let store = Store::open(
        &cfg.data_dir,
        Arc::new(keyring),
        cfg.artifacts.segment_bytes,
    )
    .map_err(|e| StartError::Model {
        what: format!("model store {}", cfg.data_dir.display()),
        source: e.into(),
    })?;
    let store = Arc::new(store);
    let engine = cfg.engine();
    let slot = Arc::new(ModelSlot::new());
    if let Some(loaded) = initial_model(&cfg, &store, &engine).await? {
        install(&slot, &metrics, loaded);
    }

    let grpc = bind(cfg.server.listen).await?;
    let metrics_listener = bind(cfg.server.metrics_listen).await?;
    let grpc_addr = local_addr(&grpc, cfg.server.listen)?;
    let metrics_addr = local_addr(&metrics_listener, cfg.server.metrics_listen)?;

    let b = &cfg.batching;
    // The row budget follows the device the configured engine lands on.
    let device = slot
        .current()
        .map(|m| m.info.device.clone())
        .unwrap_or_else(|| engine.device.to_string());
    let scheduler = Arc::new(Scheduler::start(
        slot.clone(),
        SchedulerConfig {
            max_batch_size: b.max_batch_size,
            max_batch_items: cfg.max_batch_items(&device),
            max_queue_delay: Duration::from_micros(b.max_queue_delay_us),
            queue_capacity: b.queue_capacity,
            workers: b.workers,
        },
        metrics.clone(),
    ));
    let rank = RankService::new(
        scheduler.clone(),
        slot.clone(),
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

    let (health, health_service) = tonic_health::server::health_reporter();
    let mut readiness = Readiness::new(health, metrics.clone());
    readiness.set(slot.current().is_some()).await;
    let admin = AdminServer::new(AdminService {
        store: store.clone(),
        keyring_path: cfg.artifacts.keyring.clone(),
        backup_target: cfg.backup.target.clone(),
        retain_versions: cfg.artifacts.retain_versions,
        node_id: cfg.node_id.clone(),
        slot: slot.clone(),
        engine,
        readiness: readiness.clone(),
        metrics: metrics.clone(),
        max_upload_bytes: cfg.artifacts.max_upload_bytes,
    })
    // Upload chunks are a few MiB; the message limit only bounds one chunk.
    .max_decoding_message_size(16 << 20);
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| ConfigError::Load(format!("reflection: {e}")))?;
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| ConfigError::Load(format!("reflection: {e}")))?;

    let (stop_background, background_stopped) = tokio::sync::watch::channel(false);
    let metrics_task = tokio::spawn(metrics::serve(metrics_listener, metrics.clone(), {
        let mut stopped = background_stopped.clone();
        async move {
            let _ = stopped.changed().await;
        }
    }));
    let scrub_task = tokio::spawn(scrub_loop(
        store.clone(),
        metrics.clone(),
        Duration::from_secs(cfg.artifacts.scrub_interval_s),
        background_stopped,
    ));

    // Draining: stop reporting SERVING first, keep serving for the drain delay so load
    // balancers and clients move away, then stop accepting and finish in-flight calls.
    let (stop_grpc, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(admin)
        .add_service(rank)
        // Our own listener (bound early, for port 0), so tonic's `tcp_nodelay` does not
        // apply: without TCP_NODELAY a response's frames meet the client's delayed ACK
        // and a call stalls ~40 ms.
        .serve_with_incoming_shutdown(TcpIncoming::from(grpc).with_nodelay(Some(true)), async {
            let _ = grpc_stopped.await;
        });
    tokio::pin!(server);

    let active = slot.current();
    tracing::info!(node = %cfg.node_id, grpc = %grpc_addr, metrics = %metrics_addr,
        model = active.as_ref().map(|m| format!("{} version {} on {} {}", m.info.name, m.info.version, m.info.device, m.info.precision)).unwrap_or_else(|| "none (NOT_SERVING until one is activated)".into()),
        "serving");
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
    readiness.set(false).await;
    tokio::select! {
        res = &mut server => return res.map_err(StartError::from),
        () = tokio::time::sleep(Duration::from_millis(cfg.server.drain_delay_ms)) => {}
    }
    // Clearing the statuses ends open Watch streams cleanly; otherwise every watcher would
    // hold the shutdown for the whole grace period.
    readiness.clear().await;
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
    let _ = stop_background.send(true);
    let _ = metrics_task.await;
    let _ = scrub_task.await;
    // Every Rank call has returned or been abandoned; let the workers finish the queue.
    if let Ok(s) = Arc::try_unwrap(scheduler) {
        tokio::task::spawn_blocking(move || s.shutdown()).await.ok();
    }
    tracing::info!("stopped");
    Ok(())
}

/// The configured bundle, imported and activated; else the store's active version; else
/// nothing. Loading parses files and runs the model, so it stays off the async workers.
async fn initial_model(
    cfg: &Config,
    store: &Arc<Store>,
    engine: &EngineConfig,
) -> Result<Option<Loaded>, StartError> {
    let bundle = cfg.model.bundle.clone();
    let what = match &bundle {
        Some(dir) => format!("model bundle {}", dir.display()),
        None => "active model".to_string(),
    };
    let (store, engine) = (store.clone(), engine.clone());
    let loaded = tokio::task::spawn_blocking(move || -> Result<Option<Loaded>, LoadError> {
        if let Some(dir) = bundle {
            let (record, loaded) =
                store_and_validate(&store, &dir, "rankd (model.bundle)", &engine)?;
            store.set_active(&record.name, &record.version)?;
            return Ok(Some(loaded));
        }
        match store.active() {
            Some(active) => load_stored(&store, &active.name, &active.version, &engine).map(Some),
            None => Ok(None),
        }
    })
    .await
    .map_err(|e| StartError::Model {
        what: what.clone(),
        source: LoadError::Kernel(KernelError::Torch(format!(
            "model loading thread failed: {e}"
        ))),
    })?
    .map_err(|source| StartError::Model { what, source })?;
    if let Some(m) = &loaded {
        tracing::info!(name = %m.info.name, version = %m.info.version, seconds = m.load_seconds,
            "model verified, decrypted, loaded, warmed up and validated");
    }
    Ok(loaded)
}

/// Re-verifies every stored artifact each `interval` (0 disables), with a metric and a log
/// line per result.
async fn scrub_loop(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if interval.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        let s = store.clone();
        let Ok(results) = tokio::task::spawn_blocking(move || s.scrub()).await else {
            continue;
        };
        for r in results {
            let result = if r.ok { "ok" } else { "failed" };
            metrics
                .artifact_verifications
                .get_or_create(&Outcome { result })
                .inc();
            if r.ok {
                tracing::info!(name = %r.model.name, version = %r.model.version, "scrub: artifact verified");
            } else {
                tracing::error!(name = %r.model.name, version = %r.model.version, detail = %r.detail,
                    "scrub: artifact failed verification and was quarantined");
            }
        }
    }
}

/// Every service this node serves, for grpc.reflection v1 and v1alpha alike.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rankd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
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
