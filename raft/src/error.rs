//! Errors of the registry's storage and transport.

use std::path::PathBuf;

/// Opening or using the redb file that holds the Raft log, vote and snapshots.
#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    #[error("raft storage {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("raft storage: {0}")]
    Db(String),
    #[error("raft storage: corrupt record {what}: {reason}")]
    Corrupt { what: String, reason: String },
}
