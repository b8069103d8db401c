//! The cluster a drill runs against, and what every scenario needs from it: the failover
//! client, the agreed active version, and waits on "fully recovered".

use std::time::{Duration, Instant};

use rankd_proto::admin::v1::Fence;
use rankd_proto::client::{ClientConfig, FailoverClient};
use rankd_proto::v1::{RankRequest, ScoredItem};
use rankd_tests::{same_fence, Cluster, ServingStatus};

/// A recovery slower than this is reported as "not recovered", not waited for forever.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(180);

pub struct DrillEnv {
    pub cluster: Cluster,
    pub client: FailoverClient,
    /// The registry's active version when the drill started, as admin reports it.
    pub fence: Fence,
    /// The example query's answer from a healthy node before any fault: a served answer
    /// that differs from it (same version) is a wrong answer.
    pub reference: Vec<ScoredItem>,
    pub rate: u32,
    pub hold: Duration,
    pub settle: Duration,
    /// Where the nodes write backups (`backup.target`); outlives the cluster's data.
    pub backups: tempfile::TempDir,
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
        c.upload(1, "1").await;
        let fence = c.must_promote(1, "1").await;
        c.wait_all_serving(&fence).await;
        let client = c.failover_client(ClientConfig::default(), 3).await;
        let reference = c.rank(1).await.map(|r| r.items).unwrap_or_default();
        DrillEnv {
            cluster: c,
            client,
            fence,
            reference,
            rate,
            hold,
            settle,
            backups,
        }
    }

    pub fn request(&self) -> RankRequest {
        self.cluster.example_request()
    }

    /// The agreed active version now (asked of the first live node).
    pub async fn active(&self) -> Option<Fence> {
        let via = *self.cluster.live_ids().first()?;
        self.cluster.try_status(via).await.ok()?.active
    }

    /// Every member runs, answers SERVING, and serves (itself, not forwarded) the fence the
    /// registry names as active, which every node agrees on.
    pub async fn fully_serving(&self) -> bool {
        let ids = self.cluster.live_ids();
        if ids.len() < 3 {
            return false;
        }
        let Some(active) = self.active().await else {
            return false;
        };
        for id in ids {
            if self.cluster.health(id).await.ok() != Some(ServingStatus::Serving) {
                return false;
            }
            match self.cluster.serving_fence(id).await {
                Ok(f) if same_fence(&f, &active) => {}
                _ => return false,
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
        self.cluster.wait_leader().await
    }

    /// A voter that is not the leader.
    pub async fn follower(&self) -> u64 {
        let leader = self.leader().await;
        (1..=3).find(|&i| i != leader).unwrap_or(1)
    }
}
