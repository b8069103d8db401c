//! The serving stack against `tower_test` mocks, with tokio's clock paused.

use std::time::Duration;

use http::{Request, Response};
use tonic::body::Body;
use tower::{Service, ServiceExt};
use tower_test::mock;

use super::*;

struct Inner;
impl NamedService for Inner {
    const NAME: &'static str = "test.Inner";
}

type Mock = mock::Mock<Request<Body>, Response<Body>>;
type Handle = mock::Handle<Request<Body>, Response<Body>>;

/// `tower_test`'s mock fails with a boxed error; adapt it to tonic's `Infallible` routes by
/// turning its errors into INTERNAL responses (they never happen in these tests).
#[derive(Clone)]
struct Route(Mock);

impl Service<Request<Body>> for Route {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx).map(|_| Ok(()))
    }
    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            Ok(fut
                .await
                .unwrap_or_else(|_| tonic::Status::internal("mock").into_http()))
        })
    }
}

fn stack(
    max_concurrent: usize,
) -> (
    impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static,
    Handle,
    Arc<Metrics>,
) {
    let (mock, handle) = mock::pair();
    let metrics = Arc::new(Metrics::new());
    let svc = serving_stack::<_, Inner>(
        Route(mock),
        &StackConfig {
            default_timeout: Duration::from_secs(1),
            max_concurrent,
        },
        metrics.clone(),
    );
    (svc, handle, metrics)
}

fn rank_request(timeout: Option<&str>) -> Request<Body> {
    let mut req = Request::builder().uri("/rankd.v1.Ranker/Rank");
    if let Some(t) = timeout {
        req = req.header("grpc-timeout", t);
    }
    req.body(Body::empty()).unwrap()
}

fn code(resp: &Response<Body>) -> tonic::Code {
    response_code(resp)
}

fn counter(metrics: &Metrics, needle: &str) -> f64 {
    metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(start_paused = true)]
async fn passes_calls_through_and_counts_them() {
    let (svc, mut handle, metrics) = stack(4);
    let call = tokio::spawn(svc.oneshot(rank_request(None)));
    let (req, send) = handle.next_request().await.unwrap();
    assert!(req.extensions().get::<Deadline>().is_some());
    send.send_response(Response::new(Body::empty()));
    let resp = call.await.unwrap().unwrap();
    assert_eq!(code(&resp), tonic::Code::Ok);
    assert_eq!(
        counter(
            &metrics,
            r#"rankd_requests_total{method="/rankd.v1.Ranker/Rank",code="OK"}"#
        ),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_hits_the_clients_deadline() {
    let (svc, mut handle, metrics) = stack(4);
    let call = tokio::spawn(svc.oneshot(rank_request(Some("50m"))));
    let (req, _send) = handle.next_request().await.unwrap();
    let deadline = req.extensions().get::<Deadline>().unwrap().0;
    assert!(deadline <= Instant::now() + Duration::from_millis(50));
    // The paused clock jumps to the deadline once everything is idle.
    let resp = call.await.unwrap().unwrap();
    assert_eq!(code(&resp), tonic::Code::DeadlineExceeded);
    assert_eq!(
        counter(
            &metrics,
            r#"rankd_requests_total{method="/rankd.v1.Ranker/Rank",code="DEADLINE_EXCEEDED"}"#
        ),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn the_configured_timeout_caps_a_longer_client_deadline() {
    let (svc, mut handle, _) = stack(4);
    let _call = tokio::spawn(svc.oneshot(rank_request(Some("1H"))));
    let (req, _send) = handle.next_request().await.unwrap();
    let deadline = req.extensions().get::<Deadline>().unwrap().0;
    assert!(deadline <= Instant::now() + Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_never_reaches_the_handler() {
    let (svc, mut handle, metrics) = stack(4);
    let resp = svc.oneshot(rank_request(Some("0n"))).await.unwrap();
    assert_eq!(code(&resp), tonic::Code::DeadlineExceeded);
    // The stack is gone, so the mock reports every request it ever received, then None.
    assert!(
        handle.next_request().await.is_none(),
        "the handler saw the request"
    );
    assert_eq!(
        counter(
            &metrics,
            r#"rankd_rejected_total{reason="deadline_on_arrival"}"#
        ),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn calls_beyond_the_concurrency_limit_are_shed() {
    let (svc, mut handle, metrics) = stack(1);
    let first = tokio::spawn(svc.clone().oneshot(rank_request(None)));
    let (_req, send) = handle.next_request().await.unwrap();
    // The only slot is taken: the next call is refused at once, not queued.
    let resp = svc.clone().oneshot(rank_request(None)).await.unwrap();
    assert_eq!(code(&resp), tonic::Code::ResourceExhausted);
    assert_eq!(
        counter(&metrics, r#"rankd_rejected_total{reason="overloaded"}"#),
        1.0
    );
    send.send_response(Response::new(Body::empty()));
    assert_eq!(code(&first.await.unwrap().unwrap()), tonic::Code::Ok);
    // The slot is free again.
    let next = tokio::spawn(svc.oneshot(rank_request(None)));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(Body::empty()));
    assert_eq!(code(&next.await.unwrap().unwrap()), tonic::Code::Ok);
}

#[test]
fn unknown_paths_share_one_label() {
    assert_eq!(
        method_label("/rankd.v1.Ranker/Rank"),
        "/rankd.v1.Ranker/Rank"
    );
    assert_eq!(method_label("/evil/random-123"), "unknown");
}

#[test]
fn parses_grpc_timeouts() {
    assert_eq!(parse_grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
    assert_eq!(
        parse_grpc_timeout(b"250m"),
        Some(Duration::from_millis(250))
    );
    assert_eq!(parse_grpc_timeout(b"1n"), Some(Duration::from_nanos(1)));
    assert_eq!(parse_grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_grpc_timeout(b"123456789S"), None);
    assert_eq!(parse_grpc_timeout(b"S"), None);
    assert_eq!(parse_grpc_timeout(b"5x"), None);
}
