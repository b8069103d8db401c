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
