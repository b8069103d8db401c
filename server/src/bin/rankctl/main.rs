//! `rankctl`: the operator's command line for a rankd node.

mod backup;
mod bake;
mod certs;
mod cluster;
mod compress;
mod conn;
mod fault;
mod format;
mod keys;
mod models;
mod promote;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rankd_proto::v1::ranker_client::RankerClient;
use rankd_proto::v1::RankRequest;
use serde::Deserialize;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[derive(Parser)]
#[command(name = "rankctl", version, about = "Operate rankd nodes")]
struct Cli {
    /// Output format: `table` for people, `json` (protobuf JSON of the response) for scripts.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value = "table"
    )]
    output: format::Output,
    #[command(flatten)]
    conn: conn::ConnArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rank candidates for one query and print the ranked table.
    Rank(RankArgs),
    /// Print a node's health (overall and per service).
    Health {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// Upload a bundle directory; the node validates it and stores it encrypted.
    Upload {
        bundle: PathBuf,
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// Recorded with the version.
        #[arg(long, env = "USER", default_value = "unknown")]
        uploaded_by: String,
        /// Register a compressed version even if its NDCG@10 falls further below its
        /// parent's than the cluster allows; the reason is recorded in the history.
        #[arg(long, default_value = "")]
        quality_override: String,
    },
    /// Fetch a stored version's bundle (plaintext) into a directory; needs the admin role.
    Download {
        name: String,
        version: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// Compress a version with the exporter (int8, fp16, bf16, prune:S, distill:small) and
    /// upload the result as a new version; the node refuses it if it lost too much NDCG@10.
    Compress(compress::CompressArgs),
    /// Drills: make one node's Rank calls slow or failing (a gray failure), or clear it.
    Fault(fault::FaultArgs),
    /// List the versions in a node's store.
    Models {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// Load a stored version and switch serving to it.
    Activate {
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// Keyring management.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Backups of a node's model store.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Cluster membership and status.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Promote a stored version cluster-wide, following each node's readiness.
    Promote(promote::PromoteArgs),
    /// Switch the cluster back to the previous version.
    Rollback {
        /// Roll back only if this version is the active one.
        #[arg(long, value_name = "CURRENT")]
        expect: Option<String>,
        /// Recorded in the history.
        #[arg(long, env = "USER", default_value = "unknown")]
        requested_by: String,
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// The cluster's promotions and rollbacks, oldest first; with --audit, every admin
    /// action (who, what, when, result).
    History {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
        #[arg(long)]
        audit: bool,
    },
    /// Bearer tokens for admin calls.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Certificates for TLS.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Back up the node's store to its configured target.
    Create {
        /// Copy only the artifacts the newest backup lacks.
        #[arg(long)]
        incremental: bool,
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// List the backups in the node's target.
    List {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// Re-read a backup and check every SHA-256.
    Verify {
        id: String,
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// Restore a backup into an empty data directory (offline: no node involved).
    Restore {
        id: String,
        /// The backup target: a directory, file:///dir or s3://bucket/prefix.
        #[arg(long)]
        target: String,
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new keyring (mode 0600) with one random 256-bit primary key.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "primary")]
        id: String,
    },
    /// Make the node re-read its keyring and re-encrypt every artifact not under the
    /// primary key (add the new key to the keyring file and make it primary first).
    Rotate {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random token, and the [[auth.tokens]] entry (its hash) for rankd.toml.
    Generate {
        /// Who will hold it; recorded in the audit history.
        #[arg(long)]
        name: String,
        /// reader | operator | admin
        #[arg(long)]
        role: String,
    },
}

#[derive(clap::Args)]
struct RankArgs {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// JSON file: either an array of floats, or {"query": [...], "candidates": [...]}.
    #[arg(long)]
    query_file: PathBuf,
    /// Candidate ids, comma separated, with inclusive ranges: `1,5,10-20`. Defaults to the
    /// query file's `candidates`.
    #[arg(long)]
    candidates: Option<String>,
    #[arg(long, default_value_t = 10)]
    top_k: u32,
    #[arg(long, default_value = "")]
    request_id: String,
    /// Deadline for the call, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum QueryFile {
    Bare(Vec<f32>),
    Full {
        query: Vec<f32>,
        #[serde(default)]
        candidates: Vec<i64>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    format::set_output(cli.output);
    conn::set(cli.conn);
    let res = match cli.command {
        Command::Rank(args) => rank(args).await,
        Command::Health { addr } => health(addr).await,
        Command::Upload {
            bundle,
            addr,
            uploaded_by,
            quality_override,
        } => models::upload(&addr, &bundle, &uploaded_by, &quality_override).await,
        Command::Models { addr } => models::list(&addr).await,
        Command::Download {
            name,
            version,
            out,
            addr,
        } => compress::download(&addr, &name, &version, &out).await,
        Command::Compress(args) => compress::compress(args).await,
        Command::Fault(args) => fault::run(args).await,
        Command::Activate {
            name,
            version,
            addr,
        } => models::activate(&addr, &name, &version).await,
        Command::Keys(KeysCommand::Generate { out, id }) => keys::generate(&out, &id),
        Command::Keys(KeysCommand::Rotate { addr }) => models::rotate(&addr).await,
        Command::Backup(cmd) => backup::run(cmd).await,
        Command::Cluster(cmd) => cluster::run(cmd).await,
        Command::Promote(args) => promote::promote(args).await,
        Command::Rollback {
            expect,
            requested_by,
            addr,
        } => promote::rollback(&addr, expect, requested_by).await,
        Command::History { addr, audit } => promote::history(&addr, audit).await,
        Command::Token(TokenCommand::Generate { name, role }) => keys::token(&name, &role),
        Command::Certs(cmd) => certs::run(cmd),
    };
    if let Err(e) = res {
        eprintln!("rankctl: {e:#}");
        std::process::exit(1);
    }
}

async fn rank(args: RankArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.query_file)
        .with_context(|| format!("reading {}", args.query_file.display()))?;
    let (query, file_candidates) = match serde_json::from_str::<QueryFile>(&text)
        .with_context(|| format!("parsing {}", args.query_file.display()))?
    {
        QueryFile::Bare(q) => (q, Vec::new()),
        QueryFile::Full { query, candidates } => (query, candidates),
    };
    let candidates = match &args.candidates {
        Some(list) => parse_id_list(list)?,
        None if !file_candidates.is_empty() => file_candidates,
        None => bail!("no candidates: pass --candidates or put them in the query file"),
    };
    let mut client = RankerClient::new(conn::channel(&args.addr).await?);
    let mut req = tonic::Request::new(RankRequest {
        request_id: args.request_id,
        query,
        candidate_ids: candidates,
        top_k: args.top_k,
    });
    req.set_timeout(Duration::from_millis(args.timeout_ms));
    let start = Instant::now();
    let resp = client
        .rank(req)
        .await
        .map_err(|s| anyhow::anyhow!("rank failed: {:?}: {}", s.code(), s.message()))?;
    let elapsed = start.elapsed();
    let resp = resp.into_inner();
    if format::json_output() {
        return format::print_json(&resp);
    }
    println!("{:>4}  {:>10}  {:>12}", "rank", "item_id", "score");
    for (i, item) in resp.items.iter().enumerate() {
        println!("{:>4}  {:>10}  {:>12.6}", i + 1, item.id, item.score);
    }
    println!(
        "model {} version {} on {} in {:.2} ms (request {})",
        resp.model_name,
        resp.model_version,
        resp.node_id,
        elapsed.as_secs_f64() * 1e3,
        resp.request_id
    );
    Ok(())
}

async fn health(addr: String) -> Result<()> {
    let mut client = HealthClient::new(conn::channel(&addr).await?);
    let mut report = serde_json::Map::new();
    for service in ["", "rankd.v1.Ranker"] {
        let status = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("health check failed: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        let name = if service.is_empty() {
            "(overall)"
        } else {
            service
        };
        let status =
            tonic_health::pb::health_check_response::ServingStatus::try_from(status.status)
                .map(|s| s.as_str_name().to_string())
                .unwrap_or_else(|_| format!("unknown ({})", status.status));
        if !format::json_output() {
            println!("{name:<20} {status}");
        }
        report.insert(service.to_string(), serde_json::Value::String(status));
    }
    if format::json_output() {
        format::print_json(&report)?;
    }
    Ok(())
}

/// `1,5,10-20` → [1, 5, 10, 11, ..., 20].
fn parse_id_list(s: &str) -> Result<Vec<i64>> {
    let mut ids = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) if !a.is_empty() => {
                let (a, b): (i64, i64) = (a.trim().parse()?, b.trim().parse()?);
                if b < a || b - a > 1_000_000 {
                    bail!("bad candidate range {part}");
                }
                ids.extend(a..=b);
            }
            _ => ids.push(
                part.parse()
                    .with_context(|| format!("bad candidate id {part:?}"))?,
            ),
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::parse_id_list;

    #[test]
    fn parses_lists_and_ranges() {
        assert_eq!(parse_id_list("1,5,10-12").unwrap(), vec![1, 5, 10, 11, 12]);
        assert_eq!(parse_id_list(" 7 ").unwrap(), vec![7]);
        assert!(parse_id_list("3-1").is_err());
        assert!(parse_id_list("x").is_err());
    }
}
