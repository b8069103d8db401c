//! `inference.GRPCInferenceService`: the six RPCs rankd implements.
//!
//! Choices (docs/oip.md has the full table):
//! - The one model is the registry's active model; its one version is the active version.
//!   Asking about another name is NOT_FOUND naming it. Another version is NOT_FOUND for
//!   ModelMetadata and ModelInfer; ModelReady answers `ready: false` for a version the
//!   registry knows but does not serve (it exists, it is just not ready), NOT_FOUND for a
//!   version it has never heard of. With no active version at all, ModelReady is `false`
//!   (a probe during start-up is not an error) and the others are UNAVAILABLE.
//! - ServerLive is true whenever this process answers; ServerReady and ModelReady are the
//!   grpc.health SERVING condition ([`NodeState::is_serving`]).
//! - ModelInfer sends each row through `Ranker::rank`, concurrently, with the call's
//!   deadline and metadata; the first failing row (lowest index) decides the error, with
//!   Rank's code and message prefixed by the row.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::task::Poll;

use rankd_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use rankd_proto::inference::infer_parameter::ParameterChoice;
use rankd_proto::inference::model_metadata_response::TensorMetadata;
use rankd_proto::inference::{
    InferParameter, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse, ServerLiveRequest,
    ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest,
    ServerReadyResponse,
};
use rankd_proto::v1::ranker_server::Ranker;
use rankd_proto::v1::{RankRequest, RankResponse};
use rankd_raft::ModelRef;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::outputs::{self, DEFAULT_TOP_K};
use super::tensors::{self, CANDIDATES, FP32, INT64, ITEM_IDS, QUERY, SCORES};
use crate::cluster::Cluster;
use crate::error::{InferError, ServeError};
use crate::model::ModelSlot;
use crate::node_state::NodeState;
use crate::scheduler::{Arrival, Scheduler};
use crate::service::RankService;
use crate::stack::Deadline;

/// What ModelMetadata reports as the platform: Triton's name for a TorchScript model.
const PLATFORM: &str = "pytorch_libtorch";

pub struct OipService {
    rank: Arc<RankService>,
    scheduler: Arc<Scheduler>,
    cluster: Arc<Cluster>,
    slot: Arc<ModelSlot>,
    state: Arc<NodeState>,
}

impl OipService {
    pub fn new(
        rank: Arc<RankService>,
        scheduler: Arc<Scheduler>,
        cluster: Arc<Cluster>,
        slot: Arc<ModelSlot>,
        state: Arc<NodeState>,
    ) -> OipService {
        OipService {
            rank,
            scheduler,
            cluster,
            slot,
            state,
        }
    }

    /// The registry's active model, as this node has applied it.
    fn active(&self) -> Option<ModelRef> {
        let applied = self.cluster.applied();
        applied.registry.active.as_ref().map(|f| f.model.clone())
    }

    /// The active model if `name` and `version` (empty: any) name it.
    fn resolve(&self, name: &str, version: &str) -> Result<ModelRef, InferError> {
        let active = self.active().ok_or(ServeError::NoModel)?;
        if name != active.name {
            return Err(InferError::ModelNotFound {
                name: name.into(),
                active: active.name,
            });
        }
        if !version.is_empty() && version != active.version {
            return Err(InferError::VersionNotFound {
                name: name.into(),
                version: version.into(),
                active: active.version,
            });
        }
        Ok(active)
    }

    async fn infer(
        &self,
        req: ModelInferRequest,
        deadline: Option<Deadline>,
        metadata: MetadataMap,
    ) -> Result<ModelInferResponse, InferError> {
        self.resolve(&req.model_name, &req.model_version)?;
        let top_k = outputs::top_k(&req.parameters)?;
        let wanted = outputs::requested_outputs(&req.outputs)?;
        let batch = tensors::decode(&req.inputs, &req.raw_input_contents)?;
        let max = self.state.queue_capacity;
        if batch.rows > max {
            return Err(InferError::TooManyRows {
                rows: batch.rows,
                max,
            });
        }
        let calls = (0..batch.rows).map(|row| {
            let (query, candidates) = batch.row(row);
            let mut call = Request::new(RankRequest {
                request_id: row_id(&req.id, row, batch.rows),
                query: query.to_vec(),
                candidate_ids: candidates.to_vec(),
                top_k,
            });
            *call.metadata_mut() = metadata.clone();
            if let Some(d) = deadline {
                call.extensions_mut().insert(d);
            }
            Ranker::rank(&*self.rank, call)
        });
        // Every row counts as arriving until all have been polled once (and so, on the
        // local path, validated and queued): a worker waiting for arrivals then takes the
        // rows as one batch instead of starting on the first alone.
        let held: Vec<Arrival> = (0..batch.rows).map(|_| self.scheduler.arrival()).collect();
        let mut all = std::pin::pin!(futures::future::join_all(calls));
        let first = futures::poll!(all.as_mut());
        drop(held);
        let answers = match first {
            Poll::Ready(answers) => answers,
            Poll::Pending => all.await,
        };
        let mut rows = Vec::with_capacity(answers.len());
        for (row, answer) in answers.into_iter().enumerate() {
            rows.push(
                answer
                    .map_err(|status| InferError::Row { row, status })?
                    .into_inner(),
            );
        }
        respond(req.id, &wanted, &rows)
    }
}

/// Row ids for the Rank calls: the client's id alone for one row, `<id>/<row>` for several,
/// and empty (the Rank handler generates one) when the client sent none.
fn row_id(id: &str, row: usize, rows: usize) -> String {
    match (id.is_empty(), rows) {
        (true, _) => String::new(),
        (false, 1) => id.to_string(),
        (false, _) => format!("{id}/{row}"),
    }
}

/// Joins the rows' answers into one response. All rows must come from the same activation
/// (a promotion between two rows would mix versions in one answer) and rank as many items.
fn respond(
    id: String,
    wanted: &[outputs::Output],
    rows: &[RankResponse],
) -> Result<ModelInferResponse, InferError> {
    let fence = |r: &RankResponse| {
        let (term, index) = r.fence.as_ref().map_or((0, 0), |f| (f.term, f.index));
        format!(
            "{}@{} (term {term}, index {index})",
            r.model_name, r.model_version
        )
    };
    let Some((head, _)) = rows.split_first() else {
        return Err(InferError::Decode(tensors::DecodeError::EmptyBatch));
    };
    let want = head.items.len();
    let first = fence(head);
    let mut table = Vec::with_capacity(rows.len());
    for (row, r) in rows.iter().enumerate() {
        let this = fence(r);
        if this != first {
            return Err(InferError::MixedVersions { first, other: this });
        }
        if r.items.len() != want {
            return Err(InferError::Ragged {
                row,
                got: r.items.len(),
                want,
            });
        }
        table.push(r.items.iter().map(|i| (i.id, i.score)).unzip());
    }
    let (outputs, raw_output_contents) = outputs::encode(wanted, &table, want);
    let nodes: BTreeSet<&str> = rows.iter().map(|r| r.node_id.as_str()).collect();
    let (term, index) = head.fence.as_ref().map_or((0, 0), |f| (f.term, f.index));
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let parameters = HashMap::from([
        (
            "node_id".to_string(),
            param(ParameterChoice::StringParam(
                nodes.into_iter().collect::<Vec<_>>().join(","),
            )),
        ),
        (
            "fence_term".into(),
            param(ParameterChoice::Int64Param(int(term))),
        ),
        (
            "fence_index".into(),
            param(ParameterChoice::Int64Param(int(index))),
        ),
    ]);
    Ok(ModelInferResponse {
        model_name: head.model_name.clone(),
        model_version: head.model_version.clone(),
        id,
        parameters,
        outputs,
        raw_output_contents,
    })
}

fn param(choice: ParameterChoice) -> InferParameter {
    InferParameter {
        parameter_choice: Some(choice),
    }
}

fn tensor(name: &str, datatype: &str, shape: [i64; 2]) -> TensorMetadata {
    TensorMetadata {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for OipService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.state.is_serving(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let req = request.into_inner();
        let ready = match self.resolve(&req.name, &req.version) {
            Ok(_) => self.state.is_serving(),
            Err(InferError::Serve(ServeError::NoModel)) => false,
            Err(InferError::VersionNotFound { .. })
                if self
                    .cluster
                    .applied()
                    .registry
                    .versions
                    .contains_key(&ModelRef::new(&req.name, &req.version)) =>
            {
                false
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "rankd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // None of the protocol's optional extensions (classification, model repository,
            // statistics, shared memory, ...) is implemented.
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let req = request.into_inner();
        let active = self.resolve(&req.name, &req.version)?;
        // The schema comes from the loaded model; a node still loading the active version
        // reports the query width as unknown (-1) rather than guessing it.
        let local = self
            .slot
            .current()
            .filter(|m| m.info.name == active.name && m.info.version == active.version);
        let query_dim = local
            .as_ref()
            .map_or(-1, |m| i64::try_from(m.info.query_dim).unwrap_or(-1));
        let mut properties = HashMap::from([
            ("node_id".to_string(), self.state.name.clone()),
            ("default_top_k".to_string(), DEFAULT_TOP_K.to_string()),
            (
                "max_batch_rows".to_string(),
                self.state.queue_capacity.to_string(),
            ),
        ]);
        if let Some(m) = &local {
            properties.insert("item_count".into(), m.info.item_count.to_string());
            properties.insert("item_dim".into(), m.info.item_dim.to_string());
            properties.insert("precision".into(), m.info.precision.to_string());
            properties.insert("device".into(), m.info.device.clone());
        }
        Ok(Response::new(ModelMetadataResponse {
            name: active.name,
            versions: vec![active.version],
            platform: PLATFORM.into(),
            inputs: vec![
                tensor(QUERY, FP32, [-1, query_dim]),
                tensor(CANDIDATES, INT64, [-1, -1]),
            ],
            outputs: vec![
                tensor(ITEM_IDS, INT64, [-1, -1]),
                tensor(SCORES, FP32, [-1, -1]),
            ],
            properties,
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let deadline = request.extensions().get::<Deadline>().copied();
        let metadata = request.metadata().clone();
        let req = request.into_inner();
        match self.infer(req, deadline, metadata).await {
            Ok(resp) => Ok(Response::new(resp)),
            Err(e) => {
                tracing::info!(error = %e, "model infer refused");
                Err(e.into())
            }
        }
    }
}
