//! The encrypted model store through the Admin API and across restarts: upload, list,
//! activate; truncated uploads, conflicting versions, failing golden sets, tampered
//! artifacts and wrong keys.

use std::path::Path;
use std::time::Duration;

use rankd_proto::admin::v1::{
    ActivateModelRequest, GetModelRequest, ListModelsRequest, RotateKeysRequest,
};
use rankd_tests::{
    bundle_dir, copy_bundle, example_query, init, pack_bundle, rank_request, rewrite_manifest,
    update_sha, upload_dir, upload_messages, wait_until, write_keyring, ServingStatus, Site,
};
use tonic::Code;

/// A copy of the demo bundle relabelled as `version`.
fn bundle_version(dst: &Path, version: &str) {
    copy_bundle(dst);
    rewrite_manifest(dst, |m| m["version"] = version.into());
}

#[tokio::test]
async fn upload_then_activate_switches_serving_to_the_stored_version() {
    init();
    let site = Site::new();
    let node = site.node().start().await;
    tracing::info!("--- an empty store serves nothing");
    assert_eq!(node.health("").await, ServingStatus::NotServing);
    let q = example_query();
    let err = node
        .rank_client()
        .await
        .rank(rank_request(&q.query, &q.candidates, 5))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    tracing::info!("--- upload version 7");
    let v7 = tempfile::tempdir().unwrap();
    bundle_version(v7.path(), "7");
    let mut admin = node.admin_client().await;
    let rec = upload_dir(&mut admin, v7.path())
        .await
        .unwrap()
        .model
        .unwrap();
    assert_eq!(
        (rec.name.as_str(), rec.version.as_str(), rec.state.as_str()),
        ("demo-ranker", "7", "ready")
    );
    assert_eq!(rec.key_id, "site-key");
    assert_eq!(rec.sha256.len(), 64);
    assert!(!rec.active);
    assert!(site.staging_is_empty());
    let listed = admin
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(listed.len(), 1);

    tracing::info!("--- activate it");
    let act = admin
        .activate_model(ActivateModelRequest {
            name: "demo-ranker".into(),
            version: "7".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(act.model.unwrap().active);
    wait_until("SERVING", Duration::from_secs(10), || async {
        node.health("").await == ServingStatus::Serving
    })
    .await;
    let resp = node
        .rank_client()
        .await
        .rank(rank_request(&q.query, &q.candidates, 5))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.model_version, "7");
    assert_eq!(resp.items.len(), 5);
    assert!(
        site.staging_is_empty(),
        "decrypted plaintext was left in staging"
    );
}

#[tokio::test]
async fn a_truncated_or_abandoned_upload_leaves_nothing() {
    init();
    let site = Site::new();
    let node = site.node().start().await;
    let mut admin = node.admin_client().await;
    let body = pack_bundle(&bundle_dir());

    tracing::info!("--- the stream ends before total_bytes arrive");
    let short = &body[..body.len() / 2];
    let msgs = upload_messages("demo-ranker", "1", body.len() as u64, short);
    let err = admin
        .upload_model(futures::stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("upload truncated"),
        "{}",
        err.message()
    );

    tracing::info!("--- the client goes away mid-stream");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let call = {
        let mut admin = node.admin_client().await;
        tokio::spawn(async move {
            admin
                .upload_model(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        })
    };
    for m in upload_messages("demo-ranker", "1", body.len() as u64, &body[..1 << 20]) {
        tx.send(m).await.unwrap();
    }
    call.abort();
    drop(tx);

    tracing::info!("--- more bytes than announced");
    let msgs = upload_messages("demo-ranker", "1", 10, &body[..1000]);
    let err = admin
        .upload_model(futures::stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    wait_until("staging to empty", Duration::from_secs(10), || async {
        site.staging_is_empty()
    })
    .await;
    assert!(admin
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models
        .is_empty());
    assert_eq!(site.artifact_files(), 0);

    tracing::info!("--- a complete upload still works afterwards");
    upload_dir(&mut admin, &bundle_dir()).await.unwrap();
}

#[tokio::test]
async fn other_content_under_a_stored_version_is_already_exists() {
    init();
    let site = Site::new();
    let node = site.node().start().await;
    let mut admin = node.admin_client().await;
    upload_dir(&mut admin, &bundle_dir()).await.unwrap();
    tracing::info!("--- the same bundle again is accepted as the same version");
    upload_dir(&mut admin, &bundle_dir()).await.unwrap();

    tracing::info!("--- same name and version, different golden file");
    let other = tempfile::tempdir().unwrap();
    copy_bundle(other.path());
    let golden = other.path().join("golden.json");
    let mut g: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&golden).unwrap()).unwrap();
    g["cases"].as_array_mut().unwrap().pop();
    std::fs::write(&golden, serde_json::to_vec(&g).unwrap()).unwrap();
    update_sha(other.path(), "golden.json");
    let err = upload_dir(&mut admin, other.path()).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert_eq!(site.artifact_files(), 1);
}

#[tokio::test]
async fn a_bundle_failing_its_golden_set_is_rejected_and_not_stored() {
    init();
    let site = Site::new();
    let node = site.node().start().await;
    let bad = tempfile::tempdir().unwrap();
    bundle_version(bad.path(), "9");
    let golden = bad.path().join("golden.json");
    let mut g: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&golden).unwrap()).unwrap();
    let ids = g["cases"][0]["expected_ids"].as_array_mut().unwrap();
    ids.swap(0, 4);
    std::fs::write(&golden, serde_json::to_vec(&g).unwrap()).unwrap();
    update_sha(bad.path(), "golden.json");

    let mut admin = node.admin_client().await;
    let err = upload_dir(&mut admin, bad.path()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("golden set case 0"),
        "{}",
        err.message()
    );
    assert!(admin
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models
        .is_empty());
    assert_eq!(site.artifact_files(), 0);
    assert!(site.staging_is_empty());
}

#[tokio::test]
async fn a_tampered_artifact_is_caught_at_activation_and_at_restart() {
    init();
    let site = Site::new();
    tracing::info!("--- store and activate the bundle through model.bundle");
    let mut node = site.node().bundle(&bundle_dir()).start().await;
    let rec = node
        .admin_client()
        .await
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models
        .remove(0);
    assert!(rec.active);
    node.sigterm();
    assert!(node.wait_exit(Duration::from_secs(30)).await.success());

    tracing::info!("--- flip one byte of the artifact on disk");
    let path = site.data().join("artifacts").join(&rec.sha256);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    tracing::info!("--- the node refuses to serve it");
    let failure = site.node().start_expect_failure().await;
    assert_eq!(failure.code, Some(65), "{}", failure.stderr);
    assert!(
        failure.stderr.contains("does not match the recorded"),
        "{}",
        failure.stderr
    );
}

#[tokio::test]
async fn a_keyring_without_the_artifacts_key_is_refused_with_its_name() {
    init();
    let site = Site::new();
    let mut node = site.node().bundle(&bundle_dir()).start().await;
    node.sigterm();
    assert!(node.wait_exit(Duration::from_secs(30)).await.success());

    tracing::info!("--- restart with a keyring that lacks the key");
    let other = tempfile::tempdir().unwrap();
    let keyring = other.path().join("keyring.toml");
    write_keyring(&keyring, "other-key");
    let failure = site
        .node()
        .set_str("artifacts.keyring", &keyring.display().to_string())
        .start_expect_failure()
        .await;
    assert_eq!(failure.code, Some(65), "{}", failure.stderr);
    assert!(
        failure
            .stderr
            .contains("key \"site-key\", which is not in the keyring"),
        "{}",
        failure.stderr
    );

    tracing::info!("--- same key id, different key material");
    write_keyring(&keyring, "site-key");
    let failure = site
        .node()
        .set_str("artifacts.keyring", &keyring.display().to_string())
        .start_expect_failure()
        .await;
    assert_eq!(failure.code, Some(65), "{}", failure.stderr);
    assert!(
        failure.stderr.contains("failed authentication"),
        "{}",
        failure.stderr
    );
}

#[tokio::test]
async fn a_keyring_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    init();
    let site = Site::new();
    std::fs::set_permissions(site.keyring(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let failure = site.node().start_expect_failure().await;
    assert_eq!(failure.code, Some(64), "{}", failure.stderr);
    assert!(failure.stderr.contains("chmod 600"), "{}", failure.stderr);
}

#[tokio::test]
async fn key_rotation_moves_every_artifact_to_the_new_primary() {
    init();
    let site = Site::new();
    let mut node = site.node().bundle(&bundle_dir()).start().await;
    let old = std::fs::read_to_string(site.keyring()).unwrap();

    tracing::info!("--- add a new primary key beside the old one, then rotate");
    let fresh = tempfile::tempdir().unwrap();
    write_keyring(&fresh.path().join("k.toml"), "new-key");
    let new_entry = std::fs::read_to_string(fresh.path().join("k.toml")).unwrap();
    let new_entry = &new_entry[new_entry.find("[[keys]]").unwrap()..];
    let both = old.replace("primary = \"site-key\"", "primary = \"new-key\"") + "\n" + new_entry;
    std::fs::write(site.keyring(), &both).unwrap();
    let mut admin = node.admin_client().await;
    let resp = admin
        .rotate_keys(RotateKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (resp.primary_key_id.as_str(), resp.rotated, resp.total),
        ("new-key", 1, 1)
    );
    let rec = admin
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models
        .remove(0);
    assert_eq!(rec.key_id, "new-key");
    let again = admin
        .rotate_keys(RotateKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.rotated, 0, "a second rotation has nothing to do");
    node.sigterm();
    assert!(node.wait_exit(Duration::from_secs(30)).await.success());

    tracing::info!("--- the old key can go: the node restarts and serves with the new key alone");
    let new_only = format!("primary = \"new-key\"\n{new_entry}");
    std::fs::write(site.keyring(), new_only).unwrap();
    let node = site.node().start().await;
    assert_eq!(node.health("").await, ServingStatus::Serving);
    let q = example_query();
    let resp = node
        .rank_client()
        .await
        .rank(rank_request(&q.query, &q.candidates, 3))
        .await
        .unwrap();
    assert_eq!(resp.into_inner().items.len(), 3);
}

#[tokio::test]
async fn rotating_to_a_keyring_that_lacks_a_stored_key_is_refused_and_changes_nothing() {
    init();
    let site = Site::new();
    let node = site.node().bundle(&bundle_dir()).start().await;
    let fresh = tempfile::tempdir().unwrap();
    write_keyring(&fresh.path().join("k.toml"), "new-key");
    std::fs::copy(fresh.path().join("k.toml"), site.keyring()).unwrap();
    let mut admin = node.admin_client().await;
    let err = admin.rotate_keys(RotateKeysRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("site-key"), "{}", err.message());
    tracing::info!("--- the node still opens its artifacts with the keyring it had");
    admin
        .activate_model(ActivateModelRequest {
            name: "demo-ranker".into(),
            version: "1".into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn get_model_and_upload_limits() {
    init();
    let site = Site::new();
    let node = site
        .node()
        .set("artifacts.max_upload_bytes", "1048576")
        .start()
        .await;
    let mut admin = node.admin_client().await;
    let err = upload_dir(&mut admin, &bundle_dir()).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("1048576"), "{}", err.message());
    let err = admin
        .get_model(GetModelRequest {
            name: "demo-ranker".into(),
            version: "1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(site.staging_is_empty());
}

#[tokio::test]
async fn the_scrub_quarantines_a_tampered_artifact_and_counts_it() {
    init();
    let site = Site::new();
    let node = site
        .node()
        .bundle(&bundle_dir())
        .set("artifacts.scrub_interval_s", "1")
        .start()
        .await;
    let mut admin = node.admin_client().await;
    let rec = admin
        .get_model(GetModelRequest {
            name: "demo-ranker".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rec.state, "ready");
    wait_until("a clean scrub", Duration::from_secs(20), || async {
        node.metric_value(r#"rankd_artifact_verifications_total{result="ok"}"#)
            .await
            .unwrap_or(0.0)
            >= 1.0
    })
    .await;

    tracing::info!("--- corrupt the artifact behind the node's back");
    let path = site.data().join("artifacts").join(&rec.sha256);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0x80;
    std::fs::write(&path, bytes).unwrap();
    wait_until("the scrub to catch it", Duration::from_secs(20), || async {
        node.metric_value(r#"rankd_artifact_verifications_total{result="failed"}"#)
            .await
            .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    let rec = admin
        .get_model(GetModelRequest {
            name: "demo-ranker".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rec.state, "quarantined");
    assert!(site.data().join("quarantine").join(&rec.sha256).exists());
    assert!(node
        .log()
        .contains("failed verification and was quarantined"));
    tracing::info!(
        "--- the loaded model keeps serving; the quarantined copy is never loaded again"
    );
    let q = example_query();
    node.rank_client()
        .await
        .rank(rank_request(&q.query, &q.candidates, 3))
        .await
        .unwrap();
    let err = admin
        .activate_model(ActivateModelRequest {
            name: "demo-ranker".into(),
            version: "1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
}

#[tokio::test]
async fn an_oversize_upload_chunk_is_out_of_range_and_leaves_nothing() {
    init();
    let site = Site::new();
    let node = site.node().start().await;
    let chunk = vec![0u8; 17 << 20];
    let msgs = upload_messages("demo-ranker", "1", chunk.len() as u64, &[]);
    let mut msgs = msgs;
    msgs.push(rankd_proto::admin::v1::UploadModelRequest {
        part: Some(rankd_proto::admin::v1::upload_model_request::Part::Chunk(
            chunk,
        )),
    });
    let err = node
        .admin_client()
        .await
        .upload_model(futures::stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    wait_until("staging to empty", Duration::from_secs(10), || async {
        site.staging_is_empty()
    })
    .await;
    assert_eq!(site.artifact_files(), 0);
}
