//! The served half: start a real `rankd`, then measure it over loopback gRPC.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rankd_kernels::Bundle;
use rankd_proto::v1::ranker_client::RankerClient;
use rankd_proto::v1::RankRequest;
use tonic::transport::Channel;

use super::report::{Latency, Throughput};
use super::{BenchArgs, Workload};

pub struct ServerResults {
    /// Pool sizes the node reported (`rankd_threads`).
    pub runtime_threads: usize,
    pub torch_threads: usize,
    pub latency: Vec<Latency>,
    pub throughput: Vec<Throughput>,
}

/// A `rankd` child process, killed when dropped.
struct Rankd {
    child: Child,
    grpc: String,
    metrics: String,
    _dir: TempDir,
}

impl Drop for Rankd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory removed on drop (no extra dependency for one config file).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(args: &BenchArgs) -> Result<Rankd> {
    let dir = std::env::temp_dir().join(format!("rankload-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let dir = TempDir(dir);
    let config = dir.0.join("rankd.toml");
    let bundle = std::fs::canonicalize(&args.bundle)?;
    // The node serves from its encrypted store: give it a private keyring and data dir.
    let keyring = dir.0.join("keyring.toml");
    rankd_artifact::keyring::write_new(&keyring, "bench")?;
    let data = dir.0.join("data");
    std::fs::write(
        &config,
        format!(
            "node_id = \"bench\"\ndata_dir = {data:?}\n[artifacts]\nkeyring = {keyring:?}\nscrub_interval_s = 0\n[server]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n\
             max_concurrent_requests = {conc}\nrequest_timeout_ms = 10000\nruntime_threads = {rt}\n\
             [model]\nbundle = {bundle:?}\ndevice = \"{dev}\"\nprecision = \"{prec}\"\ntorch_threads = {threads}\n\
             [batching]\nmax_batch_size = {batch}\nqueue_capacity = {queue}\n\
             max_batch_items = {items}\nidle_spin_us = {spin}\n[log]\nlevel = \"warn\"\n\
             [tls]\nmode = \"insecure-dev\"\n[auth]\nmode = \"insecure-dev\"\n",
            conc = args.concurrency * 4,
            rt = args.runtime_threads,
            items = args.max_batch_items,
            spin = args.idle_spin_us,
            dev = args.device,
            prec = args.precision,
            threads = args.torch_threads,
            batch = args.max_batch_size,
            queue = (args.concurrency * 2).max(args.max_batch_size),
        ),
    )?;
    let mut child = Command::new(&args.rankd)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", args.rankd.display()))?;
    let stdout = child.stdout.take().context("rankd stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    let (Some(grpc), Some(metrics)) = (field("grpc="), field("metrics=")) else {
        let _ = child.kill();
        bail!("rankd did not start: {line:?}");
    };
    Ok(Rankd {
        child,
        grpc: format!("http://{grpc}"),
        metrics,
        _dir: dir,
    })
}

/// `bare_torch_threads`: what the bare half ran with. The node sets its own thread counts
/// from its config; one whose libtorch count differs would make the comparison unequal, so
/// it stops the bench.
pub fn measure(
    bundle: &Bundle,
    args: &BenchArgs,
    bare_torch_threads: usize,
) -> Result<ServerResults> {
    let rankd = start(args)?;
    let started = Scrape::take(&rankd.metrics)?;
    let pool = |p: &str| started.value(&format!("rankd_threads{{pool=\"{p}\"}}")) as usize;
    let (runtime_threads, reported) = (pool("runtime"), pool("torch"));
    // A node left at libtorch's default does not report it; that default is the same in
    // both processes.
    let torch_threads = if reported == 0 {
        bare_torch_threads
    } else {
        reported
    };
    eprintln!(
        "    {runtime_threads} runtime thread(s), {torch_threads} libtorch thread(s) per worker"
    );
    if torch_threads != bare_torch_threads {
        bail!(
            "the node runs {torch_threads} libtorch thread(s) but the bare engine ran {bare_torch_threads}: \
             the comparison would not be like for like"
        );
    }
    let work = Arc::new(Workload::new(bundle, &args.candidates)?);
    // A lone caller measures latency on one thread, as a frontend's request path would;
    // the saturating callers get every core.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let multi = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut latency = Vec::new();
    let mut throughput = Vec::new();
    let floor = single.block_on(transport_floor(&rankd, &work, 0, args))?;
    eprintln!(
        "    transport floor (refused before the queue): p50 {:.0} us, p99 {:.0} us",
        floor.p50_us, floor.p99_us
    );
    latency.push(floor);
    for &n in &args.candidates {
        if n >= 2 {
            let f = single.block_on(transport_floor(&rankd, &work, n, args))?;
            eprintln!(
                "    transport floor with {n} ids (refused after validation): p50 {:.0} us, p99 {:.0} us",
                f.p50_us, f.p99_us
            );
            latency.push(f);
        }
        let l = single.block_on(sequential(&rankd, &work, n, args))?;
        eprintln!(
            "    1 x {n}: p50 {:.0} us, p99 {:.0} us (server-side means: queue {:.0} us, inference {:.0} us)",
            l.p50_us,
            l.p99_us,
            l.server_queue_us.unwrap_or(0.0),
            l.server_inference_us.unwrap_or(0.0)
        );
        latency.push(l);
        let t = multi.block_on(saturate(&rankd, &work, n, args))?;
        eprintln!(
            "    saturated x {n}: {:.3e} items/s, mean batch {:.1}, {} errors",
            t.items_per_s, t.mean_batch, t.errors
        );
        throughput.push(t);
    }
    Ok(ServerResults {
        runtime_threads,
        torch_threads,
        latency,
        throughput,
    })
}

fn request(work: &Workload, n: usize, i: usize) -> RankRequest {
    let lists = work.lists(n);
    RankRequest {
        request_id: String::new(),
        query: work.query.clone(),
        candidate_ids: lists[i % lists.len()].clone(),
        top_k: 10,
    }
}

async fn connect(rankd: &Rankd) -> Result<RankerClient<Channel>> {
    Ok(RankerClient::new(
        Channel::from_shared(rankd.grpc.clone())?
            .tcp_nodelay(true)
            .connect()
            .await?,
    ))
}

/// One request in flight at a time: the latency a lone frontend call sees.
async fn sequential(rankd: &Rankd, work: &Workload, n: usize, args: &BenchArgs) -> Result<Latency> {
    let mut client = connect(rankd).await?;
    for i in 0..50 {
        client.rank(request(work, n, i)).await?;
    }
    let mut hist = Latency::histogram();
    let before = Scrape::take(&rankd.metrics)?;
    let end = Instant::now() + args.latency_window();
    let mut i = 0;
    while Instant::now() < end {
        let req = request(work, n, i);
        let start = Instant::now();
        client.rank(req).await?;
        hist.record(start.elapsed().as_micros() as u64).ok();
        i += 1;
    }
    let after = Scrape::take(&rankd.metrics)?;
    let mut l = Latency::from_histogram("server", 1, n, &hist);
    l.server_queue_us = Some(after.mean_since(&before, "rankd_queue_wait_seconds") * 1e6);
    l.server_inference_us = Some(after.mean_since(&before, "rankd_inference_seconds") * 1e6);
    Ok(l)
}

/// Round trips for a request the server refuses during validation: the cost of gRPC over
/// loopback plus the service layers, without queue or model. With `n == 0` the candidate
/// list is empty (refused at once); otherwise it holds `n` ids whose last repeats the first,
/// so the server decodes and checks all of them before refusing: the transport and
/// validation a real call of that size pays.
async fn transport_floor(
    rankd: &Rankd,
    work: &Workload,
    n: usize,
    args: &BenchArgs,
) -> Result<Latency> {
    let mut client = connect(rankd).await?;
    let mut ids = work.lists(n).first().cloned().unwrap_or_default();
    if let Some(&first) = ids.first() {
        if let Some(last) = ids.last_mut() {
            *last = first;
        }
    }
    let req = || RankRequest {
        request_id: String::new(),
        query: work.query.clone(),
        candidate_ids: ids.clone(),
        top_k: 10,
    };
    for _ in 0..50 {
        let _ = client.rank(req()).await;
    }
    let mut hist = Latency::histogram();
    let end = Instant::now() + args.latency_window();
    while Instant::now() < end {
        let start = Instant::now();
        let res = client.rank(req()).await;
        hist.record(start.elapsed().as_micros() as u64).ok();
        if !matches!(&res, Err(s) if s.code() == tonic::Code::InvalidArgument) {
            bail!("expected INVALID_ARGUMENT for a refused candidate list, got {res:?}");
        }
    }
    Ok(Latency::from_histogram("floor", 1, n, &hist))
}

/// `concurrency` callers, each sending its next request as soon as the last returns.
async fn saturate(
    rankd: &Rankd,
    work: &Arc<Workload>,
    n: usize,
    args: &BenchArgs,
) -> Result<Throughput> {
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(connect(rankd).await?);
    }
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let before = Scrape::take(&rankd.metrics)?;
    let start = Instant::now();
    let end = start + args.throughput_window();
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|t| {
            let mut client = clients[t % clients.len()].clone();
            let (work, ok, errors) = (work.clone(), ok.clone(), errors.clone());
            tokio::spawn(async move {
                let mut i = t;
                while Instant::now() < end {
                    match client.rank(request(&work, n, i)).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                    i += args_stride();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let after = Scrape::take(&rankd.metrics)?;
    let done = ok.load(Ordering::Relaxed) as f64;
    Ok(Throughput {
        side: "server".into(),
        batch: args.max_batch_size,
        candidates: n,
        items_per_s: done * n as f64 / secs,
        requests_per_s: done / secs,
        mean_batch: after.mean_since(&before, "rankd_batch_size"),
        errors: errors.load(Ordering::Relaxed),
    })
}

/// Callers step through the candidate pool at a stride so they rarely send the same list.
fn args_stride() -> usize {
    7
}

/// One reading of the node's metrics.
struct Scrape(String);

impl Scrape {
    fn take(metrics_addr: &str) -> Result<Scrape> {
        scrape(metrics_addr).map(Scrape)
    }

    /// The value of the first series whose line starts with `name` (0 when absent).
    fn value(&self, name: &str) -> f64 {
        self.0
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    }

    /// Mean of a histogram's observations between two readings.
    fn mean_since(&self, before: &Scrape, histogram: &str) -> f64 {
        let sum =
            self.value(&format!("{histogram}_sum")) - before.value(&format!("{histogram}_sum"));
        let count =
            self.value(&format!("{histogram}_count")) - before.value(&format!("{histogram}_count"));
        sum / count.max(1.0)
    }
}

fn scrape(addr: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}
