//! One node's view of itself, and the cluster status assembled from every node's view.

use std::time::Duration;

use openraft::ServerState;
use rankd_proto::admin::v1 as pb;
use rankd_proto::peer::v1::peer_client::PeerClient;
use rankd_proto::peer::v1::NodeStatusRequest;
use rankd_raft::state_machine::AppliedState;
use rankd_raft::{Fence, ModelRef, NodeId, PeerNode};
use serde::{Deserialize, Serialize};

use super::Cluster;

/// What `NodeStatus` answers (JSON on the peer port).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    pub role: String,
    pub voter: bool,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// The version this node serves (`name@version`), empty when none.
    pub serving: Option<ModelRef>,
    pub loaded: Vec<ModelRef>,
    pub healthy: bool,
    pub stages: Vec<(ModelRef, String, String)>,
    pub activated_at_ms: u64,
    pub activated_index: u64,
    #[serde(default)]
    pub queue_depth: u32,
    #[serde(default)]
    pub in_flight: u32,
    /// The node's own recent Rank outcomes (see `quality::live`).
    #[serde(default)]
    pub error_ratio: f64,
    #[serde(default)]
    pub p99_ms: f64,
    #[serde(default)]
    pub recent_calls: u32,
}

pub fn node_view(cluster: &Cluster, serving: bool) -> NodeView {
    let m = cluster.metrics();
    let voter = m
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == cluster.id);
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Follower if voter => "follower",
        ServerState::Follower => "learner",
        ServerState::Shutdown => "shutdown",
    };
    let current = cluster.local.slot().current();
    let activation = cluster.local.activation();
    let live = cluster.node.live.snapshot(cluster.node.live_window());
    NodeView {
        id: cluster.id,
        role: role.into(),
        voter,
        term: m.current_term,
        commit_index: cluster.committed_index(),
        applied_index: m.last_applied.map_or(0, |l| l.index),
        serving: current.map(|c| ModelRef::new(&c.info.name, &c.info.version)),
        loaded: cluster.local.loaded_versions(),
        healthy: serving,
        stages: cluster
            .local
            .stages()
            .into_iter()
            .map(|(m, s, d)| (m, s.as_str().to_string(), d))
            .collect(),
        activated_at_ms: activation.at_ms,
        activated_index: activation.index,
        queue_depth: cluster.node.queue_depth(),
        in_flight: u32::try_from(cluster.node.in_flight()).unwrap_or(u32::MAX),
        error_ratio: live.error_ratio,
        p99_ms: live.p99.as_secs_f64() * 1e3,
        recent_calls: u32::try_from(live.calls).unwrap_or(u32::MAX),
    }
}

/// Asks one node for its view (this node answers from memory).
pub async fn fetch_view(
    cluster: &Cluster,
    id: NodeId,
    node: &PeerNode,
    self_serving: bool,
) -> Option<NodeView> {
    if id == cluster.id {
        return Some(node_view(cluster, self_serving));
    }
    let channels = cluster.peers.channels(id, node).ok()?;
    let mut req = tonic::Request::new(NodeStatusRequest {});
    req.set_timeout(Duration::from_millis(500));
    let reply = PeerClient::new(channels.control)
        .node_status(req)
        .await
        .ok()?;
    serde_json::from_slice(&reply.into_inner().json).ok()
}

/// Every member's view, unreachable ones included (as such).
pub async fn cluster_status(
    cluster: &Cluster,
    state: &AppliedState,
    self_serving: bool,
) -> pb::ClusterStatus {
    let m = cluster.metrics();
    let membership = state.membership.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let members: Vec<(NodeId, PeerNode)> =
        membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
    let views = futures::future::join_all(
        members
            .iter()
            .map(|(id, n)| fetch_view(cluster, *id, n, self_serving)),
    )
    .await;
    let now = tokio::time::Instant::now();
    let degraded = cluster.peer_table.degraded();
    let nodes = members
        .iter()
        .zip(views)
        .map(|((id, n), view)| {
            let mut node = node_proto(*id, n, voters.contains(id), view);
            // The heartbeat columns are this node's peer table: how it sees the others.
            if let Some(p) = cluster.peer_table.view(*id, now) {
                node.heartbeat_known = p.age.is_some();
                node.heartbeat_age_ms = p.age.map_or(0, |a| a.as_millis() as u64);
                node.heartbeat_up = p.up;
            } else if *id == cluster.id {
                node.heartbeat_known = true;
                node.heartbeat_up = true;
            }
            if let Some(why) = degraded.get(id) {
                node.degraded = true;
                node.degraded_reason.clone_from(why);
            }
            node
        })
        .collect();
    let r = &state.registry;
    pb::ClusterStatus {
        leader_id: m.current_leader.unwrap_or(0),
        term: m.current_term,
        active: r.active.as_ref().map(fence_proto),
        previous_version: r
            .previous
            .as_ref()
            .map(|f| f.model.version.clone())
            .unwrap_or_default(),
        nodes,
        removed_ids: r.forgotten.iter().copied().collect(),
        reported_by: cluster.id,
        baking_version: r
            .baking
            .as_ref()
            .map(|b| b.model.version.clone())
            .unwrap_or_default(),
        bake_until_ms: r.baking.as_ref().map_or(0, |b| b.until_ms),
    }
}

fn node_proto(id: NodeId, n: &PeerNode, voter: bool, view: Option<NodeView>) -> pb::NodeStatus {
    let Some(v) = view else {
        return pb::NodeStatus {
            id,
            api_addr: n.api_addr.clone(),
            peer_addr: n.peer_addr.clone(),
            role: "unreachable".into(),
            voter,
            health: "UNREACHABLE".into(),
            ..Default::default()
        };
    };
    pb::NodeStatus {
        id,
        api_addr: n.api_addr.clone(),
        peer_addr: n.peer_addr.clone(),
        role: v.role,
        voter,
        term: v.term,
        commit_index: v.commit_index,
        applied_index: v.applied_index,
        active_version: v.serving.map(|m| m.version).unwrap_or_default(),
        loaded_versions: v.loaded.iter().map(ToString::to_string).collect(),
        health: if v.healthy { "SERVING" } else { "NOT_SERVING" }.into(),
        stages: v
            .stages
            .into_iter()
            .map(|(m, stage, detail)| pb::VersionStage {
                name: m.name,
                version: m.version,
                stage,
                detail,
            })
            .collect(),
        activated_at_ms: v.activated_at_ms,
        activated_index: v.activated_index,
        queue_depth: v.queue_depth,
        in_flight: v.in_flight,
        error_ratio: v.error_ratio,
        p99_ms: v.p99_ms,
        recent_calls: v.recent_calls,
        ..Default::default()
    }
}

pub fn fence_proto(f: &Fence) -> pb::Fence {
    pb::Fence {
        model_name: f.model.name.clone(),
        model_version: f.model.version.clone(),
        term: f.term,
        index: f.index,
    }
}
