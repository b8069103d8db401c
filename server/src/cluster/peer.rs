//! `rankd.peer.v1.Peer`: what nodes ask of each other besides consensus.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use rankd_artifact::{RecordState, Store};
use rankd_proto::peer::v1 as pb;
use rankd_proto::peer::v1::artifact_chunk::Part;
use rankd_proto::peer::v1::peer_server::Peer;
use rankd_raft::Command;
use tokio::io::AsyncReadExt;
use tonic::{Request, Response, Status};

use super::status::node_view;
use super::Cluster;
use crate::health::Readiness;
use crate::node_state::NodeState;

/// Artifact bytes per message: large enough to keep the stream efficient, small enough to
/// stay far below message limits.
const CHUNK: usize = 1 << 20;

pub struct PeerService {
    pub cluster: Arc<Cluster>,
    pub store: Arc<Store>,
    pub readiness: Readiness,
    pub state: Arc<NodeState>,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ArtifactChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerService {
    type FetchArtifactStream = ChunkStream;

    async fn fetch_artifact(
        &self,
        request: Request<pb::FetchArtifactRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let req = request.into_inner();
        let record = self
            .store
            .get(&req.name, &req.version)
            .filter(|r| r.state == RecordState::Ready)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no verified copy of {} version {} on this node",
                    req.name, req.version
                ))
            })?;
        let path = self.store.artifact_file(&record.sha256);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::internal(format!("opening {}: {e}", path.display())))?;
        tracing::info!(name = %req.name, version = %req.version, to = req.from_node, size = record.size,
            "sending artifact to a peer");
        let meta = pb::ArtifactChunk {
            part: Some(Part::Metadata(pb::ArtifactMetadata {
                sha256: record.sha256.clone(),
                size: record.size,
                key_id: record.key_id.clone(),
            })),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::ArtifactChunk, Status>>(4);
        tokio::spawn(async move {
            if tx.send(Ok(meta)).await.is_err() {
                return;
            }
            loop {
                let mut buf = vec![0u8; CHUNK];
                match file.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        let chunk = pb::ArtifactChunk {
                            part: Some(Part::Data(buf)),
                        };
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("reading the artifact: {e}"))))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn propose(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let cmd: Command = serde_json::from_slice(&request.into_inner().json)
            .map_err(|e| Status::invalid_argument(format!("registry command: {e}")))?;
        // Peers only report what they did. Promotions, rollbacks and membership run on the
        // leader's own path, with its readiness checks, never on a peer's say-so.
        if !matches!(
            cmd,
            Command::Register { .. }
                | Command::ReportReady { .. }
                | Command::ReportFailed { .. }
                | Command::ReportUnloaded { .. }
                | Command::Audit { .. }
        ) {
            return Err(Status::permission_denied(
                "peers may only forward Register, readiness reports and audit records",
            ));
        }
        if !self.cluster.is_leader() {
            return Err(Status::unavailable("not the leader"));
        }
        let outcome = self
            .cluster
            .propose_local(cmd)
            .await
            .map_err(Status::from)?;
        let json = serde_json::to_vec(&outcome).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::RaftMessage { json }))
    }

    async fn node_status(
        &self,
        _: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusReply>, Status> {
        let view = node_view(&self.cluster, self.readiness.is_serving());
        let json = serde_json::to_vec(&view).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::NodeStatusReply { json }))
    }

    async fn read_index(
        &self,
        _: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexReply>, Status> {
        let index = self
            .cluster
            .read_index_local()
            .await
            .map_err(Status::from)?;
        Ok(Response::new(pb::ReadIndexReply { index }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::PeerHeartbeat>,
    ) -> Result<Response<pb::PeerHeartbeat>, Status> {
        self.cluster
            .peer_table
            .heard(request.into_inner(), tokio::time::Instant::now());
        Ok(Response::new(self.state.peer_heartbeat()))
    }
}
