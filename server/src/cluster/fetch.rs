//! The reconciler: makes this node hold, verified and loaded, every version the registry
//! says it should, and reports the result to the registry.
//!
//! For each wanted version: a ready copy in the local store is loaded from there (the
//! store verifies its SHA-256 before decrypting); otherwise the sealed artifact is
//! streamed from a peer that holds it, checked against the SHA-256 the sender announces,
//! decrypted (the AEAD authenticates every segment), re-sealed under this node's primary
//! key, and its plaintext SHA-256 compared with the registry's before libtorch sees it.
//! Then the golden set runs, and the node commits ReportReady, or ReportFailed with the
//! reason. A quarantined copy (the scrub found it corrupt) is fetched again the same way.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rankd_artifact::{open_bundle, RecordState, Store};
use rankd_kernels::EngineConfig;
use rankd_proto::peer::v1::artifact_chunk::Part;
use rankd_proto::peer::v1::peer_client::PeerClient;
use rankd_proto::peer::v1::FetchArtifactRequest;
use rankd_raft::registry::Registry;
use rankd_raft::{Command, ModelRef, NodeId, VersionInfo};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::local::Stage;
use super::Cluster;
use crate::model::{load_stored, store_and_validate, Loaded};

/// A failed version is retried after this long (a peer may come back, a disk may be freed).
const RETRY_AFTER: Duration = Duration::from_secs(20);

pub struct Reconciler {
    pub cluster: Arc<Cluster>,
    pub store: Arc<Store>,
    pub engine: EngineConfig,
}

/// The versions a node keeps loaded: the active and previous ones (rollback is a pointer
/// swap), a version being prepared for promotion, and the two newest registered
/// candidates not yet promoted.
pub fn wanted(registry: &Registry) -> Vec<ModelRef> {
    let mut out: Vec<ModelRef> = Vec::new();
    for f in [&registry.active, &registry.previous].into_iter().flatten() {
        if !out.contains(&f.model) {
            out.push(f.model.clone());
        }
    }
    if let Some(p) = &registry.preparing {
        if !out.contains(p) && registry.versions.get(p).is_some_and(|v| !v.retired) {
            out.push(p.clone());
        }
    }
    let active_at = registry
        .active
        .as_ref()
        .and_then(|f| registry.versions.get(&f.model))
        .map_or(0, |v| v.uploaded_at);
    let mut candidates: Vec<&VersionInfo> = registry
        .versions
        .values()
        .filter(|v| !v.retired && v.uploaded_at >= active_at && !out.contains(&v.model))
        .collect();
    candidates.sort_by_key(|v| std::cmp::Reverse(v.uploaded_at));
    out.extend(candidates.into_iter().take(2).map(|v| v.model.clone()));
    out
}

impl Reconciler {
    /// Runs until `stop` flips: on every registry change or wake-up, brings the wanted
    /// versions in, one at a time (each may be gigabytes; in parallel they would compete
    /// for the disk and the device).
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut changes = self.cluster.subscribe();
        let mut failed: BTreeMap<ModelRef, Instant> = BTreeMap::new();
        loop {
            // First say what this node does not hold (after a restart: everything), so no
            // promotion counts on it while it loads.
            self.report_unloaded().await;
            let registry = self.cluster.applied().registry.clone();
            let keep = wanted(&registry);
            for model in &keep {
                if *stop.borrow() {
                    return;
                }
                if failed.get(model).is_some_and(|t| t.elapsed() < RETRY_AFTER) {
                    continue;
                }
                let Some(info) = registry.versions.get(model).cloned() else {
                    continue;
                };
                match self.ensure(&info, &registry).await {
                    Ok(()) => {
                        failed.remove(model);
                    }
                    Err(reason) => {
                        tracing::warn!(model = %model, reason = %reason, "cannot make this version ready");
                        self.cluster.local.set_stage(model, Stage::Failed, &reason);
                        failed.insert(model.clone(), Instant::now());
                        let already = registry
                            .failed
                            .get(&self.cluster.id)
                            .and_then(|f| f.get(model))
                            .is_some_and(|r| r == &reason);
                        if !already {
                            self.report(Command::ReportFailed {
                                node: self.cluster.id,
                                model: model.clone(),
                                reason,
                            })
                            .await;
                        }
                    }
                }
            }
            // A version dropped from memory is no longer ready here: say so, or a promotion
            // could commit on the strength of a copy that is gone.
            self.cluster.local.retain(&keep);
            self.report_unloaded().await;
            self.cluster.local.resync();
            self.mirror_active(&self.cluster.applied().registry);
            let retry = tokio::time::sleep(RETRY_AFTER);
            tokio::select! {
                _ = stop.changed() => return,
                _ = changes.changed() => {}
                () = self.cluster.local.wake.notified() => {}
                () = retry, if !failed.is_empty() => {}
            }
        }
    }

    /// Makes `info` loaded here and reported ready.
    async fn ensure(&self, info: &VersionInfo, registry: &Registry) -> Result<(), String> {
        let model = &info.model;
        let record = self.store.get(&model.name, &model.version);
        if let Some(r) = record
            .as_ref()
            .filter(|r| r.plaintext_sha256 != info.plaintext_sha256)
        {
            return Err(format!(
                "this node's stored copy holds content {}, the registry's is {}; remove it",
                r.plaintext_sha256, info.plaintext_sha256
            ));
        }
        let intact = record
            .as_ref()
            .is_some_and(|r| r.state == RecordState::Ready);
        if self.cluster.local.get(model).is_none() || !intact {
            let loaded = if intact {
                self.cluster.local.set_stage(model, Stage::Loading, "");
                match self.load_local(model).await {
                    Ok(l) => l,
                    // A copy that no longer matches its checksum is quarantined by a scrub
                    // right away, and a verified one fetched, rather than waiting for the
                    // next scheduled scrub.
                    Err(e) if self.quarantined_now(model).await => {
                        tracing::warn!(model = %model, error = %e,
                            "the stored copy failed verification; fetching it from a peer");
                        self.fetch_and_load(info, registry).await?
                    }
                    Err(e) => return Err(e),
                }
            } else {
                self.fetch_and_load(info, registry).await?
            };
            if loaded.info.name != model.name || loaded.info.version != model.version {
                return Err(format!(
                    "the artifact holds {} version {}",
                    loaded.info.name, loaded.info.version
                ));
            }
            self.cluster.local.insert(model.clone(), Arc::new(loaded));
        }
        self.cluster.local.set_stage(model, Stage::Ready, "");
        // The registry as applied now: an unload reported earlier in this pass counts.
        if !self
            .cluster
            .applied()
            .registry
            .is_ready(self.cluster.id, model)
        {
            self.report(Command::ReportReady {
                node: self.cluster.id,
                model: model.clone(),
            })
            .await;
        }
        Ok(())
    }

    /// Re-verifies the store now; whether `model`'s copy turned out corrupt.
    async fn quarantined_now(&self, model: &ModelRef) -> bool {
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.scrub()).await;
        self.store
            .get(&model.name, &model.version)
            .is_some_and(|r| r.state == RecordState::Quarantined)
    }

    async fn load_local(&self, model: &ModelRef) -> Result<Loaded, String> {
        let (store, engine, m) = (self.store.clone(), self.engine.clone(), model.clone());
        tokio::task::spawn_blocking(move || load_stored(&store, &m.name, &m.version, &engine))
            .await
            .map_err(|e| format!("loading thread failed: {e}"))?
            .map_err(|e| e.to_string())
    }

    async fn fetch_and_load(
        &self,
        info: &VersionInfo,
        registry: &Registry,
    ) -> Result<Loaded, String> {
        let model = &info.model;
        let mut holders: Vec<NodeId> = registry
            .holders(model)
            .into_iter()
            .filter(|n| *n != self.cluster.id)
            .collect();
        if holders.is_empty() {
            return Err("no other node holds a verified copy".into());
        }
        // Each node starts at a different holder, so a fleet does not all pull from the
        // uploader at once; the others remain fallbacks.
        let start = (self.cluster.id as usize) % holders.len();
        holders.rotate_left(start);
        let staging = self
            .store
            .staging("fetch")
            .map_err(|e| format!("staging: {e}"))?;
        let sealed = staging.path().join("artifact");
        let mut errors = Vec::new();
        let mut fetched = None;
        for holder in holders {
            self.cluster
                .local
                .set_stage(model, Stage::Fetching, format!("from node {holder}"));
            match self.fetch_from(holder, model, &sealed).await {
                Ok(sha) => {
                    fetched = Some(sha);
                    break;
                }
                Err(e) => errors.push(format!("node {holder}: {e}")),
            }
        }
        let Some(sha) = fetched else {
            return Err(format!("fetch failed: {}", errors.join("; ")));
        };
        self.cluster.local.set_stage(model, Stage::Verifying, "");
        let (store, engine) = (self.store.clone(), self.engine.clone());
        let (m, expected, dir) = (
            model.clone(),
            info.plaintext_sha256.clone(),
            staging.path().to_path_buf(),
        );
        let local = self.cluster.local.clone();
        let uploaded_by = info.uploaded_by.clone();
        tokio::task::spawn_blocking(move || -> Result<Loaded, String> {
            let bundle = dir.join("bundle");
            std::fs::create_dir(&bundle).map_err(|e| format!("staging: {e}"))?;
            open_bundle(
                &dir.join("artifact"),
                &sha,
                &store.keyring(),
                &m.name,
                &m.version,
                &bundle,
            )
            .map_err(|e| format!("verifying the fetched artifact: {e}"))?;
            local.set_stage(&m, Stage::Validating, "");
            // A copy the scrub quarantined is forgotten only now that a verified one is at
            // hand, so a failed fetch leaves the store as it was.
            store
                .drop_quarantined(&m.name, &m.version)
                .map_err(|e| e.to_string())?;
            let (record, loaded) = store_and_validate(&store, &bundle, &uploaded_by, &engine)
                .map_err(|e| e.to_string())?;
            if record.plaintext_sha256 != expected {
                let _ = store.remove(&m.name, &m.version);
                return Err(format!(
                    "content sha256 {} differs from the registry's {expected}",
                    record.plaintext_sha256
                ));
            }
            Ok(loaded)
        })
        .await
        .map_err(|e| format!("verification thread failed: {e}"))?
    }

    /// Streams `holder`'s sealed copy into `dest`; returns its SHA-256, checked against
    /// what the sender announced.
    async fn fetch_from(
        &self,
        holder: NodeId,
        model: &ModelRef,
        dest: &Path,
    ) -> Result<String, String> {
        let node = self
            .cluster
            .metrics()
            .membership_config
            .membership()
            .get_node(&holder)
            .cloned()
            .ok_or("not a member")?;
        let channels = self
            .cluster
            .peers
            .channels(holder, &node)
            .map_err(|e| e.to_string())?;
        let mut stream = PeerClient::new(channels.bulk)
            .fetch_artifact(FetchArtifactRequest {
                name: model.name.clone(),
                version: model.version.clone(),
                from_node: self.cluster.id,
            })
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?
            .into_inner();
        let meta = match stream.next().await {
            Some(Ok(c)) => match c.part {
                Some(Part::Metadata(m)) => m,
                _ => return Err("the stream did not start with metadata".into()),
            },
            Some(Err(s)) => return Err(format!("{}: {}", s.code(), s.message())),
            None => return Err("empty stream".into()),
        };
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| format!("staging: {e}"))?;
        let (mut hasher, mut size) = (Sha256::new(), 0u64);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|s| format!("{}: {}", s.code(), s.message()))?;
            let Some(Part::Data(data)) = chunk.part else {
                return Err("metadata repeated mid-stream".into());
            };
            size += data.len() as u64;
            if size > meta.size {
                return Err(format!("sent more than the announced {} bytes", meta.size));
            }
            hasher.update(&data);
            file.write_all(&data)
                .await
                .map_err(|e| format!("staging: {e}"))?;
        }
        file.sync_all().await.map_err(|e| format!("staging: {e}"))?;
        let sha = hex::encode(hasher.finalize());
        if size != meta.size || sha != meta.sha256 {
            return Err(format!(
                "transfer damaged: got {size} bytes with sha256 {sha}, announced {} bytes {}",
                meta.size, meta.sha256
            ));
        }
        Ok(sha)
    }

    /// Reports ReportUnloaded for every version the applied registry counts ready here but
    /// this node does not hold in memory.
    async fn report_unloaded(&self) {
        let registry = self.cluster.applied().registry.clone();
        let Some(mine) = registry.ready.get(&self.cluster.id) else {
            return;
        };
        let loaded = self.cluster.local.loaded_versions();
        let gone: Vec<ModelRef> = mine
            .iter()
            .filter(|m| !loaded.contains(m))
            .cloned()
            .collect();
        for model in gone {
            self.report(Command::ReportUnloaded {
                node: self.cluster.id,
                model,
            })
            .await;
        }
    }

    /// Keeps the store's own active/previous pointers on the registry's, so retention never
    /// removes them and a backup records what the cluster serves.
    fn mirror_active(&self, registry: &Registry) {
        let Some(active) = &registry.active else {
            return;
        };
        let stored = self.store.active();
        let same = stored
            .as_ref()
            .is_some_and(|s| s.name == active.model.name && s.version == active.model.version);
        if !same
            && self
                .store
                .get(&active.model.name, &active.model.version)
                .is_some()
        {
            if let Err(e) = self
                .store
                .set_active(&active.model.name, &active.model.version)
            {
                tracing::warn!(error = %e, "could not record the active version in the store");
            }
        }
    }

    async fn report(&self, cmd: Command) {
        // A report lost to a leader change is sent again on the next pass (the registry
        // still lacks it).
        if let Err(e) = self.cluster.propose(cmd).await {
            tracing::warn!(error = %e, "could not report to the registry");
        }
    }
}
