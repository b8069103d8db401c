//! The client side of the Raft transport: one pair of gRPC channels per peer.
//!
//! Every openraft message travels as JSON inside a `rankd.peer.v1.RaftMessage` (see the
//! proto for why JSON), and every reply is the JSON of the remote `Result`, so a remote
//! `RaftError` reaches openraft as exactly the error the remote produced.
//!
//! # Two connections per peer
//! [`PeerChannels::control`] carries AppendEntries (which doubles as the heartbeat), Vote and
//! other small RPCs; [`PeerChannels::bulk`] carries InstallSnapshot chunks and artifact
//! transfers. They are separate HTTP/2 connections: on one connection a heartbeat would queue
//! behind megabytes of snapshot or artifact bytes (HTTP/2 flow control and TCP share one
//! window), miss its deadline and make the follower start an election while it is in fact
//! being fed by the leader.
//!
//! # Error mapping
//! openraft treats [`Unreachable`] as "back off before retrying" and [`NetworkError`] as
//! "retry at once". A peer that refuses connections, is unavailable or lets a deadline pass
//! is [`Unreachable`]: hammering it helps nobody. Anything else that fails between the two
//! nodes (an unexpected status, a reply that does not decode) is a [`NetworkError`]. A reply
//! that decodes to `Err` is the remote node's own answer: a [`RemoteError`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use rankd_proto::peer::v1::raft_client::RaftClient;
use rankd_proto::peer::v1::RaftMessage;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

use crate::config::RaftTiming;
use crate::types::{NodeId, PeerNode, TypeConfig};

/// The two connections to one peer. Cloning a [`Channel`] is cheap and shares its connection.
#[derive(Debug, Clone)]
pub struct PeerChannels {
    /// AppendEntries / heartbeats, Vote, and other small RPCs. Every request on it gives up
    /// after `rpc_timeout`.
    pub control: Channel,
    /// InstallSnapshot and artifact transfers. No whole-request timeout: a transfer may
    /// legitimately take long, so each caller sets its own deadline.
    pub bulk: Channel,
}

/// A peer address that cannot be turned into a channel.
#[derive(Debug, thiserror::Error)]
#[error("peer address {addr:?} of node {id} is not a valid host:port: {source}")]
pub struct PeerAddrError {
    pub id: NodeId,
    pub addr: String,
    #[source]
    pub source: tonic::transport::Error,
}

/// Cache of channel pairs, one per peer node, shared by clones.
///
/// Invariant: at most one pair per node id, built for the address stored next to it. A pair
/// is replaced when the node's `peer_addr` changes (a node moved; membership carries the new
/// address), never otherwise, so all Raft traffic to a peer shares one control connection.
#[derive(Debug, Clone)]
pub struct Peers {
    inner: Arc<PeersInner>,
}

#[derive(Debug)]
struct PeersInner {
    connect_timeout: Duration,
    rpc_timeout: Duration,
    local_ip: Option<IpAddr>,
    cache: Mutex<HashMap<NodeId, (String, PeerChannels)>>,
    built: std::sync::atomic::AtomicU64,
    /// Mutual TLS for every peer connection; None only in insecure-dev mode.
    tls: Mutex<Option<ClientTlsConfig>>,
}

impl Peers {
    /// `local_ip`: outbound connections originate from this address (the node's own
    /// peer-listen IP), so a firewall, or a test harness's proxy, can tell nodes apart.
    pub fn new(timing: &RaftTiming, local_ip: Option<IpAddr>) -> Peers {
        Peers {
            inner: Arc::new(PeersInner {
                connect_timeout: timing.connect_timeout(),
                rpc_timeout: timing.rpc_timeout(),
                local_ip,
                cache: Mutex::new(HashMap::new()),
                built: std::sync::atomic::AtomicU64::new(0),
                tls: Mutex::new(None),
            }),
        }
    }

    /// Uses `tls` for every channel built from now on, and drops the cached ones so the
    /// next call to each peer reconnects with it (a rotated certificate or CA). Calls in
    /// flight finish on their old connections.
    pub fn set_tls(&self, tls: Option<ClientTlsConfig>) {
        *self.inner.tls.lock().unwrap_or_else(|e| e.into_inner()) = tls;
        self.lock().clear();
    }

    /// The channels to node `id` at `node.peer_addr`, built (lazily: nothing connects until
    /// the first call) on first use or when the address changed.
    pub fn channels(&self, id: NodeId, node: &PeerNode) -> Result<PeerChannels, PeerAddrError> {
        let mut cache = self.lock();
        if let Some((addr, channels)) = cache.get(&id) {
            if *addr == node.peer_addr {
                return Ok(channels.clone());
            }
        }
        let channels = self.build(id, &node.peer_addr)?;
        cache.insert(id, (node.peer_addr.clone(), channels.clone()));
        self.inner
            .built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(channels)
    }

    /// Drops the channels to `id` (a node removed from the cluster); its connections close
    /// once no clone of them is left in flight.
    pub fn forget(&self, id: NodeId) {
        self.lock().remove(&id);
    }

    /// How many channel pairs this cache has built so far: lets tests (and metrics) see that
    /// a pair is reused rather than rebuilt.
    pub fn built(&self) -> u64 {
        self.inner.built.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A poisoned lock only means another thread panicked while holding it; the map itself is
    /// always consistent (each update is one insert or remove), so keep using it.
    fn lock(&self) -> MutexGuard<'_, HashMap<NodeId, (String, PeerChannels)>> {
        self.inner.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn build(&self, id: NodeId, addr: &str) -> Result<PeerChannels, PeerAddrError> {
        let tls = self
            .inner
            .tls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let err = |source| PeerAddrError {
            id,
            addr: addr.to_string(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(err)?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(err)?;
        }
        let endpoint = endpoint
            .connect_timeout(self.inner.connect_timeout)
            .tcp_nodelay(true)
            .local_address(self.inner.local_ip)
            // A peer that vanished without closing the connection (power loss, a partition)
            // would otherwise leave the channel writing into a dead TCP connection until the
            // kernel gives up, minutes later. An unanswered HTTP/2 ping closes it, and the
            // next call reconnects.
            .http2_keep_alive_interval(self.inner.rpc_timeout)
            .keep_alive_timeout(self.inner.rpc_timeout)
            .keep_alive_while_idle(true);
        Ok(PeerChannels {
            control: endpoint
                .clone()
                .timeout(self.inner.rpc_timeout)
                .connect_lazy(),
            bulk: endpoint.connect_lazy(),
        })
    }
}

/// openraft's network factory: hands out one [`PeerConnection`] per replication target.
#[derive(Debug, Clone)]
pub struct Network {
    peers: Peers,
}

impl Network {
    pub fn new(peers: Peers) -> Network {
        Network { peers }
    }

    pub fn peers(&self) -> &Peers {
        &self.peers
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerConnection {
        PeerConnection {
            target,
            node: node.clone(),
            peers: self.peers.clone(),
        }
    }
}

/// The Raft RPCs to one target node. Channels are looked up in [`Peers`] on every call
/// (a map lookup and a clone), so a changed address or a `forget` takes effect at once.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    target: NodeId,
    node: PeerNode,
    peers: Peers,
}

/// Why an RPC to a peer failed before a remote answer could be decoded.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Address(#[from] PeerAddrError),
    #[error("{rpc} to node {target}: encoding the request: {source}")]
    Encode {
        rpc: &'static str,
        target: NodeId,
        #[source]
        source: serde_json::Error,
    },
    #[error("{rpc} to node {target}: {status}")]
    Status {
        rpc: &'static str,
        target: NodeId,
        #[source]
        status: tonic::Status,
    },
    #[error("{rpc} to node {target}: no answer within {ttl:?}")]
    Deadline {
        rpc: &'static str,
        target: NodeId,
        ttl: Duration,
    },
    #[error("{rpc} to node {target}: reply does not decode (openraft version skew?): {source}")]
    Decode {
        rpc: &'static str,
        target: NodeId,
        #[source]
        source: serde_json::Error,
    },
}

impl TransportError {
    /// Whether openraft should back off before retrying (see the module docs).
    fn is_unreachable(&self) -> bool {
        match self {
            // A bad address stays bad: retrying at once would spin.
            TransportError::Address(_) | TransportError::Deadline { .. } => true,
            // `Cancelled` is what tonic reports when the channel's own timeout expires.
            TransportError::Status { status, .. } => matches!(
                status.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
            ),
            TransportError::Encode { .. } | TransportError::Decode { .. } => false,
        }
    }

    fn into_rpc_error<E: std::error::Error>(self) -> RPCError<NodeId, PeerNode, E> {
        if self.is_unreachable() {
            RPCError::Unreachable(Unreachable::new(&self))
        } else {
            RPCError::Network(NetworkError::new(&self))
        }
    }
}

/// The three Raft RPCs, each bound to the connection it must use.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::AppendEntries => "append_entries",
            Rpc::Vote => "vote",
            Rpc::InstallSnapshot => "install_snapshot",
        }
    }
}

impl PeerConnection {
    /// Sends one JSON-encoded request and decodes the JSON `Result` that comes back.
    ///
    /// The deadline is enforced here as well as sent to the server (`grpc-timeout`): a peer
    /// that accepted the connection but never answers must not hold the caller past `ttl`,
    /// and the bulk channel has no timeout of its own.
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        ttl: Duration,
    ) -> Result<Result<Resp, E>, TransportError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let (target, name) = (self.target, rpc.name());
        let channels = self.peers.channels(target, &self.node)?;
        let json = serde_json::to_vec(req).map_err(|source| TransportError::Encode {
            rpc: name,
            target,
            source,
        })?;
        let mut request = tonic::Request::new(RaftMessage { json });
        request.set_timeout(ttl);
        let reply = tokio::time::timeout(ttl, async move {
            match rpc {
                Rpc::AppendEntries => {
                    RaftClient::new(channels.control)
                        .append_entries(request)
                        .await
                }
                Rpc::Vote => RaftClient::new(channels.control).vote(request).await,
                Rpc::InstallSnapshot => {
                    RaftClient::new(channels.bulk)
                        .install_snapshot(request)
                        .await
                }
            }
        })
        .await
        .map_err(|_| TransportError::Deadline {
            rpc: name,
            target,
            ttl,
        })?
        .map_err(|status| TransportError::Status {
            rpc: name,
            target,
            status,
        })?;
        serde_json::from_slice(&reply.into_inner().json).map_err(|source| TransportError::Decode {
            rpc: name,
            target,
            source,
        })
    }

    fn remote<E: std::error::Error>(&self, err: E) -> RPCError<NodeId, PeerNode, E> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.node.clone(),
            err,
        ))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        let entries = rpc.entries.len() as u64;
        match self.call(Rpc::AppendEntries, &rpc, option.hard_ttl()).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(err)) => Err(self.remote(err)),
            // The server refused the message as too large: ask openraft to send fewer
            // entries at a time instead of retrying the same batch forever.
            Err(TransportError::Status { ref status, .. })
                if status.code() == Code::ResourceExhausted && entries > 1 =>
            {
                Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(entries / 2),
                ))
            }
            Err(e) => Err(e.into_rpc_error()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, PeerNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(Rpc::InstallSnapshot, &rpc, option.hard_ttl())
            .await
        {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(err)) => Err(self.remote(err)),
            Err(e) => Err(e.into_rpc_error()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        match self.call(Rpc::Vote, &rpc, option.hard_ttl()).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(err)) => Err(self.remote(err)),
            Err(e) => Err(e.into_rpc_error()),
        }
    }
}
