//! Faults to the whole cluster: the leader killed in the middle of a promotion, every node
//! stopped and started cold, and the cluster's data destroyed and restored from backup.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rankd_proto::admin::v1::{CreateBackupRequest, InitClusterRequest};
use rankd_tests::rankctl_bin;

use crate::drill::env::DrillEnv;
use crate::drill::model::{ObjectiveCheck, ScenarioResult};
use crate::drill::phase::Phase;

/// The version the drill promotes next: whichever of "1" and "2" is not active.
fn other_version(active: &str) -> &'static str {
    if active == "2" {
        "1"
    } else {
        "2"
    }
}

pub async fn promote_during_leader_crash(env: &mut DrillEnv) -> ScenarioResult {
    let before = env.active().await.unwrap_or_else(|| env.fence.clone());
    let target = other_version(&before.model_version);
    // Both versions loaded everywhere first, so the promotion itself is the only thing the
    // crash can interrupt.
    if env.cluster().stage(1, 1, target).await.is_none() {
        env.cluster().upload(1, target).await;
    }
    env.cluster().wait_ready_everywhere(1, target).await;
    let leader = env.leader().await;
    let via = (1..=3).find(|&i| i != leader).unwrap_or(1);
    let pid = env.cluster().node(leader).pid();
    let mut p = Phase::start(env).await;
    let t0 = p.fault();
    let promote = env
        .cluster()
        .promote(via, env.cluster().promote_request(target));
    let crash = async {
        // Mid-flight: the Prepare entry and the readiness probe take a few milliseconds.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    };
    let (answer, ()) = tokio::join!(promote, crash);
    p.detection_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
    env.cluster_mut().kill(leader).await;
    env.cluster_mut().restart(leader).await;
    p.repaired();
    p.recover(env).await;
    let after = env.active().await;
    let acked = answer.as_ref().ok().and_then(|r| r.fence.clone());
    let final_version = after
        .as_ref()
        .map(|f| f.model_version.clone())
        .unwrap_or_default();
    if let Some(f) = &acked {
        if after.as_ref() != Some(f) && final_version != f.model_version {
            p.rpo_lost = 1;
        }
    }
    p.notes.push(match &answer {
        Ok(r) => format!(
            "the promotion of {target} was acknowledged (fence {:?}); every node now serves version {final_version}",
            r.fence.as_ref().map(|f| (f.term, f.index))
        ),
        Err(s) => format!(
            "the promotion of {target} was not acknowledged ({:?}: {}); every node now serves version {final_version}",
            s.code(),
            s.message()
        ),
    });
    let fault = format!(
        "promote version {target} through node {via} and SIGKILL node {leader} (the leader) 3 ms into the call; restart it"
    );
    let mut r = p.finish("promote-during-leader-crash", fault, "").await;
    r.detection_ms = None;
    let agreed = r.rto_ms.is_some();
    let all_or_none = final_version == target || final_version == before.model_version;
    r.objectives.push(ObjectiveCheck {
        what: "all nodes or none switch".into(),
        limit: "one agreed version".into(),
        measured: format!("all serve version {final_version}"),
        held: agreed && all_or_none,
    });
    r
}

pub async fn full_restart(env: &mut DrillEnv) -> ScenarioResult {
    let mut p = Phase::start(env).await;
    p.fault();
    for id in env.cluster().live_ids() {
        env.cluster_mut()
            .terminate(id, Duration::from_secs(60))
            .await;
    }
    tokio::time::sleep(env.hold).await;
    p.recovery_starts();
    env.cluster_mut().start_all().await;
    p.repaired();
    p.recover(env).await;
    p.notes.push(
        "RTO here is the cold start: from starting all three processes to every node SERVING"
            .into(),
    );
    let fault = format!(
        "SIGTERM every node (drained one after another), {:.1} s down, then start all three at once; RTO counts from the start",
        env.hold.as_secs_f64()
    );
    let mut r = p.finish("full-restart", fault, "").await;
    r.outage_expected = true;
    r
}

pub async fn restore_from_backup(
    env: &mut DrillEnv,
    backup_target: &std::path::Path,
) -> ScenarioResult {
    let before = env.active().await.unwrap_or_else(|| env.fence.clone());
    let backup = env
        .cluster()
        .admin(1)
        .await
        .create_backup(CreateBackupRequest { incremental: false })
        .await
        .map(tonic::Response::into_inner);
    let Ok(backup) = backup else {
        return ScenarioResult {
            name: "restore-from-backup".into(),
            skipped: Some(format!("CreateBackup on node 1 failed: {backup:?}")),
            ..Default::default()
        };
    };
    let mut p = Phase::start(env).await;
    p.fault();
    for id in env.cluster().live_ids() {
        env.cluster_mut().kill(id).await;
    }
    for id in 1..=3 {
        let _ = std::fs::remove_dir_all(env.cluster().data_dir(id));
    }
    p.recovery_starts();
    let restored = tokio::process::Command::new(rankctl_bin())
        .args(["backup", "restore", &backup.id, "--target"])
        .arg(backup_target)
        .arg("--data-dir")
        .arg(env.cluster().data_dir(1))
        .output()
        .await;
    match &restored {
        Ok(out) if out.status.success() => {}
        other => p
            .notes
            .push(format!("rankctl backup restore failed: {other:?}")),
    }
    env.cluster_mut().start_all().await;
    let members = (1..=3).map(|id| env.cluster().member(id)).collect();
    let init = env
        .cluster()
        .admin(1)
        .await
        .init_cluster(InitClusterRequest { members })
        .await;
    if let Err(s) = &init {
        p.notes
            .push(format!("InitCluster over the restored store failed: {s:?}"));
    }
    p.repaired();
    p.recover(env).await;
    let after = env.active().await;
    let same =
        after.as_ref().map(|f| f.model_version.as_str()) == Some(before.model_version.as_str());
    p.notes.push(format!(
        "backup {} restored into node 1's empty data directory; nodes 2 and 3 started empty and fetched it; active version before {}, after {}",
        backup.id,
        before.model_version,
        after.as_ref().map_or("none".to_string(), |f| f.model_version.clone())
    ));
    let fault = "SIGKILL every node and delete every data directory (Raft log, registry, artifacts); restore the latest backup into node 1, start all three, InitCluster; RTO counts from the restore".to_string();
    let mut r = p.finish("restore-from-backup", fault, "").await;
    r.outage_expected = true;
    r.objectives.push(ObjectiveCheck {
        what: "same active version after restore".into(),
        limit: before.model_version.clone(),
        measured: after.map_or("none".into(), |f| f.model_version),
        held: same,
    });
    r
}
