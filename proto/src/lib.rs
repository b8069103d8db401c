//! rankd's gRPC API, generated from the `.proto` files in this crate.
//!
//! A search frontend depends on this crate alone (never on libtorch): it holds the generated
//! messages, clients and servers, and the descriptor set that server reflection serves.

/// `rankd.v1`: the Ranker service.
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("rankd.v1");
}

/// `rankd.admin.v1`: the operator API (model store).
#[allow(clippy::all, clippy::pedantic)]
pub mod admin {
    pub mod v1 {
        tonic::include_proto!("rankd.admin.v1");
    }
}

/// `rankd.peer.v1`: node-to-node traffic on the peer port (Raft, artifact replication,
/// forwarded registry writes). Not a client API.
#[allow(clippy::all, clippy::pedantic)]
pub mod peer {
    pub mod v1 {
        tonic::include_proto!("rankd.peer.v1");
    }
}

/// The failover client a search frontend links: heartbeat-driven ejection, p2c balancing on
/// peak-EWMA latency, retries on another node within the deadline, hedging.
#[cfg(feature = "client")]
pub mod client;

/// Encoded `FileDescriptorSet` of every rankd `.proto`, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/rankd_descriptor.bin"));
