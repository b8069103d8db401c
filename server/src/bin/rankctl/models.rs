//! `rankctl upload | models | activate`: the node's model store.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rankd_proto::admin::v1::upload_model_request::Part;
use rankd_proto::admin::v1::{
    ActivateModelRequest, ListModelsRequest, ModelRecord, RotateKeysRequest, UploadMetadata,
    UploadModelRequest,
};

const CHUNK: usize = 1 << 20;

async fn connect(addr: &str) -> Result<crate::conn::Admin> {
    crate::conn::admin(addr).await
}

/// A failed call as an error naming the call, its gRPC code and the server's message.
pub(crate) fn status(what: &str) -> impl FnOnce(tonic::Status) -> anyhow::Error + '_ {
    move |s| anyhow::anyhow!("{what} failed: {:?}: {}", s.code(), s.message())
}

/// Packs the bundle in `dir` and streams it to the node, with a progress bar.
pub async fn upload(
    addr: &str,
    dir: &Path,
    uploaded_by: &str,
    quality_override: &str,
) -> Result<()> {
    let manifest_path = dir.join("manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| format!("parsing {}", manifest_path.display()))?;
    let field = |k: &str| manifest[k].as_str().map(str::to_string);
    let (Some(name), Some(version)) = (field("name"), field("version")) else {
        bail!("{} has no name or version", manifest_path.display());
    };
    let mut files = vec!["manifest.json".to_string()];
    if let Some(listed) = manifest["files"].as_object() {
        files.extend(listed.keys().cloned());
    }
    let packed = Packed::new(dir, &files)?;
    let total = packed.len()?;

    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<UploadModelRequest>(4);
    let meta = UploadModelRequest {
        part: Some(Part::Metadata(UploadMetadata {
            name: name.clone(),
            version: version.clone(),
            total_bytes: total,
            uploaded_by: uploaded_by.to_string(),
            quality_override: quality_override.to_string(),
        })),
    };
    let path = packed.path.clone();
    let progress = bar.clone();
    // Reading runs beside the RPC so the stream never waits on the disk.
    let reader = tokio::task::spawn_blocking(move || -> Result<()> {
        if tx.blocking_send(meta).is_err() {
            return Ok(());
        }
        let mut file = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            progress.inc(n as u64);
            let chunk = UploadModelRequest {
                part: Some(Part::Chunk(buf[..n].to_vec())),
            };
            if tx.blocking_send(chunk).is_err() {
                return Ok(());
            }
        }
    });
    let start = Instant::now();
    let mut client = connect(addr).await?;
    let resp = client
        .upload_model(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(status("upload"));
    reader.await??;
    bar.finish_and_clear();
    let record = resp?
        .into_inner()
        .model
        .context("the node returned no record")?;
    let secs = start.elapsed().as_secs_f64();
    if crate::format::json_output() {
        return crate::format::print_json(&record);
    }
    println!(
        "uploaded {} version {}: {} bytes in {:.2} s ({:.1} MB/s), validated and stored",
        record.name,
        record.version,
        total,
        secs,
        total as f64 / secs / 1e6
    );
    println!(
        "artifact sha256 {} ({} bytes, key {})",
        record.sha256, record.size, record.key_id
    );
    println!("bundle   sha256 {}", record.plaintext_sha256);
    if let Some(l) = &record.lineage {
        println!("lineage  {}", l.summary);
    }
    Ok(())
}

pub async fn list(addr: &str) -> Result<()> {
    let models = connect(addr)
        .await?
        .list_models(ListModelsRequest {})
        .await
        .map_err(status("listing models"))?
        .into_inner()
        .models;
    if crate::format::json_output() {
        return crate::format::print_json(&models);
    }
    println!(
        "{:<20} {:<16} {:<8} {:<12} {:>12}  {:<10} {:<16}  {:<10} {:<8} {:>8}",
        "name", "version", "", "state", "bytes", "key", "sha256", "parent", "method", "ndcg"
    );
    for m in models {
        let (parent, method, ndcg) = match &m.lineage {
            Some(l) => (
                l.parent_version.as_str(),
                l.method.as_str(),
                format!("{:.4}", l.ndcg),
            ),
            None => ("-", "-", "-".to_string()),
        };
        println!(
            "{:<20} {:<16} {:<8} {:<12} {:>12}  {:<10} {:.16}  {:<10} {:<8} {:>8}",
            m.name,
            m.version,
            role(&m),
            m.state,
            m.size,
            m.key_id,
            m.sha256,
            parent,
            method,
            ndcg
        );
    }
    Ok(())
}

fn role(m: &ModelRecord) -> &'static str {
    match (m.active, m.previous) {
        (true, _) => "active",
        (_, true) => "previous",
        _ => "",
    }
}

pub async fn activate(addr: &str, name: &str, version: &str) -> Result<()> {
    let resp = connect(addr)
        .await?
        .activate_model(ActivateModelRequest {
            name: name.into(),
            version: version.into(),
        })
        .await
        .map_err(status("activation"))?
        .into_inner();
    if crate::format::json_output() {
        return crate::format::print_json(&resp);
    }
    println!(
        "{name} version {version} is active (loaded and validated in {:.2} s)",
        resp.load_seconds
    );
    Ok(())
}

/// The bundle packed into a temporary file, removed on drop.
struct Packed {
    path: PathBuf,
}

impl Packed {
    fn new(dir: &Path, files: &[String]) -> Result<Packed> {
        let path = std::env::temp_dir().join(format!("rankctl-upload-{}.tar", std::process::id()));
        let packed = Packed { path };
        let out = std::io::BufWriter::new(std::fs::File::create(&packed.path)?);
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        rankd_artifact::pack::pack(dir, &names, out).context("packing the bundle")?;
        Ok(packed)
    }

    fn len(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }
}

impl Drop for Packed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub async fn rotate(addr: &str) -> Result<()> {
    let resp = connect(addr)
        .await?
        .rotate_keys(RotateKeysRequest {})
        .await
        .map_err(status("key rotation"))?
        .into_inner();
    if crate::format::json_output() {
        return crate::format::print_json(&resp);
    }
    println!(
        "re-encrypted {} of {} artifacts; all are now under key {:?}",
        resp.rotated, resp.total, resp.primary_key_id
    );
    Ok(())
}
