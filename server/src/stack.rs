//! The tower stack every serving route runs behind, built in one place: [`serving_stack`].
//!
//! Outermost first:
//! 1. metrics: count and time every call by method and final gRPC code;
//! 2. error mapping: middleware errors (load shed) become gRPC statuses, so the route never
//!    fails at the transport level;
//! 3. deadline: the client's `grpc-timeout`, capped by the configured default, becomes a
//!    [`Deadline`] the handler and scheduler can see; an already-expired call is answered
//!    DEADLINE_EXCEEDED without reaching the handler;
//! 4. load shed + global concurrency limit: beyond `max_concurrent` calls in flight, new
//!    calls are refused at once (RESOURCE_EXHAUSTED) rather than queued invisibly.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::{Request, Response};
use tonic::body::Body;
use tonic::server::NamedService;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::error::Overloaded;
use tower::load_shed::LoadShedLayer;
use tower::{BoxError, Layer, Service, ServiceBuilder};

pub mod guard;
pub mod late;

use crate::error::{code_label, ServeError};
use crate::metrics::{MethodCode, MethodLabel, Metrics};

/// When the current call must be answered by, as seen by the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

#[derive(Debug, Clone)]
pub struct StackConfig {
    pub default_timeout: Duration,
    pub max_concurrent: usize,
}

/// Wraps a generated tonic server `S` (whose `NamedService` is `N`) in the serving stack.
pub fn serving_stack<S, N>(
    inner: S,
    cfg: &StackConfig,
    metrics: Arc<Metrics>,
) -> Routed<
    impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static,
    N,
>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    N: NamedService,
{
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer {
            metrics: metrics.clone(),
        })
        .layer(ErrorMapLayer {
            max_concurrent: cfg.max_concurrent,
            metrics: metrics.clone(),
        })
        .layer(DeadlineLayer {
            default: cfg.default_timeout,
            metrics,
        })
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(cfg.max_concurrent))
        .service(inner);
    Routed {
        inner: svc,
        _name: PhantomData,
    }
}

/// A layered service that still routes under the wrapped server's gRPC service name.
pub struct Routed<S, N> {
    inner: S,
    _name: PhantomData<fn() -> N>,
}

impl<S, N> Routed<S, N> {
    /// Serves `inner` under `N`'s gRPC service name.
    pub fn new(inner: S) -> Routed<S, N> {
        Routed {
            inner,
            _name: PhantomData,
        }
    }
}

impl<S: Clone, N> Clone for Routed<S, N> {
    fn clone(&self) -> Self {
        Routed {
            inner: self.inner.clone(),
            _name: PhantomData,
        }
    }
}

impl<S, N: NamedService> NamedService for Routed<S, N> {
    const NAME: &'static str = N::NAME;
}

impl<S, N> Service<Request<Body>> for Routed<S, N>
where
    S: Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.inner.call(req)
    }
}

/// Takes the service that was polled ready and leaves a fresh clone in its place.
fn take_ready<S: Clone>(slot: &mut S) -> S {
    let fresh = slot.clone();
    std::mem::replace(slot, fresh)
}

fn status_response(e: ServeError) -> Response<Body> {
    tonic::Status::from(e).into_http()
}

// ---- metrics -------------------------------------------------------------------------

#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request<Body>> for MetricsService<S>
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let method = method_label(req.uri().path());
        let start = Instant::now();
        let fut = take_ready(&mut self.inner).call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let resp = fut.await?;
            let code = code_label(response_code(&resp));
            metrics
                .requests
                .get_or_create(&MethodCode { method, code })
                .inc();
            metrics
                .request_duration
                .get_or_create(&MethodLabel { method })
                .observe(start.elapsed().as_secs_f64());
            Ok(resp)
        })
    }
}

/// Methods get their own label value; anything else is `unknown`, so clients cannot mint
/// new series by calling made-up paths.
fn method_label(path: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "/rankd.v1.Ranker/Rank",
        "/inference.GRPCInferenceService/ModelInfer",
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
        "/inference.GRPCInferenceService/ModelReady",
        "/inference.GRPCInferenceService/ServerMetadata",
        "/inference.GRPCInferenceService/ModelMetadata",
    ];
    KNOWN
        .iter()
        .find(|k| **k == path)
        .copied()
        .unwrap_or("unknown")
}

/// The gRPC code of a unary response: errors travel in the headers (trailers-only
/// responses); a response without one in its headers succeeded.
fn response_code(resp: &Response<Body>) -> tonic::Code {
    resp.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
        .unwrap_or(tonic::Code::Ok)
}

// ---- error mapping -------------------------------------------------------------------

#[derive(Clone)]
pub struct ErrorMapLayer {
    max_concurrent: usize,
    metrics: Arc<Metrics>,
}

impl<S> Layer<S> for ErrorMapLayer {
    type Service = ErrorMapService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ErrorMapService {
            inner,
            max_concurrent: self.max_concurrent,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ErrorMapService<S> {
    inner: S,
    max_concurrent: usize,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request<Body>> for ErrorMapService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness errors resurface from `call` (load shed reports overload there).
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let fut = take_ready(&mut self.inner).call(req);
        let max = self.max_concurrent;
        let metrics = self.metrics.clone();
        Box::pin(async move {
            Ok(match fut.await {
                Ok(resp) => resp,
                Err(e) => {
                    let e: BoxError = e.into();
                    if e.is::<Overloaded>() {
                        metrics.reject("overloaded");
                        status_response(ServeError::Overloaded { max })
                    } else {
                        tracing::error!(error = %e, "serving stack failed");
                        tonic::Status::internal(format!("serving stack: {e}")).into_http()
                    }
                }
            })
        })
    }
}

// ---- deadline ------------------------------------------------------------------------

#[derive(Clone)]
pub struct DeadlineLayer {
    default: Duration,
    metrics: Arc<Metrics>,
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            default: self.default,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct DeadlineService<S> {
    inner: S,
    default: Duration,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request<Body>> for DeadlineService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let arrived = Instant::now();
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.as_bytes()))
            .map_or(self.default, |t| t.min(self.default));
        let deadline = arrived + timeout;
        let mut inner = take_ready(&mut self.inner);
        if Instant::now() >= deadline {
            self.metrics.reject("deadline_on_arrival");
            return Box::pin(std::future::ready(Ok(status_response(
                ServeError::DeadlineExpired {
                    stage: "on arrival",
                },
            ))));
        }
        req.extensions_mut().insert(Deadline(deadline));
        let fut = inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout_at(deadline.into(), fut).await {
                Ok(res) => res.map_err(Into::into),
                Err(_) => Ok(status_response(ServeError::DeadlineWhileRunning)),
            }
        })
    }
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (H M S m u n).
pub fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
