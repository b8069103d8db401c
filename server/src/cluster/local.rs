//! The versions this node holds in memory, what it is doing about each, and the registry
//! apply hook that switches the serving slot.
//!
//! The switch happens inside the apply of the Promote or Rollback entry, so every node
//! switches at the same point of the log and the time between nodes switching is only
//! the replication delay. It is a pointer swap: the version must already be loaded. A
//! node that has not loaded it (it was down, or is still fetching) stops serving instead
//! and the reconciler installs the version once loaded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rankd_raft::registry::Registry;
use rankd_raft::state_machine::ApplyHook;
use rankd_raft::types::LogId;
use rankd_raft::{Command, Fence, ModelRef, Outcome};
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;
use crate::model::lock;
use crate::model::{Loaded, ModelSlot};

/// Where this node is with one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Fetching,
    Verifying,
    Loading,
    Validating,
    Ready,
    Failed,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Fetching => "fetching",
            Stage::Verifying => "verifying",
            Stage::Loading => "loading",
            Stage::Validating => "validating",
            Stage::Ready => "ready",
            Stage::Failed => "failed",
        }
    }
}

/// When this node last switched its active version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    pub model: Option<ModelRef>,
    pub term: u64,
    pub index: u64,
    /// Wall clock (ms since the epoch) at the switch.
    pub at_ms: u64,
}

pub struct LocalModels {
    slot: Arc<ModelSlot>,
    metrics: Arc<Metrics>,
    loaded: Mutex<BTreeMap<ModelRef, Arc<Loaded>>>,
    stages: Mutex<BTreeMap<ModelRef, (Stage, String)>>,
    activation: Mutex<Activation>,
    /// The active version as last *applied*, written only by the apply hook. Every switch
    /// of the slot happens under this lock and against this value, never against a copy a
    /// caller read earlier: a slow reconciler pass must not undo a newer promotion.
    target: Mutex<Option<Fence>>,
    /// Wakes the reconciler (a registry change it must act on, or a scrub result).
    pub wake: tokio::sync::Notify,
}

impl LocalModels {
    pub fn new(slot: Arc<ModelSlot>, metrics: Arc<Metrics>) -> LocalModels {
        LocalModels {
            slot,
            metrics,
            loaded: Mutex::new(BTreeMap::new()),
            stages: Mutex::new(BTreeMap::new()),
            activation: Mutex::new(Activation::default()),
            target: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        }
    }

    pub fn slot(&self) -> &Arc<ModelSlot> {
        &self.slot
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn get(&self, model: &ModelRef) -> Option<Arc<Loaded>> {
        lock(&self.loaded).get(model).cloned()
    }

    pub fn loaded_versions(&self) -> Vec<ModelRef> {
        lock(&self.loaded).keys().cloned().collect()
    }

    /// Keeps `loaded` for `model`. If the applied registry names it active (the node was
    /// behind), installs it now.
    pub fn insert(&self, model: ModelRef, loaded: Arc<Loaded>) {
        self.set_stage(&model, Stage::Ready, "");
        lock(&self.loaded).insert(model, loaded);
        self.resync();
    }

    /// Forgets a loaded version (an upload the registry refused).
    pub fn remove(&self, model: &ModelRef) {
        lock(&self.loaded).remove(model);
        lock(&self.stages).remove(model);
        self.resync();
    }

    /// Drops every loaded version not in `keep`, except the applied active one.
    pub fn retain(&self, keep: &[ModelRef]) {
        let active = lock(&self.target).as_ref().map(|f| f.model.clone());
        let mut dropped = Vec::new();
        lock(&self.loaded).retain(|m, _| {
            let kept = keep.contains(m) || active.as_ref() == Some(m);
            if !kept {
                dropped.push(m.clone());
            }
            kept
        });
        let mut stages = lock(&self.stages);
        for m in &dropped {
            stages.remove(m);
        }
    }

    pub fn set_stage(&self, model: &ModelRef, stage: Stage, detail: impl Into<String>) {
        lock(&self.stages).insert(model.clone(), (stage, detail.into()));
    }

    pub fn stages(&self) -> Vec<(ModelRef, Stage, String)> {
        lock(&self.stages)
            .iter()
            .map(|(m, (s, d))| (m.clone(), *s, d.clone()))
            .collect()
    }

    pub fn activation(&self) -> Activation {
        lock(&self.activation).clone()
    }

    /// Whether the slot serves exactly the registry's active version under its fence.
    pub fn serves(&self, active: Option<&Fence>) -> bool {
        match (self.slot.current(), active) {
            (Some(cur), Some(f)) => {
                cur.info.name == f.model.name
                    && cur.info.version == f.model.version
                    && cur.fence == (f.term, f.index)
            }
            _ => false,
        }
    }

    /// Makes the slot match the applied active version: install it if loaded, else serve
    /// nothing.
    pub fn resync(&self) {
        let target = lock(&self.target);
        let active = target.as_ref();
        if self.serves(active) {
            return;
        }
        let Some(fence) = active else {
            self.slot.clear();
            return;
        };
        match self.get(&fence.model) {
            Some(loaded) => {
                crate::admin::install(
                    &self.slot,
                    &self.metrics,
                    loaded.activated(fence.term, fence.index),
                );
                *lock(&self.activation) = Activation {
                    model: Some(fence.model.clone()),
                    term: fence.term,
                    index: fence.index,
                    at_ms: super::now_ms(),
                };
                tracing::info!(model = %fence.model, term = fence.term, index = fence.index,
                    "switched to the registry's active version");
            }
            None => {
                if self.slot.current().is_some() {
                    tracing::warn!(model = %fence.model,
                        "the registry's active version is not loaded here yet: not serving until it is");
                }
                self.slot.clear();
            }
        }
    }

    fn set_target(&self, active: Option<&Fence>) {
        *lock(&self.target) = active.cloned();
        self.resync();
    }
}

impl ApplyHook for LocalModels {
    fn applied(
        &self,
        registry: &Registry,
        _log_id: &LogId,
        command: Option<&Command>,
        outcome: &Outcome,
    ) {
        self.metrics
            .quality
            .baking
            .set(i64::from(registry.baking.is_some()));
        if let (Some(Command::BakeVerdict { breach, .. }), Outcome::Applied { .. }) =
            (command, outcome)
        {
            let verdict = if breach.is_some() {
                "rollback"
            } else {
                "baked"
            };
            self.metrics
                .quality
                .bake_verdicts
                .get_or_create(&crate::metrics::quality::VerdictLabel { verdict })
                .inc();
        }
        match (command, outcome) {
            (
                Some(
                    Command::Promote { .. }
                    | Command::Rollback { .. }
                    | Command::BakeVerdict { .. },
                ),
                Outcome::Applied { .. },
            ) => self.set_target(registry.active.as_ref()),
            (
                Some(Command::Register { .. } | Command::Retire { .. } | Command::Prepare { .. }),
                _,
            ) => self.wake.notify_one(),
            _ => {}
        }
    }

    fn reset(&self, registry: &Registry) {
        self.set_target(registry.active.as_ref());
        self.wake.notify_one();
    }
}
