//! An existing cluster as a drill target: reached through its client addresses (admin,
//! health, Rank), with faults injected by commands the operator supplies, since a client
//! of the cluster cannot kill or stop a process on another host by itself.
//!
//! Each hook is a shell command run with `sh -c`, after `{id}` (the node's Raft id) and
//! `{addr}` (its client address) are replaced, e.g.
//! `--hook-kill 'ssh rank-{id} sudo systemctl kill -s KILL rankd'`. A scenario runs only
//! when the hooks it needs are given; the others are reported as skipped, with which hook
//! is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rankd_proto::admin::v1::admin_client::AdminClient;
use rankd_proto::admin::v1::{ClusterStatus, ClusterStatusRequest};
use rankd_proto::v1::heartbeat_client::HeartbeatClient;
use rankd_proto::v1::ranker_client::RankerClient;
use rankd_proto::v1::{Fence, HeartbeatRequest, RankRequest, RankResponse};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// One call to a node may take this long before the node counts as not answering.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Operator commands that inject and repair faults on the cluster's hosts.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Kill the node's process at once (SIGKILL or equivalent).
    pub kill: Option<String>,
    /// Start the node's process again (same data directory and config).
    pub start: Option<String>,
    /// Freeze the node's process (SIGSTOP).
    pub stop: Option<String>,
    /// Resume a frozen process (SIGCONT).
    pub cont: Option<String>,
}

pub struct Remote {
    addrs: Vec<String>,
    hooks: Hooks,
    /// Every member's client address, learned once at the start: the drill must find a
    /// node while the cluster cannot answer status reads (no leader, a member hung).
    members: BTreeMap<u64, String>,
    /// Nodes this drill has killed and not started again.
    down: BTreeSet<u64>,
}

fn channel(addr: &str) -> Option<Channel> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Some(
        Endpoint::from_shared(uri)
            .ok()?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy(),
    )
}

impl Remote {
    /// Learns the members from the first given address that answers.
    pub async fn connect(addrs: Vec<String>, hooks: Hooks) -> Result<Remote, String> {
        let mut r = Remote {
            addrs,
            hooks,
            members: BTreeMap::new(),
            down: BTreeSet::new(),
        };
        let st = r
            .status()
            .await
            .ok_or("no given address answered GetClusterStatus")?;
        r.members = st
            .nodes
            .iter()
            .map(|n| (n.id, n.api_addr.clone()))
            .collect();
        Ok(r)
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Cluster status from the first live member (before the members are known: the first
    /// given address) that answers.
    pub async fn status(&self) -> Option<ClusterStatus> {
        let candidates: Vec<&String> = if self.members.is_empty() {
            self.addrs.iter().collect()
        } else {
            self.members
                .iter()
                .filter(|(id, _)| !self.down.contains(id))
                .map(|(_, a)| a)
                .collect()
        };
        for addr in candidates {
            let Some(ch) = channel(addr) else { continue };
            if let Ok(r) = AdminClient::new(ch)
                .get_cluster_status(ClusterStatusRequest {})
                .await
            {
                return Some(r.into_inner());
            }
        }
        None
    }

    pub async fn addr_of(&self, id: u64) -> Option<String> {
        self.members.get(&id).cloned()
    }

    /// Members, minus those this drill has taken down.
    pub async fn live_ids(&self) -> Vec<u64> {
        self.members
            .keys()
            .copied()
            .filter(|id| !self.down.contains(id))
            .collect()
    }

    /// Milliseconds from `since` until node `on` stops counting `peer` up, read from `on`'s
    /// heartbeat stream (`peers_up`): no consensus read involved, so it works while the
    /// cluster has no leader. `None` when not seen within `limit`.
    pub async fn wait_peer_down(
        &self,
        on: u64,
        peer: u64,
        since: Instant,
        limit: Duration,
    ) -> Option<f64> {
        let addr = self.addr_of(on).await?;
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(CALL_TIMEOUT)
            .connect_lazy();
        let mut stream = HeartbeatClient::new(ch)
            .subscribe(HeartbeatRequest {})
            .await
            .ok()?
            .into_inner();
        let peer = peer.to_string();
        loop {
            let left = limit.checked_sub(since.elapsed())?;
            let hb = tokio::time::timeout(left, stream.message())
                .await
                .ok()?
                .ok()??;
            if !hb.peers_up.contains(&peer) {
                return Some(since.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }

    pub async fn health(&self, id: u64) -> Option<ServingStatus> {
        let addr = self.addr_of(id).await?;
        let req = HealthCheckRequest {
            service: String::new(),
        };
        let r = HealthClient::new(channel(&addr)?).check(req).await.ok()?;
        Some(r.into_inner().status())
    }

    pub async fn rank(&self, id: u64, req: RankRequest) -> Option<RankResponse> {
        let addr = self.addr_of(id).await?;
        let r = RankerClient::new(channel(&addr)?).rank(req).await.ok()?;
        Some(r.into_inner())
    }

    /// The fence node `id` serves itself (its Rank answer, when not forwarded).
    pub async fn serving_fence(&self, id: u64, req: RankRequest) -> Option<Fence> {
        let r = self.rank(id, req).await?;
        if r.forwarded_by.is_empty() {
            r.fence
        } else {
            None
        }
    }

    /// Which hook a fault needs, when it is missing.
    pub fn missing(&self, needs: &[&'static str]) -> Option<&'static str> {
        needs.iter().copied().find(|h| self.hook(h).is_none())
    }

    fn hook(&self, name: &str) -> Option<&String> {
        match name {
            "kill" => self.hooks.kill.as_ref(),
            "start" => self.hooks.start.as_ref(),
            "stop" => self.hooks.stop.as_ref(),
            "cont" => self.hooks.cont.as_ref(),
            _ => None,
        }
    }

    /// Runs hook `name` for node `id`; the error says what failed.
    pub async fn run_hook(&mut self, name: &str, id: u64) -> Result<(), String> {
        let tmpl = self
            .hook(name)
            .ok_or_else(|| format!("no --hook-{name} given"))?
            .clone();
        let addr = self.addr_of(id).await.unwrap_or_default();
        let cmd = tmpl
            .replace("{id}", &id.to_string())
            .replace("{addr}", &addr);
        let out = tokio::process::Command::new("sh")
            .args(["-c", &cmd])
            .output()
            .await
            .map_err(|e| format!("running {cmd:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{cmd:?} exited {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        match name {
            "kill" => {
                self.down.insert(id);
            }
            "start" => {
                self.down.remove(&id);
            }
            _ => {}
        }
        Ok(())
    }
}
