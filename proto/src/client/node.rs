//! One task per node watches its `Heartbeat/Subscribe` stream and reports to the pool.
//!
//! Rules (the same the nodes apply to each other):
//! - a heartbeat with `serving = true` admits the node (the pool may hold it out a little
//!   longer after a failed call, or while it cools down);
//! - `serving = false` ejects it (with the node's reason: loading, lagging, draining, ...);
//! - silence for `missed_limit × interval_ms` ejects it, using the cadence the node itself
//!   reports, and the client's configured cadence before its first heartbeat;
//! - a stream that ends, fails or cannot be opened ejects it, and is opened again after a
//!   backoff (50 ms doubling to 1 s by default) that resets on the next heartbeat.
//!
//! After a lapse the stream is kept rather than replaced: a node that only stalled resumes on
//! it and is re-admitted at once. Only if it stays silent for `resubscribe_after` more is it
//! treated as broken. A peer that vanished without closing the connection is found by the
//! channel's HTTP/2 keepalive, which fails the stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::timeout;
use tonic::transport::Channel;
use tonic::Streaming;

use super::config::ClientConfig;
use super::pool::{NodeKey, Pool};
use super::stats::EjectReason;
use crate::v1::heartbeat_client::HeartbeatClient;
use crate::v1::{HeartbeatRequest, NodeHeartbeat};

/// A node's heartbeat cadence: what it reported, else the client's configured fallback.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cadence {
    interval: Duration,
    missed_limit: u32,
}

impl Cadence {
    pub(crate) fn new(config: &ClientConfig) -> Self {
        Self {
            interval: config.heartbeat_interval,
            missed_limit: config.missed_limit,
        }
    }

    /// Takes the node's own values; zero (an older node, or a bug) keeps the previous one.
    pub(crate) fn update(&mut self, heartbeat: &NodeHeartbeat) {
        if heartbeat.interval_ms > 0 {
            self.interval = Duration::from_millis(u64::from(heartbeat.interval_ms));
        }
        if heartbeat.missed_limit > 0 {
            self.missed_limit = heartbeat.missed_limit;
        }
    }

    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Silence after which the node counts as gone.
    pub(crate) fn lapse(&self) -> Duration {
        self.interval.saturating_mul(self.missed_limit)
    }
}

/// How reading one stream ended.
enum StreamEnd {
    /// The stream is gone; subscribe again after the backoff.
    Broken,
    /// The pool no longer knows this node; stop watching.
    Removed,
}

/// Watches `key`'s heartbeats until the pool drops the node (or the client aborts the task).
pub(crate) async fn watch(pool: Arc<Pool>, key: NodeKey, channel: Channel) {
    let config = Arc::clone(pool.config());
    let mut client = HeartbeatClient::new(channel);
    let mut cadence = Cadence::new(&config);
    let mut backoff = config.reconnect_backoff_min;
    loop {
        // Bounded: a subscribe to a black-holed address must not hang the watcher.
        let limit = config.connect_timeout.saturating_add(cadence.lapse());
        match timeout(limit, client.subscribe(HeartbeatRequest {})).await {
            Ok(Ok(response)) => {
                let mut stream = response.into_inner();
                let end = read(&pool, &key, &mut stream, &mut cadence, &mut backoff).await;
                if let StreamEnd::Removed = end {
                    return;
                }
            }
            Ok(Err(status)) => {
                let reason = EjectReason::Unreachable(status.message().to_owned());
                pool.eject(&key, reason, false);
            }
            Err(_) => {
                let reason = EjectReason::Unreachable(format!("no answer within {limit:?}"));
                pool.eject(&key, reason, false);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(config.reconnect_backoff_max);
    }
}

/// Reads one heartbeat stream until it breaks.
async fn read(
    pool: &Arc<Pool>,
    key: &NodeKey,
    stream: &mut Streaming<NodeHeartbeat>,
    cadence: &mut Cadence,
    backoff: &mut Duration,
) -> StreamEnd {
    let config = Arc::clone(pool.config());
    let mut lapsed = false;
    loop {
        let wait = if lapsed {
            config.resubscribe_after
        } else {
            cadence.lapse()
        };
        match timeout(wait, stream.message()).await {
            Ok(Ok(Some(heartbeat))) => {
                lapsed = false;
                *backoff = config.reconnect_backoff_min;
                cadence.update(&heartbeat);
                if !pool.on_heartbeat(key, heartbeat) {
                    return StreamEnd::Removed;
                }
            }
            Ok(Ok(None)) => {
                pool.eject(key, EjectReason::StreamEnded, false);
                return StreamEnd::Broken;
            }
            Ok(Err(status)) => {
                let reason = EjectReason::StreamFailed(status.message().to_owned());
                pool.eject(key, reason, false);
                return StreamEnd::Broken;
            }
            Err(_) if lapsed => {
                tracing::debug!(node = %key, "heartbeat stream still silent; subscribing again");
                return StreamEnd::Broken;
            }
            Err(_) => {
                pool.eject(key, EjectReason::Lapsed { silent_for: wait }, false);
                lapsed = true;
            }
        }
    }
}
