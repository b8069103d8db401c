//! The generator against an in-process fake Ranker on 127.0.0.1, through a plain channel.
//!
//! Timing assertions are one-sided or generous: a loaded 2-core CI machine may delay any
//! task by tens of milliseconds, and these tests must not flake on one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use rankd_proto::client::{ClientConfig, FailoverClient};
use rankd_proto::v1::heartbeat_server::{Heartbeat, HeartbeatServer};
use rankd_proto::v1::ranker_client::RankerClient;
use rankd_proto::v1::ranker_server::{Ranker, RankerServer};
use rankd_proto::v1::{HeartbeatRequest, NodeHeartbeat, RankRequest, RankResponse};
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

use super::generator::{Generator, LoadClient, LoadSpec};
use super::record::LoadResult;

/// How the fake answers.
#[derive(Clone, Copy)]
enum Behaviour {
    Answer,
    /// Every `n`th call (1st, n+1th, ...) fails with the code; the rest are answered.
    FailEvery(usize, Code),
    /// Every call is answered after this long.
    Slow(Duration),
    /// The first call holds the whole server for this long: calls are served one at a
    /// time, so everything that arrives meanwhile waits behind it.
    StallOnce(Duration),
}

struct Fake {
    behaviour: Behaviour,
    calls: AtomicUsize,
    /// Serialises calls in `StallOnce`.
    gate: tokio::sync::Mutex<()>,
    stalled: AtomicBool,
    /// Calls that had arrived when the stall ended.
    arrived_during_stall: AtomicUsize,
}

#[derive(Clone)]
struct Service(Arc<Fake>);

#[tonic::async_trait]
impl Ranker for Service {
    async fn rank(&self, _: Request<RankRequest>) -> Result<Response<RankResponse>, Status> {
        let fake = &self.0;
        let n = fake.calls.fetch_add(1, Ordering::SeqCst);
        match fake.behaviour {
            Behaviour::Answer => {}
            Behaviour::FailEvery(every, code) => {
                if n.is_multiple_of(every) {
                    return Err(Status::new(code, "fake failure"));
                }
            }
            Behaviour::Slow(wait) => tokio::time::sleep(wait).await,
            Behaviour::StallOnce(wait) => {
                let _gate = fake.gate.lock().await;
                if !fake.stalled.swap(true, Ordering::SeqCst) {
                    tokio::time::sleep(wait).await;
                    let arrived = fake.calls.load(Ordering::SeqCst);
                    fake.arrived_during_stall.store(arrived, Ordering::SeqCst);
                }
            }
        }
        Ok(Response::new(RankResponse {
            model_version: "v7".into(),
            node_id: "fake-1".into(),
            ..Default::default()
        }))
    }
}

type Beats = std::pin::Pin<Box<dyn Stream<Item = Result<NodeHeartbeat, Status>> + Send>>;

/// Always serving, every 100 ms: enough for the failover client to admit the fake.
#[tonic::async_trait]
impl Heartbeat for Service {
    type SubscribeStream = Beats;

    async fn subscribe(&self, _: Request<HeartbeatRequest>) -> Result<Response<Beats>, Status> {
        let beats = futures::stream::unfold(true, |first| async move {
            if !first {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let beat = NodeHeartbeat {
                node_id: "fake-1".into(),
                serving: true,
                interval_ms: 100,
                missed_limit: 25,
                ..Default::default()
            };
            Some((Ok(beat), false))
        });
        Ok(Response::new(Box::pin(beats)))
    }
}

/// Starts the fake on an ephemeral port; it lives until the test's runtime ends.
async fn serve(behaviour: Behaviour) -> (SocketAddr, Arc<Fake>) {
    let fake = Arc::new(Fake {
        behaviour,
        calls: AtomicUsize::new(0),
        gate: tokio::sync::Mutex::new(()),
        stalled: AtomicBool::new(false),
        arrived_during_stall: AtomicUsize::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let server = tonic::transport::Server::builder()
        .add_service(RankerServer::new(Service(Arc::clone(&fake))))
        .add_service(HeartbeatServer::new(Service(Arc::clone(&fake))))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    (addr, fake)
}

async fn plain(addr: SocketAddr) -> LoadClient {
    let client = RankerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the fake");
    LoadClient::Plain(client)
}

fn spec(rate: u32, deadline: Duration) -> LoadSpec {
    LoadSpec {
        rate,
        deadline,
        request: RankRequest {
            query: vec![0.5; 8],
            candidate_ids: (0..100).collect(),
            top_k: 10,
            ..Default::default()
        },
    }
}

/// Runs `spec` for `run`, then stops and returns the record.
async fn run(client: LoadClient, spec: LoadSpec, run: Duration) -> LoadResult {
    let generator = Generator::start(client, spec);
    tokio::time::sleep(run).await;
    generator.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_at_the_asked_rate_on_the_exact_schedule() {
    let (addr, fake) = serve(Behaviour::Answer).await;
    let result = run(
        plain(addr).await,
        spec(200, Duration::from_secs(2)),
        Duration::from_secs(1),
    )
    .await;
    // Exactly the calls due before the stop, each on its slot of the schedule.
    let due = (result.duration_s * 200.0).ceil() as usize;
    assert!(
        result.calls.len().abs_diff(due) <= 1,
        "{} calls, {due} due",
        result.calls.len()
    );
    for (i, call) in result.calls.iter().enumerate() {
        assert_eq!(call.at_us, i as u64 * 5000);
    }
    // The server saw them all, about 200 in a second.
    let seen = fake.calls.load(Ordering::SeqCst);
    assert_eq!(seen, result.calls.len());
    assert!((180..=260).contains(&seen), "{seen} calls in ~1 s at 200/s");
    assert!(result.calls.iter().all(|c| c.ok()));
    assert_eq!(result.calls[0].version, "v7");
    assert_eq!(result.calls[0].node, "fake-1");
    assert_eq!(result.client, "plain channel");
    assert_eq!(result.rate, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_counts_from_the_schedule_through_a_stall() {
    let stall = Duration::from_millis(300);
    let (addr, fake) = serve(Behaviour::StallOnce(stall)).await;
    let result = run(
        plain(addr).await,
        spec(100, Duration::from_secs(3)),
        Duration::from_millis(800),
    )
    .await;
    // Open loop: calls kept going out while the first one was stuck.
    let arrived = fake.arrived_during_stall.load(Ordering::SeqCst);
    assert!(
        arrived >= 10,
        "only {arrived} calls reached the server during the stall"
    );
    // The server answered nothing before the stall ended, at least 300 ms after the start,
    // so a call due at `at` took at least `300 ms - at`: exact, no tolerance needed.
    let during: Vec<_> = result.calls.iter().filter(|c| c.at_us < 300_000).collect();
    assert!(
        during.len() >= 25,
        "{} calls due during the stall",
        during.len()
    );
    for call in &during {
        assert!(call.ok(), "{call:?}");
        assert!(call.at_us + call.latency_us >= 300_000, "{call:?}");
    }
    // The first call waited the whole stall.
    assert!(
        result.calls[0].latency_us >= 300_000,
        "{:?}",
        result.calls[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_recorded_by_code_name() {
    let (addr, _fake) = serve(Behaviour::FailEvery(3, Code::Unavailable)).await;
    let generator = Generator::start(plain(addr).await, spec(100, Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = generator.progress();
    let result = generator.stop().await;
    let overall = result.overall();
    let unavailable = overall.failed.get("UNAVAILABLE").copied().unwrap_or(0);
    assert!(unavailable > 0, "{overall:?}");
    assert_eq!(overall.failed.len(), 1, "{overall:?}");
    assert_eq!(overall.ok + unavailable, overall.sent);
    // A third of the calls fail, rounded up.
    assert_eq!(unavailable, overall.sent.div_ceil(3));
    assert!(result
        .calls
        .iter()
        .filter(|c| !c.ok())
        .all(|c| c.version.is_empty() && c.node.is_empty()));
    assert!(live.sent <= overall.sent && live.ok + live.failed <= live.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_side_timeout_is_deadline_exceeded() {
    let (addr, _fake) = serve(Behaviour::Slow(Duration::from_secs(2))).await;
    let result = run(
        plain(addr).await,
        spec(50, Duration::from_millis(100)),
        Duration::from_millis(300),
    )
    .await;
    assert!(!result.calls.is_empty());
    for call in &result.calls {
        assert_eq!(call.code, "DEADLINE_EXCEEDED", "{call:?}");
        assert!(call.latency_us >= 100_000, "{call:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_waits_for_calls_in_flight() {
    let (addr, fake) = serve(Behaviour::Slow(Duration::from_millis(400))).await;
    let generator = Generator::start(plain(addr).await, spec(50, Duration::from_secs(3)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = generator.progress();
    assert!(before.in_flight() > 0, "{before:?}");
    let result = generator.stop().await;
    // Every call sent came back, answered, after the server's 400 ms.
    assert_eq!(result.calls.len(), fake.calls.load(Ordering::SeqCst));
    assert!(result.calls.len() as u64 >= before.sent);
    for call in &result.calls {
        assert!(call.ok(), "{call:?}");
        assert!(call.latency_us >= 400_000, "{call:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_settles_on_the_record() {
    let (addr, _fake) = serve(Behaviour::FailEvery(2, Code::ResourceExhausted)).await;
    let generator = Generator::start(plain(addr).await, spec(100, Duration::from_secs(2)));
    // Wait on a predicate, not a fixed time.
    let mut seen = Vec::new();
    for _ in 0..200 {
        let p = generator.progress();
        seen.push(p);
        if p.ok >= 5 && p.failed >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(generator.elapsed() > Duration::ZERO);
    let result = generator.stop().await;
    let overall = result.overall();
    assert!(overall.ok >= 5, "{overall:?}");
    assert_eq!(
        overall.failed.get("RESOURCE_EXHAUSTED"),
        Some(&(overall.sent - overall.ok))
    );
    // Counters only grow.
    assert!(seen
        .windows(2)
        .all(|w| w[0].sent <= w[1].sent && w[0].ok <= w[1].ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_failover_client() {
    let (addr, fake) = serve(Behaviour::Answer).await;
    let config = ClientConfig {
        discover_members: false,
        ..ClientConfig::default()
    };
    let client = FailoverClient::connect(vec![addr.to_string()], config)
        .await
        .expect("client");
    assert!(client.wait_healthy(1, Duration::from_secs(10)).await);
    let result = run(
        LoadClient::Failover(client.clone()),
        spec(100, Duration::from_secs(2)),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(result.client, "failover client");
    assert!(!result.calls.is_empty());
    assert!(result.calls.iter().all(|c| c.ok() && c.node == "fake-1"));
    assert_eq!(result.calls.len(), fake.calls.load(Ordering::SeqCst));
    assert_eq!(client.stats().calls, result.calls.len() as u64);
}

/// Far more calls per second than a debug build on a small machine can send one by one:
/// the generator falls behind and catches up in bursts, yet sends exactly the calls due
/// before the stop, each timed from its own slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_behind_schedule_still_sends_every_due_call() {
    let (addr, fake) = serve(Behaviour::Answer).await;
    let rate = 5000;
    let result = run(
        plain(addr).await,
        spec(rate, Duration::from_secs(10)),
        Duration::from_millis(600),
    )
    .await;
    let due = (result.duration_s * f64::from(rate)).ceil() as usize;
    assert!(
        result.calls.len().abs_diff(due) <= 1,
        "{} calls, {due} due",
        result.calls.len()
    );
    assert_eq!(result.calls.len(), fake.calls.load(Ordering::SeqCst));
    for (i, call) in result.calls.iter().enumerate() {
        assert_eq!(call.at_us, i as u64 * 200);
        assert!(call.ok(), "{call:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_after_ends_the_schedule_exactly() {
    let (addr, fake) = serve(Behaviour::Answer).await;
    let generator = Generator::start(plain(addr).await, spec(100, Duration::from_secs(2)));
    // Asked well before the end: the schedule runs on until 500 ms, no further.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let result = generator.stop_after(Duration::from_millis(500)).await;
    assert_eq!(result.calls.len(), 50);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 50);
    assert_eq!(result.calls.last().map(|c| c.at_us), Some(490_000));
    assert!(
        (result.duration_s - 0.5).abs() < 1e-9,
        "{}",
        result.duration_s
    );
}

#[tokio::test]
async fn rate_zero_sends_nothing_and_stops() {
    let (addr, fake) = serve(Behaviour::Answer).await;
    let result = run(
        plain(addr).await,
        spec(0, Duration::from_secs(1)),
        Duration::from_millis(50),
    )
    .await;
    assert!(result.calls.is_empty());
    assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
}
