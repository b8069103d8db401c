//! The registry state machine: in memory, rebuilt on start from the snapshot plus the log.
//!
//! # Invariants
//! - **Persistent snapshot, volatile state.** `apply` changes only memory; what survives a
//!   restart is the last snapshot (stored durably in the redb file) plus the committed log
//!   after it, which openraft re-applies on start because [`crate::log_store::LogStore`]
//!   persists the committed log id. So `apply` must stay deterministic (see
//!   [`crate::registry`]): replaying the same entries must rebuild the same registry.
//! - **Observers see applied state only, in order.** The watch channel and the
//!   [`ApplyHook`] are fed while the state lock is held, so no observer ever sees a state
//!   older than one it already saw, or a state that was not applied.
//! - **All or nothing on install.** A snapshot is decoded and checked against its meta before
//!   anything changes; a corrupt one is refused with the old state kept. It is persisted
//!   before memory is replaced, so a crash in between restarts from the new snapshot.

mod snapshot;

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, StorageIOError};
use redb::Database;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::RaftStoreError;
use crate::log_store::blocking;
use crate::registry::{Command, Outcome, Registry};
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// Everything the state machine holds. Its JSON is the snapshot payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub registry: Registry,
}

/// Called synchronously while applying, so it must be quick (pointer swaps, channel sends).
pub trait ApplyHook: Send + Sync + 'static {
    fn applied(
        &self,
        registry: &Registry,
        log_id: &LogId,
        command: Option<&Command>,
        outcome: &Outcome,
    );
    /// The whole state was replaced from a snapshot (install, or start-up).
    fn reset(&self, registry: &Registry);
}

/// openraft's state machine over the registry.
pub struct StateMachine {
    db: Arc<Database>,
    state: Arc<RwLock<AppliedState>>,
    /// Makes snapshot ids unique even when two snapshots cover the same log id.
    snapshot_seq: Arc<AtomicU64>,
    hook: Option<Arc<dyn ApplyHook>>,
    published: watch::Sender<Arc<AppliedState>>,
}

/// Builds snapshots of the state it was taken from; runs beside the state machine.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    state: Arc<RwLock<AppliedState>>,
    snapshot_seq: Arc<AtomicU64>,
}

fn poisoned() -> RaftStoreError {
    // Only a panicking hook can poison the lock, half-way through a batch: the state is no
    // longer known to be a function of the log, so refuse to go on.
    RaftStoreError::Db("state machine lock poisoned by a panic while applying".to_string())
}

fn read(state: &RwLock<AppliedState>) -> Result<RwLockReadGuard<'_, AppliedState>, RaftStoreError> {
    state.read().map_err(|_| poisoned())
}

fn write(
    state: &RwLock<AppliedState>,
) -> Result<RwLockWriteGuard<'_, AppliedState>, RaftStoreError> {
    state.write().map_err(|_| poisoned())
}

fn sm_read_err(e: RaftStoreError) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write_err(e: RaftStoreError) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachine {
    /// Starts from the stored snapshot, or empty. Blocking: called from [`crate::log_store::open`].
    pub(crate) fn load(
        db: Arc<Database>,
        hook: Option<Arc<dyn ApplyHook>>,
    ) -> Result<StateMachine, RaftStoreError> {
        let (state, next_seq) = match snapshot::load(&db)? {
            Some((meta, data)) => (
                snapshot::decode_state(&meta, &data)?,
                snapshot::next_seq(&meta),
            ),
            None => (AppliedState::default(), 0),
        };
        if let Some(hook) = &hook {
            hook.reset(&state.registry);
        }
        let (published, _) = watch::channel(Arc::new(state.clone()));
        Ok(StateMachine {
            db,
            state: Arc::new(RwLock::new(state)),
            snapshot_seq: Arc::new(AtomicU64::new(next_seq)),
            hook,
            published,
        })
    }

    /// The applied state after every batch, starting with the state loaded at open.
    pub fn subscribe(&self) -> watch::Receiver<Arc<AppliedState>> {
        self.published.subscribe()
    }

    fn apply_batch(
        &self,
        entries: impl Iterator<Item = Entry>,
    ) -> Result<Vec<Outcome>, RaftStoreError> {
        let mut st = write(&self.state)?;
        let mut outcomes = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            st.last_applied = Some(log_id);
            let (command, outcome) = match entry.payload {
                EntryPayload::Blank => (None, Outcome::Applied { fence: None }),
                EntryPayload::Normal(cmd) => {
                    let outcome = st.registry.apply(log_id.leader_id.term, log_id.index, &cmd);
                    (Some(cmd), outcome)
                }
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(log_id), m);
                    (None, Outcome::Applied { fence: None })
                }
            };
            if let Some(hook) = &self.hook {
                hook.applied(&st.registry, &log_id, command.as_ref(), &outcome);
            }
            outcomes.push(outcome);
        }
        self.published.send_replace(Arc::new(st.clone()));
        Ok(outcomes)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let st = read(&self.state).map_err(sm_read_err)?;
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_batch(entries.into_iter()).map_err(sm_write_err)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            state: self.state.clone(),
            snapshot_seq: self.snapshot_seq.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let new = snapshot::decode_state(meta, &data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let (db, stored_meta) = (self.db.clone(), meta.clone());
        // openraft only installs a snapshot newer than what it has applied: store it as is.
        blocking(move || snapshot::save(&db, &stored_meta, &data, false))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;

        let mut st = write(&self.state).map_err(sm_write_err)?;
        *st = new;
        tracing::info!(snapshot = %meta.snapshot_id, last_applied = ?meta.last_log_id,
            "installed a registry snapshot from the leader");
        if let Some(hook) = &self.hook {
            hook.reset(&st.registry);
        }
        self.published.send_replace(Arc::new(st.clone()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let db = self.db.clone();
        let stored = blocking(move || snapshot::load(&db))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, data) = {
            let st = read(&self.state).map_err(sm_read_err)?;
            let data = crate::log_store::encode("snapshot", &*st).map_err(sm_read_err)?;
            let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let meta = SnapshotMeta {
                last_log_id: st.last_applied,
                last_membership: st.membership.clone(),
                snapshot_id: snapshot::id(st.last_applied.as_ref(), seq),
            };
            (meta, data)
        };
        let db = self.db.clone();
        let signature = meta.signature();
        // Built concurrently with applies and installs: never let an older build replace a
        // newer stored snapshot (an installed one has its log purged behind it).
        let (meta, data) = blocking(move || {
            snapshot::save(&db, &meta, &data, true)?;
            Ok((meta, data))
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
