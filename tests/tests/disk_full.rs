//! A full disk (a real, small tmpfs) during an upload or a backup: a clean
//! RESOURCE_EXHAUSTED, nothing half-written left behind, and everything stored earlier
//! intact and serving.

use std::path::PathBuf;

use rankd_proto::admin::v1::{
    ActivateModelRequest, CreateBackupRequest, ListBackupsRequest, ListModelsRequest,
    VerifyBackupRequest,
};
use rankd_tests::{
    bundle_dir, copy_bundle, example_query, init, rank_request, rewrite_manifest, upload_dir,
    write_keyring, NodeBuilder, Tmpfs,
};
use tonic::Code;

fn keyring(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("keyring.toml");
    write_keyring(&path, "k");
    path
}

fn version_two() -> tempfile::TempDir {
    let v2 = tempfile::tempdir().unwrap();
    copy_bundle(v2.path());
    rewrite_manifest(v2.path(), |m| m["version"] = "2".into());
    v2
}

#[tokio::test]
async fn an_upload_that_fills_the_disk_fails_cleanly_and_harms_nothing() {
    init();
    // Room for the demo's artifact and one decrypted copy of it while it loads, not for a
    // second bundle's staging on top.
    let disk = Tmpfs::mount(64);
    let keys = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new()
        .set_str("data_dir", &disk.path().display().to_string())
        .set_str("artifacts.keyring", &keyring(&keys).display().to_string())
        .start()
        .await;
    let mut admin = node.admin_client().await;

    tracing::info!("--- upload version 2 onto the nearly full disk");
    let err = upload_dir(&mut admin, version_two().path())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    tracing::info!("--- nothing of it is left, and version 1 still serves and reloads");
    let staging = std::fs::read_dir(disk.path().join("staging"))
        .unwrap()
        .count();
    assert_eq!(staging, 0, "the failed upload left files in staging");
    let models = admin
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(
        models
            .iter()
            .map(|m| m.version.as_str())
            .collect::<Vec<_>>(),
        vec!["1"]
    );
    let q = example_query();
    node.rank_client()
        .await
        .rank(rank_request(&q.query, &q.candidates, 3))
        .await
        .unwrap();
    admin
        .activate_model(ActivateModelRequest {
            name: "demo-ranker".into(),
            version: "1".into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_backup_that_fills_the_target_fails_cleanly_and_earlier_backups_stay_valid() {
    init();
    let target = Tmpfs::mount(40);
    let site = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new()
        .set_str("data_dir", &site.path().join("data").display().to_string())
        .set_str("artifacts.keyring", &keyring(&site).display().to_string())
        .set_str("backup.target", &target.path().display().to_string())
        .bundle(&bundle_dir())
        .start()
        .await;
    let mut admin = node.admin_client().await;
    let first = admin
        .create_backup(CreateBackupRequest { incremental: false })
        .await
        .unwrap()
        .into_inner();

    tracing::info!("--- a second version does not fit the target");
    upload_dir(&mut admin, version_two().path()).await.unwrap();
    let err = admin
        .create_backup(CreateBackupRequest { incremental: true })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    tracing::info!("--- the first backup is the only one, and it still verifies");
    let ids: Vec<String> = admin
        .list_backups(ListBackupsRequest {})
        .await
        .unwrap()
        .into_inner()
        .backups
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(ids, vec![first.id.clone()]);
    admin
        .verify_backup(VerifyBackupRequest { id: first.id })
        .await
        .unwrap();
}

#[tokio::test]
async fn an_upload_that_cannot_fit_is_refused_before_it_writes() {
    init();
    let disk = Tmpfs::mount(256);
    let keys = tempfile::tempdir().unwrap();
    // The demo bundle is about 25 MB, so an upload needs about 75 MB on the disk; with
    // 200 MiB to keep free it cannot fit on the ~230 MiB the first version leaves.
    let node = NodeBuilder::new()
        .set_str("data_dir", &disk.path().display().to_string())
        .set_str("artifacts.keyring", &keyring(&keys).display().to_string())
        .set("artifacts.min_free_bytes", &(200u64 << 20).to_string())
        .start()
        .await;
    let mut admin = node.admin_client().await;

    tracing::info!("--- the data directory's space is on /metrics");
    let capacity = node.metric_value("rankd_data_dir_capacity_bytes").await;
    let available = node.metric_value("rankd_data_dir_available_bytes").await;
    assert_eq!(capacity, Some((256u64 << 20) as f64));
    assert!(
        available.is_some_and(|a| a > 0.0 && a < (256u64 << 20) as f64),
        "{available:?}"
    );
    assert!(node
        .metric_value("rankd_process_resident_memory_bytes")
        .await
        .is_some_and(|v| v > 0.0));

    tracing::info!("--- upload version 2: refused up front, naming the reserve");
    let err = upload_dir(&mut admin, version_two().path())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("not enough disk space")
            && err.message().contains("artifacts.min_free_bytes"),
        "{}",
        err.message()
    );
    let staging = std::fs::read_dir(disk.path().join("staging"))
        .unwrap()
        .count();
    assert_eq!(staging, 0);

    tracing::info!("--- with a smaller reserve the same upload goes through");
    drop(admin);
    drop(node);
    let node = NodeBuilder::new()
        .set_str("data_dir", &disk.path().display().to_string())
        .set_str(
            "artifacts.keyring",
            &keys.path().join("keyring.toml").display().to_string(),
        )
        .set("artifacts.min_free_bytes", &(16u64 << 20).to_string())
        .unset("model.bundle")
        .start()
        .await;
    let rec = upload_dir(&mut node.admin_client().await, version_two().path())
        .await
        .expect("fits now")
        .model
        .expect("a record");
    assert_eq!(rec.version, "2");
}
