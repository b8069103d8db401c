//! `rankd.v1.Ranker`: request validation, hand-off to the batching scheduler, response.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rankd_proto::request::{check_candidate_count, check_rank_request};
use rankd_proto::v1::ranker_server::Ranker;
use rankd_proto::v1::{Fence, RankRequest, RankResponse, ScoredItem};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::error::ServeError;
use crate::fault::FaultInjector;
use crate::forward::{Forwarder, Why, FORWARDED_HEADER};
use crate::model::ModelSlot;
use crate::node_state::NodeState;
use crate::scheduler::{Job, Scheduler, Scored};
use crate::stack::Deadline;

/// Metadata key marking the cluster's own probe calls (`cluster::probe`): served and
/// measured like any call, but left out of the version's score statistics.
pub const PROBE_HEADER: &str = "rankd-probe";

pub struct RankService {
    scheduler: Arc<Scheduler>,
    slot: Arc<ModelSlot>,
    state: Arc<NodeState>,
    /// `None` on a node that must never forward (configured off).
    forwarder: Option<Forwarder>,
    max_candidates: usize,
    next_id: AtomicU64,
    /// Drill faults (`InjectFault`) applied to every call this node serves itself.
    fault: Arc<FaultInjector>,
    node_id: String,
}

impl RankService {
    pub fn new(
        scheduler: Arc<Scheduler>,
        slot: Arc<ModelSlot>,
        state: Arc<NodeState>,
        forwarder: Option<Forwarder>,
        max_candidates: usize,
    ) -> Self {
        RankService {
            scheduler,
            slot,
            state,
            forwarder,
            max_candidates,
            next_id: AtomicU64::new(1),
            fault: Arc::new(FaultInjector::new()),
            node_id: String::new(),
        }
    }

    /// Shares `fault` with the admin API's `InjectFault` on node `node_id`.
    pub fn with_fault(mut self, fault: Arc<FaultInjector>, node_id: &str) -> Self {
        self.fault = fault;
        self.node_id = node_id.to_string();
        self
    }

    /// Checks everything the engine would and the server's own limits, so a bad request is
    /// refused before it takes a queue slot. The checks are `rankd_proto::request`'s, the
    /// same code the engine and the fuzz targets run; the candidate limit holds with or
    /// without a model, so it comes before the model lookup.
    fn check(&self, req: &RankRequest) -> Result<(), ServeError> {
        check_candidate_count(req.candidate_ids.len(), self.max_candidates)
            .map_err(ServeError::Request)?;
        let model = self.slot.current().ok_or(ServeError::NoModel)?;
        check_rank_request(req, &model.info.schema(), self.max_candidates)
            .map_err(ServeError::Request)?;
        Ok(())
    }

    fn request_id(&self, given: &str) -> String {
        if given.is_empty() {
            format!(
                "{}-{}",
                self.state.name,
                self.next_id.fetch_add(1, Ordering::Relaxed)
            )
        } else {
            given.to_string()
        }
    }

    fn respond(&self, request_id: String, scored: Scored) -> RankResponse {
        let Scored { ranked, model } = scored;
        let items = ranked
            .ids
            .into_iter()
            .zip(ranked.scores)
            .map(|(id, score)| ScoredItem { id, score })
            .collect();
        RankResponse {
            request_id,
            items,
            model_name: model.info.name.clone(),
            model_version: model.info.version.clone(),
            node_id: self.state.name.clone(),
            fence: Some(Fence {
                model_version: model.info.version.clone(),
                term: model.fence.0,
                index: model.fence.1,
            }),
            forwarded_by: String::new(),
        }
    }
}

#[tonic::async_trait]
impl Ranker for RankService {
    async fn rank(&self, request: Request<RankRequest>) -> Result<Response<RankResponse>, Status> {
        let _in_flight = self.state.enter();
        let arrival = self.scheduler.arrival();
        let deadline = request.extensions().get::<Deadline>().map(|d| d.0);
        // A call that was already forwarded once is served here or refused, never passed on.
        let forwarder = self
            .forwarder
            .as_ref()
            .filter(|_| request.metadata().get(FORWARDED_HEADER).is_none());
        let trace = trace_id(request.metadata());
        let traceparent = request.metadata().get("traceparent").cloned();
        let observed = request.metadata().get(PROBE_HEADER).is_none();
        let mut req = request.into_inner();
        let request_id = self.request_id(&req.request_id);
        req.request_id.clone_from(&request_id);
        let span = tracing::info_span!(
            "rank",
            request_id = %request_id,
            trace_id = tracing::field::Empty
        );
        if let Some(t) = &trace {
            span.record("trace_id", t.as_str());
        }
        async move {
            let mut arrival = Some(arrival);
            if let Some(fwd) = forwarder.filter(|_| !self.state.serves_locally()) {
                let why = if self.state.is_lagging() {
                    Why::Lagging
                } else {
                    Why::NotReady
                };
                // Not arriving at this node's queue: workers must not wait for it.
                arrival = None;
                if let Some(answer) = fwd
                    .forward(req.clone(), deadline, why, traceparent.as_ref())
                    .await
                {
                    return answer.map(Response::new);
                }
            }
            let arrival = arrival.unwrap_or_else(|| self.scheduler.arrival());
            let started = Instant::now();
            let served = self
                .serve_here(
                    req,
                    (deadline, observed),
                    arrival,
                    request_id,
                    forwarder,
                    traceparent,
                )
                .await;
            let (code, took) = (served.as_ref().err().map(Status::code), started.elapsed());
            self.state.live.record(code, took);
            // Counted against the version serving when the call ended: a bake judges it.
            if let Some(m) = self.slot.current() {
                m.live.record(code, took);
            }
            served
        }
        .instrument(span)
        .await
    }
}

impl RankService {
    /// Serves a call on this node (the queue-full fallback may still forward it once).
    async fn serve_here(
        &self,
        req: RankRequest,
        (deadline, observed): (Option<Instant>, bool),
        arrival: crate::scheduler::Arrival,
        request_id: String,
        forwarder: Option<&Forwarder>,
        traceparent: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    ) -> Result<Response<RankResponse>, Status> {
        self.fault.apply(&self.node_id).await?;
        match self.rank_inner(req, (deadline, observed), arrival).await {
            Ok(scored) => {
                tracing::debug!(returned = scored.ranked.ids.len(), version = %scored.model.info.version, "ranked");
                Ok(Response::new(self.respond(request_id, scored)))
            }
            Err((e, job)) => {
                if let (Some(fwd), Some(job)) = (forwarder, job) {
                    let req = RankRequest {
                        request_id,
                        query: job.query,
                        candidate_ids: job.candidates,
                        top_k: u32::try_from(job.top_k).unwrap_or(u32::MAX),
                    };
                    if let Some(answer) = fwd
                        .forward(req, deadline, Why::QueueFull, traceparent.as_ref())
                        .await
                    {
                        return answer.map(Response::new);
                    }
                }
                tracing::info!(error = %e, "rank refused");
                Err(e.into())
            }
        }
    }

    /// A refusal for a full queue hands the job back, so it can be forwarded.
    async fn rank_inner(
        &self,
        req: RankRequest,
        (deadline, observed): (Option<Instant>, bool),
        arrival: crate::scheduler::Arrival,
    ) -> Result<Scored, (ServeError, Option<Box<Job>>)> {
        self.check(&req).map_err(|e| (e, None))?;
        let (tx, rx) = oneshot::channel();
        // Stop counting as "arriving" just before enqueueing: a worker that wakes for this
        // job must not wait for it to arrive a second time.
        drop(arrival);
        self.scheduler.try_submit(Job {
            query: req.query,
            candidates: req.candidate_ids,
            top_k: req.top_k as usize,
            deadline,
            enqueued: Instant::now(),
            reply: tx,
            observed,
        })?;
        self.scheduler
            .reply(rx, || self.state.in_flight() == 1)
            .await
            .map_err(|_| (ServeError::EngineStopped, None))?
            .map_err(|e| (e, None))
    }
}

/// The trace id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`), so a call's
/// log lines join the caller's trace. Anything malformed is ignored, never an error: tracing
/// must not be able to fail a request.
fn trace_id(meta: &tonic::metadata::MetadataMap) -> Option<String> {
    let value = meta.get("traceparent")?.to_str().ok()?;
    let mut parts = value.trim().split('-');
    let (version, trace) = (parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let all_zero = trace.bytes().all(|b| b == b'0');
    (hex(version, 2) && hex(trace, 32) && !all_zero).then(|| trace.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_valid_traceparent_headers_only() {
        let mut meta = tonic::metadata::MetadataMap::new();
        assert_eq!(trace_id(&meta), None);
        meta.insert(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            trace_id(&meta).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            meta.insert("traceparent", bad.parse().unwrap());
            assert_eq!(trace_id(&meta), None, "{bad}");
        }
    }

    #[test]
    fn refusals_keep_their_message_and_get_their_code() {
        use rankd_proto::request::{InputError, RequestError};
        use tonic::Code;
        let cases = [
            (
                RequestError::Input(InputError::ZeroTopK),
                Code::InvalidArgument,
            ),
            (
                RequestError::TooManyCandidates { count: 5, max: 4 },
                Code::OutOfRange,
            ),
            (
                RequestError::DuplicateCandidate {
                    first: 1,
                    second: 3,
                    id: 6,
                },
                Code::InvalidArgument,
            ),
        ];
        for (e, code) in cases {
            let msg = e.to_string();
            let status = Status::from(ServeError::Request(e));
            assert_eq!((status.code(), status.message()), (code, msg.as_str()));
        }
    }
}
