//! The Raft log, the vote and the committed log id, persisted in one redb file.
//!
//! The same file also holds the state machine's snapshot (see [`crate::state_machine`]):
//! [`open`] opens it once and shares the [`Database`] between [`LogStore`] and
//! [`StateMachine`]. redb runs one write transaction at a time, so the two halves never
//! interleave a commit.
//!
//! # Invariants
//! - **Durable before acknowledged.** Every write (append, vote, committed, truncate, purge)
//!   commits its own redb transaction with [`Durability::Immediate`] (fsync) before the method
//!   returns and before `append` reports its entries flushed. A vote or an entry this node
//!   acknowledged must survive a crash, or the node could vote twice in one term or lose an
//!   entry a quorum counted on.
//! - **No holes.** Append, truncate and purge each change the log in one transaction, so a
//!   crash leaves the log wholly before or wholly after the change; openraft only looks at the
//!   last log id, so a gap would go unnoticed and corrupt replication.
//! - **Nothing read from disk is trusted.** A record that does not decode is reported as a
//!   storage error (openraft then stops the node) rather than a panic.
//! - The committed log id is persisted, so on start openraft re-applies the committed entries
//!   after the snapshot and the in-memory state machine comes back to where it was.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError};
use redb::{
    Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::RaftStoreError;
use crate::state_machine::{ApplyHook, StateMachine};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Log index -> JSON of the [`Entry`].
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// [`VOTE`], [`COMMITTED`], [`LAST_PURGED`] -> JSON.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The state machine's current snapshot (keys owned by [`crate::state_machine`]).
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// Opens (or creates) the redb file at `path` and returns both halves of the storage.
///
/// The state machine starts from the stored snapshot, if any; `hook.reset` is called with
/// that registry before this returns, so the hook's owner sees the start-up state.
pub fn open(
    path: &Path,
    hook: Option<Arc<dyn ApplyHook>>,
) -> Result<(LogStore, StateMachine), RaftStoreError> {
    let db = Database::create(path).map_err(|e| RaftStoreError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let db = Arc::new(db);
    // Create every table up front, so a reader never meets a missing table.
    let txn = begin_durable(&db)?;
    txn.open_table(LOG).map_err(db_err)?;
    txn.open_table(META).map_err(db_err)?;
    txn.open_table(SNAPSHOT).map_err(db_err)?;
    txn.commit().map_err(db_err)?;

    let committed: Option<LogId> = read_meta(&db, COMMITTED)?;
    let log = LogStore {
        db: db.clone(),
        committed: Arc::new(AtomicU64::new(committed.map_or(0, |c| c.index))),
    };
    let sm = StateMachine::load(db, hook)?;
    Ok((log, sm))
}

/// The Raft log and vote. Cloning is cheap and shares the database: a clone is the
/// [`RaftLogStorage::LogReader`] handed to replication tasks.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The index of the last committed log id saved, 0 if none. Updated only after the save
    /// is durable, so it never runs ahead of what a restart would read back.
    committed: Arc<AtomicU64>,
}

impl LogStore {
    /// The latest saved committed index (0 if none), for display on any node, followers
    /// included. Read it with `load(Ordering::Acquire)`.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }
}

// ----- redb helpers, shared with the state machine -----

pub(crate) fn db_err(e: impl Into<redb::Error>) -> RaftStoreError {
    RaftStoreError::Db(e.into().to_string())
}

/// A write transaction that fsyncs on commit (redb's default, made explicit because the
/// whole storage contract depends on it).
pub(crate) fn begin_durable(db: &Database) -> Result<WriteTransaction, RaftStoreError> {
    let mut txn = db.begin_write().map_err(db_err)?;
    txn.set_durability(Durability::Immediate).map_err(db_err)?;
    Ok(txn)
}

pub(crate) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, RaftStoreError> {
    serde_json::to_vec(value).map_err(|e| RaftStoreError::Db(format!("encoding {what}: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, RaftStoreError> {
    serde_json::from_slice(bytes).map_err(|e| RaftStoreError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// Runs blocking redb work (reads, fsyncs) off the async worker threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, RaftStoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, RaftStoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RaftStoreError::Db(format!("storage task failed: {e}")))?
}

fn get_json<T: DeserializeOwned>(
    table: &ReadOnlyTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, RaftStoreError> {
    match table.get(key).map_err(db_err)? {
        None => Ok(None),
        Some(v) => decode(key, v.value()).map(Some),
    }
}

fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, RaftStoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let table = txn.open_table(META).map_err(db_err)?;
    get_json(&table, key)
}

/// Sets (or, with `None`, removes) one meta record durably.
fn write_meta<T: Serialize>(
    db: &Database,
    key: &str,
    value: Option<&T>,
) -> Result<(), RaftStoreError> {
    let bytes = value.map(|v| encode(key, v)).transpose()?;
    let txn = begin_durable(db)?;
    {
        let mut table = txn.open_table(META).map_err(db_err)?;
        match &bytes {
            Some(b) => table.insert(key, b.as_slice()).map(drop),
            None => table.remove(key).map(drop),
        }
        .map_err(db_err)?;
    }
    txn.commit().map_err(db_err)
}

fn entry_what(index: u64) -> String {
    format!("log entry {index}")
}

/// `range` as inclusive bounds, or `None` when it is empty.
fn inclusive(range: &impl RangeBounds<u64>) -> Option<(u64, u64)> {
    let lo = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let hi = match range.end_bound() {
        Bound::Included(&e) => e,
        Bound::Excluded(&e) => e.checked_sub(1)?,
        Bound::Unbounded => u64::MAX,
    };
    (lo <= hi).then_some((lo, hi))
}

fn read_entries(db: &Database, lo: u64, hi: u64) -> Result<Vec<Entry>, RaftStoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let table = txn.open_table(LOG).map_err(db_err)?;
    let mut out = Vec::new();
    for row in table.range(lo..=hi).map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        out.push(decode(&entry_what(k.value()), v.value())?);
    }
    Ok(out)
}

fn log_state(db: &Database) -> Result<LogState<TypeConfig>, RaftStoreError> {
    // One read transaction, so the purge point and the last entry are from the same commit.
    let txn = db.begin_read().map_err(db_err)?;
    let last_purged: Option<LogId> = get_json(&txn.open_table(META).map_err(db_err)?, LAST_PURGED)?;
    let log = txn.open_table(LOG).map_err(db_err)?;
    let last = match log.last().map_err(db_err)? {
        Some((k, v)) => Some(decode::<Entry>(&entry_what(k.value()), v.value())?.log_id),
        None => last_purged,
    };
    Ok(LogState {
        last_purged_log_id: last_purged,
        last_log_id: last,
    })
}

fn append_rows(db: &Database, rows: &[(u64, Vec<u8>)]) -> Result<(), RaftStoreError> {
    let txn = begin_durable(db)?;
    {
        let mut table = txn.open_table(LOG).map_err(db_err)?;
        for (index, bytes) in rows {
            table.insert(*index, bytes.as_slice()).map_err(db_err)?;
        }
    }
    txn.commit().map_err(db_err)
}

/// Deletes every entry from `since` on: a conflicting suffix the leader overwrites.
fn truncate_from(db: &Database, since: u64) -> Result<(), RaftStoreError> {
    let txn = begin_durable(db)?;
    {
        let mut table = txn.open_table(LOG).map_err(db_err)?;
        table.retain_in(since.., |_, _| false).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)
}

/// Records `upto` as purged and deletes every entry up to it, in one transaction, so the log
/// state never claims entries that are gone or keeps entries behind the purge point.
fn purge_upto(db: &Database, upto: LogId) -> Result<(), RaftStoreError> {
    let txn = begin_durable(db)?;
    {
        let mut meta = txn.open_table(META).map_err(db_err)?;
        let current: Option<LogId> = match meta.get(LAST_PURGED).map_err(db_err)? {
            Some(v) => Some(decode(LAST_PURGED, v.value())?),
            None => None,
        };
        // The purge point only moves forward, even if asked to go back.
        if current.is_none_or(|c| c < upto) {
            let bytes = encode(LAST_PURGED, &upto)?;
            meta.insert(LAST_PURGED, bytes.as_slice()).map_err(db_err)?;
        }
        let mut log = txn.open_table(LOG).map_err(db_err)?;
        log.retain_in(..=upto.index, |_, _| false).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)
}

// ----- openraft error mapping -----

fn read_logs_err(e: RaftStoreError) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_logs_err(e: RaftStoreError) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

fn read_vote_err(e: RaftStoreError) -> StorageError {
    StorageIOError::read_vote(&e).into()
}

fn write_vote_err(e: RaftStoreError) -> StorageError {
    StorageIOError::write_vote(&e).into()
}

fn read_err(e: RaftStoreError) -> StorageError {
    StorageIOError::read(&e).into()
}

fn write_err(e: RaftStoreError) -> StorageError {
    StorageIOError::write(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let Some((lo, hi)) = inclusive(&range) else {
            return Ok(Vec::new());
        };
        let db = self.db.clone();
        blocking(move || read_entries(&db, lo, hi))
            .await
            .map_err(read_logs_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let db = self.db.clone();
        blocking(move || log_state(&db))
            .await
            .map_err(read_logs_err)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let (db, vote) = (self.db.clone(), *vote);
        blocking(move || write_meta(&db, VOTE, Some(&vote)))
            .await
            .map_err(write_vote_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let db = self.db.clone();
        blocking(move || read_meta(&db, VOTE))
            .await
            .map_err(read_vote_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || write_meta(&db, COMMITTED, committed.as_ref()))
            .await
            .map_err(write_err)?;
        self.committed
            .store(committed.map_or(0, |c| c.index), Ordering::Release);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let db = self.db.clone();
        blocking(move || read_meta(&db, COMMITTED))
            .await
            .map_err(read_err)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows: Result<Vec<(u64, Vec<u8>)>, RaftStoreError> = entries
            .into_iter()
            .map(|e| Ok((e.log_id.index, encode(&entry_what(e.log_id.index), &e)?)))
            .collect();
        let result = match rows {
            Ok(rows) => {
                let db = self.db.clone();
                blocking(move || append_rows(&db, &rows)).await
            }
            Err(e) => Err(e),
        };
        // The callback tells openraft the entries are on disk: only after the commit.
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(write_logs_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || truncate_from(&db, log_id.index))
            .await
            .map_err(|e| StorageIOError::write_log_entry(log_id, &e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || purge_upto(&db, log_id))
            .await
            .map_err(|e| StorageIOError::write_log_entry(log_id, &e).into())
    }
}
