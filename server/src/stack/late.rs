//! A route whose service is supplied after the server started.
//!
//! The peer port starts before the node has a Rank stack or an admin service (Raft must
//! run while the node loads its first model), yet it also carries calls other nodes
//! forward. Until [`LateCell::set`] those calls get UNAVAILABLE, which the forwarding node
//! treats as "try elsewhere".

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use http::{Request, Response};
use tonic::body::Body;
use tonic::Status;
use tower::{Service, ServiceExt};

/// Where the service goes once it exists.
pub struct LateCell<S>(Arc<OnceLock<S>>);

impl<S> Clone for LateCell<S> {
    fn clone(&self) -> Self {
        LateCell(self.0.clone())
    }
}

impl<S> LateCell<S> {
    pub fn new() -> LateCell<S> {
        LateCell(Arc::new(OnceLock::new()))
    }

    /// Installs the service; later calls are ignored (it is set once, at startup).
    pub fn set(&self, service: S) {
        let _ = self.0.set(service);
    }

    pub fn service(&self) -> Late<S> {
        Late(self.clone())
    }
}

impl<S> Default for LateCell<S> {
    fn default() -> Self {
        LateCell::new()
    }
}

/// The route itself: each call runs on a clone of the installed service.
pub struct Late<S>(LateCell<S>);

impl<S> Clone for Late<S> {
    fn clone(&self) -> Self {
        Late(self.0.clone())
    }
}

impl<S> Service<Request<Body>> for Late<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is the installed service's business, checked per call by `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match (self.0).0.get() {
            Some(service) => service.clone().oneshot(req).boxed(),
            None => futures::future::ready(Ok(
                Status::unavailable("this node is still starting").into_http()
            ))
            .boxed(),
        }
    }
}
