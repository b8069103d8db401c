//! Detection time: from injecting a fault into one node to each survivor's peer table
//! marking it down (`rankd_peer_up{peer}` = 0 on the survivor's own metrics, polled every
//! few milliseconds, so the figure includes up to one poll interval of resolution).

use std::time::{Duration, Instant};

use rankd_tests::Cluster;
use serde::Serialize;

use crate::summary::Summary;

/// How often the survivors' metrics are read while waiting.
const POLL: Duration = Duration::from_millis(3);
/// A detection slower than this is a failure of the bench, not a figure.
const GIVE_UP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// `kill -9`.
    Crash,
    /// SIGSTOP: the process keeps its sockets open and answers nothing.
    Hang,
    /// The node's peer links are cut both ways (the harness's per-node TCP proxies).
    Partition,
}

impl Fault {
    pub const ALL: [Fault; 3] = [Fault::Crash, Fault::Hang, Fault::Partition];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Crash => "crash (kill -9)",
            Fault::Hang => "hang (SIGSTOP)",
            Fault::Partition => "partition (proxy)",
        }
    }
}

/// Injects `fault` into `victim`.
pub async fn inject(c: &mut Cluster, fault: Fault, victim: u64) {
    let others: Vec<u64> = c.live_ids().into_iter().filter(|&i| i != victim).collect();
    match fault {
        Fault::Crash => c.kill(victim).await,
        Fault::Hang => c.pause(victim),
        Fault::Partition => c.partition(&[victim], &others),
    }
}

/// Undoes `fault` on `victim` (restart, SIGCONT, heal).
pub async fn repair(c: &mut Cluster, fault: Fault, victim: u64) {
    match fault {
        Fault::Crash => c.restart(victim).await,
        Fault::Hang => c.resume(victim),
        Fault::Partition => c.heal(),
    }
}

/// Waits until every node in `on` counts `peer` as `up`; returns the time each took from
/// `since`, in milliseconds.
pub async fn wait_seen(c: &Cluster, on: &[u64], peer: u64, up: bool, since: Instant) -> Vec<f64> {
    let waits = on.iter().map(|&id| async move {
        loop {
            if c.peer_up(id, peer).await == Some(up) {
                return since.elapsed().as_secs_f64() * 1000.0;
            }
            assert!(
                since.elapsed() < GIVE_UP,
                "node {id} did not count node {peer} {} within {GIVE_UP:?}",
                if up { "up" } else { "down" }
            );
            tokio::time::sleep(POLL).await;
        }
    });
    futures::future::join_all(waits).await
}

/// A pseudo-random pause of 0–199 ms (two heartbeat intervals), from the clock.
fn phase() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = u64::from(nanos).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    Duration::from_millis(mixed % 200)
}

/// `reps` injections of `fault`, rotating the victim; each survivor's detection time is one
/// sample.
pub async fn measure(c: &mut Cluster, fault: Fault, reps: usize) -> Summary {
    let mut samples = Vec::new();
    for i in 0..reps {
        let victim = (i as u64 % 3) + 1;
        let survivors: Vec<u64> = (1..=3).filter(|&n| n != victim).collect();
        wait_seen(c, &survivors, victim, true, Instant::now()).await;
        // Faults strike at any point of the heartbeat cycle. Without this the previous
        // repair's wait (which ends right after a heartbeat) would phase-lock every injection
        // to just after one, and every sample would be the worst case.
        tokio::time::sleep(phase()).await;
        let t0 = Instant::now();
        inject(c, fault, victim).await;
        samples.extend(wait_seen(c, &survivors, victim, false, t0).await);
        repair(c, fault, victim).await;
        wait_seen(c, &survivors, victim, true, Instant::now()).await;
        for &s in &survivors {
            wait_seen(c, &[victim], s, true, Instant::now()).await;
        }
    }
    Summary::of(samples)
}
