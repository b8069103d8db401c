//! A fake rankd node for the client tests: a real tonic server on 127.0.0.1 serving
//! `Ranker` and `Heartbeat`, whose behaviour a test switches at run time.
//!
//! Each node runs in its own thread and runtime, so [`FakeNode::kill`] can drop the runtime
//! and with it every connection, the way a killed process would, and
//! [`FakeNode::restart`] can bind the same port again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Code, Request, Response, Status};

use crate::v1::heartbeat_server::{Heartbeat, HeartbeatServer};
use crate::v1::ranker_server::{Ranker, RankerServer};
use crate::v1::{Fence, HeartbeatRequest, NodeHeartbeat, RankRequest, RankResponse, ScoredItem};

/// How the fake answers Rank.
#[derive(Clone, Debug)]
pub(super) enum Behaviour {
    Answer,
    Fail(Code),
    /// Answer after this long.
    Slow(Duration),
}

/// What a fake node does and what it saw; shared with the test.
pub(super) struct FakeState {
    pub node_id: String,
    pub interval: Duration,
    /// Reported `missed_limit`: 25 (a 500 ms lapse), so that a test machine's scheduling
    /// hiccups never lapse a node; the lapse test lowers it.
    pub missed_limit: AtomicU32,
    pub serving: AtomicBool,
    /// False: the heartbeat streams stay open but go silent.
    pub beating: AtomicBool,
    pub reason: Mutex<String>,
    pub behaviour: Mutex<Behaviour>,
    pub members: Mutex<Vec<String>>,
    /// Addresses this node's heartbeats name degraded.
    pub degraded: Mutex<Vec<String>>,
    /// Rank calls received, and those dropped by the client before they were answered.
    pub calls: AtomicUsize,
    pub cancelled: AtomicUsize,
    /// The `grpc-timeout` header of every Rank call.
    pub timeouts: Mutex<Vec<String>>,
}

impl FakeState {
    pub fn set(&self, behaviour: Behaviour) {
        *lock(&self.behaviour) = behaviour;
    }

    pub fn set_serving(&self, serving: bool, reason: &str) {
        *lock(&self.reason) = reason.to_owned();
        self.serving.store(serving, Ordering::SeqCst);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn heartbeat(&self) -> NodeHeartbeat {
        NodeHeartbeat {
            node_id: self.node_id.clone(),
            serving: self.serving.load(Ordering::SeqCst),
            reason: lock(&self.reason).clone(),
            fence: Some(fence()),
            queue_capacity: 64,
            interval_ms: self.interval.as_millis() as u32,
            missed_limit: self.missed_limit.load(Ordering::SeqCst),
            members: lock(&self.members).clone(),
            degraded: lock(&self.degraded).clone(),
            ..NodeHeartbeat::default()
        }
    }
}

fn fence() -> Fence {
    Fence {
        model_version: "v1".into(),
        term: 2,
        index: 7,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Clone)]
struct Service(Arc<FakeState>);

/// Counts a Rank handler dropped before it finished: the client cancelled it.
struct CancelGuard(Arc<FakeState>, bool);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tonic::async_trait]
impl Ranker for Service {
    async fn rank(&self, request: Request<RankRequest>) -> Result<Response<RankResponse>, Status> {
        let state = &self.0;
        state.calls.fetch_add(1, Ordering::SeqCst);
        let timeout = request.metadata().get("grpc-timeout");
        let timeout = timeout
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        lock(&state.timeouts).push(timeout);
        let mut guard = CancelGuard(Arc::clone(state), false);
        let behaviour = lock(&state.behaviour).clone();
        match behaviour {
            Behaviour::Answer => {}
            Behaviour::Fail(code) => {
                guard.1 = true;
                return Err(Status::new(
                    code,
                    format!("{} says {code:?}", state.node_id),
                ));
            }
            Behaviour::Slow(delay) => tokio::time::sleep(delay).await,
        }
        guard.1 = true;
        let request = request.into_inner();
        let items = (request.candidate_ids.iter().rev())
            .take(request.top_k as usize)
            .enumerate()
            .map(|(rank, id)| ScoredItem {
                id: *id,
                score: 1.0 - rank as f32 / 100.0,
            })
            .collect();
        Ok(Response::new(RankResponse {
            request_id: request.request_id,
            items,
            model_name: "fake".into(),
            model_version: "v1".into(),
            node_id: state.node_id.clone(),
            fence: Some(fence()),
            forwarded_by: String::new(),
        }))
    }
}

#[tonic::async_trait]
impl Heartbeat for Service {
    type SubscribeStream = ReceiverStream<Result<NodeHeartbeat, Status>>;

    async fn subscribe(
        &self,
        _request: Request<HeartbeatRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let state = Arc::clone(&self.0);
        tokio::spawn(async move {
            while !tx.is_closed() {
                if state.beating.load(Ordering::SeqCst)
                    && tx.send(Ok(state.heartbeat())).await.is_err()
                {
                    return; // the client went away
                }
                tokio::time::sleep(state.interval).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A running (or killed) fake node.
pub(super) struct FakeNode {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeNode {
    /// Starts a serving node that heartbeats every `interval`.
    pub fn start(node_id: &str, interval: Duration) -> Self {
        let state = Arc::new(FakeState {
            node_id: node_id.to_owned(),
            interval,
            missed_limit: AtomicU32::new(25),
            serving: AtomicBool::new(true),
            beating: AtomicBool::new(true),
            degraded: Mutex::new(Vec::new()),
            reason: Mutex::new(String::new()),
            behaviour: Mutex::new(Behaviour::Answer),
            members: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            timeouts: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let mut node = Self {
            addr,
            state,
            kill: None,
            thread: None,
        };
        node.serve(listener);
        node
    }

    /// `127.0.0.1:port`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    fn serve(&mut self, listener: std::net::TcpListener) {
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let (kill, killed) = oneshot::channel::<()>();
        let service = Service(Arc::clone(&self.state));
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("fake node runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let server = tonic::transport::Server::builder()
                    .add_service(RankerServer::new(service.clone()))
                    .add_service(HeartbeatServer::new(service))
                    .serve_with_incoming(TcpListenerStream::new(listener));
                tokio::select! {
                    _ = server => {}
                    _ = killed => {}
                }
            });
            // Dropping the runtime drops every connection task: the sockets close at once.
            drop(runtime);
        });
        self.kill = Some(kill);
        self.thread = Some(thread);
    }

    /// Stops the node the hard way: listener and every connection closed.
    pub fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Starts it again on the same port, with the same state.
    pub fn restart(&mut self) {
        self.kill();
        let listener = std::net::TcpListener::bind(self.addr).expect("bind the same port again");
        self.serve(listener);
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.kill();
    }
}
