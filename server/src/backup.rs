//! Backups of the model store to an object store (a local directory by default, through
//! the `object_store` crate), full or incremental, and always verifiable.
//!
//! ```text
//! <target>/artifacts/<sha256>                   artifacts, shared by every backup
//! <target>/backups/<id>/manifest.json           the store manifest and every artifact it needs
//! <target>/backups/<id>/manifest.json.sha256    SHA-256 of manifest.json
//! ```
//!
//! Artifacts are immutable and named by their SHA-256, so "does the previous backup have
//! this file" is exact: an incremental backup copies only the artifacts its parent lacks,
//! and every backup's manifest still lists all it needs, so any one restores alone.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rankd_artifact::store::{ARTIFACTS_DIR, MANIFEST_FILE};
use rankd_artifact::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup target {target}: {source}")]
    Target {
        target: String,
        #[source]
        source: object_store::Error,
    },
    #[error("backup {id}: {file} is damaged: {reason}")]
    Damaged {
        id: String,
        file: String,
        reason: String,
    },
    #[error("backup {0} does not exist")]
    NotFound(String),
    #[error("restore: {0}")]
    Restore(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] rankd_artifact::StoreError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Full,
    Incremental,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactEntry {
    pub sha256: String,
    pub size: u64,
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format_version: u32,
    pub id: String,
    pub kind: Kind,
    pub parent: Option<String>,
    pub node_id: String,
    pub created_at: u64,
    /// The store manifest (`store.json`) as it was at the snapshot.
    pub store: serde_json::Value,
    pub artifacts: Vec<ArtifactEntry>,
    /// Artifacts this backup copied (the others were already in the target).
    pub copied: Vec<String>,
}

pub struct BackupTarget {
    name: String,
    store: Arc<dyn ObjectStore>,
}

impl BackupTarget {
    /// Opens `backup.target`: `s3://bucket/prefix` (S3 or an S3-compatible store;
    /// credentials, region and endpoint from the usual `AWS_*` environment variables), or
    /// a directory, optionally written `file:///path`.
    pub fn open(target: &str) -> Result<BackupTarget, BackupError> {
        if let Some(rest) = target.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|source| BackupError::Target {
                    target: target.to_string(),
                    source,
                })?;
            let store: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(
                    s3,
                    prefix.trim_matches('/'),
                ))
            };
            return Ok(BackupTarget {
                name: target.to_string(),
                store,
            });
        }
        if let Some((scheme, _)) = target.split_once("://").filter(|(s, _)| *s != "file") {
            return Err(BackupError::Restore(format!(
                "backup target {target}: scheme {scheme:?} is not supported (use a directory, file:// or s3://)"
            )));
        }
        BackupTarget::local(Path::new(target.strip_prefix("file://").unwrap_or(target)))
    }

    /// A directory target (created if missing).
    pub fn local(dir: &Path) -> Result<BackupTarget, BackupError> {
        let name = dir.display().to_string();
        std::fs::create_dir_all(dir).map_err(|e| BackupError::Target {
            target: name.clone(),
            source: object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            },
        })?;
        let store =
            LocalFileSystem::new_with_prefix(dir).map_err(|source| BackupError::Target {
                target: name.clone(),
                source,
            })?;
        Ok(BackupTarget {
            name,
            store: Arc::new(store),
        })
    }

    fn err(&self) -> impl FnOnce(object_store::Error) -> BackupError + '_ {
        move |source| BackupError::Target {
            target: self.name.clone(),
            source,
        }
    }

    /// Backs up `store`: every artifact a full backup, or those the newest backup lacks.
    pub async fn create(
        &self,
        store: &Store,
        kind: Kind,
        node_id: &str,
    ) -> Result<BackupManifest, BackupError> {
        let (store_json, records) = store.snapshot()?;
        let parent = match kind {
            Kind::Full => None,
            Kind::Incremental => self.list().await?.pop(),
        };
        let have: std::collections::HashSet<String> = match &parent {
            Some(p) => p.artifacts.iter().map(|a| a.sha256.clone()).collect(),
            None => Default::default(),
        };
        let mut copied = Vec::new();
        for r in &records {
            if !have.contains(&r.sha256) {
                self.upload(&store.artifact_file(&r.sha256), &artifact_path(&r.sha256))
                    .await?;
                copied.push(r.sha256.clone());
            }
        }
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let manifest = BackupManifest {
            format_version: 1,
            id: format!(
                "{created_at:024}-{}",
                if kind == Kind::Full { "full" } else { "incr" }
            ),
            kind,
            parent: parent.map(|p| p.id),
            node_id: node_id.to_string(),
            created_at: (created_at / 1_000_000_000) as u64,
            store: serde_json::from_slice(&store_json)
                .map_err(|e| BackupError::Restore(e.to_string()))?,
            artifacts: records
                .iter()
                .map(|r| ArtifactEntry {
                    sha256: r.sha256.clone(),
                    size: r.size,
                    name: r.name.clone(),
                    version: r.version.clone(),
                })
                .collect(),
            copied,
        };
        let bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| BackupError::Restore(e.to_string()))?;
        let digest = hex::encode(Sha256::digest(&bytes));
        // The manifest last: a backup without one does not exist.
        self.store
            .put(
                &manifest_path(&manifest.id, true),
                PutPayload::from(digest.into_bytes()),
            )
            .await
            .map_err(self.err())?;
        self.store
            .put(&manifest_path(&manifest.id, false), PutPayload::from(bytes))
            .await
            .map_err(self.err())?;
        Ok(manifest)
    }

    /// Every complete backup, oldest first.
    pub async fn list(&self) -> Result<Vec<BackupManifest>, BackupError> {
        let listing = self
            .store
            .list_with_delimiter(Some(&ObjPath::from("backups")))
            .await
            .map_err(self.err())?;
        let mut out = Vec::new();
        for prefix in listing.common_prefixes {
            let Some(id) = prefix.filename() else {
                continue;
            };
            if let Ok(m) = self.read_manifest(id).await {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Re-reads everything the backup needs and checks every SHA-256; the error names the
    /// first bad file.
    pub async fn verify(&self, id: &str) -> Result<BackupManifest, BackupError> {
        let manifest = self.read_manifest(id).await?;
        for a in &manifest.artifacts {
            let file = format!("artifacts/{}", a.sha256);
            let damaged = |reason: String| BackupError::Damaged {
                id: id.to_string(),
                file: file.clone(),
                reason,
            };
            let (sha, size) = self
                .hash_object(&artifact_path(&a.sha256))
                .await
                .map_err(|e| damaged(e.to_string()))?;
            if size != a.size {
                return Err(damaged(format!("{size} bytes, expected {}", a.size)));
            }
            if sha != a.sha256 {
                return Err(damaged(format!("sha256 {sha}")));
            }
        }
        Ok(manifest)
    }

    /// Restores backup `id` into `data_dir`, which must be missing or empty. Everything is
    /// verified before the first byte is written.
    pub async fn restore(&self, id: &str, data_dir: &Path) -> Result<BackupManifest, BackupError> {
        if std::fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(BackupError::Restore(format!(
                "{} is not empty; restore only into an empty data directory",
                data_dir.display()
            )));
        }
        let manifest = self.verify(id).await?;
        let artifacts = data_dir.join(ARTIFACTS_DIR);
        std::fs::create_dir_all(&artifacts).map_err(|e| BackupError::Restore(e.to_string()))?;
        for a in &manifest.artifacts {
            let dest = artifacts.join(&a.sha256);
            self.download(&artifact_path(&a.sha256), &dest).await?;
            let sha = rankd_artifact::file::sha256_file(&dest)
                .map_err(|e| BackupError::Restore(e.to_string()))?;
            if sha != a.sha256 {
                return Err(BackupError::Restore(format!(
                    "artifacts/{} changed while restoring",
                    a.sha256
                )));
            }
        }
        let store_json = serde_json::to_vec_pretty(&manifest.store)
            .map_err(|e| BackupError::Restore(e.to_string()))?;
        let tmp = data_dir.join(format!("{MANIFEST_FILE}.tmp"));
        std::fs::write(&tmp, store_json)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, data_dir.join(MANIFEST_FILE)))
            .map_err(|e| BackupError::Restore(e.to_string()))?;
        Ok(manifest)
    }

    async fn read_manifest(&self, id: &str) -> Result<BackupManifest, BackupError> {
        let get = |p: ObjPath| async move { self.store.get(&p).await?.bytes().await };
        let bytes = get(manifest_path(id, false)).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => BackupError::NotFound(id.to_string()),
            source => BackupError::Target {
                target: self.name.clone(),
                source,
            },
        })?;
        let damaged = |reason: String| BackupError::Damaged {
            id: id.to_string(),
            file: "manifest.json".into(),
            reason,
        };
        let recorded = get(manifest_path(id, true))
            .await
            .map_err(|e| damaged(e.to_string()))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if recorded.as_ref() != actual.as_bytes() {
            return Err(damaged(format!(
                "sha256 {actual} differs from the recorded one"
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))
    }

    async fn upload(&self, src: &Path, dest: &ObjPath) -> Result<(), BackupError> {
        let mut file = tokio::fs::File::open(src)
            .await
            .map_err(|e| BackupError::Restore(format!("reading {}: {e}", src.display())))?;
        let mut writer = object_store::buffered::BufWriter::new(self.store.clone(), dest.clone());
        let io = |context: String| move |source| BackupError::Io { context, source };
        if let Err(e) = tokio::io::copy(&mut file, &mut writer).await {
            // Drop the half-written upload rather than leave it behind.
            let _ = writer.abort().await;
            return Err(io(format!("copying {} to {dest}", src.display()))(e));
        }
        writer
            .shutdown()
            .await
            .map_err(io(format!("finishing {dest}")))
    }

    async fn download(&self, src: &ObjPath, dest: &Path) -> Result<(), BackupError> {
        let mut stream = self.store.get(src).await.map_err(self.err())?.into_stream();
        let mut out = tokio::fs::File::create(dest)
            .await
            .map_err(|e| BackupError::Restore(format!("creating {}: {e}", dest.display())))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(self.err())?;
            out.write_all(&chunk)
                .await
                .map_err(|e| BackupError::Restore(format!("writing {}: {e}", dest.display())))?;
        }
        out.sync_all()
            .await
            .map_err(|e| BackupError::Restore(format!("syncing {}: {e}", dest.display())))
    }

    async fn hash_object(&self, path: &ObjPath) -> Result<(String, u64), object_store::Error> {
        let mut stream = self.store.get(path).await?.into_stream();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((hex::encode(hasher.finalize()), size))
    }
}

fn artifact_path(sha256: &str) -> ObjPath {
    ObjPath::from(format!("artifacts/{sha256}"))
}

fn manifest_path(id: &str, digest: bool) -> ObjPath {
    ObjPath::from(format!(
        "backups/{id}/manifest.json{}",
        if digest { ".sha256" } else { "" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_each_kind_of_target() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a");
        BackupTarget::open(&plain.display().to_string()).unwrap();
        assert!(plain.is_dir());
        let url = format!("file://{}", dir.path().join("b").display());
        BackupTarget::open(&url).unwrap();
        assert!(dir.path().join("b").is_dir());
        // Building an S3 client does no I/O; requests would use the AWS_* settings.
        let s3 = BackupTarget::open("s3://rankd-backups/cluster-a/").unwrap();
        assert_eq!(s3.name, "s3://rankd-backups/cluster-a/");
        let err = BackupTarget::open("ftp://host/x").err().unwrap();
        assert!(
            err.to_string().contains("\"ftp\" is not supported"),
            "{err}"
        );
    }
}
