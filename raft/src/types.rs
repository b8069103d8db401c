//! The openraft type configuration.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::registry::{Command, Outcome};

pub type NodeId = u64;

/// How to reach a node. Stored in Raft membership, so every node learns every other
/// node's addresses from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// `host:port` of the peer port (Raft, artifact fetches, forwarded writes).
    pub peer_addr: String,
    /// `host:port` of the client port (Rank, Admin, health): what a client is redirected to.
    pub api_addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {} api {}", self.peer_addr, self.api_addr)
    }
}

openraft::declare_raft_types!(
    /// rankd's Raft types: registry commands in, registry outcomes out.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;
pub type StoredMembership = openraft::StoredMembership<NodeId, PeerNode>;
pub type StorageError = openraft::StorageError<NodeId>;
