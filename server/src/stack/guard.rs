//! A layer that decides, before the wrapped service runs, whether a call may proceed: the
//! shape shared by the admin authorization, the peer-port principal check and the
//! per-client rate limit. A refused call is answered with the check's status and never
//! reaches the service, so it cannot change anything.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use http::{Request, Response};
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

/// One admission rule. It may annotate the request (e.g. insert the caller's principal
/// into its extensions) before the service sees it.
pub trait Check: Clone + Send + Sync + 'static {
    fn check(&self, req: &mut Request<Body>) -> Result<(), Status>;
}

#[derive(Clone)]
pub struct GuardLayer<C>(pub C);

impl<S, C: Clone> Layer<S> for GuardLayer<C> {
    type Service = Guard<S, C>;
    fn layer(&self, inner: S) -> Guard<S, C> {
        Guard {
            check: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Guard<S, C> {
    check: C,
    inner: S,
}

impl<S, C> Service<Request<Body>> for Guard<S, C>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Send,
    S::Future: Send + 'static,
    C: Check,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        match self.check.check(&mut req) {
            Ok(()) => self.inner.call(req).boxed(),
            Err(status) => futures::future::ready(Ok(status.into_http())).boxed(),
        }
    }
}
