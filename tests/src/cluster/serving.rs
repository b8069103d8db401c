//! Clients and what the nodes report: cluster status and leadership, Rank answers and
//! health, and waits on them.

use std::time::Duration;

use rankd_proto::admin::v1::admin_client::AdminClient;
use rankd_proto::admin::v1::{ClusterStatus, ClusterStatusRequest, Fence, NodeStatus};
use rankd_proto::client::{ClientConfig, FailoverClient};
use rankd_proto::v1::ranker_client::RankerClient;
use rankd_proto::v1::{RankRequest, RankResponse};
use tonic::transport::Channel;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::{Cluster, ELECTION_TIMEOUT, LOAD_TIMEOUT, RPC_TIMEOUT};
use crate::{rank_request, wait_for};

impl Cluster {
    // --- clients

    /// A plain channel to node `id`'s client port (connects on first use).
    pub fn channel(&self, id: u64) -> Channel {
        self.node(id)
            .endpoint_config()
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy()
    }

    /// Whether node `on` counts `peer` up, from its own `rankd_peer_up` gauge; `None` before
    /// it tracks the peer.
    pub async fn peer_up(&self, on: u64, peer: u64) -> Option<bool> {
        self.node(on)
            .metric_value(&format!("rankd_peer_up{{peer=\"{peer}\"}}"))
            .await
            .map(|v| v == 1.0)
    }

    /// Every member's client address (running or not): what a frontend would be configured
    /// with.
    pub fn api_addrs(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, m)| !m.removed)
            .filter_map(|(_, m)| m.grpc_addr.map(|a| a.to_string()))
            .collect()
    }

    /// A failover client over every member, waiting until `healthy` nodes are in its
    /// balancer.
    pub async fn failover_client(&self, config: ClientConfig, healthy: usize) -> FailoverClient {
        let client = FailoverClient::connect(self.api_addrs(), config)
            .await
            .expect("a failover client");
        assert!(
            client.wait_healthy(healthy, LOAD_TIMEOUT).await,
            "the failover client saw fewer than {healthy} healthy nodes: {:?}",
            client.nodes()
        );
        client
    }

    /// The example query as a Rank request for the top 5.
    pub fn example_request(&self) -> RankRequest {
        rank_request(&self.query.query, &self.query.candidates, 5)
    }

    /// An Admin client for node `id` (connects on first use).
    pub async fn admin(&self, id: u64) -> AdminClient<Channel> {
        AdminClient::new(self.channel(id))
    }

    /// GetClusterStatus on node `id`, bounded by [`RPC_TIMEOUT`].
    pub async fn try_status(&self, id: u64) -> Result<ClusterStatus, Status> {
        let mut req = tonic::Request::new(ClusterStatusRequest {});
        req.set_timeout(RPC_TIMEOUT);
        self.admin(id)
            .await
            .get_cluster_status(req)
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn status(&self, id: u64) -> ClusterStatus {
        self.try_status(id)
            .await
            .unwrap_or_else(|s| panic!("GetClusterStatus on node {id}: {s:?}"))
    }

    /// The leader as the first live node that names one sees it, if any does.
    pub async fn leader_id(&self) -> Option<u64> {
        for id in self.live_ids() {
            if let Ok(st) = self.try_status(id).await {
                if st.leader_id != 0 {
                    return Some(st.leader_id);
                }
            }
        }
        None
    }

    /// Waits until some live node names a leader.
    pub async fn wait_leader(&self) -> u64 {
        wait_for("a leader", ELECTION_TIMEOUT, || async {
            self.leader_id()
                .await
                .ok_or_else(|| "no live node names a leader".to_string())
        })
        .await
    }

    /// Waits until every node in `on` names the same leader, other than `not`; returns it.
    pub async fn wait_new_leader(&self, on: &[u64], not: u64) -> u64 {
        wait_for(
            &format!("nodes {on:?} to agree on a leader other than {not}"),
            ELECTION_TIMEOUT,
            || async {
                let mut seen = Vec::new();
                for &id in on {
                    let st = self.try_status(id).await;
                    seen.push(st.map(|s| s.leader_id).map_err(|s| s.code()));
                }
                match seen.first() {
                    Some(Ok(l)) if *l != 0 && *l != not && seen.iter().all(|s| s == &Ok(*l)) => {
                        Ok(*l)
                    }
                    _ => Err(format!("leaders seen: {seen:?}")),
                }
            },
        )
        .await
    }

    // --- serving

    /// Ranks the example query on node `id`, bounded by [`RPC_TIMEOUT`].
    pub async fn rank(&self, id: u64) -> Result<RankResponse, Status> {
        let mut req =
            tonic::Request::new(rank_request(&self.query.query, &self.query.candidates, 5));
        req.set_timeout(RPC_TIMEOUT);
        RankerClient::new(self.channel(id))
            .rank(req)
            .await
            .map(tonic::Response::into_inner)
    }

    /// grpc.health.v1 `Check("")` on node `id`.
    pub async fn health(&self, id: u64) -> Result<ServingStatus, Status> {
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        req.set_timeout(RPC_TIMEOUT);
        let resp = HealthClient::new(self.channel(id)).check(req).await?;
        Ok(resp.into_inner().status())
    }

    /// What node `id` serves itself: its Rank answer (when node `id` ran the model, not a
    /// peer it forwarded to) and its health. `Ok(fence)` only when SERVING.
    pub async fn serving_fence(&self, id: u64) -> Result<rankd_proto::v1::Fence, String> {
        let health = self
            .health(id)
            .await
            .map_err(|s| format!("health: {s:?}"))?;
        let resp = self.rank(id).await.map_err(|s| format!("rank: {s:?}"))?;
        let name = self.node(id).id();
        if resp.node_id != name {
            return Err(format!("rank answered by {} (forwarded)", resp.node_id));
        }
        if health != ServingStatus::Serving {
            return Err(format!("health {health:?}, fence {:?}", resp.fence));
        }
        resp.fence
            .ok_or_else(|| "a Rank response without a fence".into())
    }

    /// Waits until node `id` itself serves `fence` (version, term and index) and reports
    /// SERVING.
    pub async fn wait_serving_fence(&self, id: u64, fence: &Fence) {
        wait_for(
            &format!("node {id} serving {fence:?}"),
            LOAD_TIMEOUT,
            || async {
                let f = self.serving_fence(id).await?;
                if same_fence(&f, fence) {
                    Ok(())
                } else {
                    Err(format!("serving {f:?}"))
                }
            },
        )
        .await;
    }

    /// [`wait_serving_fence`](Self::wait_serving_fence) on every live member.
    pub async fn wait_all_serving(&self, fence: &Fence) {
        for id in self.live_ids() {
            self.wait_serving_fence(id, fence).await;
        }
    }
}

/// Node `id`'s entry in a cluster status.
pub fn node_status(st: &ClusterStatus, id: u64) -> Option<&NodeStatus> {
    st.nodes.iter().find(|n| n.id == id)
}

/// Whether a Rank fence names the same activation as an admin fence.
pub fn same_fence(rank: &rankd_proto::v1::Fence, admin: &Fence) -> bool {
    rank.model_version == admin.model_version
        && rank.term == admin.term
        && rank.index == admin.index
}
