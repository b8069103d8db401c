//! This node's place in the replicated registry: the Raft instance, how writes reach the
//! leader, linearizable reads, and whether this node may report SERVING.
//!
//! Invariants:
//! - The serving slot only ever changes in the registry's apply hook ([`local::LocalModels`])
//!   or when the reconciler finishes loading the version the *applied* registry names as
//!   active. A node never serves a version because someone told it to; only because it
//!   applied the entry.
//! - Writes are proposed on the leader. A follower forwards them (peer port, `Propose`);
//!   when no leader is known the caller gets UNAVAILABLE with the leader's address in the
//!   `rankd-leader` metadata when there is one.
//! - Reads that must not be stale (admin reads) wait for a read index from the leader.

pub mod admin_ops;
pub mod bake;
pub mod fetch;
pub mod heartbeat;
pub mod local;
pub mod outlier;
pub mod peer;
pub mod probe;
pub mod promote;
pub mod status;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use rankd_proto::peer::v1::peer_client::PeerClient;
use rankd_proto::peer::v1::{RaftMessage, ReadIndexRequest};
use rankd_raft::network::{Network, Peers};
use rankd_raft::service::LeaderContact;
use rankd_raft::state_machine::AppliedState;
use rankd_raft::{Command, NodeId, Outcome, PeerNode, Raft, RaftTiming};
use tokio::sync::watch;

use crate::error::ClusterError;
pub use local::LocalModels;

/// How long a proposal may wait for its commit before the caller is told UNAVAILABLE.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Metadata key carrying the leader's client address on UNAVAILABLE answers.
pub const LEADER_HEADER: &str = "rankd-leader";
/// Metadata key marking an admin call a node forwarded to the leader (never forwarded twice).
pub const FORWARDED_HEADER: &str = "rankd-forwarded-by";

pub struct Cluster {
    pub id: NodeId,
    pub raft: Raft,
    pub me: PeerNode,
    pub peers: Peers,
    pub local: Arc<LocalModels>,
    state: watch::Receiver<Arc<AppliedState>>,
    committed: Arc<AtomicU64>,
    leader_contact: Arc<LeaderContact>,
    lag_timeout: Duration,
    pub ready_timeout: Duration,
    /// Who answers heartbeats: feeds Rank forwarding, cluster status and metrics.
    pub peer_table: Arc<heartbeat::PeerTable>,
    /// What this node says about itself (readiness, load) in heartbeats and status.
    pub node: Arc<crate::node_state::NodeState>,
    /// How members are compared with their peers (gray failures).
    pub outlier: crate::quality::OutlierConfig,
    /// The bake window's default and thresholds.
    pub bake: crate::quality::BakeConfig,
}

/// What `Cluster::start` needs besides the config.
pub struct ClusterParts {
    pub id: NodeId,
    pub me: PeerNode,
    pub timing: RaftTiming,
    pub raft_path: std::path::PathBuf,
    pub local: Arc<LocalModels>,
    pub lag_timeout: Duration,
    pub ready_timeout: Duration,
    pub local_ip: Option<std::net::IpAddr>,
    pub heartbeat_interval: Duration,
    pub heartbeat_missed: u32,
    pub node: Arc<crate::node_state::NodeState>,
    /// Mutual TLS for outbound peer connections; None only in insecure-dev mode.
    pub peer_tls: Option<tonic::transport::ClientTlsConfig>,
    pub outlier: crate::quality::OutlierConfig,
    pub bake: crate::quality::BakeConfig,
}

impl Cluster {
    /// Opens the Raft storage and starts consensus. The returned service must be served on
    /// the peer port.
    pub async fn start(
        p: ClusterParts,
    ) -> Result<(Arc<Cluster>, rankd_raft::service::RaftService), ClusterError> {
        let (log_store, state_machine) = rankd_raft::log_store::open(
            &p.raft_path,
            Some(p.local.clone() as Arc<dyn rankd_raft::state_machine::ApplyHook>),
        )
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let committed = log_store.committed_index();
        let state = state_machine.subscribe();
        let config = p
            .timing
            .openraft_config("rankd")
            .map_err(ClusterError::Raft)?;
        let peers = Peers::new(&p.timing, p.local_ip);
        peers.set_tls(p.peer_tls);
        let raft = Raft::new(
            p.id,
            Arc::new(config),
            Network::new(peers.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let leader_contact = Arc::new(LeaderContact::new());
        let service = rankd_raft::service::RaftService::new(raft.clone(), leader_contact.clone());
        let peer_table = Arc::new(heartbeat::PeerTable::new(
            p.id,
            p.heartbeat_interval,
            p.heartbeat_missed,
            p.local.metrics().clone(),
        ));
        let cluster = Arc::new(Cluster {
            peer_table,
            node: p.node,
            id: p.id,
            raft,
            me: p.me,
            peers,
            local: p.local,
            state,
            committed,
            leader_contact,
            lag_timeout: p.lag_timeout,
            ready_timeout: p.ready_timeout,
            outlier: p.outlier,
            bake: p.bake,
        });
        Ok((cluster, service))
    }

    /// Makes this node a one-node cluster if it has never been part of one.
    pub async fn bootstrap_single(&self) -> Result<(), ClusterError> {
        if self.raft.is_initialized().await.map_err(raft_err)? {
            return Ok(());
        }
        let members = BTreeMap::from([(self.id, self.me.clone())]);
        self.raft
            .initialize(members)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        tracing::info!(id = self.id, "initialized a one-node cluster");
        Ok(())
    }

    /// The registry as this node has applied it (may be stale on a follower).
    pub fn applied(&self) -> Arc<AppliedState> {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<AppliedState>> {
        self.state.clone()
    }

    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    pub fn metrics(&self) -> openraft::RaftMetrics<NodeId, PeerNode> {
        self.raft.metrics().borrow().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.metrics().current_leader == Some(self.id)
    }

    /// The leader's id and addresses, when this node knows them.
    pub fn leader(&self) -> Option<(NodeId, PeerNode)> {
        let m = self.metrics();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// A call to the leader that broke in transit (refused, timed out, reset) means this
    /// node cannot reach a leader: UNAVAILABLE, naming the leader it tried. The leader's own
    /// answers pass through.
    fn peer_failed(&self, id: NodeId, status: tonic::Status) -> ClusterError {
        match status.code() {
            tonic::Code::Unavailable
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown => self.no_leader(),
            _ => ClusterError::Peer { peer: id, status },
        }
    }

    fn no_leader(&self) -> ClusterError {
        ClusterError::NoLeader {
            leader: self.leader().map(|(_, n)| n.api_addr),
        }
    }

    /// Proposes `cmd` on the leader (here, or forwarded) and returns its applied outcome.
    /// A rejected command is an error naming why.
    pub async fn propose(&self, cmd: Command) -> Result<Outcome, ClusterError> {
        let outcome = match self.leader() {
            Some((id, _)) if id == self.id => self.propose_local(cmd).await?,
            Some((id, node)) => self.propose_remote(id, &node, &cmd).await?,
            None => return Err(self.no_leader()),
        };
        match outcome {
            Outcome::Rejected { reason, message } => {
                Err(ClusterError::Rejected { reason, message })
            }
            ok => Ok(ok),
        }
    }

    /// Proposes on this node, which must be the leader.
    pub async fn propose_local(&self, cmd: Command) -> Result<Outcome, ClusterError> {
        // A leader cut off from its quorum does not step down by itself in openraft 0.9, and
        // its writes wait for a commit that cannot come: bound the wait. The entry may
        // still commit later if the partition heals.
        let write = tokio::time::timeout(WRITE_TIMEOUT, self.raft.client_write(cmd));
        let Ok(result) = write.await else {
            return Err(ClusterError::NoLeader {
                leader: self.leader().map(|(_, n)| n.api_addr),
            });
        };
        match result {
            Ok(resp) => Ok(resp.data),
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(f),
            )) => Err(ClusterError::NoLeader {
                leader: f.leader_node.map(|n| n.api_addr),
            }),
            Err(e) => Err(ClusterError::Raft(e.to_string())),
        }
    }

    async fn propose_remote(
        &self,
        id: NodeId,
        node: &PeerNode,
        cmd: &Command,
    ) -> Result<Outcome, ClusterError> {
        let channels = self
            .peers
            .channels(id, node)
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let json = serde_json::to_vec(cmd).map_err(|e| ClusterError::Raft(e.to_string()))?;
        let reply = PeerClient::new(channels.control)
            .propose(RaftMessage { json })
            .await
            .map_err(|status| self.peer_failed(id, status))?;
        serde_json::from_slice(&reply.into_inner().json)
            .map_err(|e| ClusterError::Raft(format!("leader {id} answered undecodable JSON: {e}")))
    }

    /// The registry, at least as new as everything committed before this call (a read
    /// index from the leader, then waiting to apply that far).
    pub async fn read(&self) -> Result<Arc<AppliedState>, ClusterError> {
        let index = match self.leader() {
            Some((id, _)) if id == self.id => self.read_index_local().await?,
            Some((id, node)) => {
                let channels = self
                    .peers
                    .channels(id, &node)
                    .map_err(|e| ClusterError::Raft(e.to_string()))?;
                PeerClient::new(channels.control)
                    .read_index(ReadIndexRequest {})
                    .await
                    .map_err(|status| self.peer_failed(id, status))?
                    .into_inner()
                    .index
            }
            None => return Err(self.no_leader()),
        };
        self.wait_applied(index, Duration::from_secs(5)).await
    }

    /// On the leader: confirms leadership with a quorum and returns the index a read
    /// must have applied.
    pub async fn read_index_local(&self) -> Result<u64, ClusterError> {
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
            Err(openraft::error::RaftError::APIError(
                openraft::error::CheckIsLeaderError::ForwardToLeader(f),
            )) => Err(ClusterError::NoLeader {
                leader: f.leader_node.map(|n| n.api_addr),
            }),
            Err(e) => Err(ClusterError::Raft(e.to_string())),
        }
    }

    /// Waits until this node has applied `index`.
    pub async fn wait_applied(
        &self,
        index: u64,
        timeout: Duration,
    ) -> Result<Arc<AppliedState>, ClusterError> {
        let mut rx = self.state.clone();
        let wait = async move {
            rx.wait_for(|s| s.last_applied.map_or(0, |l| l.index) >= index)
                .await
                .map(|s| s.clone())
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(_)) => Err(ClusterError::Raft("state machine stopped".into())),
            Err(_) => Err(ClusterError::Timeout(format!(
                "this node did not apply index {index} within {timeout:?}"
            ))),
        }
    }

    /// Whether this node may have missed registry changes: a follower that has not heard
    /// from a leader within the lag timeout, or a leader that has lost its quorum.
    pub fn is_lagging(&self) -> bool {
        let m = self.metrics();
        match m.state {
            ServerState::Leader => m
                .millis_since_quorum_ack
                .is_some_and(|ms| ms > self.lag_timeout.as_millis() as u64),
            _ => self
                .leader_contact
                .since()
                .is_none_or(|d| d > self.lag_timeout),
        }
    }

    /// A channel to node `id`'s peer port (mutual TLS with the cluster CA), for calls
    /// this node forwards: admin writes to the leader, Rank calls to a healthy peer.
    pub fn peer_channel(&self, id: NodeId) -> Result<tonic::transport::Channel, ClusterError> {
        let node = self
            .metrics()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
            .ok_or_else(|| ClusterError::Raft(format!("node {id} is not a member")))?;
        let channels = self
            .peers
            .channels(id, &node)
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Ok(channels.bulk)
    }
}

fn raft_err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Raft(e.to_string())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
