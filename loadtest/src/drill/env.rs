//! The cluster a drill runs against, and what every scenario needs from it: the failover
//! client, the agreed active version, node control, and waits on "fully recovered".
//!
//! Two kinds of target: a local cluster the drill starts itself (real `rankd` processes
//! through the integration-test harness, every fault available), or an existing cluster
//! reached through its client addresses, where faults come from operator hooks
//! ([`super::remote`]).

use std::time::{Duration, Instant};

use rankd_proto::admin::v1::Fence;
use rankd_proto::client::{ClientConfig, FailoverClient};
use rankd_proto::v1::{RankRequest, ScoredItem};
use rankd_tests::{same_fence, Cluster, ServingStatus};

use super::remote::Remote;

/// A recovery slower than this is reported as "not recovered", not waited for forever.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(180);

/// The bake window of the `bad-model` scenario's promotion unless `--bake-s` says otherwise.
pub const DEFAULT_BAKE: Duration = Duration::from_secs(30);

pub enum Control {
    Local(Box<Cluster>),
    Remote(Remote),
}

pub struct DrillEnv {
    pub control: Control,
    pub client: FailoverClient,
    /// The registry's active version when the drill started, as admin reports it.
    pub fence: Fence,
    /// The query every call sends.
    pub request: RankRequest,
    /// The query's answer from a healthy node before any fault: a served answer of the same
    /// version that differs from it is a wrong answer.
    pub reference: Vec<ScoredItem>,
    pub rate: u32,
    pub hold: Duration,
    pub settle: Duration,
    /// The bake window the `bad-model` scenario's promotion asks for (`--bake-s`).
    pub bake: Duration,
    /// Where the nodes write backups (`backup.target`); outlives the cluster's data.
    pub backups: Option<tempfile::TempDir>,
}

impl DrillEnv {
    /// A fresh 3-node cluster of real `rankd` processes (the integration-test harness), with
    /// the demo model uploaded and promoted, and a failover client over it.
    pub async fn local(rate: u32, hold: Duration, settle: Duration) -> DrillEnv {
        let backups = tempfile::Builder::new()
            .prefix("rankd-drill-backups-")
            .tempdir()
            .expect("a backup directory");
        // The scrub runs every second, so corruption is found within the drill's window.
        let c = Cluster::builder(3)
            .scrub_interval_s(1)
            .set(
                "backup.target",
                &format!("{:?}", backups.path().display().to_string()),
            )
            .start()
            .await;
        let fence = c.serve_v1().await;
        let client = c.failover_client(ClientConfig::default(), 3).await;
        let reference = c.rank(1).await.map(|r| r.items).unwrap_or_default();
        DrillEnv {
            request: c.example_request(),
            control: Control::Local(Box::new(c)),
            client,
            fence,
            reference,
            rate,
            hold,
            settle,
            bake: DEFAULT_BAKE,
            backups: Some(backups),
        }
    }

    /// An existing cluster at `remote`'s addresses, sent `request`. Fails when the cluster
    /// has no active version or no node serves.
    pub async fn remote(
        remote: Remote,
        request: RankRequest,
        rate: u32,
        hold: Duration,
        settle: Duration,
    ) -> Result<DrillEnv, String> {
        let st = remote
            .status()
            .await
            .ok_or("no given address answered GetClusterStatus")?;
        let fence = st.active.ok_or("the cluster has no active version")?;
        let client = FailoverClient::connect(remote.addrs().to_vec(), ClientConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        if !client.wait_healthy(1, Duration::from_secs(30)).await {
            return Err(format!("no node is healthy: {:?}", client.nodes()));
        }
        let reference = client
            .rank(request.clone())
            .await
            .map_err(|s| format!("the drill's query is refused: {s:?}"))?
            .items;
        Ok(DrillEnv {
            control: Control::Remote(remote),
            client,
            fence,
            request,
            reference,
            rate,
            hold,
            settle,
            bake: DEFAULT_BAKE,
            backups: None,
        })
    }

    /// The local cluster; `None` for an existing one.
    pub fn local_cluster(&mut self) -> Option<&mut Cluster> {
        match &mut self.control {
            Control::Local(c) => Some(c),
            Control::Remote(_) => None,
        }
    }

    /// The local cluster, for scenarios that only run on one ([`Self::unsupported`] keeps
    /// them away from an existing cluster).
    pub fn cluster(&self) -> &Cluster {
        match &self.control {
            Control::Local(c) => c,
            Control::Remote(_) => panic!("a local-only scenario ran against an existing cluster"),
        }
    }

    pub fn cluster_mut(&mut self) -> &mut Cluster {
        match &mut self.control {
            Control::Local(c) => c,
            Control::Remote(_) => panic!("a local-only scenario ran against an existing cluster"),
        }
    }

    /// Why scenario `name` cannot run against this target, if it cannot.
    pub fn unsupported(&self, name: &str) -> Option<String> {
        let Control::Remote(r) = &self.control else {
            return None;
        };
        let needs: &[&'static str] = match name {
            "follower-crash" | "leader-crash" => &["kill", "start"],
            "hang" => &["stop", "cont"],
            "bad-model" => {
                return Some(
                    "builds the bad version from the active one's bundle with the exporter on \
                     this machine and leaves it in the registry, which only a local drill \
                     cluster gives"
                        .into(),
                )
            }
            "gray-node" => {
                return Some(
                    "slows one node with the admin InjectFault call, which the drill makes \
                     only on a local drill cluster (no admin credentials for an existing one)"
                        .into(),
                )
            }
            _ => {
                return Some(
                    "needs the node's files, peer links or a fresh cluster, which only a \
                     local drill cluster gives"
                        .into(),
                )
            }
        };
        r.missing(needs)
            .map(|h| format!("against an existing cluster this needs --hook-{h}"))
    }

    pub async fn live_ids(&self) -> Vec<u64> {
        match &self.control {
            Control::Local(c) => c.live_ids(),
            Control::Remote(r) => r.live_ids().await,
        }
    }

    /// The agreed active version now (asked of the first live node).
    pub async fn active(&self) -> Option<Fence> {
        match &self.control {
            Control::Local(c) => {
                let via = *c.live_ids().first()?;
                c.try_status(via).await.ok()?.active
            }
            Control::Remote(r) => r.status().await?.active,
        }
    }

    async fn health(&self, id: u64) -> Option<ServingStatus> {
        match &self.control {
            Control::Local(c) => c.health(id).await.ok(),
            Control::Remote(r) => r.health(id).await,
        }
    }

    async fn serves(&self, id: u64, active: &Fence) -> bool {
        match &self.control {
            Control::Local(c) => {
                matches!(c.serving_fence(id).await, Ok(f) if same_fence(&f, active))
            }
            Control::Remote(r) => matches!(
                r.serving_fence(id, self.request.clone()).await,
                Some(f) if same_fence(&f, active)
            ),
        }
    }

    /// Every member runs, answers SERVING, and serves (itself, not forwarded) the fence the
    /// registry names as active, which every node agrees on.
    pub async fn fully_serving(&self) -> bool {
        let ids = self.live_ids().await;
        if ids.len() < 3 {
            return false;
        }
        let Some(active) = self.active().await else {
            return false;
        };
        for id in ids {
            if self.health(id).await != Some(ServingStatus::Serving)
                || !self.serves(id, &active).await
            {
                return false;
            }
        }
        true
    }

    /// Waits (polling every 20 ms) until [`fully_serving`](Self::fully_serving); returns
    /// when it got there, or `None` past [`RECOVERY_LIMIT`].
    pub async fn wait_recovered(&self) -> Option<Instant> {
        let until = Instant::now() + RECOVERY_LIMIT;
        while Instant::now() < until {
            if self.fully_serving().await {
                return Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub async fn leader(&self) -> u64 {
        match &self.control {
            Control::Local(c) => c.wait_leader().await,
            Control::Remote(r) => {
                let until = Instant::now() + RECOVERY_LIMIT;
                loop {
                    let leader = r.status().await.map_or(0, |st| st.leader_id);
                    if leader != 0 || Instant::now() > until {
                        return leader;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// A voter that is not the leader.
    pub async fn follower(&self) -> u64 {
        let leader = self.leader().await;
        let ids = self.live_ids().await;
        ids.into_iter().find(|&i| i != leader).unwrap_or(1)
    }
}
