//! The node table: every node the client knows, whether it may take calls, and the one
//! place that admits nodes to the balancer and ejects them from it.
//!
//! Invariant: a node is in the balancer (an `Insert` was the last change sent for it) exactly
//! when it is admitted and not cooling down. State changes and the `Insert`/`Remove` they
//! cause happen under one lock, so the balancer sees changes in the order they were made.
//! A node is admitted only by a heartbeat with `serving = true`; everything else ejects.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tower::discover::Change;
use tower::util::rng::HasherRng;

use super::config::ClientConfig;
use super::error::ClientError;
use super::instant_after;
use super::node::{self, Cadence};
use super::service::{Balanced, Discovery, NodeService};
use super::stats::{bump, Counters, EjectReason, NodeOrigin};
use super::targets::parse_address;
use crate::v1::NodeHeartbeat;

pub(crate) use super::service::NodeKey;

mod view;

/// What the client knows about one node.
struct Node {
    origin: NodeOrigin,
    service: Balanced,
    watcher: Option<JoinHandle<()>>,
    /// `None` while admitted.
    ejection: Option<EjectReason>,
    ever_admitted: bool,
    /// After a Rank call ejected it, a serving heartbeat re-admits it only from then on, so a
    /// node whose stream still says "serving" is not let straight back in.
    readmit_after: Option<Instant>,
    /// Resting after RESOURCE_EXHAUSTED until then.
    cooldown_until: Option<Instant>,
    in_balancer: bool,
    cadence: Cadence,
    last: Option<(Instant, NodeHeartbeat)>,
    /// Some serving node's heartbeat names it degraded (a gray failure): out of the
    /// balancer while another node can take the calls.
    degraded: bool,
}

struct PoolState {
    nodes: HashMap<NodeKey, Node>,
    /// Member addresses found to be a second name of a node already known: never re-added.
    aliases: HashSet<NodeKey>,
    rng: HasherRng,
    closed: bool,
}

/// The node table; shared by the client, the heartbeat watchers and the DNS task.
pub(crate) struct Pool {
    config: Arc<ClientConfig>,
    counters: Arc<Counters>,
    discovery: Discovery,
    /// Bumped whenever the balancer's set or the node list changes; callers waiting for a
    /// node to pick wait on it.
    changed: watch::Sender<u64>,
    state: Mutex<PoolState>,
}

impl Node {
    fn routable(&self) -> bool {
        self.ejection.is_none() && self.cooldown_until.is_none() && !self.degraded
    }

    fn eject(&mut self, key: &NodeKey, reason: EjectReason, counters: &Counters) {
        if self.ejection.is_none() {
            bump(&counters.ejections);
            tracing::warn!(node = %key, %reason, "rankd node ejected");
        } else {
            tracing::debug!(node = %key, %reason, "rankd node still ejected");
        }
        self.ejection = Some(reason);
    }

    fn admit(&mut self, key: &NodeKey, counters: &Counters) {
        let node_id = self.last.as_ref().map(|(_, hb)| hb.node_id.as_str());
        if self.ever_admitted {
            bump(&counters.readmissions);
            tracing::info!(node = %key, node_id, "rankd node re-admitted");
        } else {
            tracing::info!(node = %key, node_id, "rankd node admitted");
        }
        self.ejection = None;
        self.ever_admitted = true;
        self.readmit_after = None;
    }

    /// Ends an expired cooldown and makes the balancer agree with the node's state. Returns
    /// whether the balancer's set changed.
    fn reconcile(&mut self, key: &NodeKey, discovery: &Discovery, now: Instant) -> bool {
        if self.cooldown_until.is_some_and(|until| now >= until) {
            self.cooldown_until = None;
        }
        let want = self.routable();
        if want == self.in_balancer {
            return false;
        }
        let change = if want {
            Change::Insert(key.clone(), self.service.clone())
        } else {
            Change::Remove(key.clone())
        };
        // Fails only once the balancer worker is gone, i.e. while shutting down.
        let _ = discovery.send(Ok(change));
        self.in_balancer = want;
        true
    }
}

impl Pool {
    pub(crate) fn new(
        config: Arc<ClientConfig>,
        counters: Arc<Counters>,
        discovery: Discovery,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            counters,
            discovery,
            changed: watch::channel(0).0,
            state: Mutex::new(PoolState {
                nodes: HashMap::new(),
                aliases: HashSet::new(),
                rng: HasherRng::default(),
                closed: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // No code panics while holding it; a poisoned table is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self) {
        self.changed
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    pub(crate) fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// A receiver that wakes on the next change after this call.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Adds a node (ejected until its first serving heartbeat) and starts its watcher.
    /// Returns false when it was already known or the client is shutting down.
    pub(crate) fn add(
        self: &Arc<Self>,
        key: NodeKey,
        origin: NodeOrigin,
    ) -> Result<bool, ClientError> {
        let invalid = |e: tonic::transport::Error| ClientError::InvalidAddress {
            address: key.to_string(),
            reason: e.to_string(),
        };
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{key}")).map_err(invalid)?;
        if let Some(tls) = &self.config.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(invalid)?;
        }
        let endpoint = endpoint
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(self.config.http2_keepalive_interval)
            .keep_alive_timeout(self.config.http2_keepalive_timeout)
            .keep_alive_while_idle(true);
        let mut state = self.lock();
        if state.closed || state.nodes.contains_key(&key) {
            return Ok(false);
        }
        let channel: Channel = endpoint.connect_lazy();
        let service = Balanced::new(NodeService::new(key.clone(), channel.clone()), &self.config);
        let watcher = tokio::spawn(node::watch(Arc::clone(self), key.clone(), channel));
        tracing::debug!(node = %key, ?origin, "rankd node added");
        state.nodes.insert(
            key,
            Node {
                origin,
                service,
                watcher: Some(watcher),
                ejection: Some(EjectReason::Connecting),
                ever_admitted: false,
                readmit_after: None,
                cooldown_until: None,
                in_balancer: false,
                cadence: Cadence::new(&self.config),
                last: None,
                degraded: false,
            },
        );
        drop(state);
        self.notify();
        Ok(true)
    }

    /// Forgets a node: out of the balancer, watcher stopped.
    pub(crate) fn remove(&self, key: &NodeKey) {
        let mut state = self.lock();
        Self::remove_locked(&mut state, key, &self.discovery);
        drop(state);
        self.notify();
    }

    fn remove_locked(state: &mut PoolState, key: &NodeKey, discovery: &Discovery) {
        if let Some(mut node) = state.nodes.remove(key) {
            if node.in_balancer {
                let _ = discovery.send(Ok(Change::Remove(key.clone())));
            }
            if let Some(watcher) = node.watcher.take() {
                watcher.abort();
            }
            tracing::info!(node = %key, "rankd node removed");
        }
    }

    /// Makes the nodes of `origin` exactly `keys` (DNS refresh).
    pub(crate) fn sync_origin(self: &Arc<Self>, origin: NodeOrigin, keys: &BTreeSet<NodeKey>) {
        let stale: Vec<NodeKey> = self
            .lock()
            .nodes
            .iter()
            .filter(|(key, node)| node.origin == origin && !keys.contains(*key))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &stale {
            self.remove(key);
        }
        for key in keys {
            if let Err(error) = self.add(key.clone(), origin) {
                tracing::warn!(%error, "cannot add resolved address");
            }
        }
    }

    /// Applies a heartbeat. Returns false when the node is no longer in the table (its
    /// watcher should stop).
    pub(crate) fn on_heartbeat(
        self: &Arc<Self>,
        key: &NodeKey,
        mut heartbeat: NodeHeartbeat,
    ) -> bool {
        let now = Instant::now();
        let members = std::mem::take(&mut heartbeat.members);
        let mut state = self.lock();
        let Some(origin) = state.nodes.get(key).map(|node| node.origin) else {
            return false;
        };
        let mut changed = false;

        // Two addresses for one node (the cluster advertises another name for an address we
        // were given): keep the one we were given, so the node is not balanced twice, and
        // remember the other so that later `members` lists do not add it again.
        if let Some((other, other_origin)) = Self::duplicate(&state, key, &heartbeat.node_id) {
            let alias = match (origin, other_origin) {
                (NodeOrigin::Member, _) => Some(key.clone()),
                (_, NodeOrigin::Member) => Some(other),
                _ => None,
            };
            if let Some(alias) = alias {
                tracing::debug!(node = %alias, node_id = %heartbeat.node_id, "second address of a known node; dropping it");
                state.aliases.insert(alias.clone());
                Self::remove_locked(&mut state, &alias, &self.discovery);
                changed = true;
                if &alias == key {
                    drop(state);
                    self.notify();
                    return false;
                }
            }
        }

        let Some(node) = state.nodes.get_mut(key) else {
            return false;
        };
        node.cadence.update(&heartbeat);
        let (serving, reason) = (heartbeat.serving, heartbeat.reason.clone());
        node.last = Some((now, heartbeat));
        if !serving {
            node.eject(key, EjectReason::NotServing(reason), &self.counters);
        } else if node.ejection.is_some() && node.readmit_after.is_none_or(|after| now >= after) {
            node.admit(key, &self.counters);
        }
        changed |= node.reconcile(key, &self.discovery, now);
        changed |= self.mark_degraded(&mut state, now);

        let new_members: Vec<NodeKey> = if self.config.discover_members {
            members
                .iter()
                .filter_map(|member| parse_address(member).ok())
                .filter(|m| !state.nodes.contains_key(m) && !state.aliases.contains(m))
                .collect()
        } else {
            Vec::new()
        };
        drop(state);
        if changed {
            self.notify();
        }
        for member in new_members {
            if let Ok(true) = self.add(member.clone(), NodeOrigin::Member) {
                tracing::info!(node = %member, via = %key, "learned rankd node from heartbeat");
            }
        }
        true
    }

    /// Marks degraded every node some serving node's fresh heartbeat names degraded, unless
    /// that would leave no node to call: a gray node is still better than none. Returns
    /// whether the balancer's set changed.
    fn mark_degraded(&self, state: &mut PoolState, now: Instant) -> bool {
        let named: HashSet<NodeKey> = state
            .nodes
            .values()
            .filter_map(|n| n.last.as_ref().map(|(at, hb)| (n, at, hb)))
            .filter(|(n, at, hb)| {
                hb.serving && now.saturating_duration_since(**at) < n.cadence.lapse()
            })
            .flat_map(|(_, _, hb)| hb.degraded.iter())
            .filter_map(|addr| parse_address(addr).ok())
            .collect();
        let usable = |n: &Node| n.ejection.is_none() && n.cooldown_until.is_none();
        let spare = state
            .nodes
            .iter()
            .any(|(key, n)| usable(n) && !named.contains(key));
        let mut changed = false;
        for (key, node) in state.nodes.iter_mut() {
            let degraded = spare && named.contains(key);
            if degraded != node.degraded {
                if degraded {
                    bump(&self.counters.degradations);
                    tracing::warn!(node = %key, "rankd node degraded (slow or failing against its peers); sending it no calls");
                } else {
                    tracing::info!(node = %key, "rankd node no longer degraded");
                }
                node.degraded = degraded;
            }
            changed |= node.reconcile(key, &self.discovery, now);
        }
        changed
    }

    fn duplicate(state: &PoolState, key: &NodeKey, node_id: &str) -> Option<(NodeKey, NodeOrigin)> {
        if node_id.is_empty() {
            return None;
        }
        state
            .nodes
            .iter()
            .find(|(k, n)| {
                *k != key && n.last.as_ref().is_some_and(|(_, hb)| hb.node_id == node_id)
            })
            .map(|(k, n)| (k.clone(), n.origin))
    }

    /// Takes a node out of the balancer. `from_call` marks an ejection a Rank call observed
    /// (transport error, UNAVAILABLE): the node is then held out for one of its heartbeat
    /// intervals even if its stream keeps saying "serving".
    pub(crate) fn eject(&self, key: &NodeKey, reason: EjectReason, from_call: bool) {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(node) = state.nodes.get_mut(key) else {
            return;
        };
        node.eject(key, reason, &self.counters);
        if from_call {
            node.readmit_after = Some(instant_after(now, node.cadence.interval()));
        }
        let changed = node.reconcile(key, &self.discovery, now);
        drop(state);
        if changed {
            self.notify();
        }
    }

    /// Rests a node that answered RESOURCE_EXHAUSTED: out of the balancer for
    /// `overload_cooldown`, then back (if still admitted) without waiting for a heartbeat.
    pub(crate) fn cool_down(self: &Arc<Self>, key: &NodeKey) {
        let now = Instant::now();
        let until = instant_after(now, self.config.overload_cooldown);
        let mut state = self.lock();
        let Some(node) = state.nodes.get_mut(key) else {
            return;
        };
        bump(&self.counters.cooldowns);
        tracing::info!(node = %key, cooldown = ?self.config.overload_cooldown, "rankd node overloaded; resting it");
        node.cooldown_until = Some(node.cooldown_until.map_or(until, |t| t.max(until)));
        let changed = node.reconcile(key, &self.discovery, now);
        drop(state);
        if changed {
            self.notify();
        }
        let pool = Arc::clone(self);
        let key = key.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            pool.refresh(&key);
        });
    }

    /// Re-checks one node's cooldown.
    fn refresh(&self, key: &NodeKey) {
        let mut state = self.lock();
        let changed = state
            .nodes
            .get_mut(key)
            .is_some_and(|node| node.reconcile(key, &self.discovery, Instant::now()));
        drop(state);
        if changed {
            self.notify();
        }
    }

    /// Stops every watcher and refuses new nodes. Called when the last client handle drops.
    pub(crate) fn shutdown(&self) {
        let mut state = self.lock();
        state.closed = true;
        for node in state.nodes.values_mut() {
            if let Some(watcher) = node.watcher.take() {
                watcher.abort();
            }
        }
    }
}
