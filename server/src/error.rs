//! Serving errors and the one place they become `tonic::Status`.

use rankd_artifact::{ArtifactError, StoreError};
use rankd_kernels::{InputError, KernelError};
use rankd_proto::request::RequestError;
use tonic::{Code, Status};

use crate::model::LoadError;

/// Why a Rank call did not produce a ranking.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Input(#[from] InputError),
    /// Refused by the request checks before taking a queue slot (`rankd_proto::request`,
    /// which owns the messages).
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("inference queue is full ({capacity} requests waiting); retry on another replica")]
    QueueFull { capacity: usize },
    #[error("waited {waited_ms} ms in the inference queue, over batching.max_queue_wait_ms ({limit_ms} ms); retry on another replica")]
    QueueWait { waited_ms: u64, limit_ms: u64 },
    #[error("server overloaded: {max} Rank calls already in flight")]
    Overloaded { max: usize },
    #[error("deadline exceeded {stage}; the model was not run")]
    DeadlineExpired { stage: &'static str },
    #[error("deadline exceeded while waiting for the model")]
    DeadlineWhileRunning,
    #[error("no model is active on this node")]
    NoModel,
    #[error("inference engine is shutting down")]
    EngineStopped,
    #[error("inference failed: {0}")]
    Inference(KernelError),
}

impl ServeError {
    pub fn code(&self) -> Code {
        match self {
            ServeError::Request(RequestError::TooManyCandidates { .. }) => Code::OutOfRange,
            ServeError::Input(_) | ServeError::Request(_) => Code::InvalidArgument,
            ServeError::QueueFull { .. }
            | ServeError::QueueWait { .. }
            | ServeError::Overloaded { .. } => Code::ResourceExhausted,
            ServeError::DeadlineExpired { .. } | ServeError::DeadlineWhileRunning => {
                Code::DeadlineExceeded
            }
            ServeError::EngineStopped | ServeError::NoModel => Code::Unavailable,
            ServeError::Inference(KernelError::Input(_)) => Code::InvalidArgument,
            ServeError::Inference(_) => Code::Internal,
        }
    }
}

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

/// Why an Open Inference Protocol call (`inference.GRPCInferenceService`) failed. Row
/// errors are Rank's own errors for that row of the batch, with its code, prefixed by the
/// row; everything else about the tensors is INVALID_ARGUMENT naming the tensor.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Decode(#[from] crate::oip::DecodeError),
    #[error("input 'query': {rows} rows exceed this server's limit of {max} rows per call (batching.queue_capacity)")]
    TooManyRows { rows: usize, max: usize },
    #[error("model '{name}' is not served here; this cluster serves '{active}'")]
    ModelNotFound { name: String, active: String },
    #[error("model '{name}' version '{version}' is not served here; only the active version '{active}' is")]
    VersionNotFound {
        name: String,
        version: String,
        active: String,
    },
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("row {row}: {}", .status.message())]
    Row { row: usize, status: Status },
    #[error("rows were answered by different model activations ({first} and {other}): the active version changed during the call; retry")]
    MixedVersions { first: String, other: String },
    #[error("row {row} returned {got} items where row 0 returned {want}")]
    Ragged { row: usize, got: usize, want: usize },
}

impl From<InferError> for Status {
    fn from(e: InferError) -> Status {
        let code = match &e {
            InferError::Decode(_) => Code::InvalidArgument,
            InferError::TooManyRows { .. } => Code::OutOfRange,
            InferError::ModelNotFound { .. } | InferError::VersionNotFound { .. } => Code::NotFound,
            InferError::Serve(s) => s.code(),
            // Keeps the row's metadata (a forwarded answer's, say) along with its code.
            InferError::Row { status, .. } => {
                return Status::with_metadata(
                    status.code(),
                    e.to_string(),
                    status.metadata().clone(),
                )
            }
            InferError::MixedVersions { .. } => Code::Unavailable,
            InferError::Ragged { .. } => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// Why an admin call about model versions failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("upload: {0}")]
    Upload(String),
    #[error("upload: total_bytes {size} is outside 1..={max}")]
    TooLarge { size: u64, max: u64 },
    #[error(transparent)]
    NoRoom(#[from] crate::host::NoRoom),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the keyring lacks key(s) {0:?} that stored artifacts are encrypted with; keep them listed until rotation completes")]
    KeysMissing(Vec<String>),
    #[error(transparent)]
    Stream(#[from] Status),
    #[error(transparent)]
    Load(LoadError),
    #[error(transparent)]
    Guard(Box<crate::compression::GuardError>),
}

impl AdminError {
    pub fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> AdminError {
        move |source| AdminError::Io { context, source }
    }
}

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Status {
        let code = match &e {
            AdminError::Upload(_) => Code::InvalidArgument,
            AdminError::TooLarge { .. } => Code::OutOfRange,
            AdminError::NoRoom(_) => Code::ResourceExhausted,
            AdminError::KeysMissing(_) => Code::FailedPrecondition,
            AdminError::Io { source, .. } => io_code(source),
            AdminError::Stream(s) => return s.clone(),
            AdminError::Load(l) => load_code(l),
            AdminError::Guard(g) => guard_code(g),
        };
        Status::new(code, e.to_string())
    }
}

impl From<crate::backup::BackupError> for Status {
    fn from(e: crate::backup::BackupError) -> Status {
        use crate::backup::BackupError as B;
        if is_disk_full(&e) {
            return Status::new(Code::ResourceExhausted, e.to_string());
        }
        let code = match &e {
            B::NotFound(_) => Code::NotFound,
            B::Damaged { .. } => Code::DataLoss,
            B::Target { .. } => Code::Unavailable,
            B::Restore(_) => Code::FailedPrecondition,
            B::Io { .. } => Code::Internal,
            B::Store(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// Why a registry operation (promotion, rollback, membership, a replicated read) failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// This node cannot reach a leader. `leader` is the leader's client address, when known,
    /// so a client can go there directly.
    #[error("no leader reachable from this node{}", .leader.as_ref().map(|l| format!(" (leader at {l})")).unwrap_or_default())]
    NoLeader { leader: Option<String> },
    #[error("{message}")]
    Rejected {
        reason: rankd_raft::Rejection,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Timeout(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("peer {peer}: {status}")]
    Peer { peer: u64, status: Status },
}

impl From<ClusterError> for Status {
    fn from(e: ClusterError) -> Status {
        use rankd_raft::Rejection as R;
        let code = match &e {
            ClusterError::NoLeader { leader } => {
                let mut status = Status::unavailable(e.to_string());
                if let Some(addr) = leader.as_deref().and_then(|l| l.parse().ok()) {
                    status
                        .metadata_mut()
                        .insert(crate::cluster::LEADER_HEADER, addr);
                }
                return status;
            }
            ClusterError::Rejected { reason, .. } => match reason {
                R::NotFound => Code::NotFound,
                R::FailedPrecondition => Code::FailedPrecondition,
                R::AlreadyExists => Code::AlreadyExists,
            },
            ClusterError::NotFound(_) => Code::NotFound,
            ClusterError::Precondition(_) => Code::FailedPrecondition,
            ClusterError::InvalidArgument(_) => Code::InvalidArgument,
            ClusterError::Timeout(_) => Code::DeadlineExceeded,
            ClusterError::Raft(_) => Code::Unavailable,
            ClusterError::Peer { status, .. } => status.code(),
        };
        Status::new(code, e.to_string())
    }
}

/// A full disk is the operator's to fix, not a server bug.
fn io_code(e: &std::io::Error) -> Code {
    if is_disk_full(e) {
        Code::ResourceExhausted
    } else {
        Code::Internal
    }
}

/// Whether ENOSPC is anywhere in the error's source chain (object stores and archive
/// writers wrap the `io::Error` the kernel returned).
pub fn is_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(28) || io.kind() == std::io::ErrorKind::StorageFull {
                return true;
            }
            // io::Error::other(inner) hides the inner error behind get_ref, not source.
            if let Some(inner) = io.get_ref() {
                if is_disk_full(inner) {
                    return true;
                }
            }
        }
        cur = err.source();
    }
    false
}

/// Bundle content problems are the caller's (INVALID_ARGUMENT); tampered or unreadable
/// artifacts are DATA_LOSS; a key the keyring lacks is FAILED_PRECONDITION.
/// A compressed version that lost too much quality, or cannot be measured, fails a
/// precondition the operator can act on; a parent this node cannot read is its load error.
pub fn guard_code(e: &crate::compression::GuardError) -> Code {
    use crate::compression::GuardError as G;
    match e {
        G::ParentUnknown { .. } | G::NoEvalSet { .. } | G::Degraded { .. } => {
            Code::FailedPrecondition
        }
        G::ParentUnavailable { source, .. } => match load_code(source) {
            Code::NotFound => Code::FailedPrecondition,
            c => c,
        },
        G::Measure { .. } => Code::InvalidArgument,
    }
}

pub fn load_code(e: &LoadError) -> Code {
    match e {
        LoadError::Kernel(
            KernelError::Device(_)
            | KernelError::PrecisionUnsupported { .. }
            | KernelError::Int8OnCuda { .. },
        ) => Code::FailedPrecondition,
        LoadError::Kernel(KernelError::Torch(_) | KernelError::Io { .. }) => Code::Internal,
        LoadError::Kernel(_) => Code::InvalidArgument,
        LoadError::Mismatch { .. } => Code::DataLoss,
        LoadError::Store(s) => match s {
            StoreError::AlreadyExists { .. } => Code::AlreadyExists,
            StoreError::NotFound { .. } => Code::NotFound,
            StoreError::InUse { .. } => Code::FailedPrecondition,
            StoreError::Quarantined { .. } | StoreError::Manifest { .. } => Code::DataLoss,
            StoreError::Artifact(a) => match a {
                ArtifactError::UnknownKey { .. } | ArtifactError::Keyring { .. } => {
                    Code::FailedPrecondition
                }
                ArtifactError::Io { source, .. } => io_code(source),
                ArtifactError::Pack(_) => Code::InvalidArgument,
                _ => Code::DataLoss,
            },
        },
    }
}

/// The label used for a gRPC code in metrics.
pub fn code_label(code: Code) -> &'static str {
    rankd_proto::code_name(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_each_error_to_its_code() {
        let cases: Vec<(ServeError, Code)> = vec![
            (
                ServeError::Input(InputError::NoCandidates),
                Code::InvalidArgument,
            ),
            (
                ServeError::Request(RequestError::TooManyCandidates { count: 5, max: 4 }),
                Code::OutOfRange,
            ),
            (
                ServeError::Request(RequestError::DuplicateCandidate {
                    first: 0,
                    second: 1,
                    id: 7,
                }),
                Code::InvalidArgument,
            ),
            (
                ServeError::QueueFull { capacity: 1 },
                Code::ResourceExhausted,
            ),
            (ServeError::Overloaded { max: 1 }, Code::ResourceExhausted),
            (
                ServeError::QueueWait {
                    waited_ms: 9,
                    limit_ms: 5,
                },
                Code::ResourceExhausted,
            ),
            (
                ServeError::DeadlineExpired { stage: "in queue" },
                Code::DeadlineExceeded,
            ),
            (ServeError::EngineStopped, Code::Unavailable),
            (
                ServeError::Inference(KernelError::NonFiniteScore { score: f32::NAN }),
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            let msg = err.to_string();
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{msg}");
            assert_eq!(status.message(), msg);
        }
    }

    #[test]
    fn messages_name_the_field() {
        let s = Status::from(ServeError::Request(RequestError::DuplicateCandidate {
            first: 2,
            second: 9,
            id: 41,
        }));
        assert_eq!(
            s.message(),
            "candidate_ids[9]: id 41 duplicates candidate_ids[2]"
        );
    }
}
