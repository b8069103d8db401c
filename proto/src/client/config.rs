//! [`ClientConfig`]: every knob of the failover client, with defaults sized for a rankd
//! cluster on one network (heartbeats every 100 ms, Rank answered in milliseconds).

use std::time::Duration;

use super::error::ClientError;

/// How the failover client connects, watches, balances, retries and hedges.
///
/// `ClientConfig::default()` is a working configuration; [`ClientConfig::validate`] (run by
/// `FailoverClient::connect`) rejects combinations that cannot work.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Deadline of a [`rank`](super::FailoverClient::rank) call, retries and hedges
    /// included. Default 1 s, the server's own default request timeout: a call that cannot
    /// finish by then would be cut off by the server anyway.
    pub default_deadline: Duration,
    /// Limit on opening a TCP connection to a node. Default 1 s: a node on the same network
    /// answers a SYN in well under a millisecond, so anything slower is a dead address.
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval on each node's connection, also while idle. Default 2 s. The
    /// heartbeat stream ejects a silent node long before this; keepalive exists to tear down a
    /// connection whose peer vanished without a FIN, so that reconnecting can start.
    pub http2_keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is dropped. Default 1 s.
    pub http2_keepalive_timeout: Duration,
    /// Heartbeat interval assumed for a node until it reports its own `interval_ms`.
    /// Default 100 ms, the server's default.
    pub heartbeat_interval: Duration,
    /// Silent intervals after which a node counts as gone, until it reports its own
    /// `missed_limit`. Default 3, the server's default, so a node lapses after ~300 ms.
    pub missed_limit: u32,
    /// After a lapse the stream is kept (the node may only be stalled, and a heartbeat on the
    /// same stream re-admits it at once); it is re-subscribed when it stays silent this much
    /// longer. Default 1 s.
    pub resubscribe_after: Duration,
    /// First delay before re-subscribing to a broken heartbeat stream. Default 50 ms; it
    /// doubles per failed try up to [`reconnect_backoff_max`](Self::reconnect_backoff_max)
    /// and resets on the next heartbeat.
    pub reconnect_backoff_min: Duration,
    /// Ceiling of the re-subscribe delay. Default 1 s: a restarted node is found within a
    /// second without hammering an address that is down.
    pub reconnect_backoff_max: Duration,
    /// Learn further nodes from the `members` list of heartbeats, so one address is enough
    /// to find the whole cluster. Default true.
    pub discover_members: bool,
    /// How long a node that answered RESOURCE_EXHAUSTED (queue full) stays out of the
    /// balancer. Default 100 ms, one default heartbeat interval: long enough for its queue
    /// to drain a little, short enough not to waste a healthy node.
    pub overload_cooldown: Duration,
    /// Most attempts one call makes, the first one, retries and hedges together. Default 3.
    pub max_attempts: u32,
    /// A retry is started only while at least this much of the deadline is left; with less
    /// the last error is returned. Default 5 ms: less than that cannot cover a round trip
    /// plus inference.
    pub min_retry_time: Duration,
    /// Limits retries and hedges to a share of calls; see [`RetryBudgetConfig`].
    pub retry_budget: RetryBudgetConfig,
    /// Hedging of slow calls; off (`None`) by default, because a hedge doubles the work a
    /// slow call costs the cluster.
    pub hedge: Option<HedgeConfig>,
    /// TLS for every node connection (a CA to trust, and a client identity for mutual
    /// TLS); `None`, the default, connects in plaintext, which only a node running
    /// `tls.mode = "insecure-dev"` accepts.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// Latency a node is assumed to have before it has answered anything (the peak-EWMA
    /// starting point). Default 10 ms.
    pub default_rtt: Duration,
    /// Time constant over which the peak-EWMA latency estimate forgets a slow answer.
    /// Default 2 s. A node's estimate jumps to a slow answer at once and falls back over
    /// about `ewma_decay × ln(slow / normal)`, so one 10× slow call (a node's first after a
    /// restart) keeps it out of most picks for ~5 s; the common 10 s would sideline it for
    /// ~23 s, a long time in a cluster of three.
    pub ewma_decay: Duration,
    /// Calls that may wait for the balancer at once (the `tower::buffer::Buffer` bound);
    /// further callers wait for a slot. Default 1024.
    pub buffer_capacity: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            default_deadline: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            http2_keepalive_interval: Duration::from_secs(2),
            http2_keepalive_timeout: Duration::from_secs(1),
            heartbeat_interval: Duration::from_millis(100),
            missed_limit: 3,
            resubscribe_after: Duration::from_secs(1),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(1),
            discover_members: true,
            overload_cooldown: Duration::from_millis(100),
            max_attempts: 3,
            min_retry_time: Duration::from_millis(5),
            retry_budget: RetryBudgetConfig::default(),
            hedge: None,
            tls: None,
            default_rtt: Duration::from_millis(10),
            ewma_decay: Duration::from_secs(2),
            buffer_capacity: 1024,
        }
    }
}

/// The retry budget (`tower::retry::budget::TpsBudget`): each call deposits, each retry or
/// hedge withdraws. It keeps a sick cluster from being buried under retries: when most calls
/// fail, at most `ratio` of them (plus the floor) are tried again.
#[derive(Clone, Debug)]
pub struct RetryBudgetConfig {
    /// Retries allowed per call, averaged over [`ttl`](Self::ttl). Default 0.2: at most one
    /// call in five is retried or hedged once the floor is spent.
    pub ratio: f32,
    /// Retries per second always allowed, whatever the call rate; a client that has only
    /// just started still gets retries. Default 10.
    pub min_per_sec: u32,
    /// How long a deposit counts. Default 10 s; `TpsBudget` accepts 1 s to 60 s.
    pub ttl: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_sec: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

/// Hedging: when the first attempt of a call is still unanswered after a delay, a second one
/// is sent to another node; the first success wins and the other attempt is cancelled.
#[derive(Clone, Debug)]
pub struct HedgeConfig {
    /// When to send the hedge.
    pub delay: HedgeDelay,
}

/// The delay before a call is hedged.
#[derive(Clone, Debug)]
pub enum HedgeDelay {
    /// Always this long after the call started.
    Fixed(Duration),
    /// The `quantile` (e.g. 0.95) of the latencies of this client's recent successful
    /// attempts, so roughly `1 - quantile` of calls are hedged. Until `min_samples`
    /// latencies are known, `fallback` is used; the result is never below `floor`, so a
    /// burst of very fast answers cannot make every call hedge.
    Percentile {
        quantile: f64,
        min_samples: usize,
        fallback: Duration,
        floor: Duration,
    },
}

impl HedgeDelay {
    /// p95 of recent latencies, 10 ms until 20 samples exist, never under 1 ms.
    pub fn p95() -> Self {
        HedgeDelay::Percentile {
            quantile: 0.95,
            min_samples: 20,
            fallback: Duration::from_millis(10),
            floor: Duration::from_millis(1),
        }
    }
}

impl ClientConfig {
    /// Checks that the settings can work together. `FailoverClient::connect` calls it.
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad = |field: &'static str, reason: String| Err(ClientError::Config { field, reason });
        let positive: [(&'static str, Duration); 9] = [
            ("default_deadline", self.default_deadline),
            ("connect_timeout", self.connect_timeout),
            ("http2_keepalive_interval", self.http2_keepalive_interval),
            ("http2_keepalive_timeout", self.http2_keepalive_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("resubscribe_after", self.resubscribe_after),
            ("reconnect_backoff_min", self.reconnect_backoff_min),
            ("default_rtt", self.default_rtt),
            ("ewma_decay", self.ewma_decay),
        ];
        for (field, value) in positive {
            if value.is_zero() {
                return bad(field, "must be greater than zero".into());
            }
        }
        if self.reconnect_backoff_max < self.reconnect_backoff_min {
            return bad(
                "reconnect_backoff_max",
                "must be at least reconnect_backoff_min".into(),
            );
        }
        if self.missed_limit == 0 {
            return bad("missed_limit", "must be at least 1".into());
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1".into());
        }
        if self.buffer_capacity == 0 {
            return bad("buffer_capacity", "must be at least 1".into());
        }
        if self.min_retry_time >= self.default_deadline {
            return bad(
                "min_retry_time",
                "must be shorter than default_deadline".into(),
            );
        }
        let budget = &self.retry_budget;
        if !(0.0..=1.0).contains(&budget.ratio) {
            return bad(
                "retry_budget.ratio",
                format!("{} is not in [0, 1]", budget.ratio),
            );
        }
        if budget.ttl < Duration::from_secs(1) || budget.ttl > Duration::from_secs(60) {
            return bad("retry_budget.ttl", "must be between 1 s and 60 s".into());
        }
        if budget.min_per_sec >= i32::MAX as u32 {
            return bad("retry_budget.min_per_sec", "is too large".into());
        }
        if let Some(hedge) = &self.hedge {
            let (delay, field) = match &hedge.delay {
                HedgeDelay::Fixed(delay) => (*delay, "hedge.delay"),
                HedgeDelay::Percentile {
                    quantile,
                    fallback,
                    floor,
                    ..
                } => {
                    if !(*quantile > 0.0 && *quantile < 1.0) {
                        return bad(
                            "hedge.delay.quantile",
                            format!("{quantile} is not in (0, 1)"),
                        );
                    }
                    if floor > fallback {
                        return bad(
                            "hedge.delay.floor",
                            "must not exceed the fallback delay".into(),
                        );
                    }
                    (*fallback, "hedge.delay.fallback")
                }
            };
            if delay.is_zero() || delay >= self.default_deadline {
                return bad(
                    field,
                    "must be greater than zero and shorter than default_deadline".into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(config: &ClientConfig) -> Option<&'static str> {
        match config.validate() {
            Err(ClientError::Config { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert!(ClientConfig::default().validate().is_ok());
        let hedged = ClientConfig {
            hedge: Some(HedgeConfig {
                delay: HedgeDelay::p95(),
            }),
            ..ClientConfig::default()
        };
        assert!(hedged.validate().is_ok());
    }

    #[test]
    fn rejects_impossible_settings() {
        let zero_deadline = ClientConfig {
            default_deadline: Duration::ZERO,
            ..ClientConfig::default()
        };
        assert_eq!(field_of(&zero_deadline), Some("default_deadline"));

        let mut ratio = ClientConfig::default();
        ratio.retry_budget.ratio = 1.5;
        assert_eq!(field_of(&ratio), Some("retry_budget.ratio"));
        ratio.retry_budget.ratio = f32::NAN;
        assert_eq!(field_of(&ratio), Some("retry_budget.ratio"));

        let mut ttl = ClientConfig::default();
        ttl.retry_budget.ttl = Duration::from_millis(500);
        assert_eq!(field_of(&ttl), Some("retry_budget.ttl"));

        let late_hedge = ClientConfig {
            hedge: Some(HedgeConfig {
                delay: HedgeDelay::Fixed(Duration::from_secs(1)),
            }),
            ..ClientConfig::default()
        };
        assert_eq!(field_of(&late_hedge), Some("hedge.delay"));

        let quantile = ClientConfig {
            hedge: Some(HedgeConfig {
                delay: HedgeDelay::Percentile {
                    quantile: 1.0,
                    min_samples: 1,
                    fallback: Duration::from_millis(5),
                    floor: Duration::from_millis(1),
                },
            }),
            ..ClientConfig::default()
        };
        assert_eq!(field_of(&quantile), Some("hedge.delay.quantile"));

        let backoff = ClientConfig {
            reconnect_backoff_max: Duration::from_millis(10),
            ..ClientConfig::default()
        };
        assert_eq!(field_of(&backoff), Some("reconnect_backoff_max"));

        let attempts = ClientConfig {
            max_attempts: 0,
            ..ClientConfig::default()
        };
        assert_eq!(field_of(&attempts), Some("max_attempts"));
    }
}
