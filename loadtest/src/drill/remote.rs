//! An existing cluster as a drill target: reached through its client addresses (admin,
//! health, Rank), with faults injected by commands the operator supplies, since a client
//! of the cluster cannot kill or stop a process on another host by itself.
//!
//! Each hook is a shell command run with `sh -c`, after `{id}` (the node's Raft id) and
//! `{addr}` (its client address) are replaced, e.g.
//! `--hook-kill 'ssh rank-{id} sudo systemctl kill -s KILL rankd'`. A scenario runs only
//! when the hooks it needs are given; the others are reported as skipped, with which hook
//! is missing.

use std::collections::BTreeSet;
use std::time::Duration;

use rankd_proto::admin::v1::admin_client::AdminClient;
use rankd_proto::admin::v1::{ClusterStatus, ClusterStatusRequest};
use rankd_proto::v1::ranker_client::RankerClient;
use rankd_proto::v1::{Fence, RankRequest, RankResponse};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// One call to a node may take this long before the node counts as not answering.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

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
    pub fn new(addrs: Vec<String>, hooks: Hooks) -> Remote {
        Remote {
            addrs,
            hooks,
            down: BTreeSet::new(),
        }
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Cluster status from the first given address that answers.
    pub async fn status(&self) -> Option<ClusterStatus> {
        for addr in &self.addrs {
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

    /// Cluster status as node `id` answers it.
    pub async fn status_on(&self, id: u64) -> Option<ClusterStatus> {
        let addr = self.addr_of(id).await?;
        let r = AdminClient::new(channel(&addr)?)
            .get_cluster_status(ClusterStatusRequest {})
            .await;
        r.ok().map(tonic::Response::into_inner)
    }

    pub async fn addr_of(&self, id: u64) -> Option<String> {
        let st = self.status().await?;
        st.nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.api_addr.clone())
    }

    /// Members, minus those this drill has taken down.
    pub async fn live_ids(&self) -> Vec<u64> {
        self.status()
            .await
            .map(|st| {
                st.nodes
                    .iter()
                    .map(|n| n.id)
                    .filter(|id| !self.down.contains(id))
                    .collect()
            })
            .unwrap_or_default()
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
