//! rankd's model registry, replicated with Raft.
//!
//! Every node runs one [`openraft::Raft`] over the registry state machine in [`registry`]:
//! the versions known, which node has verified and loaded which version, the active and
//! previous versions, and the promotion history. Nodes act on what they *apply*, never on
//! what they are told directly, so a node serves exactly the version its applied registry
//! names as active.
//!
//! # Why openraft 0.9.25 with `storage-v2`
//! The 0.10 line is still alpha (`0.10.0-alpha.37` at the time of writing) and its storage
//! and network traits changed between alphas; a consensus layer is the last place for an
//! API that moves under us. 0.9.25 is the newest stable release, its v2 storage traits split
//! the log (persisted in redb here) from the state machine (in memory, rebuilt from the
//! snapshot plus the log), and it reapplies committed entries on start because
//! [`log_store::LogStore`] persists the committed index. The version is pinned exactly
//! (`=0.9.25`) because the transport serializes openraft's own messages: every node of a
//! cluster must run the same openraft.
//!
//! # Layout
//! - [`types`]: the openraft type configuration and the node descriptor.
//! - [`registry`]: the state machine's data and its deterministic `apply`.
//! - [`log_store`], [`state_machine`]: persistent storage in one redb file.
//! - [`network`]: the client side of the transport (one pair of channels per peer).
//! - [`service`]: the server side of the transport (the `rankd.peer.v1.Raft` service).
//! - [`config`]: timing, validated.

pub mod config;
pub mod error;
pub mod log_store;
pub mod network;
pub mod registry;
pub mod service;
pub mod state_machine;
pub mod types;

pub use config::RaftTiming;
pub use error::RaftStoreError;
pub use registry::{
    AuditEntry, Bake, Breach, Command, Fence, Lineage, ModelRef, Outcome, Registry, Rejection,
    VersionInfo,
};
pub use types::{NodeId, PeerNode, Raft, TypeConfig};
