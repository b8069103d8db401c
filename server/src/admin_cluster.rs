//! The admin API's registry half: registering uploads, promotion, rollback, membership,
//! status, and forwarding writes to the leader.
//!
//! A write sent to a follower is forwarded once, over the client port, to the leader the
//! follower knows; the forwarded call carries `rankd-forwarded-by` so it is never
//! forwarded again. With no leader known (or a stale one), the caller gets UNAVAILABLE
//! with the leader's address in `rankd-leader` when there is one.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::layer::{PRINCIPAL_HEADER, PRINCIPAL_ROLE_HEADER};
use rankd_artifact::{ModelRecord, RecordState};
use rankd_proto::admin::v1 as pb;
use rankd_proto::admin::v1::admin_client::AdminClient;
use rankd_raft::registry::Registry;
use rankd_raft::{Command, ModelRef, VersionInfo};
use tonic::{Request, Response, Status};

use crate::admin::AdminService;
use crate::cluster::{admin_ops, promote, status, Cluster, FORWARDED_HEADER};
use crate::error::ClusterError;
use crate::model::Loaded;

/// Where a leader-only call must run.
enum Target {
    Here,
    /// The leader's client and its address.
    Leader(AdminClient<tonic::transport::Channel>, String),
}

/// A forwarded call that broke in transit (the leader died or is cut off) is this node's
/// UNAVAILABLE, naming the leader it tried; the leader's own answers pass through.
fn forward_failed(leader: &str, status: Status) -> Status {
    let in_transit = matches!(
        status.code(),
        tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
    ) && status
        .metadata()
        .get(crate::cluster::LEADER_HEADER)
        .is_none();
    if !in_transit {
        return status;
    }
    tracing::warn!(leader, error = %status.message(), "forwarding to the leader failed");
    let mut out = Status::unavailable(format!(
        "forwarded to the leader at {leader}, which did not answer: {}",
        status.message()
    ));
    if let Ok(v) = leader.parse() {
        out.metadata_mut().insert(crate::cluster::LEADER_HEADER, v);
    }
    out
}

/// What the registry records about a stored version that arrived at node `origin`.
pub fn version_info(record: &ModelRecord, origin: rankd_raft::NodeId) -> VersionInfo {
    VersionInfo {
        model: ModelRef::new(&record.name, &record.version),
        sha256: record.sha256.clone(),
        plaintext_sha256: record.plaintext_sha256.clone(),
        size: record.size,
        key_id: record.key_id.clone(),
        uploaded_by: record.uploaded_by.clone(),
        uploaded_at: record.uploaded_at,
        origin,
        retired: false,
        lineage: None,
    }
}

/// Records a freshly stored upload in the registry and reports this node ready for it (it
/// was just loaded and validated here).
pub async fn register(
    cluster: &Cluster,
    record: &ModelRecord,
    loaded: Arc<Loaded>,
    lineage: Option<rankd_raft::Lineage>,
) -> Result<(), ClusterError> {
    let model = ModelRef::new(&record.name, &record.version);
    // Other content under a registered version would serve under that version's fence:
    // refuse it before it is held anywhere.
    if let Some(existing) = cluster.applied().registry.versions.get(&model) {
        if existing.plaintext_sha256 != record.plaintext_sha256 {
            return Err(ClusterError::Rejected {
                reason: rankd_raft::Rejection::AlreadyExists,
                message: format!(
                    "{model} is already registered with content {}",
                    existing.plaintext_sha256
                ),
            });
        }
    }
    // Held before Register applies, so the reconciler (woken by it) finds the version
    // loaded and does not load a second copy.
    cluster.local.insert(model.clone(), loaded);
    let info = VersionInfo {
        lineage,
        ..version_info(record, cluster.id)
    };
    if let Err(e) = cluster.propose(Command::Register { info }).await {
        cluster.local.remove(&model);
        return Err(e);
    }
    cluster
        .propose(Command::ReportReady {
            node: cluster.id,
            model,
        })
        .await?;
    Ok(())
}

impl AdminService {
    pub(crate) async fn register(
        &self,
        record: &ModelRecord,
        loaded: Loaded,
        lineage: Option<rankd_raft::Lineage>,
    ) -> Result<(), ClusterError> {
        register(&self.cluster, record, Arc::new(loaded), lineage).await
    }

    /// The registry's versions, with this node's copy (state, local SHA-256) where it has one.
    pub(crate) fn list_registered(&self, registry: &Registry) -> Vec<pb::ModelRecord> {
        let is =
            |f: &Option<rankd_raft::Fence>, m: &ModelRef| f.as_ref().is_some_and(|f| &f.model == m);
        registry
            .versions
            .values()
            .map(|v| {
                let local = self.store.get(&v.model.name, &v.model.version);
                pb::ModelRecord {
                    name: v.model.name.clone(),
                    version: v.model.version.clone(),
                    sha256: local
                        .as_ref()
                        .map_or_else(|| v.sha256.clone(), |l| l.sha256.clone()),
                    plaintext_sha256: v.plaintext_sha256.clone(),
                    size: v.size,
                    key_id: local
                        .as_ref()
                        .map_or_else(|| v.key_id.clone(), |l| l.key_id.clone()),
                    uploaded_by: v.uploaded_by.clone(),
                    uploaded_at: v.uploaded_at,
                    state: match (&local, v.retired) {
                        (_, true) => "retired".into(),
                        (Some(l), _) if l.state == RecordState::Quarantined => "quarantined".into(),
                        (Some(_), _) => "ready".into(),
                        (None, _) => "not stored on this node".into(),
                    },
                    active: is(&registry.active, &v.model),
                    previous: is(&registry.previous, &v.model),
                    lineage: v.lineage.as_ref().map(crate::compression::lineage_proto),
                }
            })
            .collect()
    }

    fn target<T>(&self, request: &Request<T>) -> Result<Target, ClusterError> {
        if self.cluster.is_leader() {
            return Ok(Target::Here);
        }
        let leader = self.cluster.leader();
        let forwarded = request.metadata().get(FORWARDED_HEADER).is_some();
        match leader {
            Some((id, node)) if !forwarded => {
                // Over the peer port: the leader trusts the principal this node authorized
                // because only cluster members can complete its mutual-TLS handshake.
                let channel = self.cluster.peer_channel(id)?;
                Ok(Target::Leader(AdminClient::new(channel), node.api_addr))
            }
            other => Err(ClusterError::NoLeader {
                leader: other.map(|(_, n)| n.api_addr),
            }),
        }
    }

    fn forwarded<T>(&self, request: Request<T>) -> Request<T> {
        let timeout = request.metadata().get("grpc-timeout").cloned();
        let principal = request
            .extensions()
            .get::<crate::auth::Principal>()
            .cloned();
        let mut out = Request::new(request.into_inner());
        if let Ok(v) = self.cluster.id.to_string().parse() {
            out.metadata_mut().insert(FORWARDED_HEADER, v);
        }
        if let Some(p) = principal {
            if let Ok(name) = p.name.parse() {
                out.metadata_mut().insert(PRINCIPAL_HEADER, name);
            }
            out.metadata_mut().insert(
                PRINCIPAL_ROLE_HEADER,
                tonic::metadata::MetadataValue::from_static(p.role.as_str()),
            );
        }
        match timeout {
            Some(t) => {
                out.metadata_mut().insert("grpc-timeout", t);
            }
            // The peer channel has no timeout of its own; no forwarded call may outlive
            // the longest promotion wait.
            None => out.set_timeout(self.cluster.ready_timeout + Duration::from_secs(30)),
        }
        out
    }

    pub(crate) async fn cluster_promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        match self.target(&request)? {
            Target::Leader(mut c, addr) => c
                .promote(self.forwarded(request))
                .await
                .map_err(|s| forward_failed(&addr, s)),
            Target::Here => promote::promote(&self.cluster, request.into_inner())
                .await
                .map(Response::new)
                .map_err(|e| {
                    tracing::warn!(error = %e, "promotion refused");
                    Status::from(e)
                }),
        }
    }

    pub(crate) async fn cluster_rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        match self.target(&request)? {
            Target::Leader(mut c, addr) => c
                .rollback(self.forwarded(request))
                .await
                .map_err(|s| forward_failed(&addr, s)),
            Target::Here => promote::rollback(&self.cluster, request.into_inner())
                .await
                .map(Response::new)
                .map_err(Status::from),
        }
    }

    pub(crate) async fn cluster_add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        match self.target(&request)? {
            Target::Leader(mut c, addr) => c
                .add_node(self.forwarded(request))
                .await
                .map_err(|s| forward_failed(&addr, s)),
            Target::Here => {
                admin_ops::add_node(&self.cluster, request.into_inner())
                    .await
                    .map_err(Status::from)?;
                self.cluster_status().await
            }
        }
    }

    pub(crate) async fn cluster_remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        match self.target(&request)? {
            Target::Leader(mut c, addr) => c
                .remove_node(self.forwarded(request))
                .await
                .map_err(|s| forward_failed(&addr, s)),
            Target::Here => {
                admin_ops::remove_node(&self.cluster, request.into_inner())
                    .await
                    .map_err(Status::from)?;
                self.cluster_status().await
            }
        }
    }

    pub(crate) async fn cluster_status(&self) -> Result<Response<pb::ClusterStatus>, Status> {
        let state = self.cluster.read().await.map_err(Status::from)?;
        Ok(Response::new(
            status::cluster_status(&self.cluster, &state, self.readiness.is_serving()).await,
        ))
    }
}
