//! Process faults on either kind of target: the harness's signals on a local cluster,
//! the operator's hooks on an existing one; and detection as the survivors see it.

use std::time::Instant;

use super::env::{Control, DrillEnv, RECOVERY_LIMIT};
use crate::failover::detect::wait_seen;

impl DrillEnv {
    /// SIGKILL node `id` (hook `kill` on an existing cluster).
    pub async fn kill(&mut self, id: u64) -> Result<(), String> {
        match &mut self.control {
            Control::Local(c) => {
                c.kill(id).await;
                Ok(())
            }
            Control::Remote(r) => r.run_hook("kill", id).await,
        }
    }

    /// Starts killed node `id` again (hook `start`).
    pub async fn restart(&mut self, id: u64) -> Result<(), String> {
        match &mut self.control {
            Control::Local(c) => {
                c.restart(id).await;
                Ok(())
            }
            Control::Remote(r) => r.run_hook("start", id).await,
        }
    }

    /// SIGSTOP node `id` (hook `stop`).
    pub async fn pause(&mut self, id: u64) -> Result<(), String> {
        match &mut self.control {
            Control::Local(c) => {
                c.pause(id);
                Ok(())
            }
            Control::Remote(r) => r.run_hook("stop", id).await,
        }
    }

    /// SIGCONT node `id` (hook `cont`).
    pub async fn resume(&mut self, id: u64) -> Result<(), String> {
        match &mut self.control {
            Control::Local(c) => {
                c.resume(id);
                Ok(())
            }
            Control::Remote(r) => r.run_hook("cont", id).await,
        }
    }

    /// Milliseconds from `since` until every other member's peer table counts `victim`
    /// down: read from each survivor's metrics on a local cluster, from each survivor's
    /// heartbeat stream (`peers_up`) on an existing one. `None` if not seen.
    pub async fn wait_down(&self, victim: u64, since: Instant) -> Option<f64> {
        let survivors: Vec<u64> = self
            .live_ids()
            .await
            .into_iter()
            .filter(|&i| i != victim)
            .collect();
        match &self.control {
            Control::Local(c) => wait_seen(c, &survivors, victim, false, since)
                .await
                .into_iter()
                .reduce(f64::max),
            Control::Remote(r) => {
                let waits = survivors
                    .iter()
                    .map(|&s| r.wait_peer_down(s, victim, since, RECOVERY_LIMIT));
                let times = futures::future::join_all(waits).await;
                times
                    .into_iter()
                    .collect::<Option<Vec<f64>>>()?
                    .into_iter()
                    .reduce(f64::max)
            }
        }
    }
}
