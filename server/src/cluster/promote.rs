//! Two-phase promotion, run on the leader.
//!
//! Phase one already happened when the version was registered: every node fetches,
//! verifies, loads and validates it, then commits ReportReady (or ReportFailed). Phase two
//! is here: wait until every *required* node is ready, then commit Promote naming them.
//! The state machine re-checks readiness at apply time, so a promotion can never commit
//! ahead of the nodes it names, whatever happened between the check and the commit.
//!
//! Required nodes: by default every live member (voter or learner); a member that does
//! not answer a status probe is not live, is left out, and catches up after the switch
//! (it reports NOT_SERVING until then). With the majority policy, a majority of voters
//! suffices.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rankd_proto::admin::v1 as pb;
use rankd_raft::state_machine::AppliedState;
use rankd_raft::{Command, ModelRef, NodeId, Outcome, PeerNode};

use super::status::{fence_proto, fetch_view};
use super::{now_ms, Cluster};
use crate::error::ClusterError;

/// How often the leader re-probes members that are not ready yet (one that died meanwhile
/// stops being required).
const REPROBE: Duration = Duration::from_millis(500);

pub async fn promote(
    cluster: &Cluster,
    req: pb::PromoteRequest,
) -> Result<pb::PromoteResponse, ClusterError> {
    if req.name.is_empty() || req.version.is_empty() {
        return Err(ClusterError::InvalidArgument(
            "name and version are required".into(),
        ));
    }
    let model = ModelRef::new(&req.name, &req.version);
    let expect =
        (!req.expect_version.is_empty()).then(|| ModelRef::new(&req.name, &req.expect_version));
    let majority = req.policy == pb::QuorumPolicy::Majority as i32;
    let timeout = match req.ready_timeout_ms {
        0 => cluster.ready_timeout,
        ms => Duration::from_millis(ms),
    };
    let by = requester(&req.requested_by);
    let bake_ms = req.bake_ms.unwrap_or(cluster.bake.window_ms);

    let state = cluster.read().await?;
    let registry = &state.registry;
    match registry.versions.get(&model) {
        None => {
            return Err(ClusterError::NotFound(format!(
                "{model} is not registered (upload it first)"
            )))
        }
        Some(v) if v.retired => {
            return Err(ClusterError::Precondition(format!("{model} is retired")))
        }
        Some(_) => {}
    }
    // Checked again at apply; checked here so a wrong expectation fails at once rather
    // than after waiting for readiness.
    if let Some(e) = &expect {
        let current = registry.active.as_ref().map(|f| &f.model);
        if current != Some(e) {
            return Err(ClusterError::Precondition(format!(
                "expected active version {e}, but it is {}",
                current.map_or_else(|| "none".to_string(), ToString::to_string)
            )));
        }
    }
    if let Some(active) = registry.active.as_ref().filter(|f| f.model == model) {
        return Ok(pb::PromoteResponse {
            fence: Some(fence_proto(active)),
            not_ready: vec![],
            commit_ms: 0.0,
            bake_until_ms: 0,
        });
    }

    let members = members(&state);
    let voters: BTreeSet<NodeId> = state.membership.membership().voter_ids().collect();
    let mut live = probe(cluster, &members).await;
    // Every node keeps the version loaded from here on, even one it had unloaded.
    if state.registry.preparing.as_ref() != Some(&model) {
        cluster
            .propose(Command::Prepare {
                model: model.clone(),
            })
            .await?;
    }
    let deadline = Instant::now() + timeout;
    let mut changes = cluster.subscribe();
    let mut last_probe = Instant::now();

    loop {
        let state = cluster.applied();
        let r = &state.registry;
        let failed = |n: &NodeId| r.failed.get(n).and_then(|f| f.get(&model)).cloned();
        let required: Vec<NodeId> = if majority {
            voters
                .iter()
                .copied()
                .filter(|n| r.is_ready(*n, &model))
                .collect()
        } else {
            live.iter().copied().collect()
        };
        if !majority {
            let broken: Vec<String> = required
                .iter()
                .filter_map(|n| failed(n).map(|why| format!("node {n}: {why}")))
                .collect();
            if !broken.is_empty() {
                return Err(ClusterError::Precondition(format!(
                    "{model} cannot be promoted: {}",
                    broken.join("; ")
                )));
            }
        }
        let enough = if majority {
            required.len() > voters.len() / 2
        } else {
            required.iter().all(|n| r.is_ready(*n, &model))
        };
        if enough {
            let ready_at = Instant::now();
            let outcome = cluster
                .propose(Command::Promote {
                    model: model.clone(),
                    expect: expect.clone(),
                    required: required.clone(),
                    by: by.clone(),
                    at_ms: now_ms(),
                    bake_ms,
                })
                .await?;
            let commit_ms = ready_at.elapsed().as_secs_f64() * 1000.0;
            let Outcome::Applied { fence: Some(fence) } = outcome else {
                return Err(ClusterError::Raft(
                    "promotion applied without a fence".into(),
                ));
            };
            let not_ready = members
                .iter()
                .filter(|(id, _)| !required.contains(id))
                .map(|(id, _)| pb::NodeNotReady {
                    id: *id,
                    reason: failed(id).unwrap_or_else(|| {
                        if live.contains(id) {
                            "not ready".into()
                        } else {
                            "unreachable".into()
                        }
                    }),
                })
                .collect();
            let bake_until_ms = cluster
                .applied()
                .registry
                .baking
                .as_ref()
                .filter(|b| b.index == fence.index)
                .map_or(0, |b| b.until_ms);
            tracing::info!(model = %model, term = fence.term, index = fence.index, commit_ms, bake_until_ms, "promotion committed");
            return Ok(pb::PromoteResponse {
                fence: Some(fence_proto(&fence)),
                not_ready,
                commit_ms,
                bake_until_ms,
            });
        }
        if Instant::now() >= deadline {
            let waiting: Vec<String> = members
                .iter()
                .filter(|(id, _)| !r.is_ready(*id, &model))
                .map(|(id, _)| {
                    let why = failed(id).unwrap_or_else(|| "not ready".into());
                    format!("node {id}: {why}")
                })
                .collect();
            return Err(ClusterError::Precondition(format!(
                "{model} was not ready within {timeout:?}: {}",
                waiting.join("; ")
            )));
        }
        if last_probe.elapsed() >= REPROBE {
            let pending: Vec<(NodeId, PeerNode)> = members
                .iter()
                .filter(|(id, _)| live.contains(id) && !r.is_ready(*id, &model))
                .cloned()
                .collect();
            let alive = probe(cluster, &pending).await;
            live.retain(|id| !pending.iter().any(|(p, _)| p == id) || alive.contains(id));
            last_probe = Instant::now();
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep(REPROBE) => {}
        }
    }
}

/// Every member whose id is not retired, with its addresses.
fn members(state: &AppliedState) -> Vec<(NodeId, PeerNode)> {
    state
        .membership
        .membership()
        .nodes()
        .filter(|(id, _)| !state.registry.forgotten.contains(id))
        .map(|(id, n)| (*id, n.clone()))
        .collect()
}

/// Who the history records for a request that names nobody.
fn requester(given: &str) -> String {
    if given.is_empty() {
        "unknown".to_string()
    } else {
        given.to_string()
    }
}

/// The members that answer a status probe now: those a switch back must find ready.
pub(super) async fn live_members(cluster: &Cluster, state: &AppliedState) -> Vec<NodeId> {
    probe(cluster, &members(state)).await.into_iter().collect()
}

/// The members that answer a status probe.
async fn probe(cluster: &Cluster, members: &[(NodeId, PeerNode)]) -> BTreeSet<NodeId> {
    let views = futures::future::join_all(
        members
            .iter()
            .map(|(id, n)| fetch_view(cluster, *id, n, true)),
    )
    .await;
    members
        .iter()
        .zip(views)
        .filter(|(_, v)| v.is_some())
        .map(|((id, _), _)| *id)
        .collect()
}

pub async fn rollback(
    cluster: &Cluster,
    req: pb::RollbackRequest,
) -> Result<pb::PromoteResponse, ClusterError> {
    let state = cluster.read().await?;
    let expect = match (&state.registry.active, req.expect_version.is_empty()) {
        (_, true) => None,
        (Some(a), false) => Some(ModelRef::new(&a.model.name, &req.expect_version)),
        (None, false) => Some(ModelRef::new("", &req.expect_version)),
    };
    let by = requester(&req.requested_by);
    // Every live member must still hold the previous version; one that does not (it
    // restarted, or never could load it) would stop serving at the switch.
    let required = live_members(cluster, &state).await;
    let started = Instant::now();
    let outcome = cluster
        .propose(Command::Rollback {
            expect,
            required,
            by,
            at_ms: now_ms(),
        })
        .await?;
    let Outcome::Applied { fence: Some(fence) } = outcome else {
        return Err(ClusterError::Raft(
            "rollback applied without a fence".into(),
        ));
    };
    tracing::info!(model = %fence.model, term = fence.term, index = fence.index, "rolled back");
    Ok(pb::PromoteResponse {
        fence: Some(fence_proto(&fence)),
        not_ready: vec![],
        commit_ms: started.elapsed().as_secs_f64() * 1000.0,
        bake_until_ms: 0,
    })
}
