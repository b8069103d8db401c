//! The failover client's overhead at saturation against a plain tonic channel, both aimed
//! at the same single node (so balancing cannot flatter the client), closed loop with the
//! same concurrency, alternated in rounds so drift on a shared machine hits both alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rankd_proto::client::{ClientConfig, FailoverClient};
use rankd_proto::v1::ranker_client::RankerClient;
use rankd_proto::v1::RankRequest;
use serde::Serialize;
use tonic::transport::Channel;

#[derive(Serialize, Default)]
pub struct OverheadReport {
    pub concurrency: usize,
    pub seconds_per_round: f64,
    pub rounds: usize,
    pub plain_rps: f64,
    pub client_rps: f64,
    /// client / plain throughput.
    pub ratio: f64,
    pub plain_errors: u64,
    pub client_errors: u64,
}

enum Caller {
    Plain(RankerClient<Channel>),
    Failover(FailoverClient),
}

impl Caller {
    async fn call(&mut self, req: RankRequest) -> bool {
        match self {
            Caller::Plain(c) => c.rank(req).await.is_ok(),
            Caller::Failover(c) => c.rank(req).await.is_ok(),
        }
    }
}

/// Calls per second over `secs` with `concurrency` callers looping; errors counted apart.
async fn saturate(
    make: impl Fn() -> Caller,
    req: &RankRequest,
    concurrency: usize,
    secs: f64,
) -> (f64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (mut caller, req, ok, errors) = (make(), req.clone(), ok.clone(), errors.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    if caller.call(req.clone()).await {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    for w in workers {
        let _ = w.await;
    }
    let rps = ok.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    (rps, errors.load(Ordering::Relaxed))
}

pub async fn measure(
    api_addr: &str,
    req: &RankRequest,
    concurrency: usize,
    secs: f64,
    rounds: usize,
) -> OverheadReport {
    let channel = Channel::from_shared(format!("http://{api_addr}"))
        .expect("a node address")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connecting to the node");
    let client = FailoverClient::connect(
        vec![api_addr.to_string()],
        ClientConfig {
            discover_members: false,
            ..ClientConfig::default()
        },
    )
    .await
    .expect("a failover client");
    assert!(client.wait_healthy(1, Duration::from_secs(30)).await);
    // Warm both paths (connections, EWMA, the node's batching) before timing.
    saturate(
        || Caller::Plain(RankerClient::new(channel.clone())),
        req,
        concurrency,
        1.0,
    )
    .await;
    saturate(|| Caller::Failover(client.clone()), req, concurrency, 1.0).await;
    let mut r = OverheadReport {
        concurrency,
        seconds_per_round: secs,
        rounds,
        ..Default::default()
    };
    for _ in 0..rounds {
        let (p, pe) = saturate(
            || Caller::Plain(RankerClient::new(channel.clone())),
            req,
            concurrency,
            secs,
        )
        .await;
        let (f, fe) = saturate(|| Caller::Failover(client.clone()), req, concurrency, secs).await;
        r.plain_rps += p / rounds as f64;
        r.client_rps += f / rounds as f64;
        r.plain_errors += pe;
        r.client_errors += fe;
    }
    r.ratio = if r.plain_rps > 0.0 {
        r.client_rps / r.plain_rps
    } else {
        0.0
    };
    r
}
