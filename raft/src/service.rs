//! The server side of the Raft transport: the `rankd.peer.v1.Raft` gRPC service.
//!
//! Each handler decodes one JSON openraft request, hands it to the local [`Raft`], and
//! answers with the JSON of the whole `Result`, so the caller (see [`crate::network`])
//! receives the remote `RaftError` itself rather than a flattened gRPC status. A gRPC error
//! status therefore always means "the message never reached Raft" (it did not decode, or the
//! reply could not be encoded), never a Raft-level refusal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::raft::VoteRequest;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest};
use rankd_proto::peer::v1::raft_server::{Raft as RaftRpc, RaftServer};
use rankd_proto::peer::v1::RaftMessage;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::types::{NodeId, Raft, TypeConfig};

/// Largest request the service accepts. JSON writes snapshot bytes as an array of decimal
/// numbers (up to 4 characters per byte), so one snapshot chunk of openraft's default
/// 3 MiB becomes about 12 MiB on the wire: tonic's default 4 MiB limit would refuse every
/// full chunk and the snapshot would never install.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// When this node last heard from a leader it accepts.
///
/// Recorded on every AppendEntries (heartbeats included) whose answer shows the sender's
/// vote was accepted (`Success`, `PartialSuccess`, or `Conflict`: a log mismatch is still
/// contact with the rightful leader), and on every InstallSnapshot chunk likewise accepted,
/// since a leader busy streaming a snapshot to this node sends it no AppendEntries
/// meanwhile. Not recorded for `HigherVote` or an error: a deposed leader talking to us is
/// not contact with the cluster. A leader never receives AppendEntries, so this only means
/// something on a follower or learner.
///
/// Monotonic: stored as nanoseconds since a base [`Instant`] (plus one, so 0 means "never"),
/// so wall-clock jumps cannot make a follower look fresh or stale.
#[derive(Debug)]
pub struct LeaderContact {
    base: Instant,
    last_nanos_plus_one: AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact::new()
    }
}

impl LeaderContact {
    pub fn new() -> LeaderContact {
        LeaderContact {
            base: Instant::now(),
            last_nanos_plus_one: AtomicU64::new(0),
        }
    }

    /// Records contact now.
    pub fn record(&self) {
        // u64 nanoseconds last 584 years; saturate rather than wrap past that.
        let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        // fetch_max: concurrent handlers may finish out of order; never move backwards.
        self.last_nanos_plus_one
            .fetch_max(nanos.saturating_add(1), Ordering::Relaxed);
    }

    /// How long ago the last accepted leader contact was; `None` if there never was one.
    pub fn since(&self) -> Option<Duration> {
        match self.last_nanos_plus_one.load(Ordering::Relaxed) {
            0 => None,
            n => Some(
                self.base
                    .elapsed()
                    .saturating_sub(Duration::from_nanos(n - 1)),
            ),
        }
    }
}

/// The `rankd.peer.v1.Raft` service over one local [`Raft`].
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
    leader_contact: Arc<LeaderContact>,
}

impl RaftService {
    /// `leader_contact` is shared with whoever judges whether this node lags (the server's
    /// health checks), which is why it is passed in rather than created here.
    pub fn new(raft: Raft, leader_contact: Arc<LeaderContact>) -> RaftService {
        RaftService {
            raft,
            leader_contact,
        }
    }

    pub fn leader_contact(&self) -> &Arc<LeaderContact> {
        &self.leader_contact
    }

    /// The tonic service, accepting requests up to [`MAX_MESSAGE_BYTES`].
    pub fn into_server(self) -> RaftServer<RaftService> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn decode<T: DeserializeOwned>(what: &str, request: Request<RaftMessage>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().json)
        .map_err(|e| Status::invalid_argument(format!("{what} does not decode: {e}")))
}

fn encode<T: Serialize>(what: &str, reply: &T) -> Result<Response<RaftMessage>, Status> {
    serde_json::to_vec(reply)
        .map(|json| Response::new(RaftMessage { json }))
        .map_err(|e| Status::internal(format!("{what} reply does not encode: {e}")))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode("AppendEntriesRequest", request)?;
        let result = self.raft.append_entries(rpc).await;
        if matches!(
            result,
            Ok(AppendEntriesResponse::Success
                | AppendEntriesResponse::PartialSuccess(_)
                | AppendEntriesResponse::Conflict)
        ) {
            self.leader_contact.record();
        }
        encode("AppendEntries", &result)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<NodeId> = decode("VoteRequest", request)?;
        encode("Vote", &self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode("InstallSnapshotRequest", request)?;
        let leader_vote = rpc.vote;
        let result = self.raft.install_snapshot(rpc).await;
        // openraft refuses a chunk by answering with a local vote greater than the sender's.
        if matches!(&result, Ok(resp) if leader_vote >= resp.vote) {
            self.leader_contact.record();
        }
        encode("InstallSnapshot", &result)
    }
}
