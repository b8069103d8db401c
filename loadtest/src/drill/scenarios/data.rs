//! Faults to a node's data: bytes flipped in its stored active artifact (found by the
//! scrub, repaired from a peer), and a restart with a keyring that lacks the artifact's key
//! (the node must stay out of service, with its reason, while the others serve).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rankd_proto::admin::v1::GetModelRequest;
use rankd_tests::{node_status, ServingStatus};
use sha2::{Digest, Sha256};

use crate::drill::env::{DrillEnv, RECOVERY_LIMIT};
use crate::drill::model::{ObjectiveCheck, ScenarioResult};
use crate::drill::phase::Phase;

const VERIFY_FAILED: &str = r#"rankd_artifact_verifications_total{result="failed"}"#;

fn file_sha(path: &std::path::Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| hex::encode(Sha256::digest(&b)))
}

/// Ranks the example query on every node directly, over and over, until `stop`; counts the
/// answers of the reference version whose items differ from the reference answer.
async fn probe_answers(env: &DrillEnv, stop: &AtomicBool, probes: &AtomicU64, wrong: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        for id in env.cluster().live_ids() {
            if let Ok(r) = env.cluster().rank(id).await {
                if r.model_version == env.fence.model_version {
                    probes.fetch_add(1, Ordering::Relaxed);
                    if r.items != env.reference {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn corrupt_artifact(env: &mut DrillEnv) -> ScenarioResult {
    let victim = env.follower().await;
    let req = GetModelRequest {
        name: env.cluster().model_name().into(),
        version: env.fence.model_version.clone(),
    };
    let record = env
        .cluster()
        .admin(victim)
        .await
        .get_model(req.clone())
        .await
        .map(tonic::Response::into_inner);
    let Ok(record) = record else {
        let mut r = ScenarioResult {
            name: "corrupt-artifact".into(),
            ..Default::default()
        };
        r.skipped = Some(format!("node {victim} has no record of the active version"));
        return r;
    };
    let path = env
        .cluster()
        .data_dir(victim)
        .join("artifacts")
        .join(&record.sha256);
    let (stop, probes, wrong) = (AtomicBool::new(false), AtomicU64::new(0), AtomicU64::new(0));
    let env_ref: &DrillEnv = env;
    let flow = async {
        let mut p = Phase::start(env_ref).await;
        let node = env_ref.cluster().node(victim);
        let failed_before = node.metrics().await.value_or_zero(VERIFY_FAILED);
        let t0 = p.fault();
        let mut bytes = std::fs::read(&path).unwrap_or_default();
        let mid = bytes.len() / 2;
        let end = (mid + 64).min(bytes.len());
        for b in &mut bytes[mid..end] {
            *b ^= 0x5a;
        }
        let written = std::fs::write(&path, &bytes).is_ok();
        p.repaired();
        if !written {
            p.notes
                .push(format!("could not rewrite {}", path.display()));
        }
        // Detected: the victim's scrub counts a failed verification.
        let until = Instant::now() + RECOVERY_LIMIT;
        while Instant::now() < until {
            if node.metrics().await.value_or_zero(VERIFY_FAILED) > failed_before {
                p.detection_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Repaired: a verifying copy is back in the victim's store (re-fetched from a peer).
        let mut repaired = None;
        while Instant::now() < until {
            let now = env_ref
                .cluster()
                .admin(victim)
                .await
                .get_model(req.clone())
                .await;
            if let Ok(r) = now.map(tonic::Response::into_inner) {
                let p = env_ref
                    .cluster()
                    .data_dir(victim)
                    .join("artifacts")
                    .join(&r.sha256);
                if r.state == "ready" && file_sha(&p).as_deref() == Some(r.sha256.as_str()) {
                    repaired = Some(Instant::now());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if env_ref.wait_recovered().await.is_some() {
            p.mark_recovered(repaired);
        }
        tokio::time::sleep(env_ref.settle).await;
        stop.store(true, Ordering::Relaxed);
        p
    };
    let (p, ()) = tokio::join!(flow, probe_answers(env_ref, &stop, &probes, &wrong));
    let (probes, wrong) = (
        probes.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed),
    );
    let mut p = p;
    p.notes.push(format!(
        "{probes} direct probes of every node during the drill; {wrong} answered differently from the reference"
    ));
    let fault = format!(
        "flip 64 bytes in the middle of node {victim}'s stored artifact of the active version ({})",
        &record.sha256[..12.min(record.sha256.len())]
    );
    let mut r = p.finish("corrupt-artifact", fault, "").await;
    r.objectives.push(ObjectiveCheck {
        what: "wrong answers".into(),
        limit: "= 0".into(),
        measured: format!("{wrong} of {probes} probes"),
        held: wrong == 0 && probes > 0,
    });
    r
}

pub async fn wrong_key(env: &mut DrillEnv) -> ScenarioResult {
    let victim = env.follower().await;
    let mut p = Phase::start(env).await;
    let t0 = p.fault();
    env.cluster_mut().kill(victim).await;
    let foreign = env.cluster().foreign_keyring(victim, "drill-wrong-key");
    env.cluster_mut()
        .restart_with(
            victim,
            "artifacts.keyring",
            &format!("{:?}", foreign.display().to_string()),
        )
        .await;
    // Detected: the cluster reports why the node cannot serve the active version.
    let until = Instant::now() + RECOVERY_LIMIT;
    let mut reason = None;
    while Instant::now() < until && reason.is_none() {
        if let Ok(st) = env.cluster().try_status(victim).await {
            if let Some(n) = node_status(&st, victim) {
                reason = n
                    .stages
                    .iter()
                    .find(|s| s.version == env.fence.model_version && s.stage == "failed")
                    .map(|s| s.detail.clone());
            }
        }
        if reason.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    p.detection_ms = reason.as_ref().map(|_| t0.elapsed().as_secs_f64() * 1000.0);
    tokio::time::sleep(env.hold).await;
    let health = env.cluster().health(victim).await.ok();
    let stayed_out = health == Some(ServingStatus::NotServing);
    p.notes.push(format!(
        "node {victim} with the wrong keyring: health {health:?}, reason: {}",
        reason.as_deref().unwrap_or("(none reported)")
    ));
    env.cluster_mut().kill(victim).await;
    let keyring = env.cluster().keyring().display().to_string();
    env.cluster_mut()
        .restart_with(victim, "artifacts.keyring", &format!("{keyring:?}"))
        .await;
    p.repaired();
    p.recover(env).await;
    let fault = format!(
        "restart node {victim} with a keyring lacking the artifact's key; {:.1} s later restart it with the right one",
        env.hold.as_secs_f64()
    );
    let mut r = p.finish("wrong-key", fault, "").await;
    r.objectives.push(ObjectiveCheck {
        what: "node with the wrong key stays NOT_SERVING, with a reason".into(),
        limit: "NOT_SERVING and a reason".into(),
        measured: format!(
            "{health:?}; reason {}",
            if reason.is_some() { "given" } else { "missing" }
        ),
        held: stayed_out && reason.is_some(),
    });
    r
}
