//! The client's own errors ([`ClientError`], for setting up) and the rule that sorts a failed
//! Rank attempt into "retry on another node" or "return to the caller" ([`classify`]).
//!
//! Rank calls themselves fail with `tonic::Status`, as a generated client would: a frontend
//! that already maps rankd's status codes keeps doing so.

use std::error::Error as _;

use tonic::{Code, Status};

/// Why the failover client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A [`ClientConfig`](super::ClientConfig) setting is out of range.
    #[error("invalid client config: {field} {reason}")]
    Config { field: &'static str, reason: String },
    /// The target list was empty.
    #[error("no rankd address given")]
    NoTargets,
    /// An address is not `host:port` or `http://host:port`.
    #[error("invalid rankd address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    /// The DNS target could not be resolved when the client was created.
    #[error("cannot resolve {name}: {source}")]
    Resolve {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// The DNS target resolved to no address when the client was created.
    #[error("{name} resolves to no address")]
    NoAddresses { name: String },
}

/// What a failed Rank attempt means for the call and for the node that answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The request or its answer was lost on the way: the connection could not be opened,
    /// was reset, or broke mid-response. Eject the node; retry elsewhere.
    Transport,
    /// The node answered UNAVAILABLE (not serving, no model, shutting down). Eject it; retry
    /// elsewhere.
    Unavailable,
    /// The node answered RESOURCE_EXHAUSTED (queue full, load shed). Cool it down; retry
    /// elsewhere.
    Overloaded,
    /// The attempt ran out of the caller's deadline (locally, by the grpc-timeout the
    /// channel enforces). No time is left to retry.
    Deadline,
    /// Anything else: bad input, a failed precondition, the server's own DEADLINE_EXCEEDED.
    /// Another node would answer the same; return it as it is.
    Final,
}

impl Failure {
    pub(crate) fn is_retryable(self) -> bool {
        matches!(
            self,
            Failure::Transport | Failure::Unavailable | Failure::Overloaded
        )
    }
}

/// Sorts a failed Rank attempt.
///
/// Telling transport errors from statuses the server sent: a `Status` decoded from the
/// server's `grpc-status` never has a [`source`](std::error::Error::source); one that tonic
/// builds from a local failure (connect refused, connection reset, HTTP/2 GOAWAY or
/// RST_STREAM, a body that broke off, the channel's timeout) always keeps the failure as its
/// source. So a status with a source is local: a `tonic::TimeoutExpired` in the chain is the
/// deadline, and anything else with code UNAVAILABLE, UNKNOWN, INTERNAL or CANCELLED is a
/// transport error. The one local failure without a source is the generated client's
/// "Service was not ready" (UNKNOWN), raised when the channel's connection task is gone.
/// A server that itself answers UNKNOWN, INTERNAL or CANCELLED has no source, so it is
/// [`Failure::Final`] and never retried.
pub(crate) fn classify(status: &Status) -> Failure {
    if let Some(source) = status.source() {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(err) = cause {
            if err.is::<tonic::TimeoutExpired>() {
                return Failure::Deadline;
            }
            cause = err.source();
        }
        return match status.code() {
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled => {
                Failure::Transport
            }
            _ => Failure::Final,
        };
    }
    match status.code() {
        Code::Unavailable => Failure::Unavailable,
        Code::ResourceExhausted => Failure::Overloaded,
        Code::Unknown if status.message().starts_with("Service was not ready") => {
            Failure::Transport
        }
        _ => Failure::Final,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_statuses_are_sorted_by_code() {
        assert_eq!(
            classify(&Status::unavailable("draining")),
            Failure::Unavailable
        );
        assert_eq!(
            classify(&Status::resource_exhausted("queue full")),
            Failure::Overloaded
        );
        for final_status in [
            Status::invalid_argument("query has 3 values"),
            Status::failed_precondition("no such model"),
            Status::deadline_exceeded("server timeout"),
            Status::unknown("server said unknown"),
            Status::internal("server bug"),
            Status::cancelled("server cancelled"),
        ] {
            assert_eq!(classify(&final_status), Failure::Final, "{final_status:?}");
        }
    }

    #[test]
    fn local_failures_are_transport_or_deadline() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let connect = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(connect.code(), Code::Unavailable);
        assert_eq!(classify(&connect), Failure::Transport);

        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let broken = Status::from_error(Box::new(reset));
        assert_eq!(broken.code(), Code::Unknown);
        assert_eq!(classify(&broken), Failure::Transport);

        let timeout = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(classify(&timeout), Failure::Deadline);

        let not_ready = Status::unknown("Service was not ready: transport error");
        assert_eq!(classify(&not_ready), Failure::Transport);
    }
}
