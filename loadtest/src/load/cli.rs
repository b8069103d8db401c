//! `rankload load`: steady open-loop load against running rankd nodes, with a live progress
//! bar, a summary and per-second timeline at the end, and the whole record as JSON.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rankd_proto::client::{ClientConfig, FailoverClient, HedgeConfig, HedgeDelay};
use rankd_proto::v1::ranker_client::RankerClient;
use rankd_proto::v1::RankRequest;
use serde::Deserialize;
use tokio::time::Instant;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::generator::{Generator, LoadClient, LoadSpec, Progress};
use super::record::LoadResult;
use super::report;

/// How often the progress bar is updated.
const TICK: Duration = Duration::from_millis(200);

#[derive(Args, Clone, Debug)]
pub struct LoadArgs {
    /// Rank addresses (host:port), comma-separated. The failover client also finds the
    /// rest of the cluster from heartbeats, so one address of a cluster is enough.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:50051")]
    pub addrs: Vec<String>,
    /// Send through one plain tonic channel to the first address instead of the failover
    /// client: what that node alone does, with no retries or balancing to hide failures.
    #[arg(long)]
    pub plain: bool,
    /// CA certificate (PEM) of the nodes' client port: connect over TLS.
    #[arg(long, env = "RANKD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS, with --ca-cert.
    #[arg(long, env = "RANKD_CLIENT_CERT", requires_all = ["client_key", "ca_cert"])]
    pub client_cert: Option<PathBuf>,
    #[arg(long, env = "RANKD_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Calls per second, kept whatever the server does (open loop).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
    /// How long to send: `30s`, `500ms`, `2m`, or plain seconds.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Each call's deadline (same forms as --duration).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub deadline: Duration,
    /// `{"query": [f32...], "candidates": [i64...]}` as `make model` writes it.
    #[arg(long, default_value = "models/demo/example_query.json")]
    pub query_file: PathBuf,
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub top_k: u32,
    /// Send only the first N candidates of the query file (default: all of them).
    #[arg(long)]
    pub candidates: Option<usize>,
    /// Where the JSON record goes.
    #[arg(long, default_value = "bench-out/load.json")]
    pub out: PathBuf,
    /// Hedge a call on another node when unanswered after this many milliseconds
    /// (failover client only; off by default).
    #[arg(long)]
    pub hedge_ms: Option<u64>,
    /// Leave the per-call list out of the JSON (it is left out anyway above 200 000 calls).
    #[arg(long)]
    pub no_calls: bool,
    /// How long to wait at startup for a node to be healthy (same forms as --duration).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub wait: Duration,
}

/// The query file; other fields (`make model` may add some) are ignored.
#[derive(Deserialize)]
struct QueryFile {
    query: Vec<f32>,
    candidates: Vec<i64>,
}

/// `30s`, `500ms`, `2m`, `1.5s` or plain seconds (`30`, `0.25`). Zero is accepted here and
/// rejected where it makes no sense.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 30s, 500ms, 2m, 30)"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}' (ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("'{text}': {e}"))
}

pub fn run(args: LoadArgs) -> Result<()> {
    ensure!(
        !args.duration.is_zero(),
        "--duration must be greater than zero"
    );
    ensure!(
        !args.deadline.is_zero(),
        "--deadline must be greater than zero"
    );
    ensure!(!args.addrs.is_empty(), "--addrs names no address");
    ensure!(
        !(args.plain && args.hedge_ms.is_some()),
        "--hedge-ms needs the failover client; drop --plain"
    );
    let request = load_request(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let (result, stats) = rt.block_on(async {
        let client = connect(&args).await?;
        let result = drive(&args, client.clone(), request.clone()).await;
        let stats = match &client {
            LoadClient::Failover(c) => Some(c.stats()),
            LoadClient::Plain(_) => None,
        };
        anyhow::Ok((result, stats))
    })?;
    let spec = report::SpecRecord::new(&args, &request);
    println!("{}", report::text(&result, stats.as_ref()));
    report::write_json(&args, spec, &result, stats.as_ref())?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

fn load_request(args: &LoadArgs) -> Result<RankRequest> {
    read_request(&args.query_file, args.candidates, args.top_k)
}

/// The Rank request a query file (`{"query": [...], "candidates": [...]}`, as `make model`
/// writes `models/demo/example_query.json`) describes, with its first `candidates` ids.
pub fn read_request(
    path: &std::path::Path,
    candidates: Option<usize>,
    top_k: u32,
) -> Result<RankRequest> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (run `make model` to create it)", path.display()))?;
    let file: QueryFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected {{\"query\": [numbers], \"candidates\": [ids]}}",
            path.display()
        )
    })?;
    let mut candidate_ids = file.candidates;
    if let Some(n) = candidates {
        ensure!(n > 0, "--candidates must be at least 1");
        ensure!(
            n <= candidate_ids.len(),
            "--candidates {n}, but {} has only {}",
            path.display(),
            candidate_ids.len()
        );
        candidate_ids.truncate(n);
    }
    ensure!(
        !candidate_ids.is_empty(),
        "{} lists no candidates",
        path.display()
    );
    Ok(RankRequest {
        request_id: String::new(),
        query: file.query,
        candidate_ids,
        top_k,
    })
}

/// The client, once it can reach a node: the failover client waits for a serving
/// heartbeat; the plain channel for a TCP connection (it has no notion of health).
async fn connect(args: &LoadArgs) -> Result<LoadClient> {
    let addrs = args.addrs.join(", ");
    let waited = format!("{:.0} s", args.wait.as_secs_f64());
    let tls = tls_config(args)?;
    if args.plain {
        let first = &args.addrs[0];
        let host = first.split_once("://").map_or(first.as_str(), |(_, h)| h);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{host}"))
            .with_context(|| format!("--addrs: '{first}' is not an address"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        if let Some(tls) = &tls {
            endpoint = endpoint.tls_config(tls.clone()).context("TLS settings")?;
        }
        let until = Instant::now() + args.wait;
        loop {
            match endpoint.connect().await {
                Ok(channel) => return Ok(LoadClient::Plain(RankerClient::new(channel))),
                Err(e) if Instant::now() >= until => {
                    bail!("could not connect to {first} within {waited}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
    let config = ClientConfig {
        default_deadline: args.deadline,
        hedge: args.hedge_ms.map(|ms| HedgeConfig {
            delay: HedgeDelay::Fixed(Duration::from_millis(ms)),
        }),
        tls,
        ..ClientConfig::default()
    };
    let client = FailoverClient::connect(args.addrs.clone(), config)
        .await
        .context("starting the failover client")?;
    eprintln!("waiting up to {waited} for a healthy node among {addrs} ...");
    if !client.wait_healthy(1, args.wait).await {
        bail!(
            "no healthy rankd node among {addrs} after {waited}: is rankd running, and \
             serving a model (rankctl health)?"
        );
    }
    Ok(LoadClient::Failover(client))
}

/// TLS settings from --ca-cert (and --client-cert/--client-key), if given.
fn tls_config(args: &LoadArgs) -> Result<Option<ClientTlsConfig>> {
    let Some(ca) = &args.ca_cert else {
        return Ok(None);
    };
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

/// Runs the load for `--duration` (or until Ctrl-C), with the progress bar.
async fn drive(args: &LoadArgs, client: LoadClient, request: RankRequest) -> LoadResult {
    eprintln!(
        "load: {} calls/s for {:.1} s through the {} to {}; deadline {} ms, {} candidates, \
         top {}",
        args.rate,
        args.duration.as_secs_f64(),
        client.label(),
        args.addrs.join(", "),
        args.deadline.as_millis(),
        request.candidate_ids.len(),
        args.top_k,
    );
    let total_ms = u64::try_from(args.duration.as_millis()).unwrap_or(u64::MAX);
    let bar = ProgressBar::new(total_ms);
    // The template is fixed, so it always parses; fall back to the default style anyway.
    let style = ProgressStyle::with_template("{prefix} [{bar:30.cyan/blue}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);

    let generator = Generator::start(
        client,
        LoadSpec {
            rate: args.rate,
            deadline: args.deadline,
            request,
        },
    );
    // The bar is updated until just before the end; `stop_after` then ends the schedule
    // at exactly `--duration`, so the run sends exactly rate × duration calls.
    let start = Instant::now();
    let last_update = start + args.duration.saturating_sub(TICK + TICK / 4);
    let mut rps = RecentRate::default();
    let mut tick = tokio::time::interval(TICK);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut stopped_early = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(last_update) => break,
            _ = &mut interrupted => {
                bar.println("interrupted: stopping and waiting for calls in flight");
                stopped_early = true;
                break;
            }
            _ = tick.tick() => {
                let p = generator.progress();
                let elapsed = generator.elapsed();
                bar.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
                bar.set_prefix(format!(
                    "{:>6.1}/{:.0} s",
                    elapsed.as_secs_f64(),
                    args.duration.as_secs_f64()
                ));
                bar.set_message(progress_line(p, rps.update(p)));
            }
        }
    }
    bar.set_message("waiting for calls in flight");
    let result = if stopped_early {
        generator.stop().await
    } else {
        generator.stop_after(args.duration).await
    };
    bar.finish_and_clear();
    result
}

fn progress_line(p: Progress, rps: f64) -> String {
    format!(
        "sent {}  ok {}  failed {}  in flight {}  {:.0} answered/s",
        p.sent,
        p.ok,
        p.failed,
        p.in_flight(),
        rps
    )
}

/// Answers per second over about the last second, from the progress samples.
#[derive(Default)]
struct RecentRate {
    samples: VecDeque<(Instant, u64)>,
}

impl RecentRate {
    fn update(&mut self, p: Progress) -> f64 {
        let now = Instant::now();
        self.samples.push_back((now, p.ok + p.failed));
        while self.samples.len() > 2 && now - self.samples[0].0 > Duration::from_secs(1) {
            self.samples.pop_front();
        }
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return 0.0;
        };
        let span = (last.0 - first.0).as_secs_f64();
        if span <= 0.0 {
            return 0.0;
        }
        (last.1 - first.1) as f64 / span
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_in_every_accepted_form() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 0.25 "), Ok(Duration::from_millis(250)));
        for bad in ["", "s", "-1s", "10 parsecs", "1e3", "abc", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
