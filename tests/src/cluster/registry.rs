//! The replicated registry through the admin API: uploads, promotions, rollbacks, history
//! and per-node stages.

use rankd_proto::admin::v1::{
    Fence, HistoryEntry, HistoryRequest, ModelRecord, PromoteRequest, PromoteResponse,
    RollbackRequest,
};
use tonic::Status;

use super::{node_status, Cluster, LOAD_TIMEOUT, PROMOTE_CALL_TIMEOUT, RPC_TIMEOUT};
use crate::bundle::{copy_bundle, rewrite_manifest};
use crate::upload::upload_dir;
use crate::wait_for;

impl Cluster {
    // --- the registry

    /// Uploads the test bundle relabelled as `version` through node `id`.
    /// Uploads the demo model as version 1 through node 1, promotes it, and waits until
    /// every node serves it: the usual starting point of a failover test or bench.
    pub async fn serve_v1(&self) -> Fence {
        self.upload(1, "1").await;
        let fence = self.must_promote(1, "1").await;
        self.wait_all_serving(&fence).await;
        fence
    }

    /// A copy of the test bundle renamed to `version`, made once per cluster.
    pub fn version_dir(&self, version: &str) -> std::path::PathBuf {
        let dir = self.root.path().join("bundles").join(version);
        if !dir.join("manifest.json").exists() {
            copy_bundle(&dir);
            rewrite_manifest(&dir, |m| m["version"] = version.into());
        }
        dir
    }

    pub async fn upload(&self, id: u64, version: &str) -> ModelRecord {
        let dir = self.version_dir(version);
        tracing::info!(id, version, "uploading");
        let rec = upload_dir(&mut self.admin(id).await, &dir)
            .await
            .unwrap_or_else(|s| panic!("uploading version {version} to node {id}: {s:?}"))
            .model
            .expect("UploadModel returns the record");
        assert_eq!(rec.version, version);
        rec
    }

    /// A Promote request for `version` of the test model (no expectation, default policy).
    pub fn promote_request(&self, version: &str) -> PromoteRequest {
        PromoteRequest {
            name: self.model_name.clone(),
            version: version.into(),
            requested_by: "tests".into(),
            ..Default::default()
        }
    }

    pub async fn promote(&self, id: u64, req: PromoteRequest) -> Result<PromoteResponse, Status> {
        tracing::info!(id, version = %req.version, expect = %req.expect_version, policy = req.policy, "promoting");
        let call = async { self.admin(id).await.promote(req).await };
        match tokio::time::timeout(PROMOTE_CALL_TIMEOUT, call).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => panic!("Promote on node {id} did not answer in {PROMOTE_CALL_TIMEOUT:?}"),
        }
    }

    /// Promotes `version` through node `id`, which must succeed; returns the fence.
    pub async fn must_promote(&self, id: u64, version: &str) -> Fence {
        let resp = self
            .promote(id, self.promote_request(version))
            .await
            .unwrap_or_else(|s| panic!("promoting {version} through node {id}: {s:?}"));
        let fence = resp.fence.expect("a promotion has a fence");
        assert_eq!(fence.model_version, version);
        tracing::info!(id, ?fence, not_ready = ?resp.not_ready, commit_ms = resp.commit_ms, "promoted");
        fence
    }

    /// Promotes `version` through node `id` with policy MAJORITY (a node that cannot load
    /// it does not block the promotion); panics if it is refused.
    pub async fn must_promote_majority(&self, id: u64, version: &str) -> PromoteResponse {
        let req = PromoteRequest {
            policy: rankd_proto::admin::v1::QuorumPolicy::Majority as i32,
            ..self.promote_request(version)
        };
        self.promote(id, req)
            .await
            .unwrap_or_else(|s| panic!("MAJORITY promotion of {version}: {s:?}"))
    }

    pub async fn rollback(&self, id: u64, req: RollbackRequest) -> Result<PromoteResponse, Status> {
        tracing::info!(id, expect = %req.expect_version, "rolling back");
        let call = async { self.admin(id).await.rollback(req).await };
        match tokio::time::timeout(PROMOTE_CALL_TIMEOUT, call).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => panic!("Rollback on node {id} did not answer in {PROMOTE_CALL_TIMEOUT:?}"),
        }
    }

    /// Rolls back through node `id`, which must succeed; returns the new fence.
    pub async fn must_rollback(&self, id: u64) -> Fence {
        let req = RollbackRequest {
            requested_by: "tests".into(),
            ..Default::default()
        };
        let resp = self
            .rollback(id, req)
            .await
            .unwrap_or_else(|s| panic!("rolling back through node {id}: {s:?}"));
        resp.fence.expect("a rollback has a fence")
    }

    pub async fn history(&self, id: u64) -> Vec<HistoryEntry> {
        let mut req = tonic::Request::new(HistoryRequest {});
        req.set_timeout(RPC_TIMEOUT);
        self.admin(id)
            .await
            .history(req)
            .await
            .unwrap_or_else(|s| panic!("History on node {id}: {s:?}"))
            .into_inner()
            .entries
    }

    /// The stage node `of` is at for `version`, as node `via` reports the cluster.
    pub async fn stage(&self, via: u64, of: u64, version: &str) -> Option<String> {
        let st = self.try_status(via).await.ok()?;
        node_status(&st, of)?
            .stages
            .iter()
            .find(|s| s.version == version)
            .map(|s| s.stage.clone())
    }

    /// Waits until every live member has `version` ready (fetched, verified, loaded and
    /// validated: stage `ready`, or loaded), as node `via` reports the cluster.
    pub async fn wait_ready_everywhere(&self, via: u64, version: &str) {
        self.wait_ready_on(via, &self.live_ids(), version).await;
    }

    /// Like [`wait_ready_everywhere`](Self::wait_ready_everywhere), for the nodes `ids`.
    pub async fn wait_ready_on(&self, via: u64, ids: &[u64], version: &str) {
        wait_for(
            &format!("nodes {ids:?} ready for {version}"),
            LOAD_TIMEOUT,
            || async {
                let st = self.try_status(via).await.map_err(|s| format!("{s:?}"))?;
                let ready = |id: u64| {
                    node_status(&st, id).is_some_and(|n| {
                        n.loaded_versions.iter().any(|v| v == version)
                            || n.stages
                                .iter()
                                .any(|s| s.version == version && s.stage == "ready")
                    })
                };
                if ids.iter().all(|&id| ready(id)) {
                    Ok(())
                } else {
                    Err(format!("{:?}", st.nodes))
                }
            },
        )
        .await;
    }
}
