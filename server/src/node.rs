//! Assembles one serving node from its config: open the encrypted store, import and
//! activate the configured bundle (if any), load the active version, bind the ports, start
//! the inference workers, serve gRPC and metrics, and shut down in order.

mod error;
mod listen;
mod readiness;
mod scrub;
mod single;

pub use error::StartError;
pub(crate) use single::register_store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rankd_artifact::{Keyring, Store};
use rankd_proto::admin::v1::admin_server::AdminServer;
use rankd_proto::peer::v1::peer_server::PeerServer;
use rankd_proto::v1::heartbeat_server::HeartbeatServer;
use rankd_proto::v1::ranker_server::RankerServer;
use tonic::transport::Server;

use crate::admin::AdminService;
use crate::audit::{AuditedAdmin, Auditor};
use crate::auth::layer::{AdminAuth, ForwardedAuth};
use crate::auth::rate::RateLimit;
use crate::auth::Authenticator;
use crate::cluster::fetch::Reconciler;
use crate::cluster::peer::PeerService;
use crate::cluster::{Cluster, ClusterParts, LocalModels};
use crate::config::{Bootstrap, Config, ConfigError};
use crate::forward::Forwarder;
use crate::health::Readiness;
use crate::heartbeat_stream::HeartbeatService;
use crate::metrics::{self, Metrics};
use crate::model::ModelSlot;
use crate::node_state::NodeState;
use crate::oip::{self, OipService};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::service::RankService;
use crate::stack::guard::GuardLayer;
use crate::stack::late::LateCell;
use crate::stack::{serving_stack, Routed, StackConfig};
use crate::tls::NodeTls;
use listen::{bind, incoming_on, local_addr, reflection_builder, warn_insecure};
use scrub::scrub_loop;
use tower::{Layer, ServiceBuilder};

/// A boxed route, for services that are chosen or built after the server's type is fixed.
type Route = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    std::convert::Infallible,
>;

/// Opens the store, loads the model, binds, and serves until `shutdown` resolves; then
/// drains and returns.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
    let metrics = Arc::new(Metrics::new());
    // Certificates first: a bad one is a config error (exit 64), found before anything binds.
    let tls = Arc::new(NodeTls::load(&cfg.tls)?);
    tls.export_expiry(&metrics);
    warn_insecure(&cfg);
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
    let local = Arc::new(LocalModels::new(slot.clone(), metrics.clone()));
    let single = cfg.cluster.bootstrap == Bootstrap::Single;
    // A configured bundle is imported and validated before any port opens, so a bad one
    // fails the start (exit 65) instead of leaving a node that never serves.
    let initial = match (&cfg.model.bundle, single) {
        (Some(dir), true) => {
            let (record, loaded) = single::import_bundle(dir, &store, &engine).await?;
            let loaded = Arc::new(loaded);
            // Known before Raft replays its log, so nothing loads this version twice.
            local.insert(
                rankd_raft::ModelRef::new(&record.name, &record.version),
                loaded.clone(),
            );
            Some((record, loaded))
        }
        (Some(dir), false) => {
            tracing::warn!(bundle = %dir.display(), "model.bundle is ignored with cluster.bootstrap = \"join\": upload and promote through the cluster instead");
            None
        }
        _ => None,
    };

    let grpc = bind(cfg.server.listen).await?;
    let admin_listener = match cfg.server.admin_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let health_listener = match cfg.server.health_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let metrics_listener = bind(cfg.server.metrics_listen).await?;
    let peer_listener = bind(cfg.cluster.peer_listen).await?;
    let grpc_addr = local_addr(&grpc, cfg.server.listen)?;
    let metrics_addr = local_addr(&metrics_listener, cfg.server.metrics_listen)?;
    let peer_addr = local_addr(&peer_listener, cfg.cluster.peer_listen)?;
    let advertise = |given: &str, bound: SocketAddr| {
        if given.is_empty() {
            bound.to_string()
        } else {
            given.to_string()
        }
    };
    let peer_ip = cfg.cluster.peer_listen.ip();
    let api_addr = advertise(&cfg.cluster.advertise_api, grpc_addr);
    let state = Arc::new(NodeState::new(
        cfg.node_id.clone(),
        cfg.cluster.id,
        api_addr.clone(),
        cfg.batching.queue_capacity,
        slot.clone(),
        metrics.clone(),
    ));
    state.set_live_window(cfg.outlier.window());
    let (cluster, raft_service) = Cluster::start(ClusterParts {
        id: cfg.cluster.id,
        me: rankd_raft::PeerNode {
            peer_addr: advertise(&cfg.cluster.advertise_peer, peer_addr),
            api_addr: api_addr.clone(),
        },
        timing: cfg.raft.clone(),
        raft_path: cfg.data_dir.join("raft.redb"),
        local: local.clone(),
        lag_timeout: Duration::from_millis(cfg.cluster.lag_timeout_ms),
        ready_timeout: Duration::from_millis(cfg.cluster.ready_timeout_ms),
        local_ip: (!peer_ip.is_unspecified()).then_some(peer_ip),
        heartbeat_interval: cfg.cluster.heartbeat_interval(),
        heartbeat_missed: cfg.cluster.heartbeat_missed,
        node: state.clone(),
        peer_tls: tls.peer_client()?,
        outlier: cfg.outlier.clone(),
        bake: cfg.bake.clone(),
    })
    .await?;

    let (health, health_service) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(health, metrics.clone());
    readiness.set(false).await;
    readiness.alive().await;
    let (stop_background, background_stopped) = tokio::sync::watch::channel(false);
    // Forwarded Rank calls and admin writes arrive on the peer port too; their services
    // exist only once the model is loaded and the stacks are built, below.
    let peer_rank: LateCell<Route> = LateCell::new();
    let peer_admin: LateCell<Route> = LateCell::new();
    let peer_server = Server::builder()
        .add_service(raft_service.into_server())
        .add_service(Routed::<_, RankerServer<RankService>>::new(
            peer_rank.service(),
        ))
        .add_service(Routed::<_, AdminServer<AdminService>>::new(
            peer_admin.service(),
        ))
        .add_service(PeerServer::new(PeerService {
            cluster: cluster.clone(),
            store: store.clone(),
            readiness: readiness.clone(),
            state: state.clone(),
        }))
        .serve_with_incoming_shutdown(
            incoming_on(peer_listener, tls.peer.as_ref(), "peer", &metrics),
            {
                let mut stopped = background_stopped.clone();
                async move {
                    let _ = stopped.changed().await;
                }
            },
        );
    let peer_task = tokio::spawn(peer_server);
    let heartbeat_task = tokio::spawn(crate::cluster::heartbeat::run(
        cluster.clone(),
        state.clone(),
        background_stopped.clone(),
    ));
    let bake_task = tokio::spawn(crate::cluster::bake::run(
        cluster.clone(),
        background_stopped.clone(),
    ));
    let probe_task = tokio::spawn(crate::cluster::probe::run(
        cluster.clone(),
        background_stopped.clone(),
    ));
    if single {
        single::start_single(&cluster, &store, &engine, initial).await?;
    }
    // Started after a single node has loaded its active version itself, so the two never
    // load the same version at once.
    let reconcile_task = tokio::spawn(
        Reconciler {
            cluster: cluster.clone(),
            store: store.clone(),
            engine: engine.clone(),
        }
        .run(background_stopped.clone()),
    );

    let b = &cfg.batching;
    let pool = |pool| {
        metrics
            .threads
            .get_or_create(&crate::metrics::PoolLabel { pool })
    };
    pool("runtime").set(tokio::runtime::Handle::current().metrics().num_workers() as i64);
    pool("inference").set(b.workers as i64);
    // Applied here too, not only when a model loads (a cluster node may load none for a
    // while). Left at 0, libtorch is not asked: reading its count on this runtime thread
    // initialises its OpenMP state here, which skewed load balancing in tests/gray_node.rs.
    if cfg.model.torch_threads > 0 {
        rankd_kernels::set_intra_op_threads(cfg.model.torch_threads);
        pool("torch").set(rankd_kernels::intra_op_threads() as i64);
    }
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
            max_queue_wait: (b.max_queue_wait_ms > 0)
                .then(|| Duration::from_millis(b.max_queue_wait_ms)),
            queue_capacity: b.queue_capacity,
            workers: b.workers,
            idle_spin: Duration::from_micros(b.idle_spin_us),
        },
        metrics.clone(),
    ));
    state.set_engine_check({
        let scheduler = Arc::downgrade(&scheduler);
        move || scheduler.upgrade().is_some_and(|s| s.healthy())
    });
    let forwarder = cfg
        .cluster
        .forward_rank
        .then(|| Forwarder::new(cluster.clone(), cfg.node_id.clone()));
    let fault = Arc::new(crate::fault::FaultInjector::reporting(metrics.clone()));
    let rank = RankService::new(
        scheduler.clone(),
        slot.clone(),
        state.clone(),
        forwarder,
        b.max_candidates,
    )
    .with_fault(fault.clone(), &cfg.node_id);
    // The Open Inference Protocol serves every row through this same RankService, and both
    // APIs share one serving stack (one concurrency limit): see `oip`.
    let rank = Arc::new(rank);
    let infer = oip::server(
        OipService::new(
            rank.clone(),
            scheduler.clone(),
            cluster.clone(),
            slot.clone(),
            state.clone(),
        ),
        cfg.server.max_message_bytes,
    );
    let rank = RankerServer::from_arc(rank)
        .max_decoding_message_size(cfg.server.max_message_bytes)
        .max_encoding_message_size(cfg.server.max_message_bytes);
    let rank = serving_stack::<_, RankerServer<RankService>>(
        oip::ClientApi::new(rank, infer),
        &StackConfig {
            default_timeout: cfg.request_timeout(),
            max_concurrent: cfg.server.max_concurrent_requests,
        },
        metrics.clone(),
    );

    // The serving line below must not race the readiness task: report the state now.
    readiness::refresh(&cluster, &state);
    readiness.set(state.is_serving()).await;
    let readiness_task = tokio::spawn(readiness::track_readiness(
        cluster.clone(),
        readiness.clone(),
        state.clone(),
        background_stopped.clone(),
    ));
    let mut readiness = readiness;
    let admin = Arc::new(AdminService {
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
        min_free_bytes: cfg.artifacts.min_free_bytes,
        data_dir: cfg.data_dir.clone(),
        cluster: cluster.clone(),
        compression: cfg.compression.clone(),
        fault,
    });
    // Upload chunks are a few MiB; the message limit only bounds one chunk.
    const UPLOAD_CHUNK_LIMIT: usize = 16 << 20;
    peer_admin.set(Route::new(GuardLayer(ForwardedAuth).layer(
        AdminServer::from_arc(admin.clone()).max_decoding_message_size(UPLOAD_CHUNK_LIMIT),
    )));
    peer_rank.set(Route::new(rank.clone()));
    let auditor = Auditor::new(cluster.clone());
    let public_admin = ServiceBuilder::new()
        .layer(GuardLayer(RateLimit::new(
            "admin",
            cfg.auth.admin_rate_per_client,
            metrics.clone(),
        )))
        .layer(GuardLayer(AdminAuth::new(
            Arc::new(Authenticator::new(&cfg.auth)),
            metrics.clone(),
            auditor.clone(),
        )))
        .service(
            AdminServer::new(AuditedAdmin {
                inner: admin,
                auditor,
            })
            .max_decoding_message_size(UPLOAD_CHUNK_LIMIT),
        );
    let public_admin = Routed::<_, AdminServer<AuditedAdmin>>::new(Route::new(public_admin));
    let client_rank = Routed::<_, RankerServer<RankService>>::new(
        GuardLayer(RateLimit::new(
            "rank",
            cfg.auth.rank_rate_per_client,
            metrics.clone(),
        ))
        .layer(rank.clone()),
    );
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| ConfigError::Load(format!("reflection: {e}")))?;
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| ConfigError::Load(format!("reflection: {e}")))?;

    let metrics_task = tokio::spawn(metrics::serve(metrics_listener, metrics.clone(), {
        let mut stopped = background_stopped.clone();
        async move {
            let _ = stopped.changed().await;
        }
    }));
    let gpu_memory_task = tokio::spawn(crate::gpu_memory::run(
        metrics.clone(),
        background_stopped.clone(),
    ));
    // The first sample before the serving line, so /metrics never shows a zero disk.
    let mut cpu_seen = 0.0;
    crate::host::sample(&cfg.data_dir, &metrics, &mut cpu_seen);
    let host_task = tokio::spawn(crate::host::run(
        cfg.data_dir.clone(),
        metrics.clone(),
        cpu_seen,
        background_stopped.clone(),
    ));
    let quality_task = tokio::spawn(crate::quality::export(
        slot.clone(),
        state.clone(),
        metrics.clone(),
        background_stopped.clone(),
    ));
    let replay_task = (cfg.quality.golden_replay_interval_s > 0).then(|| {
        tokio::spawn(crate::quality::replay::run(
            slot.clone(),
            metrics.clone(),
            Duration::from_secs(cfg.quality.golden_replay_interval_s),
            background_stopped.clone(),
        ))
    });
    let tls_task = tokio::spawn(crate::tls::reload_loop(
        tls.clone(),
        Duration::from_secs(cfg.tls.reload_interval_s),
        metrics.clone(),
        {
            let peers = cluster.peers.clone();
            move |client| peers.set_tls(Some(client))
        },
        background_stopped.clone(),
    ));
    let scrub_task = tokio::spawn(scrub_loop(
        store.clone(),
        cluster.clone(),
        metrics.clone(),
        Duration::from_secs(cfg.artifacts.scrub_interval_s),
        background_stopped,
    ));

    // Draining: stop reporting SERVING first, keep serving for the drain delay so load
    // balancers and clients move away, then stop accepting and finish in-flight calls.
    let (stop_grpc, grpc_stopped) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    let router = Server::builder()
        .max_concurrent_streams(Some(cfg.server.max_concurrent_streams))
        .add_service(health_service.clone())
        .add_service(HeartbeatServer::new(HeartbeatService {
            cluster: cluster.clone(),
            state: state.clone(),
        }))
        .add_service(reflection.clone())
        .add_service(reflection_alpha.clone())
        .add_service(oip::InferenceRoute(client_rank.clone()))
        .add_service(client_rank);
    // The admin surface: on its own port (own TLS, firewalled apart) or on the client port.
    let (router, admin_server) = match admin_listener {
        None => (router.add_service(public_admin), None),
        Some(listener) => {
            let addr = local_addr(&listener, cfg.server.listen)?;
            let server = Server::builder()
                .max_concurrent_streams(Some(cfg.server.max_concurrent_streams))
                .add_service(health_service.clone())
                .add_service(reflection)
                .add_service(reflection_alpha)
                .add_service(public_admin)
                .serve_with_incoming_shutdown(
                    incoming_on(listener, tls.admin.as_ref(), "admin", &metrics),
                    stopped(grpc_stopped.clone()),
                );
            (router, Some((addr, tokio::spawn(server))))
        }
    };
    // Probes that cannot speak TLS get the health service alone, in plaintext.
    let health_server = match health_listener {
        None => None,
        Some(listener) => {
            let addr = local_addr(&listener, cfg.server.listen)?;
            let server = Server::builder()
                .add_service(health_service)
                .serve_with_incoming_shutdown(
                    incoming_on(listener, None, "health", &metrics),
                    stopped(grpc_stopped.clone()),
                );
            Some((addr, tokio::spawn(server)))
        }
    };
    let server = router.serve_with_incoming_shutdown(
        incoming_on(grpc, tls.client.as_ref(), "client", &metrics),
        stopped(grpc_stopped),
    );
    tokio::pin!(server);

    let active = slot.current();
    tracing::info!(node = %cfg.node_id, grpc = %grpc_addr, metrics = %metrics_addr,
        model = active.as_ref().map(|m| format!("{} version {} on {} {}", m.info.name, m.info.version, m.info.device, m.info.precision)).unwrap_or_else(|| "none (NOT_SERVING until one is activated)".into()),
        "serving");
    // One machine-readable line on stdout for supervisors and tests that bind port 0.
    let admin_addr = [("admin", &admin_server), ("health", &health_server)]
        .iter()
        .filter_map(|(name, s)| s.as_ref().map(|(a, _)| format!(" {name}={a}")))
        .collect::<String>();
    println!(
        "rankd: serving grpc={grpc_addr} metrics={metrics_addr} peer={peer_addr}{admin_addr} node={}",
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
    state.start_draining();
    readiness.set(false).await;
    tokio::select! {
        res = &mut server => return res.map_err(StartError::from),
        () = tokio::time::sleep(Duration::from_millis(cfg.server.drain_delay_ms)) => {}
    }
    // Clearing the statuses ends open Watch streams cleanly; otherwise every watcher would
    // hold the shutdown for the whole grace period.
    readiness.clear().await;
    state.close();
    let _ = stop_grpc.send(true);
    let grace = Duration::from_millis(cfg.server.shutdown_grace_ms);
    match tokio::time::timeout(grace, &mut server).await {
        Ok(res) => res?,
        // Long-lived streams (health Watch) never finish on their own.
        Err(_) => tracing::warn!(
            grace_ms = cfg.server.shutdown_grace_ms,
            "in-flight calls outlived the shutdown grace period"
        ),
    }
    for (_, mut task) in admin_server.into_iter().chain(health_server) {
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
    }
    let _ = stop_background.send(true);
    let _ = tls_task.await;
    let _ = host_task.await;
    let _ = quality_task.await;
    if let Some(t) = replay_task {
        let _ = t.await;
    }
    let _ = metrics_task.await;
    let _ = scrub_task.await;
    let _ = gpu_memory_task.await;
    let _ = readiness_task.await;
    let _ = heartbeat_task.await;
    let _ = bake_task.await;
    let _ = probe_task.await;
    let _ = reconcile_task.await;
    if let Err(e) = cluster.raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not shut down cleanly");
    }
    // Forwarded calls now arrive on the peer port too: bound the wait for them.
    let mut peer_task = peer_task;
    if tokio::time::timeout(grace, &mut peer_task).await.is_err() {
        peer_task.abort();
    }
    // Every Rank call has returned or been abandoned; let the workers finish the queue.
    if let Ok(s) = Arc::try_unwrap(scheduler) {
        tokio::task::spawn_blocking(move || s.shutdown()).await.ok();
    }
    tracing::info!("stopped");
    Ok(())
}
