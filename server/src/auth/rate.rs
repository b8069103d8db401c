//! Per-client rate limits: a token bucket per client identity, in front of a surface.
//!
//! The identity is the verified client certificate's subject, else the source IP (IPv6 by
//! its /64, which one host can fill with addresses). Not the bearer token: the limit runs
//! before the token is checked, and an unchecked value would let a client pick a fresh
//! bucket per call. A client over its rate gets RESOURCE_EXHAUSTED at once; nothing
//! queues. Each bucket holds one second of calls, so a client may burst to its rate after
//! being idle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::Request;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::Status;

use crate::metrics::{Metrics, SurfaceLabel};
use crate::stack::guard::Check;
use crate::tls::ConnInfo;

/// Most buckets kept. When the table is full, idle (refilled) buckets are swept at most
/// once a second, and clients that still find no room share one overflow bucket: memory
/// stays bounded and a flood of addresses is limited as one client.
const MAX_CLIENTS: usize = 65_536;
const OVERFLOW: &str = "overflow";

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets for one surface.
#[derive(Debug)]
pub struct RateLimiter {
    surface: &'static str,
    per_second: f64,
    buckets: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    map: HashMap<String, Bucket>,
    last_sweep: Option<Instant>,
}

impl RateLimiter {
    pub fn new(surface: &'static str, per_second: u32) -> RateLimiter {
        RateLimiter {
            surface,
            per_second: f64::from(per_second),
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    /// Takes one call from `client`'s bucket; false when it is empty.
    pub fn admit(&self, client: &str) -> bool {
        let now = Instant::now();
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Buckets { map, last_sweep } = &mut *guard;
        let mut key = client;
        if map.len() >= MAX_CLIENTS && !map.contains_key(client) {
            if last_sweep.is_none_or(|t| now.duration_since(t).as_secs() >= 1) {
                let rate = self.per_second;
                map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < rate);
                *last_sweep = Some(now);
            }
            if map.len() >= MAX_CLIENTS {
                key = OVERFLOW;
            }
        }
        let b = map.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.per_second,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.per_second;
        b.tokens = (b.tokens + refill).min(self.per_second);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Who a call is from, for rate limiting.
pub fn client_key<B>(req: &Request<B>) -> String {
    let conn = req.extensions().get::<ConnInfo>();
    if let Some(id) = conn.and_then(ConnInfo::client_identity) {
        return format!("cert:{id}");
    }
    match conn.and_then(|c| c.remote).map(|a| a.ip()) {
        Some(std::net::IpAddr::V6(ip)) if ip.to_ipv4_mapped().is_none() => {
            let s = ip.segments();
            format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(ip) => format!("ip:{}", ip.to_canonical()),
        None => "unknown".into(),
    }
}

/// The rate limit as an admission check; `limiter: None` passes every call through (the
/// limit is configured off).
#[derive(Clone)]
pub struct RateLimit {
    pub limiter: Option<Arc<RateLimiter>>,
    pub metrics: Arc<Metrics>,
}

impl RateLimit {
    /// `per_second` 0 means unlimited.
    pub fn new(surface: &'static str, per_second: u32, metrics: Arc<Metrics>) -> RateLimit {
        RateLimit {
            limiter: (per_second > 0).then(|| Arc::new(RateLimiter::new(surface, per_second))),
            metrics,
        }
    }
}

impl Check for RateLimit {
    fn check(&self, req: &mut Request<Body>) -> Result<(), Status> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let client = client_key(req);
        if limiter.admit(&client) {
            return Ok(());
        }
        self.metrics
            .auth
            .rate_limited
            .get_or_create(&SurfaceLabel {
                surface: limiter.surface,
            })
            .inc();
        Err(Status::resource_exhausted(format!(
            "rate limit: this client ({client}) may make {} {} calls per second",
            limiter.per_second, limiter.surface
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::RateLimiter;

    #[tokio::test(start_paused = true)]
    async fn each_client_gets_its_own_bucket_that_refills() {
        let l = RateLimiter::new("rank", 3);
        assert!((0..3).all(|_| l.admit("ip:10.0.0.1")));
        assert!(!l.admit("ip:10.0.0.1"), "the fourth call within a second");
        assert!(l.admit("ip:10.0.0.2"), "another client is not affected");
        tokio::time::advance(Duration::from_millis(340)).await;
        assert!(
            l.admit("ip:10.0.0.1"),
            "a third of a second refills one call"
        );
        assert!(!l.admit("ip:10.0.0.1"));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            (0..3).all(|_| l.admit("ip:10.0.0.1")),
            "idle refills to the burst"
        );
        assert!(!l.admit("ip:10.0.0.1"), "but not beyond it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_clients_shares_one_overflow_bucket_once_the_table_is_full() {
        let l = RateLimiter::new("rank", 2);
        for i in 0..(super::MAX_CLIENTS + 5_000) {
            l.admit(&format!("ip:{i}"));
        }
        let len = l.buckets.lock().expect("lock").map.len();
        assert!(len <= super::MAX_CLIENTS + 1, "{len} buckets");
        assert!(
            !l.admit("ip:brand-new"),
            "newcomers share the drained overflow bucket"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(
            l.admit("ip:brand-new"),
            "idle buckets are swept, room again"
        );
    }
}
