//! `rankctl backup create | list | verify | restore`.

use anyhow::{Context, Result};
use rankd_proto::admin::v1::{
    Backup, CreateBackupRequest, ListBackupsRequest, VerifyBackupRequest,
};
use rankd_server::backup::BackupTarget;

use crate::format::{json_output, print_json};
use crate::BackupCommand;

pub async fn run(cmd: BackupCommand) -> Result<()> {
    match cmd {
        BackupCommand::Create { incremental, addr } => {
            let b = client(&addr)
                .await?
                .create_backup(CreateBackupRequest { incremental })
                .await
                .map_err(status("backup"))?
                .into_inner();
            if json_output() {
                return print_json(&b);
            }
            println!(
                "created {} backup {}: {} artifacts, {} copied",
                b.kind, b.id, b.artifacts, b.copied
            );
        }
        BackupCommand::List { addr } => {
            let list = client(&addr)
                .await?
                .list_backups(ListBackupsRequest {})
                .await
                .map_err(status("listing backups"))?
                .into_inner()
                .backups;
            if json_output() {
                return print_json(&list);
            }
            println!(
                "{:<32} {:<12} {:>9} {:>7}  versions",
                "id", "kind", "artifacts", "copied"
            );
            for b in list {
                print_row(&b);
            }
        }
        BackupCommand::Verify { id, addr } => {
            let b = client(&addr)
                .await?
                .verify_backup(VerifyBackupRequest { id })
                .await
                .map_err(status("verification"))?
                .into_inner();
            if json_output() {
                return print_json(&b);
            }
            println!(
                "backup {} verified: manifest and {} artifacts match their SHA-256",
                b.id, b.artifacts
            );
        }
        BackupCommand::Restore {
            id,
            target,
            data_dir,
        } => {
            let target = BackupTarget::open(&target)?;
            let m = target
                .restore(&id, &data_dir)
                .await
                .with_context(|| format!("restoring {id} into {}", data_dir.display()))?;
            if json_output() {
                return print_json(&serde_json::json!({
                    "id": m.id,
                    "data_dir": data_dir,
                    "artifacts": m.artifacts.len(),
                }));
            }
            println!(
                "restored backup {} into {} ({} artifacts, verified); start rankd with data_dir there and the same keyring",
                m.id,
                data_dir.display(),
                m.artifacts.len()
            );
        }
    }
    Ok(())
}

fn print_row(b: &Backup) {
    println!(
        "{:<32} {:<12} {:>9} {:>7}  {}",
        b.id,
        b.kind,
        b.artifacts,
        b.copied,
        b.versions.join(", ")
    );
}

async fn client(addr: &str) -> Result<crate::conn::Admin> {
    crate::conn::admin(addr).await
}

fn status(what: &'static str) -> impl FnOnce(tonic::Status) -> anyhow::Error {
    move |s| anyhow::anyhow!("{what} failed: {:?}: {}", s.code(), s.message())
}
