//! rankd's gRPC API, generated from the `.proto` files in this crate.
//!
//! A search frontend depends on this crate alone (never on libtorch): it holds the generated
//! messages, clients and servers, and the descriptor set that server reflection serves.

/// `rankd.v1`: the Ranker service.
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("rankd.v1");
    include!(concat!(env!("OUT_DIR"), "/rankd.v1.serde.rs"));
}

/// `rankd.admin.v1`: the operator API (model store).
#[allow(clippy::all, clippy::pedantic)]
pub mod admin {
    pub mod v1 {
        tonic::include_proto!("rankd.admin.v1");
        include!(concat!(env!("OUT_DIR"), "/rankd.admin.v1.serde.rs"));
    }
}

/// `rankd.peer.v1`: node-to-node traffic on the peer port (Raft, artifact replication,
/// forwarded registry writes). Not a client API.
#[allow(clippy::all, clippy::pedantic)]
pub mod peer {
    pub mod v1 {
        tonic::include_proto!("rankd.peer.v1");
        include!(concat!(env!("OUT_DIR"), "/rankd.peer.v1.serde.rs"));
    }
}

/// `inference`: the Open Inference Protocol (KServe v2 / Triton gRPC), so Triton and KServe
/// clients can call rankd unchanged. Names and field numbers follow the published protocol.
#[allow(clippy::all, clippy::pedantic)]
pub mod inference {
    tonic::include_proto!("inference");
}

/// What a valid `rankd.v1.RankRequest` is: the checks the Rank handler and the engine run
/// before inference, free of libtorch so the fuzz targets (fuzz/) build without it.
pub mod request;

/// The failover client a search frontend links: heartbeat-driven ejection, p2c balancing on
/// peak-EWMA latency, retries on another node within the deadline, hedging.
#[cfg(feature = "client")]
pub mod client;

/// The gRPC spec name of a status code (`OK`, `DEADLINE_EXCEEDED`, ...), as metrics labels
/// and load records spell it. Written out rather than derived from `Debug`
/// (`DeadlineExceeded`), so a change in tonic's formatting can never rename a stored series
/// or record.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Encoded `FileDescriptorSet` of every rankd `.proto`, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/rankd_descriptor.bin"));
