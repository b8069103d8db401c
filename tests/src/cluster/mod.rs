//! [`Cluster`]: several rankd nodes forming one Raft cluster on loopback, with a
//! [`PeerProxy`] in front of every node's peer port so tests can cut links for real.
//!
//! ```no_run
//! # async fn demo() {
//! use rankd_tests::{init, Cluster};
//! init();
//! let mut c = Cluster::start(3).await;
//! c.upload(1, "1").await;
//! let fence = c.must_promote(1, "1").await;
//! c.wait_all_serving(&fence).await;
//! let leader = c.wait_leader().await;
//! let others: Vec<u64> = c.live_ids().into_iter().filter(|&i| i != leader).collect();
//! c.partition(&[leader], &others);
//! c.heal();
//! c.kill(others[0]).await;
//! c.restart(others[0]).await;
//! # }
//! ```
//!
//! Layout: node `i` (Raft id `i`) binds its peer port on `127.0.B.(10+i)` (B: one block per
//! cluster in this test process) and advertises its proxy, bound on the same IP, as its peer
//! address. Its outbound peer connections originate from that IP, which is how a proxy knows
//! whom to refuse. Nodes share one keyring (unless a test gives one its own) and keep their
//! data directories under the cluster's temporary directory, so a restarted node finds its
//! Raft log and artifacts again. A restarted node gets its old gRPC port back, since the
//! cluster records it as the node's API address.
//!
//! Clusters in one test binary run one at a time (`RANKD_TEST_CLUSTERS`, default 1): each
//! starts several nodes that load models, and the test machines have two cores.

mod registry;
mod secure;
mod serving;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rankd_proto::admin::v1::{
    AddNodeRequest, ClusterMember, ClusterStatus, InitClusterRequest, RemoveNodeRequest,
};
use tempfile::TempDir;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};

use crate::builder::{write_keyring, NodeBuilder};
use crate::bundle::{example_query, manifest, ExampleQuery};
use crate::node::Node;
use crate::proxy::PeerProxy;
use crate::wait_for;
pub use secure::{Bearer, CallerAdmin, Security};
pub use serving::{node_status, same_fence};

/// How long a cluster may take to elect a leader (after start or after losing one). Raft
/// needs well under a second; the margin is for debug builds on a busy two-core machine.
pub const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long nodes may take to fetch, verify, load and validate a version (debug build).
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on one status/rank/health call while polling, so a hung node cannot hang a wait.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one Promote/Rollback call: the node's readiness wait plus a margin. A call that
/// outlives it is a hang, and the harness panics.
const PROMOTE_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether `status` reports a missed deadline: DEADLINE_EXCEEDED from the server, or the
/// client's own deadline (tonic answers CANCELLED "Timeout expired" for that).
pub fn is_deadline(status: &Status) -> bool {
    status.code() == Code::DeadlineExceeded
        || (status.code() == Code::Cancelled && status.message().contains("Timeout expired"))
}

/// How to start a [`Cluster`]. Settings apply to every node.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    size: u64,
    settings: Vec<(String, String)>,
    /// Settings for one node only: (node id, key, TOML literal), applied after `settings`.
    node_settings: Vec<(u64, String, String)>,
    own_keyring: Vec<u64>,
    secure: bool,
}

impl ClusterBuilder {
    /// Sets a config key on every node to a TOML literal.
    pub fn set(mut self, key: &str, toml_literal: &str) -> Self {
        self.settings.push((key.into(), toml_literal.into()));
        self
    }

    /// Sets a config key on node `id` only.
    pub fn set_on(mut self, id: u64, key: &str, toml_literal: &str) -> Self {
        self.node_settings
            .push((id, key.into(), toml_literal.into()));
        self
    }

    /// `artifacts.scrub_interval_s`: how often every node re-verifies its artifacts.
    pub fn scrub_interval_s(self, s: u64) -> Self {
        self.set("artifacts.scrub_interval_s", &s.to_string())
    }

    /// `cluster.ready_timeout_ms`: how long a promotion waits for readiness by default.
    pub fn ready_timeout_ms(self, ms: u64) -> Self {
        self.set("cluster.ready_timeout_ms", &ms.to_string())
    }

    /// `cluster.lag_timeout_ms`.
    pub fn lag_timeout_ms(self, ms: u64) -> Self {
        self.set("cluster.lag_timeout_ms", &ms.to_string())
    }

    /// TLS on every port and credentials on the admin API (see `secure.rs`): the harness
    /// then calls as the admin identity "harness"; tests get tokens from [`Cluster::security`].
    pub fn secure(mut self) -> Self {
        self.secure = true;
        self
    }

    /// Node `id` gets a keyring of its own (key `node-<id>-key`) instead of the cluster's,
    /// so it cannot decrypt artifacts the others encrypt.
    pub fn own_keyring(mut self, id: u64) -> Self {
        self.own_keyring.push(id);
        self
    }

    /// Starts the nodes, makes them one cluster (InitCluster on node 1 naming all), and
    /// waits until every node sees a leader and all the voters.
    pub async fn start(self) -> Cluster {
        static BLOCK: AtomicU8 = AtomicU8::new(0);
        let slot = cluster_slot().await;
        let root = tempfile::Builder::new()
            .prefix("rankd-cluster-")
            .tempdir()
            .expect("a cluster directory");
        let keyring = root.path().join("keyring.toml");
        write_keyring(&keyring, "cluster-key");
        let security = self.secure.then(|| secure::Security::new(root.path()));
        let mut c = Cluster {
            security,
            members: BTreeMap::new(),
            builder: self.clone(),
            keyring,
            block: BLOCK.fetch_add(1, Ordering::Relaxed),
            query: example_query(),
            model_name: manifest()["name"]
                .as_str()
                .expect("the manifest names the model")
                .to_string(),
            root,
            _slot: slot,
        };
        tracing::info!(size = self.size, dir = %c.root.path().display(), "starting a cluster");
        for id in 1..=self.size {
            c.add_member(id).await;
        }
        let starts = c.members.values().map(|m| m.builder.clone().start());
        let nodes = futures::future::join_all(starts).await;
        for (id, node) in (1..=self.size).zip(nodes) {
            c.attach(id, node);
        }
        let members: Vec<ClusterMember> = (1..=self.size).map(|id| c.member(id)).collect();
        c.admin(1)
            .await
            .init_cluster(InitClusterRequest { members })
            .await
            .unwrap_or_else(|s| panic!("InitCluster on node 1: {s:?}"));
        let want = self.size as usize;
        for id in c.live_ids() {
            wait_for(
                &format!("node {id} sees a leader and {want} voters"),
                ELECTION_TIMEOUT,
                || async {
                    let st = c.try_status(id).await.map_err(|s| format!("{s:?}"))?;
                    let voters = st.nodes.iter().filter(|n| n.voter).count();
                    if st.leader_id != 0 && voters == want {
                        Ok(())
                    } else {
                        Err(format!("leader {} voters {voters}", st.leader_id))
                    }
                },
            )
            .await;
        }
        tracing::info!(leader = c.leader_id().await, "cluster formed");
        c
    }
}

/// Bounds how many clusters one test binary runs at once.
async fn cluster_slot() -> OwnedSemaphorePermit {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        let n = std::env::var("RANKD_TEST_CLUSTERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1usize);
        Arc::new(Semaphore::new(n.max(1)))
    });
    slots.clone().acquire_owned().await.expect("never closed")
}

struct Member {
    ip: IpAddr,
    proxy: PeerProxy,
    builder: NodeBuilder,
    /// The gRPC address of the first incarnation; restarts bind it again, since the
    /// cluster records it as this node's API address.
    grpc_addr: Option<SocketAddr>,
    node: Option<Node>,
    /// Killed incarnations, kept so their logs last until the test ends (and are printed
    /// if it fails).
    dead: Vec<Node>,
    removed: bool,
}

/// A running cluster. Dropping it kills every node.
pub struct Cluster {
    members: BTreeMap<u64, Member>,
    builder: ClusterBuilder,
    keyring: PathBuf,
    block: u8,
    query: ExampleQuery,
    model_name: String,
    security: Option<secure::Security>,
    // Dropped after the nodes: their data lives here, and the slot frees last.
    root: TempDir,
    _slot: OwnedSemaphorePermit,
}

impl Cluster {
    /// The CA, harness identity and tokens of a [`ClusterBuilder::secure`] cluster.
    pub fn security(&self) -> &secure::Security {
        self.security
            .as_ref()
            .expect("this cluster was not built with .secure()")
    }

    pub fn builder(size: u64) -> ClusterBuilder {
        ClusterBuilder {
            size,
            settings: Vec::new(),
            node_settings: Vec::new(),
            own_keyring: Vec::new(),
            secure: false,
        }
    }

    /// `size` nodes with default settings.
    pub async fn start(size: u64) -> Cluster {
        Cluster::builder(size).start().await
    }

    // --- members

    async fn add_member(&mut self, id: u64) {
        assert!((1..=200).contains(&id), "node ids run from 1 to 200");
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, self.block, 10 + id as u8));
        let proxy = PeerProxy::bind(ip).await;
        let dir = self.root.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&dir).expect("a node directory");
        let keyring = if self.builder.own_keyring.contains(&id) {
            let own = dir.join("keyring.toml");
            write_keyring(&own, &format!("node-{id}-key"));
            own
        } else {
            self.keyring.clone()
        };
        let mut b = NodeBuilder::new()
            .unset("model.bundle")
            .node_id(&format!("node-{id}"))
            .set_str("data_dir", &dir.join("data").display().to_string())
            .set_str("artifacts.keyring", &keyring.display().to_string())
            .set("cluster.id", &id.to_string())
            .set_str("cluster.peer_listen", &format!("{ip}:0"))
            .set_str("cluster.advertise_peer", &proxy.addr().to_string())
            .set_str("cluster.bootstrap", "join");
        if let Some(sec) = &self.security {
            b = sec.configure(b, id, ip);
        }
        for (k, v) in &self.builder.settings {
            b = b.set(k, v);
        }
        for (_, k, v) in self
            .builder
            .node_settings
            .iter()
            .filter(|(n, _, _)| *n == id)
        {
            b = b.set(k, v);
        }
        self.members.insert(
            id,
            Member {
                ip,
                proxy,
                builder: b,
                grpc_addr: None,
                node: None,
                dead: Vec::new(),
                removed: false,
            },
        );
    }

    fn attach(&mut self, id: u64, node: Node) {
        let m = self.members.get_mut(&id).expect("a member");
        let peer = node.peer_addr().unwrap_or_else(|| {
            panic!(
                "node {id} reported no peer address (`peer=` on its serving line): \
                 this rankd binary does not run the cluster"
            )
        });
        m.proxy.set_target(peer);
        m.grpc_addr.get_or_insert(node.grpc_addr());
        tracing::info!(id, grpc = %node.grpc_addr(), %peer, proxy = %m.proxy.addr(), "node up");
        m.node = Some(node);
    }

    fn m(&self, id: u64) -> &Member {
        self.members
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// The running process of node `id`; panics if it is down.
    pub fn node(&self, id: u64) -> &Node {
        self.m(id)
            .node
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.m(id).node.is_some()
    }

    /// Members (not removed) whose process runs.
    pub fn live_ids(&self) -> Vec<u64> {
        let live = |m: &Member| m.node.is_some() && !m.removed;
        self.members
            .iter()
            .filter(|(_, m)| live(m))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The IP node `id`'s peer traffic comes from.
    pub fn ip(&self, id: u64) -> IpAddr {
        self.m(id).ip
    }

    pub fn proxy(&self, id: u64) -> &PeerProxy {
        &self.m(id).proxy
    }

    /// Every IP a member of this cluster sends peer traffic from.
    pub fn member_ips(&self) -> Vec<IpAddr> {
        self.members.values().map(|m| m.ip).collect()
    }

    /// Node `id`'s data directory (`raft.redb`, `artifacts/<sha256>`, ...).
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("node-{id}")).join("data")
    }

    /// The membership record naming node `id` (as InitCluster and AddNode take it).
    pub fn member(&self, id: u64) -> ClusterMember {
        let m = self.m(id);
        ClusterMember {
            id,
            api_addr: m.grpc_addr.expect("node started once").to_string(),
            peer_addr: m.proxy.addr().to_string(),
        }
    }

    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    // --- faults

    /// `kill -9` node `id`.
    pub async fn kill(&mut self, id: u64) {
        tracing::info!(id, "kill -9");
        let m = self.members.get_mut(&id).expect("a member");
        let mut node = m
            .node
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        node.sigkill().await;
        m.dead.push(node);
    }

    /// SIGSTOP node `id`: hung, sockets open, nothing answered.
    pub fn pause(&self, id: u64) {
        tracing::info!(id, "SIGSTOP");
        self.node(id).sigstop();
    }

    /// SIGCONT node `id`.
    pub fn resume(&self, id: u64) {
        tracing::info!(id, "SIGCONT");
        self.node(id).sigcont();
    }

    /// SIGTERM node `id` and wait for it to drain and exit (within `within`). Returns
    /// whether it exited cleanly (status 0).
    pub async fn terminate(&mut self, id: u64, within: Duration) -> bool {
        tracing::info!(id, "SIGTERM");
        let m = self.members.get_mut(&id).expect("a member");
        let mut node = m
            .node
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        node.sigterm();
        let status = node.wait_exit(within).await;
        m.dead.push(node);
        status.success()
    }

    /// Starts node `id` again on its data directory, config and gRPC address.
    pub async fn restart(&mut self, id: u64) {
        tracing::info!(id, "restarting");
        let m = self.m(id);
        assert!(m.node.is_none(), "node {id} is still running");
        let addr = m.grpc_addr.expect("node started once");
        let node = m.builder.clone().listen(&addr.to_string()).start().await;
        self.attach(id, node);
    }

    /// Restarts node `id` (which must be down) with one config key changed from now on, e.g.
    /// a different keyring.
    pub async fn restart_with(&mut self, id: u64, key: &str, toml_literal: &str) {
        let m = self.members.get_mut(&id).expect("a member");
        m.builder = m.builder.clone().set(key, toml_literal);
        self.restart(id).await;
    }

    /// Writes a keyring holding only `key_id` (a fresh key) for node `id` and returns its
    /// path, for restarting the node with keys that cannot open the cluster's artifacts.
    pub fn foreign_keyring(&self, id: u64, key_id: &str) -> PathBuf {
        let path = self
            .data_dir(id)
            .with_file_name(format!("keyring-{key_id}.toml"));
        write_keyring(&path, key_id);
        path
    }

    /// The cluster-wide keyring every node started with (unless given its own).
    pub fn keyring(&self) -> &std::path::Path {
        &self.keyring
    }

    /// Starts every member that is down, all at once (a cold start of the whole cluster).
    pub async fn start_all(&mut self) {
        let down: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, m)| m.node.is_none() && !m.removed)
            .map(|(id, _)| *id)
            .collect();
        tracing::info!(?down, "starting every stopped node");
        let starts = down.iter().map(|&id| {
            let m = self.m(id);
            let addr = m.grpc_addr.expect("node started once");
            m.builder.clone().listen(&addr.to_string()).start()
        });
        let nodes = futures::future::join_all(starts).await;
        for (id, node) in down.into_iter().zip(nodes) {
            self.attach(id, node);
        }
    }

    /// Cuts every link between group `a` and group `b`, both directions: each node's proxy
    /// refuses the other group's sources and closes their open connections.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        tracing::info!(?a, ?b, "partition");
        let ips = |g: &[u64]| g.iter().map(|&i| self.ip(i)).collect::<Vec<_>>();
        let (a_ips, b_ips) = (ips(a), ips(b));
        for &i in a {
            self.proxy(i).block(&b_ips);
        }
        for &i in b {
            self.proxy(i).block(&a_ips);
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        tracing::info!("heal");
        for m in self.members.values() {
            m.proxy.unblock_all();
        }
    }

    // --- membership

    /// Starts one more node (the next unused id) and adds it as a learner through the
    /// lowest live member. Returns its id.
    pub async fn add_node(&mut self) -> u64 {
        let id = self.members.keys().max().copied().unwrap_or(0) + 1;
        let via = self.live_ids()[0];
        self.add_member(id).await;
        let node = self.m(id).builder.clone().start().await;
        self.attach(id, node);
        let req = AddNodeRequest {
            member: Some(self.member(id)),
            voter: false,
        };
        tracing::info!(id, via, "adding node");
        self.admin(via)
            .await
            .add_node(req)
            .await
            .unwrap_or_else(|s| panic!("AddNode {id} through node {via}: {s:?}"));
        id
    }

    /// Removes node `id` through another live member; its process keeps running.
    pub async fn remove_node(&mut self, id: u64) -> ClusterStatus {
        let via = *self
            .live_ids()
            .iter()
            .find(|&&i| i != id)
            .expect("another live member");
        tracing::info!(id, via, "removing node");
        let st = self
            .admin(via)
            .await
            .remove_node(RemoveNodeRequest { id })
            .await
            .unwrap_or_else(|s| panic!("RemoveNode {id} through node {via}: {s:?}"))
            .into_inner();
        self.members.get_mut(&id).expect("a member").removed = true;
        st
    }
}

impl Drop for Cluster {
    /// The tokens this cluster handed out must not appear in any node's log (the nodes
    /// check their own keys and TLS keys themselves).
    fn drop(&mut self) {
        let Some(sec) = &self.security else { return };
        if std::thread::panicking() {
            return;
        }
        let tokens = [sec.reader_token.clone(), sec.operator_token.clone()];
        for (id, m) in &self.members {
            for node in m.node.iter().chain(m.dead.iter()) {
                crate::secrets::assert_absent(&format!("node {id} log"), &node.log(), &tokens);
            }
        }
    }
}
