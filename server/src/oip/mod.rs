//! The Open Inference Protocol (KServe v2 / Triton gRPC, `inference.GRPCInferenceService`)
//! on the client port, so Triton and KServe clients rank through rankd unchanged.
//!
//! The model is the registry's active model under its manifest name (`demo-ranker`), with
//! the agreed active version as its only version. `ModelInfer` takes `query` (FP32
//! `[B, Dq]`) and `candidate_ids` (INT64 `[B, N]`) and returns `item_ids` (INT64 `[B, k]`)
//! and `scores` (FP32 `[B, k]`); each row of the batch is one Rank call, sent through the
//! very same `rankd.v1.Ranker/Rank` handler ([`crate::service::RankService`]): the same
//! validation, forwarding, batching scheduler and errors, so the two APIs cannot drift. The
//! B rows enter the scheduler together and share a batch.
//!
//! Both APIs sit behind one [`crate::stack::serving_stack`]: [`ClientApi`] routes a call to
//! the Ranker or to this service by its path below the stack, and [`InferenceRoute`]
//! registers that same stacked service under the inference service's name. So a ModelInfer
//! call and a Rank call count against one concurrency limit, one load shedder, one deadline
//! rule and one set of request metrics.
//!
//! - [`tensors`]: decoding and checking the inputs;
//! - [`outputs`]: `top_k`, requested outputs, and encoding the outputs;
//! - [`service`]: the six RPCs.
//!
//! What each RPC answers, and why, is in docs/oip.md.

pub mod outputs;
pub mod service;
pub mod tensors;

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::Either;
use http::{Request, Response};
use rankd_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

pub use service::OipService;
pub use tensors::DecodeError;

/// The gRPC service name, as clients address it.
pub const SERVICE_NAME: &str = "inference.GRPCInferenceService";

/// The generated server for `service`, with the same message size limits as the Ranker.
pub fn server(
    service: OipService,
    max_message_bytes: usize,
) -> GrpcInferenceServiceServer<OipService> {
    GrpcInferenceServiceServer::new(service)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

/// The client API below the serving stack: calls under `/inference.GRPCInferenceService/`
/// go to `infer`, every other call (the router sends only `/rankd.v1.Ranker/` ones here) to
/// `rank`.
#[derive(Clone)]
pub struct ClientApi<R, I> {
    rank: R,
    infer: I,
}

impl<R, I> ClientApi<R, I> {
    pub fn new(rank: R, infer: I) -> Self {
        ClientApi { rank, infer }
    }
}

fn is_inference_path(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.strip_prefix(SERVICE_NAME))
        .is_some_and(|rest| rest.starts_with('/'))
}

impl<R, I> Service<Request<Body>> for ClientApi<R, I>
where
    R: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    I: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<R::Future, I::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Generated tonic servers are always ready; polling both keeps the contract anyway.
        match (self.rank.poll_ready(cx), self.infer.poll_ready(cx)) {
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if is_inference_path(req.uri().path()) {
            Either::Right(self.infer.call(req))
        } else {
            Either::Left(self.rank.call(req))
        }
    }
}

/// The stacked client API once more, registered under the inference service's name (the
/// router picks a service by name; the stack inside is shared with the Ranker's route).
#[derive(Clone)]
pub struct InferenceRoute<S>(pub S);

impl<S> NamedService for InferenceRoute<S> {
    const NAME: &'static str = SERVICE_NAME;
}

impl<S: Service<Request<Body>>> Service<Request<Body>> for InferenceRoute<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.0.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_service_path() {
        assert!(is_inference_path(
            "/inference.GRPCInferenceService/ModelInfer"
        ));
        assert!(is_inference_path(
            "/inference.GRPCInferenceService/ModelConfig"
        ));
        assert!(!is_inference_path("/rankd.v1.Ranker/Rank"));
        assert!(!is_inference_path(
            "/inference.GRPCInferenceServiceX/ModelInfer"
        ));
        assert!(!is_inference_path(
            "inference.GRPCInferenceService/ModelInfer"
        ));
    }

    #[test]
    fn service_name_matches_the_generated_server() {
        assert_eq!(
            <GrpcInferenceServiceServer<OipService> as NamedService>::NAME,
            SERVICE_NAME
        );
    }
}
