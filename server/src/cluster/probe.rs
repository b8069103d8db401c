//! Probe calls to degraded peers.
//!
//! Clients stop calling a node once it is degraded (and a latency-aware balancer stops even
//! sooner). Without calls, its window of recent calls empties, and it can be judged neither
//! still slow nor recovered: the verdict would lapse while the fault is still there. So every
//! node sends each peer it judges degraded `outlier.probe_per_s` Rank calls a second over the
//! peer port, with a case from the active version's golden set. They take the same path as a
//! user's call (fault injection included), so the peer's window holds fresh evidence either
//! way: it stays degraded while it is slow, and clears once it is not.
//!
//! Probes carry [`PROBE_HEADER`], so their scores stay out of the version's score statistics
//! and drift baseline, and [`FORWARDED_HEADER`], so the peer never passes them on. At most
//! [`IN_FLIGHT`] probes per peer are in flight, so a slow peer still gets its rate (a call
//! may take longer than the interval between probes) and a hung one ties up a few tasks,
//! never a pile.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rankd_proto::v1::ranker_client::RankerClient;
use rankd_proto::v1::RankRequest;
use rankd_raft::NodeId;
use tokio::task::JoinHandle;
use tonic::metadata::MetadataValue;

use super::{Cluster, FORWARDED_HEADER};
use crate::metrics::ProbeLabels;
use crate::service::PROBE_HEADER;

/// A probe gives up after this long; a slower answer is a failed call on the peer anyway.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Probes in flight to one peer at most.
const IN_FLIGHT: usize = 8;

/// Probes degraded peers until `stop` changes.
pub async fn run(cluster: Arc<Cluster>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let rate = cluster.outlier.probe_per_s;
    if rate == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut in_flight: HashMap<NodeId, Vec<JoinHandle<()>>> = HashMap::new();
    let mut next_case = 0usize;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        for calls in in_flight.values_mut() {
            calls.retain(|h| !h.is_finished());
        }
        in_flight.retain(|_, calls| !calls.is_empty());
        let peers: Vec<NodeId> = cluster
            .peer_table
            .degraded()
            .into_keys()
            .filter(|id| *id != cluster.id)
            .filter(|id| in_flight.get(id).is_none_or(|c| c.len() < IN_FLIGHT))
            .collect();
        if peers.is_empty() {
            continue;
        }
        let Some(req) = probe_request(&cluster, next_case) else {
            continue;
        };
        next_case = next_case.wrapping_add(1);
        for id in peers {
            let Ok(channel) = cluster.peer_channel(id) else {
                continue;
            };
            let mut request = tonic::Request::new(req.clone());
            request.set_timeout(PROBE_TIMEOUT);
            let me = MetadataValue::from(cluster.id);
            request.metadata_mut().insert(FORWARDED_HEADER, me.clone());
            request.metadata_mut().insert(PROBE_HEADER, me);
            let metrics = cluster.local.metrics().clone();
            let probe = async move {
                let mut client = RankerClient::new(channel);
                let call = client.rank(request);
                let result = match tokio::time::timeout(PROBE_TIMEOUT, call).await {
                    Ok(Ok(_)) => "ok",
                    Ok(Err(status)) => {
                        tracing::debug!(peer = id, error = %status, "probe failed");
                        "error"
                    }
                    Err(_) => {
                        tracing::debug!(peer = id, "probe timed out");
                        "timeout"
                    }
                };
                let peer = id.to_string();
                metrics
                    .peers
                    .probes
                    .get_or_create(&ProbeLabels { peer, result })
                    .inc();
            };
            in_flight.entry(id).or_default().push(tokio::spawn(probe));
        }
    }
    for h in in_flight.into_values().flatten() {
        h.abort();
    }
}

/// Case `n` (cycling) of the active version's golden set as a Rank request; `None` when
/// this node serves nothing or its version has no golden set.
fn probe_request(cluster: &Cluster, n: usize) -> Option<RankRequest> {
    let model = cluster.local.slot().current()?;
    let golden = model.golden.as_ref()?;
    let cases = &golden.set.cases;
    let case = cases.get(n % cases.len().max(1))?;
    Some(RankRequest {
        request_id: format!("probe-{}-{n}", cluster.id),
        query: case.query.clone(),
        candidate_ids: case.candidates.clone(),
        top_k: u32::try_from(case.top_k).unwrap_or(u32::MAX),
    })
}
