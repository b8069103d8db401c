//! `rankctl download` and `rankctl compress`: fetch a version's bundle, run the exporter's
//! compression step on it, and upload the result as a new version.
//!
//! The transforms themselves are PyTorch code in the exporter (`deploy/demo_model/`);
//! rankctl only drives them, so an operator needs the exporter and its Python, which
//! `make run` installs into `.venv`. The node that receives the result measures it against
//! its parent and refuses it when it lost too much NDCG@10 (docs/compression.md).

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use anyhow::{bail, Context, Result};
use clap::Args;
use rankd_artifact::pack::{unpack, UnpackLimits};
use rankd_proto::admin::v1::{GetModelRequest, ListModelsRequest};

use crate::models::status;

#[derive(Args)]
pub struct CompressArgs {
    /// The parent version to compress.
    version: String,
    /// e.g. `int8`, `fp16`, `bf16`, `prune:0.5`, `distill:small` (see the exporter).
    #[arg(long)]
    method: String,
    /// The model name; needed only when several models have this version.
    #[arg(long)]
    name: Option<String>,
    /// The new version's name; the exporter's default is `<version>-<method>`.
    #[arg(long)]
    new_version: Option<String>,
    /// Use this local copy of the parent bundle instead of downloading it.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Keep the compressed bundle here (default: a temporary directory, removed after).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the exporter's own speed figures (size and quality are always reported).
    #[arg(long)]
    no_bench: bool,
    /// Passed on to the upload: register even if the quality guard would refuse.
    #[arg(long, default_value = "")]
    quality_override: String,
    /// Recorded with the new version.
    #[arg(long, env = "USER", default_value = "unknown")]
    uploaded_by: String,
    #[arg(long, env = "RANKD_PYTHON")]
    python: Option<PathBuf>,
    #[arg(
        long,
        env = "RANKD_EXPORTER",
        default_value = "deploy/demo_model/export.py"
    )]
    exporter: PathBuf,
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
}

/// Streams `name@version` from the node and unpacks it into `out` (which must not exist).
pub async fn download(addr: &str, name: &str, version: &str, out: &Path) -> Result<()> {
    if out.exists() {
        bail!("{} already exists", out.display());
    }
    let mut stream = crate::conn::admin(addr)
        .await?
        .download_model(GetModelRequest {
            name: name.into(),
            version: version.into(),
        })
        .await
        .map_err(status("download"))?
        .into_inner();
    let staging = tempfile::tempdir().context("creating a temporary directory")?;
    let packed = staging.path().join("bundle.tar");
    let mut file = std::fs::File::create(&packed)?;
    let mut total = 0u64;
    while let Some(msg) = stream
        .message()
        .await
        .map_err(status("reading the download stream"))?
    {
        std::io::Write::write_all(&mut file, &msg.chunk)?;
        total += msg.chunk.len() as u64;
    }
    file.sync_all()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    unpack(std::fs::File::open(&packed)?, out, UnpackLimits::default())
        .with_context(|| format!("unpacking into {}", out.display()))?;
    if !crate::format::json_output() {
        println!(
            "downloaded {name} version {version}: {total} bytes into {}",
            out.display()
        );
    }
    Ok(())
}

pub async fn compress(a: CompressArgs) -> Result<()> {
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let parent = match &a.bundle {
        Some(dir) => dir.clone(),
        None => {
            let name = model_name(&a.addr, a.name.as_deref(), &a.version).await?;
            let dir = work.path().join("parent");
            download(&a.addr, &name, &a.version, &dir).await?;
            dir
        }
    };
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| work.path().join("compressed"));
    let python = a.python.clone().unwrap_or_else(default_python);
    let mut cmd = Process::new(&python);
    cmd.arg(&a.exporter)
        .arg("compress")
        .arg("--from")
        .arg(&parent)
        .arg("--method")
        .arg(&a.method)
        .arg("--out")
        .arg(&out);
    if a.out.is_some() {
        cmd.arg("--force");
    }
    if let Some(v) = &a.new_version {
        cmd.arg("--version").arg(v);
    }
    if a.no_bench {
        cmd.arg("--no-bench");
    }
    let status = cmd.status().with_context(|| {
        format!(
            "running {} {} (set --python/RANKD_PYTHON and --exporter/RANKD_EXPORTER)",
            python.display(),
            a.exporter.display()
        )
    })?;
    if !status.success() {
        bail!("the exporter's compress step failed ({status})");
    }
    crate::models::upload(&a.addr, &out, &a.uploaded_by, &a.quality_override).await
}

/// The name of the only model that has `version`, unless the caller named one.
async fn model_name(addr: &str, name: Option<&str>, version: &str) -> Result<String> {
    if let Some(n) = name {
        return Ok(n.to_string());
    }
    let models = crate::conn::admin(addr)
        .await?
        .list_models(ListModelsRequest {})
        .await
        .map_err(status("listing models"))?
        .into_inner()
        .models;
    let mut names: Vec<String> = models
        .into_iter()
        .filter(|m| m.version == version)
        .map(|m| m.name)
        .collect();
    names.dedup();
    match names.len() {
        0 => bail!("no model has version {version}"),
        1 => Ok(names.remove(0)),
        _ => bail!("several models have version {version} ({names:?}): pass --name"),
    }
}

/// The project's virtualenv when run from a checkout (what `make run` installs), else
/// `python3` on the PATH.
fn default_python() -> PathBuf {
    let venv = PathBuf::from(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}
