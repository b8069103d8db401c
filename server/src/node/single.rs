//! Starting a single node (`cluster.bootstrap = "single"`): its own one-node cluster, the
//! configured bundle, a restored store, and the active version loaded before the serving
//! line is printed.

use std::sync::Arc;
use std::time::Duration;

use rankd_artifact::{ModelRecord, Store};
use rankd_kernels::{EngineConfig, KernelError};

use super::StartError;
use crate::cluster::Cluster;
use crate::error::ClusterError;
use crate::model::{store_and_validate, LoadError, Loaded};

/// Seals and validates the configured bundle into the store. Loading parses files and runs
/// the model, so it stays off the async workers.
pub(super) async fn import_bundle(
    dir: &std::path::Path,
    store: &Arc<Store>,
    engine: &EngineConfig,
) -> Result<(ModelRecord, Loaded), StartError> {
    let (dir_owned, store, engine) = (dir.to_path_buf(), store.clone(), engine.clone());
    let (record, loaded) = off_runtime(format!("model bundle {}", dir.display()), move || {
        store_and_validate(&store, &dir_owned, "rankd (model.bundle)", &engine)
    })
    .await?;
    tracing::info!(name = %record.name, version = %record.version, seconds = loaded.load_seconds,
        "model verified, decrypted, loaded, warmed up and validated");
    Ok((record, loaded))
}

/// Runs a model load on a blocking thread; a failure is a start error about `what`.
async fn off_runtime<T: Send + 'static>(
    what: String,
    load: impl FnOnce() -> Result<T, LoadError> + Send + 'static,
) -> Result<T, StartError> {
    tokio::task::spawn_blocking(load)
        .await
        .map_err(|e| StartError::Model {
            what: what.clone(),
            source: LoadError::Kernel(KernelError::Torch(format!(
                "model loading thread failed: {e}"
            ))),
        })?
        .map_err(|source| StartError::Model { what, source })
}

/// A single node: becomes its own cluster, promotes the configured bundle unless it is
/// already active, and waits until it serves the registry's active version (if any), so
/// the serving line means what it says.
pub(super) async fn start_single(
    cluster: &Arc<Cluster>,
    store: &Arc<Store>,
    engine: &EngineConfig,
    initial: Option<(ModelRecord, Arc<Loaded>)>,
) -> Result<(), StartError> {
    cluster.bootstrap_single().await?;
    let id = cluster.id;
    cluster
        .raft
        .wait(Some(Duration::from_secs(30)))
        .metrics(|m| m.current_leader == Some(id), "this node leads")
        .await
        .map_err(|e| ClusterError::Timeout(e.to_string()))?;
    if let Some((record, loaded)) = initial {
        let model = rankd_raft::ModelRef::new(&record.name, &record.version);
        let active = cluster.applied().registry.active.clone();
        if active.as_ref().map(|f| &f.model) != Some(&model) {
            crate::admin_cluster::register(cluster, &record, loaded, None).await?;
            let req = rankd_proto::admin::v1::PromoteRequest {
                name: record.name.clone(),
                version: record.version.clone(),
                requested_by: "rankd (model.bundle)".into(),
                ..Default::default()
            };
            crate::cluster::promote::promote(cluster, req).await?;
            store
                .set_active(&record.name, &record.version)
                .map_err(|e| StartError::Model {
                    what: "model store".into(),
                    source: e.into(),
                })?;
        }
    }
    if cluster.applied().registry.versions.is_empty() {
        adopt_store(cluster, store, engine).await?;
    }
    let Some(active) = cluster.applied().registry.active.clone() else {
        return Ok(());
    };
    if cluster.local.get(&active.model).is_none() {
        // A restart: the active version comes from the store. A single node that cannot
        // serve it fails the start (exit 65), as it would with model.bundle.
        let loaded = load_active(store, engine, &active.model).await?;
        cluster.local.insert(active.model.clone(), Arc::new(loaded));
    }
    cluster.local.resync();
    Ok(())
}

/// Verifies, decrypts and loads `model` from the store, off the async workers.
async fn load_active(
    store: &Arc<Store>,
    engine: &EngineConfig,
    model: &rankd_raft::ModelRef,
) -> Result<Loaded, StartError> {
    let (store, engine, m) = (store.clone(), engine.clone(), model.clone());
    let loaded = off_runtime(format!("active model {model}"), move || {
        crate::model::load_stored(&store, &m.name, &m.version, &engine)
    })
    .await?;
    tracing::info!(model = %model, seconds = loaded.load_seconds,
        "active model verified, decrypted, loaded, warmed up and validated");
    Ok(loaded)
}

/// A fresh registry over a store that already holds versions (a data dir restored from a
/// backup, or one from before the registry existed): registers every intact version and
/// promotes the store's active one, so the node resumes serving what it served.
async fn adopt_store(
    cluster: &Arc<Cluster>,
    store: &Arc<Store>,
    engine: &EngineConfig,
) -> Result<(), StartError> {
    if let Some(req) = register_store(cluster, store, engine).await? {
        crate::cluster::promote::promote(cluster, req).await?;
    }
    Ok(())
}

/// The first half of adopting a store: registers every intact version, loads the store's
/// active one here and reports it ready. Returns the promotion that finishes the job (the
/// caller runs it on the leader, or forwards it there), or `None` when the store names no
/// active version.
pub(crate) async fn register_store(
    cluster: &Arc<Cluster>,
    store: &Arc<Store>,
    engine: &EngineConfig,
) -> Result<Option<rankd_proto::admin::v1::PromoteRequest>, StartError> {
    let records: Vec<ModelRecord> = store
        .list()
        .into_iter()
        .filter(|r| r.state == rankd_artifact::RecordState::Ready)
        .collect();
    if records.is_empty() {
        return Ok(None);
    }
    for r in &records {
        let info = crate::admin_cluster::version_info(r, cluster.id);
        cluster
            .propose(rankd_raft::Command::Register { info })
            .await?;
    }
    tracing::info!(
        versions = records.len(),
        "registered the versions already in the store"
    );
    let Some(active) = store.active() else {
        return Ok(None);
    };
    let model = rankd_raft::ModelRef::new(&active.name, &active.version);
    let loaded = load_active(store, engine, &model).await?;
    cluster.local.insert(model.clone(), Arc::new(loaded));
    cluster
        .propose(rankd_raft::Command::ReportReady {
            node: cluster.id,
            model,
        })
        .await?;
    Ok(Some(rankd_proto::admin::v1::PromoteRequest {
        name: active.name.clone(),
        version: active.version.clone(),
        requested_by: "rankd (restored store)".into(),
        ..Default::default()
    }))
}
