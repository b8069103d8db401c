//! `rankd.v1.Heartbeat/Subscribe`: this node's status as a stream, for failover clients.
//!
//! The first message goes out at once, then one per heartbeat interval, plus one at every
//! readiness change (so a draining node is left before its next tick). The stream ends when
//! the node shuts down, so it never holds the shutdown up. It is served outside the Rank
//! stack's concurrency limit: a thousand subscribed clients take no request slots.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use rankd_proto::v1::heartbeat_server::Heartbeat;
use rankd_proto::v1::{HeartbeatRequest, NodeHeartbeat};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::cluster::Cluster;
use crate::node_state::NodeState;

pub struct HeartbeatService {
    pub cluster: Arc<Cluster>,
    pub state: Arc<NodeState>,
}

impl HeartbeatService {
    fn snapshot(&self) -> NodeHeartbeat {
        let table = &self.cluster.peer_table;
        let membership = self.cluster.metrics().membership_config;
        let members = membership
            .nodes()
            .map(|(_, n)| n.api_addr.clone())
            .collect();
        let degraded = table.degraded();
        let degraded = membership
            .nodes()
            .filter(|(id, _)| degraded.contains_key(id))
            .map(|(_, n)| n.api_addr.clone())
            .collect();
        let up = table.up_ids().iter().map(ToString::to_string).collect();
        let mut hb = self.state.client_heartbeat(
            u32::try_from(table.interval().as_millis()).unwrap_or(u32::MAX),
            table.missed(),
            members,
            up,
        );
        hb.degraded = degraded;
        hb
    }
}

type HeartbeatStream = Pin<Box<dyn Stream<Item = Result<NodeHeartbeat, Status>> + Send>>;

#[tonic::async_trait]
impl Heartbeat for HeartbeatService {
    type SubscribeStream = HeartbeatStream;

    async fn subscribe(
        &self,
        _: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let me = HeartbeatService {
            cluster: self.cluster.clone(),
            state: self.state.clone(),
        };
        let mut closing = self.state.closing();
        let mut changes = self.state.changes();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.cluster.peer_table.interval());
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                if *closing.borrow() {
                    return;
                }
                // A client that stopped reading gets no backlog: it would only be stale.
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Ok(me.snapshot())) {
                    return;
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    res = changes.changed() => if res.is_err() { return },
                    _ = closing.changed() => return,
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
