//! The redb storage: openraft's own storage suite, durability across a reopen of the file,
//! snapshots (restore on open, install, corrupt payloads) and the apply hook.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, StorageIOError,
};
use rankd_raft::log_store::{open, LogStore};
use rankd_raft::state_machine::{AppliedState, ApplyHook, StateMachine};
use rankd_raft::types::{Entry, LogId, SnapshotMeta, StorageError, Vote};
use rankd_raft::{Command, Fence, ModelRef, Outcome, PeerNode, Registry, TypeConfig, VersionInfo};
use tempfile::TempDir;

/// Opens a fresh file in a fresh temporary directory for every suite case.
struct FreshStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for FreshStore {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let (log, sm) =
            open(&dir.path().join("raft.redb"), None).map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, log, sm))
    }
}

/// openraft's suite builds its own runtime per case, so this is a plain (non-tokio) test.
#[test]
fn openraft_storage_suite() -> anyhow::Result<()> {
    Suite::<TypeConfig, LogStore, StateMachine, FreshStore, TempDir>::test_all(FreshStore)?;
    Ok(())
}

fn db_path() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    (dir, path)
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload,
    }
}

fn blank(term: u64, index: u64) -> Entry {
    entry(term, index, EntryPayload::Blank)
}

fn normal(term: u64, index: u64, cmd: Command) -> Entry {
    entry(term, index, EntryPayload::Normal(cmd))
}

fn members(term: u64, index: u64) -> Entry {
    let nodes = BTreeMap::from([(
        1,
        PeerNode {
            peer_addr: "127.0.0.1:7001".into(),
            api_addr: "127.0.0.1:7000".into(),
        },
    )]);
    let m = Membership::new(vec![BTreeSet::from([1])], nodes);
    entry(term, index, EntryPayload::Membership(m))
}

fn model(version: &str) -> ModelRef {
    ModelRef::new("ranker", version)
}

fn register(version: &str) -> Command {
    Command::Register {
        info: VersionInfo {
            model: model(version),
            sha256: format!("sealed-{version}"),
            plaintext_sha256: format!("plain-{version}"),
            size: 1024,
            key_id: "key-1".into(),
            uploaded_by: "alice".into(),
            uploaded_at: 1_700_000_000,
            origin: 1,
            retired: false,
            lineage: None,
        },
    }
}

fn promote(version: &str) -> Command {
    Command::Promote {
        model: model(version),
        expect: None,
        required: vec![],
        by: "alice".into(),
        at_ms: 1_700_000_000_000,
        bake_ms: 0,
    }
}

fn current(sm: &StateMachine) -> AppliedState {
    AppliedState::clone(&sm.subscribe().borrow())
}

#[tokio::test]
async fn log_vote_and_committed_survive_a_reopen() -> anyhow::Result<()> {
    let (_dir, path) = db_path();
    let written = vec![
        blank(1, 1),
        normal(1, 2, register("v1")),
        members(1, 3),
        blank(2, 4),
    ];
    {
        let (mut log, _sm) = open(&path, None)?;
        log.blocking_append(written.clone()).await?;
        log.save_vote(&Vote::new(2, 1)).await?;
        log.save_committed(Some(log_id(1, 3))).await?;
        assert_eq!(log.committed_index().load(Ordering::Acquire), 3);
        log.purge(log_id(1, 1)).await?;
        log.truncate(log_id(2, 4)).await?;
    }

    let (mut log, _sm) = open(&path, None)?;
    assert_eq!(log.read_vote().await?, Some(Vote::new(2, 1)));
    assert_eq!(log.read_committed().await?, Some(log_id(1, 3)));
    assert_eq!(log.committed_index().load(Ordering::Acquire), 3);
    let state = log.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1)));
    assert_eq!(state.last_log_id, Some(log_id(1, 3)));
    let mut reader = log.get_log_reader().await;
    assert_eq!(
        reader.try_get_log_entries(0..).await?,
        written[1..3].to_vec()
    );
    assert_eq!(reader.try_get_log_entries(3..3).await?, vec![]);
    Ok(())
}

#[tokio::test]
async fn snapshot_restores_state_on_reopen_and_installs_on_another_store() -> anyhow::Result<()> {
    let (_dir, path) = db_path();
    let (snapshot, expected) = {
        let (_log, mut sm) = open(&path, None)?;
        sm.apply([
            members(1, 1),
            normal(1, 2, register("v1")),
            normal(1, 3, promote("v1")),
        ])
        .await?;
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
        (snapshot, current(&sm))
    };
    assert_eq!(snapshot.meta.snapshot_id, "1-3-0");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 3)));
    assert_eq!(
        expected.registry.active.as_ref().map(|f| &f.model),
        Some(&model("v1"))
    );

    // Reopen: the state comes back from the stored snapshot, and the hook is told.
    let hook = Arc::new(Recorder::default());
    let (_log, mut sm) = open(&path, Some(hook.clone()))?;
    assert_eq!(current(&sm), expected);
    assert_eq!(
        sm.applied_state().await?,
        (Some(log_id(1, 3)), expected.membership.clone())
    );
    assert_eq!(
        *hook.resets.lock().unwrap(),
        vec![expected.registry.clone()]
    );
    let stored = sm.get_current_snapshot().await?.expect("a stored snapshot");
    assert_eq!(stored.meta, snapshot.meta);
    // Ids stay unique across the restart.
    let again = sm.get_snapshot_builder().await.build_snapshot().await?;
    assert_eq!(again.meta.snapshot_id, "1-3-1");

    // Install into a fresh store.
    let (_dir2, path2) = db_path();
    let (_log2, mut fresh) = open(&path2, None)?;
    let mut rx = fresh.subscribe();
    assert_eq!(**rx.borrow_and_update(), AppliedState::default());
    let mut data = fresh.begin_receiving_snapshot().await?;
    *data = *stored.snapshot;
    fresh.install_snapshot(&stored.meta, data).await?;
    assert!(rx.has_changed()?);
    assert_eq!(**rx.borrow_and_update(), expected);
    let installed = fresh
        .get_current_snapshot()
        .await?
        .expect("installed snapshot");
    assert_eq!(installed.meta, snapshot.meta);
    drop((_log2, fresh));

    // ... and it is durable there too.
    let (_log2, fresh) = open(&path2, None)?;
    assert_eq!(current(&fresh).registry, expected.registry);
    Ok(())
}

#[tokio::test]
async fn corrupt_snapshot_is_refused_and_the_state_kept() -> anyhow::Result<()> {
    let (_dir, path) = db_path();
    let (_log, mut sm) = open(&path, None)?;
    sm.apply([normal(1, 1, register("v1"))]).await?;
    let before = current(&sm);

    let meta = SnapshotMeta {
        last_log_id: Some(log_id(2, 9)),
        last_membership: Default::default(),
        snapshot_id: "2-9-0".into(),
    };
    let mut data = sm.begin_receiving_snapshot().await?;
    data.get_mut()
        .extend_from_slice(b"{\"last_applied\": [not json");
    assert!(sm.install_snapshot(&meta, data).await.is_err());
    assert_eq!(current(&sm), before);
    assert!(sm.get_current_snapshot().await?.is_none());

    // Well-formed, but not the state the meta describes: refused as well.
    let other = sm.get_snapshot_builder().await.build_snapshot().await?;
    let mut data = sm.begin_receiving_snapshot().await?;
    *data = *other.snapshot;
    assert!(sm.install_snapshot(&meta, data).await.is_err());
    assert_eq!(current(&sm), before);
    assert_eq!(
        sm.get_current_snapshot().await?.map(|s| s.meta),
        Some(other.meta)
    );
    Ok(())
}

/// One `applied` call: the entry, its command and outcome, and the active fence the hook saw.
type AppliedCall = (LogId, Option<Command>, Outcome, Option<Fence>);

#[derive(Default)]
struct Recorder {
    applied: Mutex<Vec<AppliedCall>>,
    resets: Mutex<Vec<Registry>>,
}

impl ApplyHook for Recorder {
    fn applied(
        &self,
        registry: &Registry,
        log_id: &LogId,
        command: Option<&Command>,
        outcome: &Outcome,
    ) {
        self.applied.lock().unwrap().push((
            *log_id,
            command.cloned(),
            outcome.clone(),
            registry.active.clone(),
        ));
    }

    fn reset(&self, registry: &Registry) {
        self.resets.lock().unwrap().push(registry.clone());
    }
}

#[tokio::test]
async fn hook_sees_every_entry_and_the_promote_fence() -> anyhow::Result<()> {
    let (_dir, path) = db_path();
    let hook = Arc::new(Recorder::default());
    let (_log, mut sm) = open(&path, Some(hook.clone()))?;
    assert_eq!(
        hook.resets.lock().unwrap().as_slice(),
        [Registry::default()]
    );
    let mut rx = sm.subscribe();

    let outcomes = sm
        .apply([
            blank(2, 1),
            normal(2, 2, register("v1")),
            normal(2, 3, promote("v1")),
        ])
        .await?;
    let fence = Fence {
        model: model("v1"),
        term: 2,
        index: 3,
    };
    let promoted = Outcome::Applied {
        fence: Some(fence.clone()),
    };
    assert_eq!(outcomes.last(), Some(&promoted));

    let applied = hook.applied.lock().unwrap();
    let none = Outcome::Applied { fence: None };
    assert_eq!(
        applied.as_slice(),
        [
            (log_id(2, 1), None, none.clone(), None),
            (log_id(2, 2), Some(register("v1")), none, None),
            // The hook sees the registry with the promotion already applied.
            (
                log_id(2, 3),
                Some(promote("v1")),
                promoted,
                Some(fence.clone())
            ),
        ]
    );
    // One publication per batch, after the whole batch.
    assert!(rx.has_changed()?);
    let published = rx.borrow_and_update().clone();
    assert_eq!(published.last_applied, Some(log_id(2, 3)));
    assert_eq!(published.registry.active, Some(fence));
    Ok(())
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let (_dir, path) = db_path();
    std::fs::write(
        &path,
        b"not a redb file, not at all, but long enough to be read",
    )
    .unwrap();
    assert!(open(Path::new(&path), None).is_err());
}
