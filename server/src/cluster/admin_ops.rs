//! Membership and registry reads for the admin API. Membership changes run on the leader
//! (the admin layer forwards them there).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use rankd_proto::admin::v1 as pb;
use rankd_raft::{Command, NodeId, PeerNode};

use super::Cluster;
use crate::error::ClusterError;

/// A learner must catch up within this long to be added.
const ADD_TIMEOUT: Duration = Duration::from_secs(60);

fn member(m: &pb::ClusterMember) -> Result<(NodeId, PeerNode), ClusterError> {
    if m.id == 0 {
        return Err(ClusterError::InvalidArgument(
            "member id must be positive".into(),
        ));
    }
    if m.api_addr.is_empty() || m.peer_addr.is_empty() {
        return Err(ClusterError::InvalidArgument(format!(
            "member {}: api_addr and peer_addr are required",
            m.id
        )));
    }
    Ok((
        m.id,
        PeerNode {
            peer_addr: m.peer_addr.clone(),
            api_addr: m.api_addr.clone(),
        },
    ))
}

/// Makes the listed nodes the first voters. Runs on the node it was sent to, which must be
/// one of them.
pub async fn init(cluster: &Cluster, req: pb::InitClusterRequest) -> Result<(), ClusterError> {
    let mut members = BTreeMap::new();
    for m in &req.members {
        let (id, node) = member(m)?;
        if members.insert(id, node).is_some() {
            return Err(ClusterError::InvalidArgument(format!(
                "member id {id} is listed twice"
            )));
        }
    }
    if !members.contains_key(&cluster.id) {
        return Err(ClusterError::InvalidArgument(format!(
            "the members must include this node (id {})",
            cluster.id
        )));
    }
    if cluster.raft.is_initialized().await.map_err(raft)? {
        return Err(ClusterError::Precondition(
            "this node is already part of a cluster".into(),
        ));
    }
    cluster.raft.initialize(members).await.map_err(raft)?;
    // Answer once a leader exists, so the caller can promote right away.
    cluster
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader.is_some(), "a leader is elected")
        .await
        .map_err(|e| ClusterError::Timeout(e.to_string()))?;
    Ok(())
}

/// Adds a learner (and optionally promotes it to voter). Leader only.
pub async fn add_node(cluster: &Cluster, req: pb::AddNodeRequest) -> Result<(), ClusterError> {
    let m = req
        .member
        .as_ref()
        .ok_or_else(|| ClusterError::InvalidArgument("member is required".into()))?;
    let (id, node) = member(m)?;
    let state = cluster.read().await?;
    if state.registry.forgotten.contains(&id) {
        return Err(ClusterError::Precondition(format!(
            "node id {id} was removed from this cluster and is never reused; pick a new id"
        )));
    }
    if state.membership.membership().get_node(&id).is_some() {
        return Err(ClusterError::Precondition(format!(
            "node id {id} is already a member"
        )));
    }
    // Blocking: returns once the learner has caught up with the log (or a snapshot).
    tokio::time::timeout(ADD_TIMEOUT, cluster.raft.add_learner(id, node, true))
        .await
        .map_err(|_| {
            ClusterError::Timeout(format!("node {id} did not catch up within {ADD_TIMEOUT:?}"))
        })?
        .map_err(raft)?;
    tracing::info!(id, "learner added");
    if req.voter {
        cluster
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await
            .map_err(raft)?;
        tracing::info!(id, "learner promoted to voter");
    }
    Ok(())
}

/// Removes a node and retires its id for good. Leader only; the leader itself cannot be
/// removed this way (stop it, let the others elect, then remove it from the new leader).
pub async fn remove_node(
    cluster: &Cluster,
    req: pb::RemoveNodeRequest,
) -> Result<(), ClusterError> {
    let id = req.id;
    if id == cluster.id {
        return Err(ClusterError::Precondition(format!(
            "node {id} is the leader; remove it through another node once it has stepped down"
        )));
    }
    let state = cluster.read().await?;
    let membership = state.membership.membership();
    if membership.get_node(&id).is_none() {
        if state.registry.forgotten.contains(&id) {
            return Ok(());
        }
        // Left the membership but its id was never retired (the last removal stopped in
        // between): finish it.
        if was_member(&state, id) {
            cluster.propose(Command::ForgetNode { node: id }).await?;
            return Ok(());
        }
        return Err(ClusterError::NotFound(format!("node {id} is not a member")));
    }
    let is_voter = membership.voter_ids().any(|v| v == id);
    let change = if is_voter {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    cluster
        .raft
        .change_membership(change, false)
        .await
        .map_err(raft)?;
    cluster.propose(Command::ForgetNode { node: id }).await?;
    cluster.peers.forget(id);
    tracing::info!(id, "node removed; its id is retired");
    Ok(())
}

pub async fn history(cluster: &Cluster) -> Result<pb::HistoryResponse, ClusterError> {
    let state = cluster.read().await?;
    let entries = state
        .registry
        .history
        .iter()
        .map(|h| pb::HistoryEntry {
            action: h.action.clone(),
            by: h.by.clone(),
            at_ms: h.at_ms,
            from_version: h
                .from
                .as_ref()
                .map(|m| m.version.clone())
                .unwrap_or_default(),
            to_version: h.to.version.clone(),
            model_name: h.to.name.clone(),
            term: h.term,
            index: h.index,
            detail: h.detail.clone(),
        })
        .collect();
    let audit = state
        .registry
        .audit
        .iter()
        .map(|a| pb::AuditEntry {
            at_ms: a.at_ms,
            principal: a.principal.clone(),
            role: a.role.clone(),
            node: a.node,
            action: a.action.clone(),
            target: a.target.clone(),
            code: a.code.clone(),
            message: a.message.clone(),
        })
        .collect();
    Ok(pb::HistoryResponse { entries, audit })
}

/// Whether `id` ever held a registry role here (reported readiness or a failure, or
/// uploaded a version): a node never seen is simply unknown.
fn was_member(state: &rankd_raft::state_machine::AppliedState, id: NodeId) -> bool {
    let r = &state.registry;
    r.ready.contains_key(&id)
        || r.failed.contains_key(&id)
        || r.versions.values().any(|v| v.origin == id)
}

fn raft(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Raft(e.to_string())
}
