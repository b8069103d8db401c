//! `rankd.admin.v1.Admin`: upload, list, inspect and activate model versions in the
//! node's encrypted store.

use std::path::Path;
use std::sync::Arc;

use rankd_artifact::pack::{unpack, UnpackLimits};
use rankd_artifact::{ModelRecord, RecordState, Store};
use rankd_kernels::EngineConfig;
use rankd_proto::admin::v1 as pb;
use rankd_proto::admin::v1::admin_server::Admin;
use rankd_proto::admin::v1::upload_model_request::Part;
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use crate::backup::{BackupManifest, BackupTarget, Kind};
use crate::error::AdminError;
use crate::health::Readiness;
use crate::metrics::{Metrics, ModelLabels};
use crate::model::{store_and_validate, Loaded, ModelSlot};

pub struct AdminService {
    pub store: Arc<Store>,
    /// Re-read on key rotation.
    pub keyring_path: std::path::PathBuf,
    pub backup_target: Option<String>,
    pub retain_versions: usize,
    pub node_id: String,
    pub slot: Arc<ModelSlot>,
    pub engine: EngineConfig,
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    pub max_upload_bytes: u64,
    /// `artifacts.min_free_bytes`.
    pub min_free_bytes: u64,
    pub data_dir: std::path::PathBuf,
    pub cluster: Arc<crate::cluster::Cluster>,
    /// The quality guard's margin for compressed versions.
    pub compression: crate::compression::CompressionConfig,
    /// Shared with the Rank service: `InjectFault` sets it.
    pub fault: Arc<crate::fault::FaultInjector>,
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn upload_model(
        &self,
        request: Request<Streaming<pb::UploadModelRequest>>,
    ) -> Result<Response<pb::UploadModelResponse>, Status> {
        // The authenticated caller, when there is one, is who uploaded it.
        let who = request
            .extensions()
            .get::<crate::auth::Principal>()
            .filter(|p| p.name != crate::auth::ANONYMOUS)
            .map(|p| p.name.clone());
        let (record, loaded, lineage) =
            self.upload(request.into_inner(), who).await.map_err(|e| {
                tracing::warn!(error = %e, "upload refused");
                Status::from(e)
            })?;
        tracing::info!(name = %record.name, version = %record.version, sha256 = %record.sha256, "model stored");
        if let Err(e) = self.register(&record, loaded, lineage).await {
            if matches!(
                e,
                crate::error::ClusterError::Rejected {
                    reason: rankd_raft::Rejection::AlreadyExists,
                    ..
                }
            ) {
                // The registry holds other content under this version: keep none of this.
                let _ = self.store.remove(&record.name, &record.version);
            }
            return Err(Status::from(e));
        }
        self.collect_garbage();
        Ok(Response::new(pb::UploadModelResponse {
            model: Some(self.to_proto(&record)),
        }))
    }

    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let state = self.cluster.read().await.map_err(Status::from)?;
        Ok(Response::new(pb::ListModelsResponse {
            models: self.list_registered(&state.registry),
        }))
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::ModelRecord>, Status> {
        let req = request.into_inner();
        let record = self.store.get(&req.name, &req.version).ok_or_else(|| {
            Status::not_found(format!(
                "{} version {} is not in the store",
                req.name, req.version
            ))
        })?;
        Ok(Response::new(self.to_proto(&record)))
    }

    async fn rotate_keys(
        &self,
        _: Request<pb::RotateKeysRequest>,
    ) -> Result<Response<pb::RotateKeysResponse>, Status> {
        let resp = self.rotate().await.map_err(|e| {
            tracing::error!(error = %e, "key rotation stopped");
            Status::from(e)
        })?;
        tracing::info!(primary = %resp.primary_key_id, rotated = resp.rotated, total = resp.total, "keys rotated");
        Ok(Response::new(resp))
    }

    async fn create_backup(
        &self,
        request: Request<pb::CreateBackupRequest>,
    ) -> Result<Response<pb::Backup>, Status> {
        let kind = if request.into_inner().incremental {
            Kind::Incremental
        } else {
            Kind::Full
        };
        let target = self.backup_target()?;
        let m = target
            .create(&self.store, kind, &self.node_id)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "backup failed");
                Status::from(e)
            })?;
        tracing::info!(id = %m.id, artifacts = m.artifacts.len(), copied = m.copied.len(), "backup created");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.metrics.backup_last_success.set(now);
        Ok(Response::new(backup_proto(&m)))
    }

    async fn list_backups(
        &self,
        _: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let backups = self.backup_target()?.list().await.map_err(Status::from)?;
        Ok(Response::new(pb::ListBackupsResponse {
            backups: backups.iter().map(backup_proto).collect(),
        }))
    }

    async fn verify_backup(
        &self,
        request: Request<pb::VerifyBackupRequest>,
    ) -> Result<Response<pb::Backup>, Status> {
        let id = request.into_inner().id;
        let m = self
            .backup_target()?
            .verify(&id)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(backup_proto(&m)))
    }

    type DownloadModelStream = crate::download::ChunkStream;

    async fn inject_fault(
        &self,
        request: Request<pb::InjectFaultRequest>,
    ) -> Result<Response<pb::InjectFaultResponse>, Status> {
        crate::fault_admin::inject(&self.fault, &self.node_id, request.get_ref()).map(Response::new)
    }

    async fn download_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<Self::DownloadModelStream>, Status> {
        let r = request.into_inner();
        crate::download::stream(self.store.clone(), &r.name, &r.version)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn activate_model(
        &self,
        request: Request<pb::ActivateModelRequest>,
    ) -> Result<Response<pb::ActivateModelResponse>, Status> {
        let req = request.into_inner();
        // This node's own copy is known bad: say so rather than report the registry's view.
        if let Some(r) = self
            .store
            .get(&req.name, &req.version)
            .filter(|r| r.state == RecordState::Quarantined)
        {
            return Err(Status::from(AdminError::Load(
                rankd_artifact::StoreError::Quarantined {
                    name: r.name,
                    version: r.version,
                }
                .into(),
            )));
        }
        let promoted = self
            .promote(Request::new(pb::PromoteRequest {
                name: req.name.clone(),
                version: req.version.clone(),
                requested_by: "ActivateModel".into(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        let load_seconds = self
            .cluster
            .local
            .get(&rankd_raft::ModelRef::new(&req.name, &req.version))
            .map_or(0.0, |l| l.load_seconds);
        let record = self
            .store
            .get(&req.name, &req.version)
            .map(|r| self.to_proto(&r));
        tracing::info!(name = %req.name, version = %req.version, fence = ?promoted.fence, "model activated");
        Ok(Response::new(pb::ActivateModelResponse {
            model: record,
            load_seconds,
        }))
    }

    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        self.cluster_promote(request).await
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        self.cluster_rollback(request).await
    }

    async fn history(
        &self,
        _: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let h = crate::cluster::admin_ops::history(&self.cluster)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(h))
    }

    async fn get_cluster_status(
        &self,
        _: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        self.cluster_status().await
    }

    async fn init_cluster(
        &self,
        request: Request<pb::InitClusterRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        crate::cluster::admin_ops::init(&self.cluster, request.into_inner())
            .await
            .map_err(Status::from)?;
        // A cluster initialized over a restored store (a disaster recovery from backup)
        // resumes serving what the store served: register its versions, then promote its
        // active one, waiting for the new members like any promotion.
        if self.cluster.applied().registry.versions.is_empty() {
            let adopt = crate::node::register_store(&self.cluster, &self.store, &self.engine)
                .await
                .map_err(|e| Status::failed_precondition(format!("adopting the store: {e}")))?;
            if let Some(req) = adopt {
                tracing::info!(name = %req.name, version = %req.version,
                    "cluster initialized over a store with an active version: promoting it");
                self.cluster_promote(Request::new(req)).await?;
            }
        }
        self.cluster_status().await
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        self.cluster_add_node(request).await
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        self.cluster_remove_node(request).await
    }
}

impl AdminService {
    /// Applies `artifacts.retain_versions`. A failure is logged, not returned: the call
    /// that triggered it already succeeded.
    fn collect_garbage(&self) {
        match self.store.gc(self.retain_versions) {
            Ok(removed) => {
                for m in removed {
                    tracing::info!(name = %m.name, version = %m.version, "removed by retention");
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention could not remove old versions"),
        }
    }

    fn backup_target(&self) -> Result<BackupTarget, Status> {
        let dir = self.backup_target.as_ref().ok_or_else(|| {
            Status::failed_precondition("no backup target is configured (backup.target)")
        })?;
        BackupTarget::open(dir).map_err(Status::from)
    }

    async fn rotate(&self) -> Result<pb::RotateKeysResponse, AdminError> {
        let keyring = rankd_artifact::Keyring::load(&self.keyring_path)
            .map_err(|e| AdminError::Load(rankd_artifact::StoreError::from(e).into()))?;
        let primary = keyring.primary_id().to_string();
        // Switching to a keyring that cannot open what is stored would strand it: refuse.
        let mut missing: Vec<String> = self
            .store
            .list()
            .into_iter()
            .map(|r| r.key_id)
            .filter(|id| keyring.get(id).is_none())
            .collect();
        missing.sort();
        missing.dedup();
        if !missing.is_empty() {
            return Err(AdminError::KeysMissing(missing));
        }
        self.store.set_keyring(Arc::new(keyring));
        let store = self.store.clone();
        let rotated = tokio::task::spawn_blocking(move || store.rotate())
            .await
            .map_err(|e| AdminError::Upload(format!("rotation thread failed: {e}")))?
            .map_err(|e| AdminError::Load(e.into()))?;
        Ok(pb::RotateKeysResponse {
            primary_key_id: primary,
            rotated: u32::try_from(rotated).unwrap_or(u32::MAX),
            total: u32::try_from(self.store.list().len()).unwrap_or(u32::MAX),
        })
    }

    async fn upload(
        &self,
        mut stream: Streaming<pb::UploadModelRequest>,
        principal: Option<String>,
    ) -> Result<(ModelRecord, Loaded, Option<rankd_raft::Lineage>), AdminError> {
        let meta = match stream.message().await? {
            Some(pb::UploadModelRequest {
                part: Some(Part::Metadata(m)),
            }) => m,
            _ => {
                return Err(AdminError::Upload(
                    "the first message must carry the metadata".into(),
                ))
            }
        };
        if meta.name.is_empty() || meta.version.is_empty() {
            return Err(AdminError::Upload(
                "metadata: name and version are required".into(),
            ));
        }
        if meta.total_bytes == 0 || meta.total_bytes > self.max_upload_bytes {
            return Err(AdminError::TooLarge {
                size: meta.total_bytes,
                max: self.max_upload_bytes,
            });
        }
        // Refuse before writing a byte when the upload cannot fit (a racing writer can still
        // fill the disk; that ENOSPC is answered the same way and cleaned up below).
        let space = crate::host::disk_space(&self.data_dir)
            .map_err(AdminError::io("checking free space on the data directory"))?;
        crate::host::check_room(space, meta.total_bytes, self.min_free_bytes, &self.data_dir)?;
        // Everything lands under a staging directory that is removed on every exit path,
        // so an aborted or refused upload leaves nothing behind.
        let staging = self
            .store
            .staging("upload")
            .map_err(|e| AdminError::Load(e.into()))?;
        let packed = staging.path().join("bundle.tar");
        let mut file = tokio::fs::File::create(&packed)
            .await
            .map_err(AdminError::io("staging the upload"))?;
        let mut received = 0u64;
        while let Some(msg) = stream.message().await? {
            let Some(Part::Chunk(chunk)) = msg.part else {
                return Err(AdminError::Upload("metadata may only come first".into()));
            };
            received += chunk.len() as u64;
            if received > meta.total_bytes {
                return Err(AdminError::Upload(format!(
                    "received more than the announced total_bytes {}",
                    meta.total_bytes
                )));
            }
            file.write_all(&chunk)
                .await
                .map_err(AdminError::io("staging the upload"))?;
        }
        if received != meta.total_bytes {
            return Err(AdminError::Upload(format!(
                "upload truncated: received {received} of {} bytes",
                meta.total_bytes
            )));
        }
        file.sync_all()
            .await
            .map_err(AdminError::io("staging the upload"))?;
        drop(file);

        let (store, engine) = (self.store.clone(), self.engine.clone());
        let who = match principal {
            Some(p) => p,
            None if meta.uploaded_by.is_empty() => "unknown".to_string(),
            None => meta.uploaded_by.clone(),
        };
        let stage_dir = staging.path().to_path_buf();
        let (cluster, policy) = (self.cluster.clone(), self.compression.clone());
        let quality_override = meta.quality_override.clone();
        let (record, validated, lineage) =
            tokio::task::spawn_blocking(move || -> Result<_, AdminError> {
                let dir = stage_dir.join("bundle");
                std::fs::create_dir(&dir).map_err(AdminError::io("staging the upload"))?;
                unpack_tar(&packed, &dir)?;
                let bundle =
                    rankd_kernels::Bundle::open(&dir).map_err(|e| AdminError::Load(e.into()))?;
                if bundle.manifest.name != meta.name || bundle.manifest.version != meta.version {
                    return Err(AdminError::Upload(format!(
                    "metadata names {} version {}, but the bundle's manifest says {} version {}",
                    meta.name, meta.version, bundle.manifest.name, bundle.manifest.version
                )));
                }
                let existed = store.get(&meta.name, &meta.version).is_some();
                let (record, loaded) =
                    store_and_validate(&store, &dir, &who, &engine).map_err(AdminError::Load)?;
                let lineage = bundle.manifest.lineage.as_ref().map(|l| {
                    let applied = cluster.applied();
                    let ctx = crate::compression::GuardContext {
                        registry: &applied.registry,
                        store: &store,
                        engine: &engine,
                        parent_loaded: cluster
                            .local
                            .get(&rankd_raft::ModelRef::new(&meta.name, &l.parent)),
                        policy: &policy,
                        override_reason: &quality_override,
                    };
                    crate::compression::check(&ctx, &bundle, loaded.ranker.as_ref())
                });
                match lineage.transpose() {
                    Ok(lineage) => Ok((record, loaded, lineage.flatten())),
                    Err(e) => {
                        // Nothing that failed the guard is kept (a re-upload of a version that
                        // is already stored keeps the stored copy).
                        if !existed {
                            let _ = store.remove(&meta.name, &meta.version);
                        }
                        Err(AdminError::Guard(e))
                    }
                }
            })
            .await
            .map_err(|e| AdminError::Upload(format!("validation thread failed: {e}")))??;
        drop(staging);
        Ok((record, validated, lineage))
    }

    fn to_proto(&self, r: &ModelRecord) -> pb::ModelRecord {
        // Active and previous are the registry's, as this node has applied it.
        let registry = &self.cluster.applied().registry;
        let is = |f: &Option<rankd_raft::Fence>| {
            f.as_ref()
                .is_some_and(|f| f.model.name == r.name && f.model.version == r.version)
        };
        pb::ModelRecord {
            name: r.name.clone(),
            version: r.version.clone(),
            sha256: r.sha256.clone(),
            plaintext_sha256: r.plaintext_sha256.clone(),
            size: r.size,
            key_id: r.key_id.clone(),
            uploaded_by: r.uploaded_by.clone(),
            uploaded_at: r.uploaded_at,
            state: match r.state {
                RecordState::Ready => "ready".into(),
                RecordState::Quarantined => "quarantined".into(),
            },
            active: is(&registry.active),
            previous: is(&registry.previous),
            lineage: registry
                .versions
                .get(&rankd_raft::ModelRef::new(&r.name, &r.version))
                .and_then(|v| v.lineage.as_ref())
                .map(crate::compression::lineage_proto),
        }
    }
}

fn unpack_tar(packed: &Path, dir: &Path) -> Result<(), AdminError> {
    let file = std::fs::File::open(packed).map_err(AdminError::io("reading the staged upload"))?;
    let limits = UnpackLimits {
        max_files: 16,
        max_total_bytes: u64::MAX,
    };
    match unpack(std::io::BufReader::new(file), dir, limits) {
        Ok(_) => Ok(()),
        // Writing failed (a full disk, say): the server's problem, not the bundle's.
        Err(rankd_artifact::ArtifactError::Io { source, .. })
            if source.kind() != std::io::ErrorKind::InvalidData
                && source.kind() != std::io::ErrorKind::UnexpectedEof =>
        {
            Err(AdminError::Io {
                context: "unpacking the upload",
                source,
            })
        }
        Err(e) => Err(AdminError::Upload(format!("not a packed bundle: {e}"))),
    }
}

/// Switches serving to `loaded` and updates the model series.
pub fn install(slot: &ModelSlot, metrics: &Metrics, loaded: Loaded) {
    metrics.model_info.clear();
    let info = &loaded.info;
    metrics
        .model_info
        .get_or_create(&ModelLabels {
            name: info.name.clone(),
            version: info.version.clone(),
            device: info.device.clone(),
            precision: info.precision.to_string(),
        })
        .set(1);
    metrics.model_load_seconds.set(loaded.load_seconds);
    slot.install(Arc::new(loaded));
}

fn backup_proto(m: &BackupManifest) -> pb::Backup {
    pb::Backup {
        id: m.id.clone(),
        kind: match m.kind {
            Kind::Full => "full".into(),
            Kind::Incremental => "incremental".into(),
        },
        parent: m.parent.clone().unwrap_or_default(),
        created_at: m.created_at,
        artifacts: u32::try_from(m.artifacts.len()).unwrap_or(u32::MAX),
        copied: u32::try_from(m.copied.len()).unwrap_or(u32::MAX),
        versions: m
            .artifacts
            .iter()
            .map(|a| format!("{} {}", a.name, a.version))
            .collect(),
    }
}
