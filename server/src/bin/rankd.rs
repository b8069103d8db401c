//! `rankd`: one rankd node. Loads config, builds, serves, exits.
//!
//! Exit codes: 0 after a clean shutdown, 64 for a bad config or command line, 65 for a model
//! bundle that cannot be served, 69 when a port cannot be bound, 1 otherwise.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rankd_server::{config::LogFormat, Config};
use serde_json::{json, Map, Value};

#[derive(Parser)]
#[command(
    name = "rankd",
    version,
    about = "Replicated gRPC inference server for search ranking"
)]
struct Cli {
    /// TOML config file; `RANKD_*` environment variables and flags override it.
    #[arg(long, global = true, env = "RANKD_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration, print it, and exit (0 when valid, 64 when not).
    #[arg(long)]
    check_config: bool,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the configured model bundle (the default).
    Serve,
}

/// Flags for the settings most often changed per node. Everything else goes in the file.
#[derive(clap::Args)]
struct Overrides {
    #[arg(long, global = true)]
    node_id: Option<String>,
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    #[arg(long, global = true)]
    metrics_listen: Option<SocketAddr>,
    /// Model bundle directory.
    #[arg(long, global = true)]
    bundle: Option<PathBuf>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, global = true)]
    device: Option<String>,
    /// fp32, fp16 or bf16 (half precision needs CUDA).
    #[arg(long, global = true)]
    precision: Option<String>,
    #[arg(long, global = true, value_enum)]
    log_format: Option<CliLogFormat>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

impl Overrides {
    /// Only the flags that were given, shaped like the config file.
    fn to_value(&self) -> Value {
        let mut root = Map::new();
        let mut server = Map::new();
        let mut model = Map::new();
        if let Some(v) = &self.node_id {
            root.insert("node_id".into(), json!(v));
        }
        if let Some(v) = self.listen {
            server.insert("listen".into(), json!(v.to_string()));
        }
        if let Some(v) = self.metrics_listen {
            server.insert("metrics_listen".into(), json!(v.to_string()));
        }
        if let Some(v) = &self.bundle {
            model.insert("bundle".into(), json!(v));
        }
        if let Some(v) = &self.device {
            model.insert("device".into(), json!(v));
        }
        if let Some(v) = &self.precision {
            model.insert("precision".into(), json!(v));
        }
        if let Some(f) = self.log_format {
            let f = match f {
                CliLogFormat::Text => LogFormat::Text,
                CliLogFormat::Json => LogFormat::Json,
            };
            root.insert("log".into(), json!({ "format": f }));
        }
        for (key, map) in [("server", server), ("model", model)] {
            if !map.is_empty() {
                root.insert(key.into(), Value::Object(map));
            }
        }
        Value::Object(root)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(64);
        }
    };
    let cfg = match Config::load(cli.config.as_deref(), cli.overrides.to_value()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("rankd: {e}");
            return ExitCode::from(64);
        }
    };
    if cli.check_config {
        match toml::to_string(&cfg) {
            Ok(s) => print!("{s}"),
            Err(e) => eprintln!("rankd: config is valid but cannot be printed: {e}"),
        }
        eprintln!("rankd: config is valid");
        return ExitCode::SUCCESS;
    }
    let (Some(Command::Serve) | None) = cli.command;
    rankd_server::telemetry::init(&cfg.log);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.thread_name("rankd-rt");
    // 0 keeps tokio's default of one worker per core.
    if cfg.server.runtime_threads > 0 {
        builder.worker_threads(cfg.server.runtime_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rankd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        match shutdown_signal() {
            Ok(signal) => Some(rankd_server::run(cfg, signal).await),
            Err(e) => {
                eprintln!("rankd: cannot listen for SIGTERM: {e}");
                None
            }
        }
    });
    let Some(served) = served else {
        return ExitCode::FAILURE;
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: libtorch's multi-line messages were already cut to their first line.
            eprintln!("rankd: {}", e.to_string().replace('\n', " "));
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

/// Registers for SIGTERM and Ctrl-C now (so a signal arriving right after startup is not
/// lost to the default action) and returns a future that resolves on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
