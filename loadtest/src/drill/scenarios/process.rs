//! Faults to one node's process or links: `kill -9` of a follower or the leader, SIGSTOP
//! past the election timeout, and cutting the leader off from its peers. Each is detected
//! by the survivors' peer tables, and recovery is every node SERVING the agreed version.
//! The first three also run against an existing cluster, through the operator's hooks.

use crate::drill::env::DrillEnv;
use crate::drill::model::ScenarioResult;
use crate::drill::phase::Phase;

/// How the partition is made, for the report.
pub const PROXY_ISOLATION: &str = "per-node TCP proxy in front of each node's peer port, \
     controlled by the drill: the proxies refuse the other side's source addresses and \
     close their open connections (both directions); client ports stay reachable";

pub async fn crash(env: &mut DrillEnv, leader: bool) -> ScenarioResult {
    let victim = if leader {
        env.leader().await
    } else {
        env.follower().await
    };
    let role = if leader { "leader" } else { "follower" };
    let mut p = Phase::start(env).await;
    let t0 = p.fault();
    if let Err(e) = env.kill(victim).await {
        p.notes.push(format!("kill failed: {e}"));
    }
    let (detected, ()) = tokio::join!(env.wait_down(victim, t0), tokio::time::sleep(env.hold));
    p.detection_ms = detected;
    if let Err(e) = env.restart(victim).await {
        p.notes.push(format!("restart failed: {e}"));
    }
    p.repaired();
    p.recover(env).await;
    let name = if leader {
        "leader-crash"
    } else {
        "follower-crash"
    };
    let fault = format!(
        "SIGKILL node {victim} (the {role}), restart it after {:.1} s",
        env.hold.as_secs_f64()
    );
    p.finish(name, fault, "").await
}

pub async fn hang(env: &mut DrillEnv) -> ScenarioResult {
    // The leader: stopping it past the election timeout forces an election as well.
    let victim = env.leader().await;
    let mut p = Phase::start(env).await;
    let t0 = p.fault();
    if let Err(e) = env.pause(victim).await {
        p.notes.push(format!("SIGSTOP failed: {e}"));
    }
    let (detected, ()) = tokio::join!(env.wait_down(victim, t0), tokio::time::sleep(env.hold));
    p.detection_ms = detected;
    if let Err(e) = env.resume(victim).await {
        p.notes.push(format!("SIGCONT failed: {e}"));
    }
    p.repaired();
    p.recover(env).await;
    let fault = format!(
        "SIGSTOP node {victim} (the leader) for {:.1} s, past the 400 ms election timeout, then SIGCONT",
        env.hold.as_secs_f64()
    );
    p.finish("hang", fault, "").await
}

pub async fn partition_leader(env: &mut DrillEnv) -> ScenarioResult {
    let victim = env.leader().await;
    let others: Vec<u64> = (1..=3).filter(|&i| i != victim).collect();
    let mut p = Phase::start(env).await;
    let t0 = p.fault();
    if let Some(c) = env.local_cluster() {
        c.partition(&[victim], &others);
    }
    let (detected, ()) = tokio::join!(env.wait_down(victim, t0), tokio::time::sleep(env.hold));
    p.detection_ms = detected;
    if let Some(c) = env.local_cluster() {
        c.heal();
    }
    p.repaired();
    p.recover(env).await;
    let fault = format!(
        "cut node {victim} (the leader) off from nodes {others:?} for {:.1} s, then heal",
        env.hold.as_secs_f64()
    );
    p.finish("partition-leader", fault, PROXY_ISOLATION).await
}
