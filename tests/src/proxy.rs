//! [`PeerProxy`]: a TCP proxy in front of one node's peer port, for real network faults.
//!
//! Every cluster node advertises its proxy's address as its peer address, so all Raft,
//! heartbeat and artifact traffic *to* that node passes through the proxy. Nodes open their
//! outbound peer connections from the IP of their own `cluster.peer_listen` (each node gets
//! its own loopback IP, `127.0.x.y`), so the proxy tells its clients apart by source IP.
//! [`PeerProxy::block`] then cuts a set of sources off: their open connections are closed
//! and new ones are accepted and dropped at once, exactly what a dead link looks like to the
//! node (connection reset), until [`PeerProxy::unblock_all`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

#[derive(Default)]
struct State {
    target: Option<SocketAddr>,
    blocked: BTreeSet<IpAddr>,
    /// Open forwarded connections: id → (source IP, the task copying its bytes).
    open: BTreeMap<u64, (IpAddr, AbortHandle)>,
    /// Every source IP that ever connected, with how many connections it opened.
    seen: BTreeMap<IpAddr, u64>,
    refused: u64,
}

/// A TCP proxy bound on one IP (port 0) that forwards to a target set later.
pub struct PeerProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept_task: JoinHandle<()>,
}

impl PeerProxy {
    /// Binds `ip:0` and starts accepting. Until [`set_target`](Self::set_target) is called,
    /// connections are accepted and dropped.
    pub async fn bind(ip: IpAddr) -> PeerProxy {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .unwrap_or_else(|e| panic!("binding a peer proxy on {ip}:0: {e}"));
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let state = Arc::new(Mutex::new(State::default()));
        let accept_task = tokio::spawn(accept_loop(listener, state.clone(), addr));
        PeerProxy {
            addr,
            state,
            accept_task,
        }
    }

    /// The address other nodes dial (the node's `cluster.advertise_peer`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where accepted connections go from now on (a restarted node has a new peer port).
    /// Connections already open keep their old target.
    pub fn set_target(&self, target: SocketAddr) {
        tracing::debug!(proxy = %self.addr, %target, "peer proxy retargeted");
        self.state.lock().unwrap().target = Some(target);
    }

    pub fn target(&self) -> Option<SocketAddr> {
        self.state.lock().unwrap().target
    }

    /// Cuts `sources` off: closes their open connections and refuses (accepts and drops)
    /// new ones until [`unblock_all`](Self::unblock_all).
    pub fn block(&self, sources: &[IpAddr]) {
        let mut st = self.state.lock().unwrap();
        st.blocked.extend(sources.iter().copied());
        let blocked = st.blocked.clone();
        let cut: Vec<u64> = st
            .open
            .iter()
            .filter(|(_, (ip, _))| blocked.contains(ip))
            .map(|(id, _)| *id)
            .collect();
        for id in &cut {
            if let Some((_, task)) = st.open.remove(id) {
                // Aborting the copy task drops both sockets: the node sees the link close.
                task.abort();
            }
        }
        tracing::info!(proxy = %self.addr, ?sources, closed = cut.len(), "peer proxy blocking");
    }

    /// Lets every source through again.
    pub fn unblock_all(&self) {
        self.state.lock().unwrap().blocked.clear();
        tracing::info!(proxy = %self.addr, "peer proxy unblocked");
    }

    pub fn blocked(&self) -> Vec<IpAddr> {
        self.state.lock().unwrap().blocked.iter().copied().collect()
    }

    /// Every source IP that has connected so far.
    pub fn sources(&self) -> Vec<IpAddr> {
        self.state.lock().unwrap().seen.keys().copied().collect()
    }

    /// Connections currently forwarded from `source`.
    pub fn open_from(&self, source: IpAddr) -> usize {
        let st = self.state.lock().unwrap();
        st.open.values().filter(|(ip, _)| *ip == source).count()
    }

    /// Connections refused so far (blocked source, or no target yet, or target down).
    pub fn refused(&self) -> u64 {
        self.state.lock().unwrap().refused
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        let mut st = self.state.lock().unwrap();
        for (_, (_, task)) in std::mem::take(&mut st.open) {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>, addr: SocketAddr) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    loop {
        let (inbound, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: keep serving rather than silently partitioning the node.
                tracing::warn!(proxy = %addr, error = %e, "peer proxy accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let source = from.ip();
        // One critical section: a concurrent `block` either sees this connection registered
        // (and closes it) or has already blocked the source (and this refuses it).
        let mut st = state.lock().unwrap();
        *st.seen.entry(source).or_default() += 1;
        let target = match st.target {
            Some(t) if !st.blocked.contains(&source) => t,
            _ => {
                st.refused += 1;
                drop(st);
                drop(inbound);
                continue;
            }
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let st2 = state.clone();
        let task = tokio::spawn(async move {
            forward(inbound, target).await;
            st2.lock().unwrap().open.remove(&id);
        });
        st.open.insert(id, (source, task.abort_handle()));
    }
}

async fn forward(mut inbound: TcpStream, target: SocketAddr) {
    let _ = inbound.set_nodelay(true);
    let mut outbound = match TcpStream::connect(target).await {
        Ok(s) => s,
        // The node behind the proxy is down: the caller sees the connection close.
        Err(_) => return,
    };
    let _ = outbound.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        sock.connect(to).await.unwrap()
    }

    async fn echoes(s: &mut TcpStream) -> bool {
        if s.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) && &buf == b"ping"
    }

    #[tokio::test]
    async fn forwards_blocks_by_source_and_unblocks() {
        let proxy = PeerProxy::bind("127.0.0.1".parse().unwrap()).await;
        proxy.set_target(echo_server().await);
        let mut a = connect_from("127.0.0.21", proxy.addr()).await;
        let mut b = connect_from("127.0.0.22", proxy.addr()).await;
        assert!(echoes(&mut a).await && echoes(&mut b).await);
        let a_ip: IpAddr = "127.0.0.21".parse().unwrap();
        assert_eq!(proxy.open_from(a_ip), 1);

        proxy.block(&[a_ip]);
        assert!(
            !echoes(&mut a).await,
            "a blocked source's open link must close"
        );
        assert!(echoes(&mut b).await, "other sources are untouched");
        let mut a2 = connect_from("127.0.0.21", proxy.addr()).await;
        assert!(!echoes(&mut a2).await, "a blocked source cannot reconnect");

        proxy.unblock_all();
        let mut a3 = connect_from("127.0.0.21", proxy.addr()).await;
        assert!(echoes(&mut a3).await);
        assert_eq!(proxy.sources().len(), 2);
    }
}
