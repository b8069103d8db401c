//! The stored snapshot: its meta and payload in the redb `snapshot` table.
//!
//! Meta and payload are written in one durable transaction, so a reader never pairs one
//! snapshot's meta with another's payload.

use redb::{Database, ReadableDatabase, ReadableTable};

use super::AppliedState;
use crate::error::RaftStoreError;
use crate::log_store::{self, begin_durable, db_err, encode, SNAPSHOT};
use crate::types::{LogId, SnapshotMeta};

const META: &str = "meta";
const DATA: &str = "data";

/// `{term}-{index}-{seq}` of the last applied log id (`0-0` before any).
pub(super) fn id(last_applied: Option<&LogId>, seq: u64) -> String {
    let (term, index) = last_applied.map_or((0, 0), |l| (l.leader_id.term, l.index));
    format!("{term}-{index}-{seq}")
}

/// The sequence number to continue from after `meta`, so ids stay unique across restarts.
pub(super) fn next_seq(meta: &SnapshotMeta) -> u64 {
    meta.snapshot_id
        .rsplit('-')
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(0, |s| s.saturating_add(1))
}

/// Decodes a payload and checks it is the state `meta` describes: a payload that decodes but
/// belongs to another snapshot would silently desynchronise the state from the log.
pub(super) fn decode_state(
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<AppliedState, RaftStoreError> {
    let what = format!("snapshot {}", meta.snapshot_id);
    let state: AppliedState = log_store::decode(&what, data)?;
    if state.last_applied != meta.last_log_id || state.membership != meta.last_membership {
        return Err(RaftStoreError::Corrupt {
            what,
            reason: "payload does not match the snapshot meta".to_string(),
        });
    }
    Ok(state)
}

/// The stored snapshot's meta and payload, if any. Blocking.
pub(super) fn load(db: &Database) -> Result<Option<(SnapshotMeta, Vec<u8>)>, RaftStoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let table = txn.open_table(SNAPSHOT).map_err(db_err)?;
    let meta = table.get(META).map_err(db_err)?;
    let data = table.get(DATA).map_err(db_err)?;
    match (meta, data) {
        (None, None) => Ok(None),
        (Some(meta), Some(data)) => {
            let meta: SnapshotMeta = decode_meta(meta.value())?;
            Ok(Some((meta, data.value().to_vec())))
        }
        _ => Err(RaftStoreError::Corrupt {
            what: "snapshot".to_string(),
            reason: "meta and payload are not both present".to_string(),
        }),
    }
}

fn decode_meta(bytes: &[u8]) -> Result<SnapshotMeta, RaftStoreError> {
    log_store::decode("snapshot meta", bytes)
}

/// Stores `meta` and `data` as the current snapshot, durably. With `only_if_newer`, a
/// snapshot older than the stored one is not written. Blocking.
pub(super) fn save(
    db: &Database,
    meta: &SnapshotMeta,
    data: &[u8],
    only_if_newer: bool,
) -> Result<(), RaftStoreError> {
    let meta_bytes = encode("snapshot meta", meta)?;
    let txn = begin_durable(db)?;
    {
        let mut table = txn.open_table(SNAPSHOT).map_err(db_err)?;
        if only_if_newer {
            let stored: Option<LogId> = match table.get(META).map_err(db_err)? {
                Some(v) => decode_meta(v.value())?.last_log_id,
                None => None,
            };
            if stored > meta.last_log_id {
                return Ok(());
            }
        }
        table.insert(META, meta_bytes.as_slice()).map_err(db_err)?;
        table.insert(DATA, data).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)
}
