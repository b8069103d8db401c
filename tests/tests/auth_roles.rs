//! Admin authorization in a secure cluster: no credential is UNAUTHENTICATED, too low a role
//! is PERMISSION_DENIED, neither changes anything, and every admin action lands in the
//! replicated audit history with who did it.

use std::time::Duration;

use rankd_proto::admin::v1::{
    AuditEntry, ClusterStatusRequest, HistoryRequest, RemoveNodeRequest, RollbackRequest,
};
use rankd_tests::{init, wait_for, CallerAdmin, Cluster};
use tonic::Code;

async fn history(client: &mut CallerAdmin) -> rankd_proto::admin::v1::HistoryResponse {
    client
        .history(HistoryRequest {})
        .await
        .expect("history")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_or_unknown_credentials_are_unauthenticated_and_change_nothing() {
    init();
    let c = Cluster::builder(3).secure().start().await;
    let fence = c.serve_v1().await;
    c.upload(1, "2").await;
    let before = c.history(1).await;

    for (who, token) in [
        ("no credential", None),
        ("an unknown token", Some("rkd_never-issued")),
    ] {
        tracing::info!(who, "--- promote, history and upload are refused");
        let mut anon = c.admin_as(2, token, None);
        let err = anon
            .promote(c.promote_request("2"))
            .await
            .expect_err("promote");
        assert_eq!(err.code(), Code::Unauthenticated, "{who}: {err:?}");
        if let Some(t) = token {
            assert!(!err.message().contains(t), "the token is echoed");
        }
        let err = anon.history(HistoryRequest {}).await.expect_err("history");
        assert_eq!(err.code(), Code::Unauthenticated, "{who}: {err:?}");
        let err = c.upload_as(&mut anon, "3").await.expect_err("upload");
        assert_eq!(err.code(), Code::Unauthenticated, "{who}: {err:?}");
    }

    tracing::info!("--- nothing changed: same active version, same history, no version 3");
    let status = c.status(1).await;
    assert_eq!(status.active.as_ref().map(|f| f.index), Some(fence.index));
    assert_eq!(c.history(1).await, before);
    let models = c
        .admin(1)
        .await
        .list_models(rankd_proto::admin::v1::ListModelsRequest {})
        .await
        .expect("list")
        .into_inner();
    assert!(models.models.iter().all(|m| m.version != "3"));
    let denied = c
        .node(2)
        .metric_value("rankd_admin_denied_total{method=\"Promote\",code=\"UNAUTHENTICATED\"}")
        .await;
    assert_eq!(denied, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_token_reads_but_cannot_promote_or_remove_nodes() {
    init();
    let c = Cluster::builder(3).secure().start().await;
    let fence = c.serve_v1().await;
    c.upload(1, "2").await;
    let reader = c.security().reader_token.clone();
    let operator = c.security().operator_token.clone();
    let mut r = c.admin_as(3, Some(&reader), None);

    tracing::info!("--- reads are allowed");
    r.get_cluster_status(ClusterStatusRequest {})
        .await
        .expect("a reader may read the status");
    history(&mut r).await;

    tracing::info!("--- promote, rollback and upload need operator");
    let err = r
        .promote(c.promote_request("2"))
        .await
        .expect_err("promote");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("reader-bot"), "{}", err.message());
    let err = r
        .rollback(RollbackRequest::default())
        .await
        .expect_err("rollback");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = c.upload_as(&mut r, "3").await.expect_err("upload");
    assert_eq!(err.code(), Code::PermissionDenied);

    tracing::info!("--- membership needs admin, even for an operator");
    let mut op = c.admin_as(3, Some(&operator), None);
    let err = op
        .remove_node(RemoveNodeRequest { id: 2 })
        .await
        .expect_err("remove node");
    assert_eq!(err.code(), Code::PermissionDenied);

    tracing::info!("--- nothing changed");
    let status = c.status(1).await;
    assert_eq!(status.active.as_ref().map(|f| f.index), Some(fence.index));
    assert_eq!(status.nodes.len(), 3);
}

/// The newest audit entry matching `action` and `principal`, once node `via` shows it.
async fn audited(c: &Cluster, via: u64, action: &str, principal: &str) -> AuditEntry {
    let reader = c.security().reader_token.clone();
    wait_for(
        &format!("an audit entry for {principal} {action}"),
        Duration::from_secs(20),
        || {
            let mut client = c.admin_as(via, Some(&reader), None);
            async move {
                let h = client
                    .history(HistoryRequest {})
                    .await
                    .map_err(|s| format!("{s:?}"))?
                    .into_inner();
                h.audit
                    .into_iter()
                    .rev()
                    .find(|e| e.action == action && e.principal == principal)
                    .ok_or_else(|| "not yet".to_string())
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_history_records_each_admin_action() {
    init();
    let c = Cluster::builder(3).secure().start().await;
    c.serve_v1().await;
    let leader = c.wait_leader().await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let operator = c.security().operator_token.clone();
    let reader = c.security().reader_token.clone();
    let mut op = c.admin_as(follower, Some(&operator), None);

    tracing::info!(
        follower,
        "--- the operator uploads and promotes version 2 through a follower"
    );
    c.upload_as(&mut op, "2").await.expect("upload as operator");
    let promoted = op
        .promote(c.promote_request("2"))
        .await
        .expect("promote as operator, forwarded to the leader")
        .into_inner();
    tracing::info!("--- then rolls back, and the reader tries to promote");
    op.rollback(RollbackRequest::default())
        .await
        .expect("rollback as operator");
    let denied = c
        .admin_as(leader, Some(&reader), None)
        .promote(c.promote_request("2"))
        .await
        .expect_err("reader");
    assert_eq!(denied.code(), Code::PermissionDenied);

    tracing::info!("--- each action is in the audit history, read from any node");
    let up = audited(&c, leader, "UploadModel", "deploy-bot").await;
    assert_eq!(
        (up.role.as_str(), up.node, up.code.as_str()),
        ("operator", follower, "OK")
    );
    assert_eq!(up.target, format!("{}@2", c.model_name()));
    let pr = audited(&c, leader, "Promote", "deploy-bot").await;
    assert_eq!((pr.node, pr.code.as_str()), (follower, "OK"), "{pr:?}");
    let rb = audited(&c, follower, "Rollback", "deploy-bot").await;
    assert_eq!(rb.code, "OK");
    let no = audited(&c, follower, "Promote", "reader-bot").await;
    assert_eq!((no.code.as_str(), no.node), ("PERMISSION_DENIED", leader));
    let init = audited(&c, follower, "InitCluster", "harness").await;
    assert_eq!(init.role, "admin");
    assert!(up.at_ms <= pr.at_ms && pr.at_ms <= rb.at_ms, "in order");

    tracing::info!("--- the promotion history names the authenticated caller, not requested_by");
    let h = c.history(follower).await;
    let entry = h
        .iter()
        .find(|e| e.index == promoted.fence.as_ref().map_or(0, |f| f.index))
        .expect("the promotion in the history");
    assert_eq!(entry.by, "deploy-bot");
}
