//! gRPC outcome names as the load record stores them: `OK` or the status code in
//! SCREAMING_SNAKE (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, ...), the spelling of the gRPC spec
//! and of `grpc-status` tooling, so records compare across clients and languages.

use tonic::{Code, Status};

/// The name `record::Call::code` holds for a successful call.
pub const OK: &str = "OK";

pub use rankd_proto::code_name;

/// The recorded name of a failed call's status.
///
/// tonic's channel enforces a request's `grpc-timeout` itself and reports its own expiry
/// as CANCELLED "Timeout expired" (its `TimeoutExpired` error), not DEADLINE_EXCEEDED. To
/// whoever sent the call that is a missed deadline, the same outcome as the server or the
/// failover client giving up, so it is recorded as `DEADLINE_EXCEEDED`; otherwise a run
/// against a plain channel and one through the failover client would name the same event
/// differently. A CANCELLED with any other message (a server cancelling work) keeps its name.
pub fn status_name(status: &Status) -> &'static str {
    if status.code() == Code::Cancelled && is_client_timeout(status) {
        return code_name(Code::DeadlineExceeded);
    }
    code_name(status.code())
}

/// Whether `status` is tonic's client-side timeout. Checks the error source chain first
/// (present when the status came straight from the channel), then the message, which is
/// all that survives once a status has been copied (the failover client returns a copy).
fn is_client_timeout(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = err.source();
    }
    status.message() == tonic::TimeoutExpired(()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_grpc_spec() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::Unavailable), "UNAVAILABLE");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
        // Every code by its number: each name is distinct and upper snake case.
        let names: std::collections::BTreeSet<_> =
            (0..=16).map(|n| code_name(Code::from_i32(n))).collect();
        assert_eq!(names.len(), 17);
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_uppercase() || c == '_')));
    }

    #[test]
    fn a_client_timeout_is_a_missed_deadline() {
        let timeout = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(timeout.code(), Code::Cancelled, "tonic's own mapping");
        assert_eq!(status_name(&timeout), "DEADLINE_EXCEEDED");
        // A copy keeps only the code and message.
        let copy = Status::new(timeout.code(), timeout.message());
        assert_eq!(status_name(&copy), "DEADLINE_EXCEEDED");
        assert_eq!(
            status_name(&Status::cancelled("shutting down")),
            "CANCELLED"
        );
        assert_eq!(status_name(&Status::unavailable("down")), "UNAVAILABLE");
    }
}
