//! Serving errors and the one place they become `tonic::Status`.

use rankd_kernels::{InputError, KernelError};
use tonic::{Code, Status};

/// Why a Rank call did not produce a ranking.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("candidate_ids: {count} candidates exceed this server's limit of {max}")]
    TooManyCandidates { count: usize, max: usize },
    #[error("candidate_ids[{second}]: id {id} duplicates candidate_ids[{first}]")]
    DuplicateCandidate {
        first: usize,
        second: usize,
        id: i64,
    },
    #[error("inference queue is full ({capacity} requests waiting); retry on another replica")]
    QueueFull { capacity: usize },
    #[error("server overloaded: {max} Rank calls already in flight")]
    Overloaded { max: usize },
    #[error("deadline exceeded {stage}; the model was not run")]
    DeadlineExpired { stage: &'static str },
    #[error("deadline exceeded while waiting for the model")]
    DeadlineWhileRunning,
    #[error("inference engine is shutting down")]
    EngineStopped,
    #[error("inference failed: {0}")]
    Inference(KernelError),
}

impl ServeError {
    pub fn code(&self) -> Code {
        match self {
            ServeError::Input(_) | ServeError::DuplicateCandidate { .. } => Code::InvalidArgument,
            ServeError::TooManyCandidates { .. } => Code::OutOfRange,
            ServeError::QueueFull { .. } | ServeError::Overloaded { .. } => Code::ResourceExhausted,
            ServeError::DeadlineExpired { .. } | ServeError::DeadlineWhileRunning => {
                Code::DeadlineExceeded
            }
            ServeError::EngineStopped => Code::Unavailable,
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

/// The label used for a gRPC code in metrics.
pub fn code_label(code: Code) -> &'static str {
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
                ServeError::TooManyCandidates { count: 5, max: 4 },
                Code::OutOfRange,
            ),
            (
                ServeError::DuplicateCandidate {
                    first: 0,
                    second: 1,
                    id: 7,
                },
                Code::InvalidArgument,
            ),
            (
                ServeError::QueueFull { capacity: 1 },
                Code::ResourceExhausted,
            ),
            (ServeError::Overloaded { max: 1 }, Code::ResourceExhausted),
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
        let s = Status::from(ServeError::DuplicateCandidate {
            first: 2,
            second: 9,
            id: 41,
        });
        assert_eq!(
            s.message(),
            "candidate_ids[9]: id 41 duplicates candidate_ids[2]"
        );
    }
}
