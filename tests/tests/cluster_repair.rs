//! Self-repair: a node whose stored artifact rots on disk finds it in its periodic scrub,
//! quarantines it and fetches a verifying copy from a healthy peer on its own, without ever
//! stopping serving the loaded model.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rankd_proto::admin::v1::{GetModelRequest, ModelRecord};
use rankd_tests::{init, rank_request, wait_for, Cluster, ServingStatus, LOAD_TIMEOUT};
use sha2::{Digest, Sha256};
use tonic_health::pb::HealthCheckRequest;

const VERIFIED_OK: &str = r#"rankd_artifact_verifications_total{result="ok"}"#;
const VERIFY_FAILED: &str = r#"rankd_artifact_verifications_total{result="failed"}"#;

/// SHA-256 of `path`, or None while it does not exist (quarantined, not yet re-fetched).
fn file_sha(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| hex::encode(Sha256::digest(&b)))
}

/// The file names in `dir`, for failure messages.
fn list(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Node `id`'s own store record of v1 (its own artifact file and SHA-256).
async fn record_on(c: &Cluster, id: u64) -> Result<ModelRecord, tonic::Status> {
    let req = GetModelRequest {
        name: c.model_name().into(),
        version: "1".into(),
    };
    Ok(c.admin(id).await.get_model(req).await?.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_artifact_is_refetched_from_a_peer_while_the_node_keeps_serving() {
    init();
    let c = Cluster::builder(3).scrub_interval_s(1).start().await;
    let rec = c.upload(1, "1").await;
    let fence = c.must_promote(1, "1").await;
    c.wait_all_serving(&fence).await;

    tracing::info!(
        "--- node 3 holds its own verified copy (each node seals its own), and scrubs it"
    );
    assert_eq!(rec.state, "ready");
    let mine = record_on(&c, 3).await.expect("node 3 stores v1");
    assert_eq!(mine.plaintext_sha256, rec.plaintext_sha256, "{mine:?}");
    let path = c.data_dir(3).join("artifacts").join(&mine.sha256);
    assert_eq!(
        file_sha(&path).as_deref(),
        Some(mine.sha256.as_str()),
        "{} (node 3's artifacts: {:?})",
        path.display(),
        list(&c.data_dir(3).join("artifacts")),
    );
    let node3 = c.node(3);
    wait_for(
        "a clean scrub on node 3",
        Duration::from_secs(30),
        || async {
            match node3.metric_value(VERIFIED_OK).await {
                Some(v) if v >= 1.0 => Ok(()),
                other => Err(format!("{VERIFIED_OK} = {other:?}")),
            }
        },
    )
    .await;

    tracing::info!("--- rank on node 3 continuously from here on");
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        let mut rank = node3.rank_client().await;
        let mut health = node3.health_client().await;
        let name = node3.id().to_string();
        let q = rankd_tests::example_query();
        tokio::spawn(async move {
            let (mut ok, mut failures) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match rank.rank(rank_request(&q.query, &q.candidates, 5)).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let f = r.fence.unwrap_or_default();
                        if r.node_id != name || f.model_version != "1" {
                            failures.push(format!("answered by {} with {f:?}", r.node_id));
                        } else {
                            ok += 1;
                        }
                    }
                    Err(s) => failures.push(format!("rank: {s:?}")),
                }
                let req = HealthCheckRequest {
                    service: String::new(),
                };
                match health.check(req).await.map(|r| r.into_inner().status()) {
                    Ok(ServingStatus::Serving) => {}
                    other => failures.push(format!("health: {other:?}")),
                }
                // Pacing for the probe, not a wait on anything.
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (ok, failures)
        })
    };

    tracing::info!("--- corrupt node 3's artifact behind its back");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    assert_ne!(file_sha(&path).as_deref(), Some(mine.sha256.as_str()));

    tracing::info!("--- the scrub catches it");
    wait_for(
        "node 3's scrub to fail",
        Duration::from_secs(30),
        || async {
            match node3.metric_value(VERIFY_FAILED).await {
                Some(v) if v >= 1.0 => Ok(()),
                other => Err(format!("{VERIFY_FAILED} = {other:?}")),
            }
        },
    )
    .await;
    let ok_before = node3.metric_value(VERIFIED_OK).await.unwrap_or(0.0);

    tracing::info!("--- node 3 fetches a verifying copy from a peer by itself");
    wait_for("node 3 to hold a good copy again", LOAD_TIMEOUT, || async {
        let rec = record_on(&c, 3).await.map_err(|s| format!("{s:?}"))?;
        let path = c.data_dir(3).join("artifacts").join(&rec.sha256);
        let sha = file_sha(&path);
        let ok_now = node3.metric_value(VERIFIED_OK).await.unwrap_or(0.0);
        if rec.state == "ready" && sha.as_deref() == Some(rec.sha256.as_str()) && ok_now > ok_before
        {
            Ok(())
        } else {
            Err(format!(
                "{rec:?}, file sha {sha:?}, verified ok {ok_now} (was {ok_before})"
            ))
        }
    })
    .await;
    let status = c.status(1).await;
    let n3 = rankd_tests::node_status(&status, 3).expect("node 3 listed");
    assert_eq!(n3.health, "SERVING", "{n3:?}");

    tracing::info!("--- node 3 served from its loaded model the whole time");
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = prober.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failures, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 0);
    c.wait_serving_fence(3, &fence).await;
}
