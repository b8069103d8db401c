//! The audit trail: every admin action, who did it, what on, and how it ended, recorded in
//! the replicated registry (`rankctl history`).
//!
//! [`AuditedAdmin`] wraps the admin service on the surface operators reach. Reads are
//! passed through unrecorded; every other call is recorded once it has finished, by the
//! node it arrived at (a write a follower forwarded to the leader is recorded once, by
//! the follower). The authenticated principal also replaces the caller-supplied
//! `requested_by`/`uploaded_by`, so promotion history names who was authenticated rather
//! than who a client claimed to be.

use std::sync::Arc;

use rankd_proto::admin::v1 as pb;
use rankd_proto::admin::v1::admin_server::Admin;
use rankd_raft::{AuditEntry, Command, NodeId};
use tonic::{Request, Response, Status, Streaming};

use crate::admin::AdminService;
use crate::auth::{Principal, ANONYMOUS};
use crate::cluster::Cluster;

/// Writes audit entries to the registry without holding up the caller's answer.
#[derive(Clone)]
pub struct Auditor {
    cluster: Arc<Cluster>,
    node: NodeId,
}

impl Auditor {
    pub fn new(cluster: Arc<Cluster>) -> Auditor {
        let node = cluster.id;
        Auditor { cluster, node }
    }

    /// Records one finished action. If the registry cannot take it (no quorum), the entry
    /// goes to the log at ERROR instead, so it is never silently lost.
    pub fn record(&self, who: &Principal, action: &str, target: String, status: &Status) {
        let entry = AuditEntry {
            at_ms: now_ms(),
            principal: who.name.clone(),
            role: who.role.to_string(),
            node: self.node,
            action: action.to_owned(),
            target,
            code: crate::error::code_label(status.code()).to_owned(),
            message: if status.code() == tonic::Code::Ok {
                String::new()
            } else {
                status.message().to_owned()
            },
        };
        tracing::info!(principal = %entry.principal, role = %entry.role, action = %entry.action,
            target = %entry.target, code = %entry.code, "admin action");
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            if let Err(e) = cluster
                .propose(Command::Audit {
                    entry: entry.clone(),
                })
                .await
            {
                tracing::error!(error = %e, ?entry, "audit entry could not be replicated");
            }
        });
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn principal<T>(req: &Request<T>) -> Principal {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(|| Principal {
            // Unreachable behind the auth layer, which always sets one.
            name: "unauthenticated".into(),
            role: crate::auth::Role::Reader,
        })
}

fn at(name: &str, version: &str) -> String {
    format!("{name}@{version}")
}

/// The admin service, with every action recorded.
pub struct AuditedAdmin {
    pub inner: Arc<AdminService>,
    pub auditor: Auditor,
}

/// An action under way. If the caller goes away before it finishes (a deadline, Ctrl-C),
/// tonic drops the handler, and this records the action as CANCELLED on drop: it may have
/// taken effect, and the history must not be silent about it.
struct Pending<'a> {
    auditor: &'a Auditor,
    who: Principal,
    action: &'static str,
    target: String,
    done: bool,
}

impl Pending<'_> {
    fn finish(mut self, status: &Status, target: Option<String>) {
        self.done = true;
        let target = target.unwrap_or_else(|| std::mem::take(&mut self.target));
        self.auditor.record(&self.who, self.action, target, status);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            let status = Status::cancelled(
                "the caller went away before the answer; the action may have taken effect",
            );
            self.auditor.record(
                &self.who,
                self.action,
                std::mem::take(&mut self.target),
                &status,
            );
        }
    }
}

impl AuditedAdmin {
    fn pending(&self, who: Principal, action: &'static str, target: String) -> Pending<'_> {
        Pending {
            auditor: &self.auditor,
            who,
            action,
            target,
            done: false,
        }
    }

    async fn audited<R>(
        &self,
        who: Principal,
        action: &'static str,
        target: String,
        call: impl std::future::Future<Output = Result<Response<R>, Status>>,
    ) -> Result<Response<R>, Status> {
        let pending = self.pending(who, action, target);
        let result = call.await;
        let status = result
            .as_ref()
            .err()
            .cloned()
            .unwrap_or_else(|| Status::ok(""));
        pending.finish(&status, None);
        result
    }
}

#[tonic::async_trait]
impl Admin for AuditedAdmin {
    async fn upload_model(
        &self,
        request: Request<Streaming<pb::UploadModelRequest>>,
    ) -> Result<Response<pb::UploadModelResponse>, Status> {
        let pending = self.pending(principal(&request), "UploadModel", String::new());
        let result = self.inner.upload_model(request).await;
        // The name and version are only known once the bundle has been read.
        let target = result
            .as_ref()
            .ok()
            .and_then(|r| r.get_ref().model.as_ref().map(|m| at(&m.name, &m.version)));
        let status = result
            .as_ref()
            .err()
            .cloned()
            .unwrap_or_else(|| Status::ok(""));
        pending.finish(&status, target);
        result
    }

    async fn list_models(
        &self,
        r: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        self.inner.list_models(r).await
    }

    async fn get_model(
        &self,
        r: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::ModelRecord>, Status> {
        self.inner.get_model(r).await
    }

    type DownloadModelStream = crate::download::ChunkStream;

    async fn inject_fault(
        &self,
        r: Request<pb::InjectFaultRequest>,
    ) -> Result<Response<pb::InjectFaultResponse>, Status> {
        let (who, target) = (principal(&r), String::new());
        self.audited(who, "InjectFault", target, self.inner.inject_fault(r))
            .await
    }

    async fn download_model(
        &self,
        r: Request<pb::GetModelRequest>,
    ) -> Result<Response<Self::DownloadModelStream>, Status> {
        let (who, target) = (principal(&r), at(&r.get_ref().name, &r.get_ref().version));
        self.audited(who, "DownloadModel", target, self.inner.download_model(r))
            .await
    }

    async fn activate_model(
        &self,
        r: Request<pb::ActivateModelRequest>,
    ) -> Result<Response<pb::ActivateModelResponse>, Status> {
        let (who, target) = (principal(&r), at(&r.get_ref().name, &r.get_ref().version));
        self.audited(who, "ActivateModel", target, self.inner.activate_model(r))
            .await
    }

    async fn rotate_keys(
        &self,
        r: Request<pb::RotateKeysRequest>,
    ) -> Result<Response<pb::RotateKeysResponse>, Status> {
        let who = principal(&r);
        self.audited(who, "RotateKeys", String::new(), self.inner.rotate_keys(r))
            .await
    }

    async fn create_backup(
        &self,
        r: Request<pb::CreateBackupRequest>,
    ) -> Result<Response<pb::Backup>, Status> {
        let who = principal(&r);
        let kind = if r.get_ref().incremental {
            "incremental"
        } else {
            "full"
        };
        self.audited(
            who,
            "CreateBackup",
            kind.into(),
            self.inner.create_backup(r),
        )
        .await
    }

    async fn list_backups(
        &self,
        r: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        self.inner.list_backups(r).await
    }

    async fn verify_backup(
        &self,
        r: Request<pb::VerifyBackupRequest>,
    ) -> Result<Response<pb::Backup>, Status> {
        let (who, target) = (principal(&r), r.get_ref().id.clone());
        self.audited(who, "VerifyBackup", target, self.inner.verify_backup(r))
            .await
    }

    async fn promote(
        &self,
        mut r: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        let who = principal(&r);
        let target = at(&r.get_ref().name, &r.get_ref().version);
        if who.name != ANONYMOUS {
            r.get_mut().requested_by = who.name.clone();
        }
        self.audited(who, "Promote", target, self.inner.promote(r))
            .await
    }

    async fn rollback(
        &self,
        mut r: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        let who = principal(&r);
        if who.name != ANONYMOUS {
            r.get_mut().requested_by = who.name.clone();
        }
        self.audited(who, "Rollback", String::new(), self.inner.rollback(r))
            .await
    }

    async fn history(
        &self,
        r: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        self.inner.history(r).await
    }

    async fn get_cluster_status(
        &self,
        r: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        self.inner.get_cluster_status(r).await
    }

    async fn init_cluster(
        &self,
        r: Request<pb::InitClusterRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let who = principal(&r);
        let ids: Vec<String> = r
            .get_ref()
            .members
            .iter()
            .map(|m| m.id.to_string())
            .collect();
        let target = format!("members {}", ids.join(","));
        self.audited(who, "InitCluster", target, self.inner.init_cluster(r))
            .await
    }

    async fn add_node(
        &self,
        r: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let who = principal(&r);
        let target = r
            .get_ref()
            .member
            .as_ref()
            .map(|m| format!("node {}", m.id))
            .unwrap_or_default();
        self.audited(who, "AddNode", target, self.inner.add_node(r))
            .await
    }

    async fn remove_node(
        &self,
        r: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let who = principal(&r);
        let target = format!("node {}", r.get_ref().id);
        self.audited(who, "RemoveNode", target, self.inner.remove_node(r))
            .await
    }
}
