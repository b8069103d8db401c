//! The Raft transport's client side against a fake `rankd.peer.v1.Raft` server on a real TCP
//! listener: the fake answers with canned JSON, so these tests need no Raft storage.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{Fatal, InstallSnapshotError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::Vote;
use rankd_proto::peer::v1::raft_server::{Raft as RaftRpc, RaftServer};
use rankd_proto::peer::v1::RaftMessage;
use rankd_raft::network::{Network, PeerConnection, Peers};
use rankd_raft::service::LeaderContact;
use rankd_raft::{NodeId, PeerNode, RaftTiming, TypeConfig};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

const TARGET: NodeId = 2;

/// What the fake answers to every RPC.
#[derive(Clone)]
enum Behaviour {
    /// These JSON bytes.
    Reply(Vec<u8>),
    /// Nothing, ever.
    Hang,
}

#[derive(Default)]
struct Seen {
    requests: Vec<(&'static str, Vec<u8>)>,
    remote_ips: Vec<IpAddr>,
}

struct FakeRaft {
    behaviour: Behaviour,
    seen: Arc<Mutex<Seen>>,
}

impl FakeRaft {
    async fn answer(
        &self,
        rpc: &'static str,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        {
            let mut seen = self.seen.lock().unwrap();
            if let Some(addr) = request.remote_addr() {
                seen.remote_ips.push(addr.ip());
            }
            seen.requests.push((rpc, request.into_inner().json));
        }
        match &self.behaviour {
            Behaviour::Reply(json) => Ok(Response::new(RaftMessage { json: json.clone() })),
            Behaviour::Hang => std::future::pending().await,
        }
    }
}

#[tonic::async_trait]
impl RaftRpc for FakeRaft {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.answer("append_entries", request).await
    }
    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.answer("vote", request).await
    }
    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.answer("install_snapshot", request).await
    }
}

struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    /// TCP connections accepted so far.
    connections: Arc<AtomicUsize>,
}

/// Serves a [`FakeRaft`] on `listener`, counting the TCP connections it accepts.
fn serve(listener: TcpListener, behaviour: Behaviour) -> Fake {
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let incoming = futures::stream::unfold(listener, move |listener| {
        let counter = counter.clone();
        async move {
            let accepted = listener.accept().await.map(|(stream, _)| {
                counter.fetch_add(1, Ordering::SeqCst);
                stream
            });
            Some((accepted, listener))
        }
    });
    let fake = FakeRaft {
        behaviour,
        seen: seen.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServer::new(fake))
            .serve_with_incoming(incoming),
    );
    Fake {
        addr,
        seen,
        connections,
    }
}

async fn fake(behaviour: Behaviour) -> Fake {
    serve(TcpListener::bind("127.0.0.1:0").await.unwrap(), behaviour)
}

fn timing() -> RaftTiming {
    RaftTiming {
        connect_timeout_ms: 300,
        rpc_timeout_ms: 1000,
        ..RaftTiming::default()
    }
}

fn node(addr: SocketAddr) -> PeerNode {
    PeerNode {
        peer_addr: addr.to_string(),
        api_addr: "127.0.0.1:1".to_string(),
    }
}

async fn client(peers: &Peers, addr: SocketAddr) -> PeerConnection {
    Network::new(peers.clone())
        .new_client(TARGET, &node(addr))
        .await
}

fn local_peers() -> Peers {
    Peers::new(&timing(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)))
}

fn vote_request() -> VoteRequest<NodeId> {
    VoteRequest::new(Vote::new(3, 1), None)
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

fn ttl() -> RPCOption {
    RPCOption::new(Duration::from_secs(2))
}

fn snapshot_chunk() -> InstallSnapshotRequest<TypeConfig> {
    InstallSnapshotRequest {
        vote: Vote::new_committed(3, 1),
        meta: Default::default(),
        offset: 0,
        data: vec![0, 1, 255],
        done: false,
    }
}

#[tokio::test]
async fn vote_round_trip_decodes_the_response() {
    let granted: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
        Ok(VoteResponse::new(Vote::new(3, 1), None, true));
    let fake = fake(Behaviour::Reply(json(&granted))).await;
    let mut conn = client(&local_peers(), fake.addr).await;

    let resp = conn.vote(vote_request(), ttl()).await.unwrap();
    assert_eq!(Ok(resp), granted);

    // The server received the request exactly as sent, from the configured local address.
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.requests.len(), 1);
    assert_eq!(seen.requests[0].0, "vote");
    let sent: VoteRequest<NodeId> = serde_json::from_slice(&seen.requests[0].1).unwrap();
    assert_eq!(sent, vote_request());
    assert_eq!(seen.remote_ips, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
}

#[tokio::test]
async fn append_entries_round_trip() {
    let ok: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
        Ok(AppendEntriesResponse::Conflict);
    let fake = fake(Behaviour::Reply(json(&ok))).await;
    let mut conn = client(&local_peers(), fake.addr).await;
    let rpc = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    };
    let resp = conn.append_entries(rpc, ttl()).await.unwrap();
    assert_eq!(resp, AppendEntriesResponse::Conflict);
}

#[tokio::test]
async fn remote_raft_error_comes_back_as_remote_error() {
    let stopped: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
        Err(RaftError::Fatal(Fatal::Stopped));
    let fake = fake(Behaviour::Reply(json(&stopped))).await;
    let mut conn = client(&local_peers(), fake.addr).await;

    match conn.vote(vote_request(), ttl()).await {
        Err(RPCError::RemoteError(remote)) => {
            assert_eq!(remote.target, TARGET);
            assert_eq!(remote.target_node, Some(node(fake.addr)));
            assert_eq!(remote.source, RaftError::Fatal(Fatal::Stopped));
        }
        other => panic!("expected a RemoteError, got {other:?}"),
    }
}

#[tokio::test]
async fn install_snapshot_remote_error_keeps_its_type() {
    let stopped: Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> =
        Err(RaftError::Fatal(Fatal::Stopped));
    let fake = fake(Behaviour::Reply(json(&stopped))).await;
    let mut conn = client(&local_peers(), fake.addr).await;

    match conn.install_snapshot(snapshot_chunk(), ttl()).await {
        Err(RPCError::RemoteError(remote)) => {
            assert_eq!(remote.source, RaftError::Fatal(Fatal::Stopped))
        }
        other => panic!("expected a RemoteError, got {other:?}"),
    }
}

#[tokio::test]
async fn undecodable_reply_is_a_network_error() {
    let fake = fake(Behaviour::Reply(b"{\"not\": \"a result\"}".to_vec())).await;
    let mut conn = client(&local_peers(), fake.addr).await;
    match conn.vote(vote_request(), ttl()).await {
        Err(RPCError::Network(e)) => assert!(e.to_string().contains("does not decode"), "{e}"),
        other => panic!("expected a NetworkError, got {other:?}"),
    }
}

/// An address nobody listens on (bound once to get a free port, then released).
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn nothing_listening_is_unreachable_within_the_connect_timeout() {
    let addr = dead_addr().await;
    let mut conn = client(&local_peers(), addr).await;
    let start = Instant::now();
    let res = conn.vote(vote_request(), ttl()).await;
    assert!(
        matches!(res, Err(RPCError::Unreachable(_))),
        "expected Unreachable, got {res:?}"
    );
    assert!(start.elapsed() < timing().connect_timeout() + Duration::from_millis(200));
}

#[tokio::test]
async fn a_channel_recovers_once_the_peer_comes_up() {
    let addr = dead_addr().await;
    let peers = local_peers();
    let mut conn = client(&peers, addr).await;
    assert!(matches!(
        conn.vote(vote_request(), ttl()).await,
        Err(RPCError::Unreachable(_))
    ));

    let granted: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
        Ok(VoteResponse::new(Vote::new(3, 1), None, true));
    let _fake = serve(
        TcpListener::bind(addr).await.unwrap(),
        Behaviour::Reply(json(&granted)),
    );
    assert_eq!(Ok(conn.vote(vote_request(), ttl()).await.unwrap()), granted);
    assert_eq!(peers.built(), 1, "the same cached channels reconnected");
}

#[tokio::test]
async fn peers_reuse_one_channel_pair_per_node_and_address() {
    let granted: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
        Ok(VoteResponse::new(Vote::new(3, 1), None, true));
    let fake = fake(Behaviour::Reply(json(&granted))).await;
    let peers = local_peers();
    let here = node(fake.addr);

    peers.channels(TARGET, &here).unwrap();
    peers.channels(TARGET, &here).unwrap();
    assert_eq!(peers.built(), 1);

    // Many calls through fresh connection objects share one TCP connection.
    for _ in 0..3 {
        let mut conn = client(&peers, fake.addr).await;
        conn.vote(vote_request(), ttl()).await.unwrap();
    }
    assert_eq!(peers.built(), 1);
    assert_eq!(fake.connections.load(Ordering::SeqCst), 1);

    // The same node at a new address gets new channels, once.
    let moved = PeerNode {
        peer_addr: format!("localhost:{}", fake.addr.port()),
        ..here.clone()
    };
    peers.channels(TARGET, &moved).unwrap();
    peers.channels(TARGET, &moved).unwrap();
    assert_eq!(peers.built(), 2);

    // Forgetting a node drops its channels.
    peers.forget(TARGET);
    peers.channels(TARGET, &moved).unwrap();
    assert_eq!(peers.built(), 3);

    // An address that is no URI authority is refused, not panicked on.
    let bad = PeerNode {
        peer_addr: "not a host:port".to_string(),
        ..here
    };
    assert!(peers.channels(TARGET, &bad).is_err());
    let mut conn = Network::new(peers.clone()).new_client(TARGET, &bad).await;
    assert!(matches!(
        conn.vote(vote_request(), ttl()).await,
        Err(RPCError::Unreachable(_))
    ));
}

#[tokio::test]
async fn snapshots_go_on_their_own_connection() {
    // One fake answering both RPC kinds with a reply that decodes for either: Err(Stopped).
    let stopped: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
        Err(RaftError::Fatal(Fatal::Stopped));
    let fake = fake(Behaviour::Reply(json(&stopped))).await;
    let peers = local_peers();
    let mut conn = client(&peers, fake.addr).await;
    for _ in 0..2 {
        assert!(conn.vote(vote_request(), ttl()).await.is_err());
        assert!(conn
            .install_snapshot(snapshot_chunk(), ttl())
            .await
            .is_err());
    }
    assert_eq!(fake.connections.load(Ordering::SeqCst), 2, "control + bulk");
    assert_eq!(fake.seen.lock().unwrap().requests.len(), 4);
}

#[tokio::test]
async fn outbound_connections_use_the_local_ip() {
    let other_loopback = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let stopped: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
        Err(RaftError::Fatal(Fatal::Stopped));
    let fake = fake(Behaviour::Reply(json(&stopped))).await;
    let peers = Peers::new(&timing(), Some(other_loopback));
    let mut conn = client(&peers, fake.addr).await;
    assert!(matches!(
        conn.vote(vote_request(), ttl()).await,
        Err(RPCError::RemoteError(_))
    ));
    assert_eq!(fake.seen.lock().unwrap().remote_ips, vec![other_loopback]);
}

const SHORT: Duration = Duration::from_millis(300);
/// Scheduling slack on a loaded test machine.
const SLACK: Duration = Duration::from_millis(250);

#[tokio::test]
async fn a_server_that_never_answers_fails_within_the_hard_ttl() {
    let fake = fake(Behaviour::Hang).await;
    let mut conn = client(&local_peers(), fake.addr).await;

    // Control lane (the channel's own rpc_timeout is longer than this TTL).
    let start = Instant::now();
    let res = conn.vote(vote_request(), RPCOption::new(SHORT)).await;
    assert!(matches!(res, Err(RPCError::Unreachable(_))), "{res:?}");
    assert!(start.elapsed() < SHORT + SLACK, "{:?}", start.elapsed());

    // Bulk lane: no channel timeout at all, only the caller's.
    let start = Instant::now();
    let res = conn
        .install_snapshot(snapshot_chunk(), RPCOption::new(SHORT))
        .await;
    assert!(matches!(res, Err(RPCError::Unreachable(_))), "{res:?}");
    assert!(start.elapsed() < SHORT + SLACK, "{:?}", start.elapsed());
}

#[tokio::test]
async fn a_peer_that_accepts_tcp_but_never_speaks_fails_within_the_hard_ttl() {
    // Accepts connections and holds them open without ever reading or writing: the HTTP/2
    // handshake never completes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut conn = client(&local_peers(), addr).await;
    let start = Instant::now();
    let res = conn.vote(vote_request(), RPCOption::new(SHORT)).await;
    assert!(matches!(res, Err(RPCError::Unreachable(_))), "{res:?}");
    assert!(start.elapsed() < SHORT + SLACK, "{:?}", start.elapsed());
}

#[tokio::test]
async fn leader_contact_starts_unknown_and_only_moves_forward() {
    let contact = LeaderContact::new();
    assert_eq!(contact.since(), None);
    contact.record();
    let first = contact.since().unwrap();
    assert!(first < Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(contact.since().unwrap() >= first + Duration::from_millis(20));
    contact.record();
    assert!(contact.since().unwrap() < Duration::from_millis(20));
}
