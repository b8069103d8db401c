//! `InjectFault`: checks the request, sets or clears this node's drill fault, and says what
//! is in force.

use std::time::{Duration, Instant};

use rankd_proto::admin::v1 as pb;
use tonic::Status;

use crate::fault::{Fault, FaultInjector};

/// The longest delay a drill may add: beyond it every client deadline has long passed.
const MAX_LATENCY_MS: u32 = 60_000;
const MAX_DURATION_S: u32 = 86_400;

pub fn inject(
    injector: &FaultInjector,
    node_id: &str,
    r: &pb::InjectFaultRequest,
) -> Result<pb::InjectFaultResponse, Status> {
    if r.clear {
        injector.set(None);
        tracing::warn!("drill fault cleared on this node");
    } else {
        if !(0.0..=1.0).contains(&r.error_ratio) {
            return Err(Status::invalid_argument(format!(
                "error_ratio {} must be within 0..=1",
                r.error_ratio
            )));
        }
        if r.latency_ms > MAX_LATENCY_MS {
            return Err(Status::invalid_argument(format!(
                "latency_ms {} is above the limit of {MAX_LATENCY_MS}",
                r.latency_ms
            )));
        }
        if r.duration_s > MAX_DURATION_S {
            return Err(Status::invalid_argument(format!(
                "duration_s {} is above the limit of {MAX_DURATION_S} (a day)",
                r.duration_s
            )));
        }
        if r.latency_ms == 0 && r.error_ratio == 0.0 {
            return Err(Status::invalid_argument(
                "a fault needs latency_ms or error_ratio; use clear to remove one",
            ));
        }
        injector.set(Some(Fault {
            latency: Duration::from_millis(u64::from(r.latency_ms)),
            error_ratio: r.error_ratio,
            until: (r.duration_s > 0)
                .then(|| Instant::now() + Duration::from_secs(u64::from(r.duration_s))),
        }));
        tracing::warn!(
            latency_ms = r.latency_ms,
            error_ratio = r.error_ratio,
            duration_s = r.duration_s,
            "DRILL: fault injected on this node; its Rank calls are slowed or failed on purpose"
        );
    }
    let now = injector.current();
    Ok(pb::InjectFaultResponse {
        node_id: node_id.to_string(),
        latency_ms: now.map_or(0, |f| {
            u32::try_from(f.latency.as_millis()).unwrap_or(u32::MAX)
        }),
        error_ratio: now.map_or(0.0, |f| f.error_ratio),
        remaining_s: now.and_then(|f| f.until).map_or(0, |u| {
            u32::try_from(u.saturating_duration_since(Instant::now()).as_secs()).unwrap_or(u32::MAX)
        }),
        active: now.is_some(),
    })
}
