//! Read-only views of the node table: picking a node for a retry or hedge, and what
//! callers and error messages see.

use tokio::time::Instant;
use tower::load::Load;
use tower::util::rng::Rng;

use super::{NodeKey, Pool};
use crate::client::service::Balanced;
use crate::client::stats::{EjectReason, NodeInfo};
use crate::v1::Fence;

impl Pool {
    /// Power of two choices on peak-EWMA load among the balanced nodes not in `exclude`:
    /// the same rule `Balance` applies, for attempts that must avoid nodes.
    pub(crate) fn try_pick(&self, exclude: &[NodeKey]) -> Option<(NodeKey, Balanced)> {
        let mut state = self.lock();
        let candidates: Vec<(NodeKey, Balanced)> = state
            .nodes
            .iter()
            .filter(|(key, node)| node.in_balancer && !exclude.contains(key))
            .map(|(key, node)| (key.clone(), node.service.clone()))
            .collect();
        let (a, b) = match candidates.len() {
            0 => return None,
            1 => (0, 0),
            len => {
                let len = len as u64;
                let a = state.rng.next_range(0..len);
                let b = (a + 1 + state.rng.next_range(0..len - 1)) % len;
                (a as usize, b as usize)
            }
        };
        drop(state); // reading a load takes the node's meter lock; never under the table's
        let chosen = if a != b && candidates[b].1.load() < candidates[a].1.load() {
            b
        } else {
            a
        };
        candidates.into_iter().nth(chosen)
    }

    /// Whether some node not in `exclude` is known at all (healthy or not): if none is,
    /// waiting for one to become pickable is pointless.
    pub(crate) fn has_untried(&self, exclude: &[NodeKey]) -> bool {
        self.lock().nodes.keys().any(|key| !exclude.contains(key))
    }

    /// Why `key` is ejected, if it is (a cooldown is not an ejection: the node is healthy,
    /// only busy).
    pub(crate) fn ejection_of(&self, key: &NodeKey) -> Option<EjectReason> {
        self.lock().nodes.get(key).and_then(|n| n.ejection.clone())
    }

    /// Nodes in the balancer now.
    pub(crate) fn healthy_count(&self) -> usize {
        self.lock().nodes.values().filter(|n| n.in_balancer).count()
    }

    /// Every known address, sorted, for error messages.
    pub(crate) fn addresses(&self) -> Vec<String> {
        let mut addresses: Vec<String> = self.lock().nodes.keys().map(|k| k.to_string()).collect();
        addresses.sort();
        addresses
    }

    pub(crate) fn snapshot(&self) -> Vec<NodeInfo> {
        let now = Instant::now();
        let state = self.lock();
        let mut nodes: Vec<NodeInfo> = state
            .nodes
            .iter()
            .map(|(key, node)| {
                let last = node.last.as_ref();
                let hb = last.map(|(_, hb)| hb);
                NodeInfo {
                    address: key.to_string(),
                    origin: node.origin,
                    node_id: hb.map(|hb| hb.node_id.clone()).filter(|id| !id.is_empty()),
                    healthy: node.in_balancer,
                    ejection: node.ejection.clone(),
                    cooling_down: node.cooldown_until.is_some_and(|t| now < t),
                    last_heartbeat_age: last.map(|(at, _)| now.saturating_duration_since(*at)),
                    fence: hb
                        .and_then(|hb| hb.fence.clone())
                        .filter(|f| *f != Fence::default()),
                    queue_depth: hb.map_or(0, |hb| hb.queue_depth),
                    queue_capacity: hb.map_or(0, |hb| hb.queue_capacity),
                    in_flight: hb.map_or(0, |hb| hb.in_flight),
                    degraded: node.degraded,
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.address.cmp(&b.address));
        nodes
    }

    /// Whether `address` was dropped as a second name of a known node.
    #[cfg(test)]
    pub(crate) fn is_alias(&self, address: &str) -> bool {
        self.lock().aliases.iter().any(|alias| &**alias == address)
    }
}
