//! Backups of the model store: full and incremental, verification that names a damaged
//! file, and restores that refuse non-empty directories and incomplete backups.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use rankd_proto::admin::v1::{
    CreateBackupRequest, ListBackupsRequest, ListModelsRequest, VerifyBackupRequest,
};
use rankd_tests::{
    bundle_dir, copy_bundle, example_query, init, rank_request, rankctl_bin, rewrite_manifest,
    upload_dir, NodeBuilder, ServingStatus, Site,
};
use tonic::Code;

/// A node on `data` of this site, backing up to the site's `backups` directory.
fn backing_up(site: &Site, data: &str) -> NodeBuilder {
    site.node_on(data)
        .set_str("backup.target", &site.path("backups").display().to_string())
}

fn restore(target: &Path, id: &str, data_dir: &Path) -> Output {
    std::process::Command::new(rankctl_bin())
        .args(["backup", "restore", id, "--target"])
        .arg(target)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("running rankctl")
}

#[tokio::test]
async fn full_and_incremental_backups_verify_and_restore() {
    init();
    let site = Site::new();
    let mut node = backing_up(&site, "data")
        .bundle(&bundle_dir())
        .start()
        .await;
    let mut admin = node.admin_client().await;

    tracing::info!("--- full backup of version 1");
    let full = admin
        .create_backup(CreateBackupRequest { incremental: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (full.kind.as_str(), full.artifacts, full.copied),
        ("full", 1, 1)
    );

    tracing::info!("--- upload version 2, then an incremental backup copies only it");
    let v2 = tempfile::tempdir().unwrap();
    copy_bundle(v2.path());
    rewrite_manifest(v2.path(), |m| m["version"] = "2".into());
    upload_dir(&mut admin, v2.path()).await.unwrap();
    let incr = admin
        .create_backup(CreateBackupRequest { incremental: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (incr.kind.as_str(), incr.artifacts, incr.copied),
        ("incremental", 2, 1)
    );
    assert_eq!(incr.parent, full.id);

    let listed = admin
        .list_backups(ListBackupsRequest {})
        .await
        .unwrap()
        .into_inner()
        .backups;
    assert_eq!(
        listed.iter().map(|b| b.id.clone()).collect::<Vec<_>>(),
        vec![full.id.clone(), incr.id.clone()]
    );
    for id in [&full.id, &incr.id] {
        admin
            .verify_backup(VerifyBackupRequest { id: id.clone() })
            .await
            .unwrap();
    }
    node.sigterm();
    assert!(node.wait_exit(Duration::from_secs(30)).await.success());

    tracing::info!("--- the incremental backup restores alone into an empty directory");
    let out = restore(&site.path("backups"), &incr.id, &site.path("restored"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = backing_up(&site, "restored").start().await;
    assert_eq!(node.health("").await, ServingStatus::Serving);
    let models = node
        .admin_client()
        .await
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(models.len(), 2);
    let q = example_query();
    let resp = node
        .rank_client()
        .await
        .rank(rank_request(&q.query, &q.candidates, 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.model_version, "1");

    tracing::info!("--- a non-empty data directory is refused");
    let out = restore(&site.path("backups"), &incr.id, &site.path("restored"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[tokio::test]
async fn damaged_and_incomplete_backups_are_named_and_never_restored() {
    init();
    let site = Site::new();
    let node = backing_up(&site, "data")
        .bundle(&bundle_dir())
        .start()
        .await;
    let mut admin = node.admin_client().await;
    let b = admin
        .create_backup(CreateBackupRequest { incremental: false })
        .await
        .unwrap()
        .into_inner();
    let artifact = std::fs::read_dir(site.path("backups/artifacts"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let name = artifact.file_name().unwrap().to_string_lossy().into_owned();

    tracing::info!("--- truncate the artifact in the backup");
    let bytes = std::fs::read(&artifact).unwrap();
    std::fs::write(&artifact, &bytes[..bytes.len() - 100]).unwrap();
    let err = admin
        .verify_backup(VerifyBackupRequest { id: b.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(
        err.message().contains(&format!("artifacts/{name}")),
        "{}",
        err.message()
    );

    tracing::info!("--- remove it: a restore is refused before anything is written");
    std::fs::remove_file(&artifact).unwrap();
    let dest = site.path("restore-here");
    let out = restore(&site.path("backups"), &b.id, &dest);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&name),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dest.exists() || std::fs::read_dir(&dest).unwrap().next().is_none(),
        "restore wrote files"
    );

    tracing::info!("--- a damaged manifest is named too");
    let manifest = site.path(&format!("backups/backups/{}/manifest.json", b.id));
    let mut m = std::fs::read(&manifest).unwrap();
    m[10] ^= 1;
    std::fs::write(&manifest, m).unwrap();
    let err = admin
        .verify_backup(VerifyBackupRequest { id: b.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(err.message().contains("manifest.json"), "{}", err.message());
    let err = admin
        .verify_backup(VerifyBackupRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn without_a_target_backups_are_a_failed_precondition() {
    init();
    let site = Site::new();
    let node = backing_up(&site, "data")
        .unset("backup.target")
        .start()
        .await;
    let err = node
        .admin_client()
        .await
        .create_backup(CreateBackupRequest { incremental: false })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}
