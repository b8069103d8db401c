//! The artifact store in a node's data directory.
//!
//! ```text
//! <data_dir>/store.json             which versions exist, which is active (atomic rewrites)
//! <data_dir>/artifacts/<sha256>     encrypted artifacts, named by their own SHA-256
//! <data_dir>/quarantine/            artifacts whose bytes no longer match their record
//! <data_dir>/staging/               uploads and decrypted bundles in flight; emptied at open
//! ```
//!
//! Invariants:
//! - A version appears in `store.json` only after its artifact is durably in place, so a
//!   crash never leaves a record without a file (at worst an unreferenced file).
//! - Every checkout verifies the recorded SHA-256 of the artifact before decrypting it.
//! - Plaintext exists only under `staging/` (mode 0700) and only while a bundle is loaded.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::ArtifactError;
use crate::file::{open_bundle, reseal, seal_bundle, sha256_file, sync_dir};
use crate::keyring::Keyring;

const MANIFEST: &str = "store.json";
/// The store's files, as a backup restores them.
pub const MANIFEST_FILE: &str = MANIFEST;
pub const ARTIFACTS_DIR: &str = "artifacts";
static STAGING_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(
        "{name} version {version} is already stored with different content (sha256 {existing})"
    )]
    AlreadyExists {
        name: String,
        version: String,
        existing: String,
    },
    #[error("{name} version {version} is not in the store")]
    NotFound { name: String, version: String },
    #[error("{name} version {version} is quarantined: its artifact failed verification")]
    Quarantined { name: String, version: String },
    #[error("{name} version {version} is active or previous and cannot be removed")]
    InUse { name: String, version: String },
    #[error("store manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    Ready,
    Quarantined,
}

/// One stored model version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub name: String,
    pub version: String,
    /// SHA-256 of the artifact file; also its file name.
    pub sha256: String,
    /// SHA-256 of the packed plaintext bundle (identifies content across re-encryption).
    pub plaintext_sha256: String,
    pub size: u64,
    pub key_id: String,
    pub uploaded_by: String,
    /// Seconds since the Unix epoch.
    pub uploaded_at: u64,
    pub state: RecordState,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    format_version: u32,
    models: Vec<ModelRecord>,
    active: Option<ModelRef>,
    previous: Option<ModelRef>,
}

pub struct Store {
    dir: PathBuf,
    keyring: std::sync::RwLock<Arc<Keyring>>,
    segment_size: u32,
    manifest: Mutex<Manifest>,
}

/// A directory under `staging/`, removed with its contents when dropped.
pub struct Staged(PathBuf);

impl Staged {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A bundle decrypted into `staging/`, removed when dropped.
pub struct Checkout {
    dir: Staged,
    pub record: ModelRecord,
}

impl Checkout {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Result of re-verifying one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubResult {
    pub model: ModelRef,
    pub ok: bool,
    pub detail: String,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, and clears leftovers in `staging/`.
    pub fn open(dir: &Path, keyring: Arc<Keyring>, segment_size: u32) -> Result<Store, StoreError> {
        for sub in ["artifacts", "quarantine", "staging"] {
            create_private_dir(&dir.join(sub))?;
        }
        if let Ok(entries) = fs::read_dir(dir.join("staging")) {
            for e in entries.flatten() {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
        let path = dir.join(MANIFEST);
        let manifest = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Manifest {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest {
                format_version: 1,
                ..Manifest::default()
            },
            Err(e) => {
                return Err(StoreError::Manifest {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let store = Store {
            dir: dir.to_path_buf(),
            keyring: std::sync::RwLock::new(keyring),
            segment_size,
            manifest: Mutex::new(manifest),
        };
        store.remove_orphans()?;
        Ok(store)
    }

    /// The keyring in use (replaced by [`Store::set_keyring`] on rotation).
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_keyring(&self, keyring: Arc<Keyring>) {
        *self.keyring.write().unwrap_or_else(|p| p.into_inner()) = keyring;
    }

    /// Deletes artifact files no record points to: what a crash between writing an
    /// artifact and recording it (an upload, a rotation) leaves behind.
    fn remove_orphans(&self) -> Result<(), StoreError> {
        let referenced: std::collections::HashSet<String> = self
            .lock()
            .models
            .iter()
            .map(|r| r.sha256.clone())
            .collect();
        let dir = self.dir.join("artifacts");
        let entries =
            fs::read_dir(&dir).map_err(ArtifactError::io(format!("listing {}", dir.display())))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !referenced.contains(&name) {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// Re-encrypts every ready artifact not under the primary key, one at a time, each
    /// atomically: the new artifact is durable and recorded before the old one is removed,
    /// so the old one stays readable until then, and a crash at any point leaves a
    /// consistent store that a second run completes. Returns how many were rewritten.
    pub fn rotate(&self) -> Result<usize, StoreError> {
        let keyring = self.keyring();
        let primary = keyring.primary_id().to_string();
        let mut rotated = 0;
        for r in self.list() {
            if r.key_id == primary || r.state != RecordState::Ready {
                continue;
            }
            let stage = Staged(self.staging_dir("rotate")?);
            let staged = stage.0.join("artifact");
            let sealed = reseal(
                &self.artifact_path(&r.sha256),
                &r.sha256,
                &r.plaintext_sha256,
                &keyring,
                &r.name,
                &r.version,
                self.segment_size,
                &staged,
            )?;
            let dest = self.artifact_path(&sealed.sha256);
            fs::rename(&staged, &dest)
                .map_err(ArtifactError::io(format!("moving into {}", dest.display())))?;
            sync_dir(&dest)?;
            {
                let mut m = self.lock();
                if let Some(rec) = m
                    .models
                    .iter_mut()
                    .find(|x| x.name == r.name && x.version == r.version)
                {
                    rec.sha256 = sealed.sha256;
                    rec.size = sealed.size;
                    rec.key_id = sealed.key_id;
                }
                self.persist(&m)?;
            }
            let _ = fs::remove_file(self.artifact_path(&r.sha256));
            rotated += 1;
        }
        Ok(rotated)
    }

    /// A fresh private directory under `staging/` for an upload in flight.
    pub fn staging(&self, label: &str) -> Result<Staged, StoreError> {
        self.staging_dir(label).map(Staged)
    }

    fn staging_dir(&self, label: &str) -> Result<PathBuf, StoreError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seq = STAGING_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self
            .dir
            .join("staging")
            .join(format!("{label}-{}-{nanos}-{seq}", std::process::id()));
        create_private_dir(&dir)?;
        Ok(dir)
    }

    /// Seals `files` of `bundle_dir` into the store as `name`/`version`. Storing the same
    /// content again is a no-op that returns the existing record; other content under an
    /// existing version is refused.
    pub fn put(
        &self,
        bundle_dir: &Path,
        files: &[&str],
        name: &str,
        version: &str,
        uploaded_by: &str,
    ) -> Result<ModelRecord, StoreError> {
        // Sealed under staging/ and renamed into artifacts/ only once complete; the guard
        // removes whatever is left on any early return.
        let stage = Staged(self.staging_dir("seal")?);
        let staged = stage.0.join("artifact");
        let sealed = seal_bundle(
            bundle_dir,
            files,
            &self.keyring(),
            name,
            version,
            self.segment_size,
            &staged,
        )?;
        let mut m = self.lock();
        if let Some(existing) = m
            .models
            .iter()
            .find(|r| r.name == name && r.version == version)
        {
            if existing.plaintext_sha256 == sealed.plaintext_sha256 {
                return Ok(existing.clone());
            }
            return Err(StoreError::AlreadyExists {
                name: name.into(),
                version: version.into(),
                existing: existing.plaintext_sha256.clone(),
            });
        }
        let dest = self.artifact_path(&sealed.sha256);
        fs::rename(&staged, &dest)
            .map_err(ArtifactError::io(format!("moving into {}", dest.display())))?;
        sync_dir(&dest)?;
        let record = ModelRecord {
            name: name.into(),
            version: version.into(),
            sha256: sealed.sha256,
            plaintext_sha256: sealed.plaintext_sha256,
            size: sealed.size,
            key_id: sealed.key_id,
            uploaded_by: uploaded_by.into(),
            uploaded_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            state: RecordState::Ready,
        };
        m.models.push(record.clone());
        self.persist(&m)?;
        Ok(record)
    }

    /// Deletes a version that is neither active nor previous (e.g. one that failed
    /// validation right after it was stored).
    pub fn remove(&self, name: &str, version: &str) -> Result<(), StoreError> {
        let mut m = self.lock();
        let is = |r: &Option<ModelRef>| {
            r.as_ref()
                .is_some_and(|r| r.name == name && r.version == version)
        };
        if is(&m.active) || is(&m.previous) {
            return Err(StoreError::InUse {
                name: name.into(),
                version: version.into(),
            });
        }
        let Some(pos) = m
            .models
            .iter()
            .position(|r| r.name == name && r.version == version)
        else {
            return Err(StoreError::NotFound {
                name: name.into(),
                version: version.into(),
            });
        };
        let record = m.models.remove(pos);
        self.persist(&m)?;
        // The record is gone first: a crash here leaves an unreferenced file, never a
        // record without its file.
        let _ = fs::remove_file(self.artifact_path(&record.sha256));
        Ok(())
    }

    /// Forgets a quarantined version's record (its file stays in `quarantine/` for
    /// inspection) so a verified copy can be stored in its place, even when it is the
    /// active or previous version: the pointers name the version, not the file. Returns
    /// whether a record was dropped; a ready record is never touched.
    pub fn drop_quarantined(&self, name: &str, version: &str) -> Result<bool, StoreError> {
        let mut m = self.lock();
        let Some(pos) = m.models.iter().position(|r| {
            r.name == name && r.version == version && r.state == RecordState::Quarantined
        }) else {
            return Ok(false);
        };
        m.models.remove(pos);
        self.persist(&m)?;
        Ok(true)
    }

    /// Removes the oldest versions beyond the newest `retain` that are neither active nor
    /// previous (those two are never removed). Returns what was removed.
    pub fn gc(&self, retain: usize) -> Result<Vec<ModelRef>, StoreError> {
        let (active, previous) = (self.active(), self.previous());
        let is = |r: &ModelRecord, m: &Option<ModelRef>| {
            m.as_ref()
                .is_some_and(|m| m.name == r.name && m.version == r.version)
        };
        let mut candidates: Vec<ModelRecord> = self
            .list()
            .into_iter()
            .filter(|r| !is(r, &active) && !is(r, &previous))
            .collect();
        // Newest first; the stable sort keeps upload order among equal timestamps.
        candidates.reverse();
        candidates.sort_by_key(|r| std::cmp::Reverse(r.uploaded_at));
        let mut removed = Vec::new();
        for r in candidates.into_iter().skip(retain) {
            self.remove(&r.name, &r.version)?;
            removed.push(ModelRef {
                name: r.name,
                version: r.version,
            });
        }
        Ok(removed)
    }

    /// The manifest's bytes and records as of one instant, for a consistent backup.
    pub fn snapshot(&self) -> Result<(Vec<u8>, Vec<ModelRecord>), StoreError> {
        let m = self.lock();
        let bytes = serde_json::to_vec_pretty(&*m).map_err(|e| StoreError::Manifest {
            path: self.dir.join(MANIFEST),
            reason: e.to_string(),
        })?;
        Ok((bytes, m.models.clone()))
    }

    /// Where the artifact with this SHA-256 lives.
    pub fn artifact_file(&self, sha256: &str) -> PathBuf {
        self.artifact_path(sha256)
    }

    pub fn list(&self) -> Vec<ModelRecord> {
        self.lock().models.clone()
    }

    pub fn get(&self, name: &str, version: &str) -> Option<ModelRecord> {
        self.lock()
            .models
            .iter()
            .find(|r| r.name == name && r.version == version)
            .cloned()
    }

    pub fn active(&self) -> Option<ModelRef> {
        self.lock().active.clone()
    }

    pub fn previous(&self) -> Option<ModelRef> {
        self.lock().previous.clone()
    }

    /// Verifies and decrypts `name`/`version` into a private staging directory.
    pub fn checkout(&self, name: &str, version: &str) -> Result<Checkout, StoreError> {
        let record = self
            .get(name, version)
            .ok_or_else(|| StoreError::NotFound {
                name: name.into(),
                version: version.into(),
            })?;
        if record.state == RecordState::Quarantined {
            return Err(StoreError::Quarantined {
                name: name.into(),
                version: version.into(),
            });
        }
        let checkout = Checkout {
            dir: self.staging("checkout")?,
            record,
        };
        open_bundle(
            &self.artifact_path(&checkout.record.sha256),
            &checkout.record.sha256,
            &self.keyring(),
            name,
            version,
            checkout.dir(),
        )?;
        Ok(checkout)
    }

    /// Records `name`/`version` as active; the old active version becomes previous.
    pub fn set_active(&self, name: &str, version: &str) -> Result<(), StoreError> {
        let mut m = self.lock();
        if !m
            .models
            .iter()
            .any(|r| r.name == name && r.version == version)
        {
            return Err(StoreError::NotFound {
                name: name.into(),
                version: version.into(),
            });
        }
        let new = ModelRef {
            name: name.into(),
            version: version.into(),
        };
        if m.active.as_ref() != Some(&new) {
            m.previous = m.active.replace(new);
            self.persist(&m)?;
        }
        Ok(())
    }

    /// Re-hashes every ready artifact; a mismatch moves the file to `quarantine/` and marks
    /// the record so it is never loaded.
    pub fn scrub(&self) -> Vec<ScrubResult> {
        let records = self.list();
        let mut results = Vec::with_capacity(records.len());
        for r in records
            .into_iter()
            .filter(|r| r.state == RecordState::Ready)
        {
            let path = self.artifact_path(&r.sha256);
            let outcome = sha256_file(&path)
                .map_err(|e| e.to_string())
                .and_then(|actual| {
                    if actual == r.sha256 {
                        Ok(())
                    } else {
                        Err(format!("sha256 is {actual}, recorded {}", r.sha256))
                    }
                });
            let model = ModelRef {
                name: r.name.clone(),
                version: r.version.clone(),
            };
            match outcome {
                Ok(()) => results.push(ScrubResult {
                    model,
                    ok: true,
                    detail: "verified".into(),
                }),
                Err(detail) => {
                    let _ = fs::rename(&path, self.dir.join("quarantine").join(&r.sha256));
                    let mut m = self.lock();
                    if let Some(rec) = m
                        .models
                        .iter_mut()
                        .find(|x| x.name == r.name && x.version == r.version)
                    {
                        rec.state = RecordState::Quarantined;
                    }
                    let _ = self.persist(&m);
                    results.push(ScrubResult {
                        model,
                        ok: false,
                        detail,
                    });
                }
            }
        }
        results
    }

    #[cfg(test)]
    fn staging_is_empty_for_tests(&self) -> bool {
        fs::read_dir(self.dir.join("staging"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    }

    fn artifact_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("artifacts").join(sha256)
    }

    fn lock(&self) -> MutexGuard<'_, Manifest> {
        // A panic while holding the lock cannot leave the manifest half-updated in memory:
        // every mutation is followed by `persist` of the whole value.
        self.manifest.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, m: &Manifest) -> Result<(), StoreError> {
        let path = self.dir.join(MANIFEST);
        let tmp = self.dir.join(format!("{MANIFEST}.tmp"));
        let bytes = serde_json::to_vec_pretty(m).map_err(|e| StoreError::Manifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_synced(&tmp, &bytes)?;
        fs::rename(&tmp, &path)
            .map_err(ArtifactError::io(format!("renaming {}", path.display())))?;
        sync_dir(&path)?;
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    use std::io::Write;
    let mut f = fs::File::create(path)
        .map_err(ArtifactError::io(format!("creating {}", path.display())))?;
    f.write_all(bytes)
        .map_err(ArtifactError::io(format!("writing {}", path.display())))?;
    f.sync_all()
        .map_err(ArtifactError::io(format!("syncing {}", path.display())))
}

fn create_private_dir(path: &Path) -> Result<(), ArtifactError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(ArtifactError::io(format!("creating {}", path.display())))
}

#[cfg(test)]
mod tests;
