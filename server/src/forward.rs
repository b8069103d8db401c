//! Server-side failover: a Rank call this node cannot serve itself goes once to a healthy
//! peer from the peer table.
//!
//! Invariants:
//! - A forwarded call carries [`FORWARDED_HEADER`]; a node never forwards a call that has it.
//!   So a call is forwarded at most once and can never loop, whatever the peers' tables say.
//! - Only a peer the table counts up, ready, not draining and with queue room is chosen.
//!   With none, the caller serves or refuses the call locally, exactly as without peers.
//! - The answer is the peer's, fence and `node_id` included: the client sees which replica
//!   and activation scored its candidates, and `forwarded_by` names this node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rankd_proto::v1::ranker_client::RankerClient;
use rankd_proto::v1::{RankRequest, RankResponse};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::Status;

use crate::cluster::Cluster;
use crate::metrics::ForwardLabels;

/// Marks a call a node forwarded; its value is the forwarding node's name. The admin path
/// uses the same key for registry writes forwarded to the leader.
pub use crate::cluster::FORWARDED_HEADER;

/// Why this node did not serve a call itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Not serving the registry's active version (loading, failed, none).
    NotReady,
    /// No word from the leader for `lag_timeout`: may have missed a promotion.
    Lagging,
    /// Its batching queue is full.
    QueueFull,
}

impl Why {
    fn label(self) -> &'static str {
        match self {
            Why::NotReady => "not_ready",
            Why::Lagging => "lagging",
            Why::QueueFull => "queue_full",
        }
    }
}

pub struct Forwarder {
    cluster: Arc<Cluster>,
    /// This node's name, sent in the marker and in `forwarded_by`.
    name: String,
}

impl Forwarder {
    pub fn new(cluster: Arc<Cluster>, name: String) -> Forwarder {
        Forwarder { cluster, name }
    }

    /// Sends `req` to a healthy peer, with the caller's `traceparent` (if any) so the peer's
    /// log lines join the same trace. `None` when no peer can take it: the caller then
    /// handles it locally.
    pub async fn forward(
        &self,
        req: RankRequest,
        deadline: Option<Instant>,
        why: Why,
        traceparent: Option<&MetadataValue<Ascii>>,
    ) -> Option<Result<RankResponse, Status>> {
        let count = |result: &'static str| {
            self.cluster
                .local
                .metrics()
                .peers
                .forwards
                .get_or_create(&ForwardLabels {
                    reason: why.label(),
                    result,
                })
                .inc();
        };
        let Some(target) = self.cluster.peer_table.pick() else {
            count("no_peer");
            return None;
        };
        let result = self
            .call(target.id, &target.api_addr, req, deadline, traceparent)
            .await;
        match &result {
            Ok(_) => count("ok"),
            Err(status) => {
                count("error");
                tracing::info!(peer = target.id, reason = why.label(), error = %status, "forwarded rank call failed");
            }
        }
        Some(result.map(|mut resp| {
            resp.forwarded_by = self.name.clone();
            resp
        }))
    }

    async fn call(
        &self,
        id: rankd_raft::NodeId,
        api_addr: &str,
        req: RankRequest,
        deadline: Option<Instant>,
        traceparent: Option<&MetadataValue<Ascii>>,
    ) -> Result<RankResponse, Status> {
        let channel = self
            .cluster
            .peer_channel(id)
            .map_err(|e| Status::unavailable(format!("forwarding: {e}")))?;
        let mut request = tonic::Request::new(req);
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Status::deadline_exceeded(
                    "deadline passed before the call could be forwarded",
                ));
            }
            request.set_timeout(left);
        } else {
            request.set_timeout(Duration::from_secs(10));
        }
        let marker = MetadataValue::try_from(self.name.as_str())
            .map_err(|_| Status::internal("node name is not valid metadata"))?;
        request.metadata_mut().insert(FORWARDED_HEADER, marker);
        if let Some(t) = traceparent {
            request.metadata_mut().insert("traceparent", t.clone());
        }
        RankerClient::new(channel)
            .rank(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| {
                if s.code() == tonic::Code::Unavailable {
                    Status::unavailable(format!("forwarded to {api_addr}: {}", s.message()))
                } else {
                    s
                }
            })
    }
}
