//! The registry state machine: data and deterministic `apply`.
//!
//! Invariants every node relies on:
//! - `apply` is a pure function of the state and the entry (its log id and command): no
//!   clocks, no I/O, no randomness. Times in commands are stamped by the proposer.
//! - A rejected command changes nothing and is still a committed entry: every node rejects
//!   it the same way, and the proposer gets the reason back as an [`Outcome`].
//! - The history is append-only.
//! - The active version is only ever a registered, unretired version, and a Promote is
//!   accepted only if every node it names as required has reported that version ready.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

mod bake;
mod lineage;
mod serde_maps;
pub use bake::{Bake, Breach, BAKE_WATCH};
pub use lineage::{from_ppm, relative_drop_pct, to_ppm, Lineage};
use serde_maps::{failed_by_node, model_keyed};

/// A model version's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
}

impl ModelRef {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> ModelRef {
        ModelRef {
            name: name.into(),
            version: version.into(),
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// What the registry records about an uploaded version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub model: ModelRef,
    /// SHA-256 of the uploader's sealed artifact.
    pub sha256: String,
    /// SHA-256 of the packed plaintext bundle: the content's identity on every node, since
    /// each node may re-encrypt under its own primary key.
    pub plaintext_sha256: String,
    pub size: u64,
    pub key_id: String,
    pub uploaded_by: String,
    /// Seconds since the Unix epoch, stamped by the uploading node.
    pub uploaded_at: u64,
    /// The node the upload arrived at: the first place to fetch it from.
    pub origin: NodeId,
    #[serde(default)]
    pub retired: bool,
    /// Set for a compressed version: its parent and the quality guard's measurements.
    #[serde(default)]
    pub lineage: Option<Lineage>,
}

/// Which version is active, and the log entry that made it so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub model: ModelRef,
    pub term: u64,
    pub index: u64,
}

/// One promotion, rollback, or registration of a compressed version, as committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// "promote", "rollback", or "register" (only versions with a lineage are recorded:
    /// their parent is `from`).
    pub action: String,
    pub by: String,
    /// Milliseconds since the Unix epoch, stamped by the proposer.
    pub at_ms: u64,
    pub from: Option<ModelRef>,
    pub to: ModelRef,
    pub term: u64,
    pub index: u64,
    /// What else the entry records, e.g. a compressed version's measured quality.
    #[serde(default)]
    pub detail: String,
}

/// One admin action as the node that received it saw it: who, what, when, and the result.
/// Recorded after the action finished, so a crash in between loses the record, never the
/// action's own effect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Milliseconds since the Unix epoch, stamped by the receiving node.
    pub at_ms: u64,
    /// The authenticated caller: a token's name or a client certificate's subject;
    /// "anonymous" only under `auth.mode = "insecure-dev"`.
    pub principal: String,
    pub role: String,
    /// The node the call arrived at.
    pub node: NodeId,
    /// The RPC, e.g. "Promote".
    pub action: String,
    /// What it acted on, e.g. "demo-ranker@2"; empty where the call names nothing.
    pub target: String,
    /// The gRPC code name of the answer: "OK", "PERMISSION_DENIED", ...
    pub code: String,
    /// The answer's message for failures (never a credential: see the auth layer).
    pub message: String,
}

/// How many audit entries the registry keeps; older ones are dropped first. Bounded so a
/// busy automation cannot grow every node's snapshot without limit.
pub const AUDIT_RETAIN: usize = 10_000;

/// A registry write. Membership changes go through openraft's own membership log entries;
/// `ForgetNode` records that a removed node's id may never be used again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Register {
        info: VersionInfo,
    },
    ReportReady {
        node: NodeId,
        model: ModelRef,
    },
    ReportFailed {
        node: NodeId,
        model: ModelRef,
        reason: String,
    },
    /// The node no longer holds `model` in memory (it made room, or restarted): it must
    /// load it again before a promotion may count on it.
    ReportUnloaded {
        node: NodeId,
        model: ModelRef,
    },
    /// The leader is about to wait for readiness of `model`: every node keeps it loaded
    /// (even an older version it had unloaded) until another version is activated.
    Prepare {
        model: ModelRef,
    },
    Promote {
        model: ModelRef,
        /// When set, the promotion applies only if this is the active version.
        expect: Option<ModelRef>,
        /// Nodes that must have reported `model` ready (chosen by the leader from the live
        /// members and the request's quorum policy).
        required: Vec<NodeId>,
        by: String,
        at_ms: u64,
        /// Bake window in ms from `at_ms`; 0: none.
        #[serde(default)]
        bake_ms: u64,
    },
    Rollback {
        expect: Option<ModelRef>,
        /// Nodes that must hold the previous version loaded, as for Promote.
        #[serde(default)]
        required: Vec<NodeId>,
        by: String,
        at_ms: u64,
    },
    /// The leader's verdict on the bake of `model`: a breach rolls back (see [`Bake`]).
    BakeVerdict {
        model: ModelRef,
        breach: Option<Breach>,
        /// Nodes that must hold the previous version ready, for a breach.
        required: Vec<NodeId>,
        at_ms: u64,
        /// What the leader could judge over the window (recorded with a clean verdict).
        #[serde(default)]
        summary: String,
    },
    Retire {
        model: ModelRef,
    },
    ForgetNode {
        node: NodeId,
    },
    Audit {
        entry: AuditEntry,
    },
}

/// Why a command was rejected; the server maps each to a gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    NotFound,
    FailedPrecondition,
    AlreadyExists,
}

/// The result of applying one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied. `fence` is the activation the entry made (Promote, Rollback) or confirmed.
    Applied {
        fence: Option<Fence>,
    },
    Rejected {
        reason: Rejection,
        message: String,
    },
}

impl Outcome {
    fn ok() -> Outcome {
        Outcome::Applied { fence: None }
    }

    fn reject(reason: Rejection, message: impl Into<String>) -> Outcome {
        Outcome::Rejected {
            reason,
            message: message.into(),
        }
    }
}

/// The replicated registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    #[serde(with = "model_keyed")]
    pub versions: BTreeMap<ModelRef, VersionInfo>,
    /// Versions each node has verified, loaded and validated.
    pub ready: BTreeMap<NodeId, BTreeSet<ModelRef>>,
    /// The last failure each node reported per version (cleared by a later ReportReady).
    #[serde(with = "failed_by_node")]
    pub failed: BTreeMap<NodeId, BTreeMap<ModelRef, String>>,
    pub active: Option<Fence>,
    pub previous: Option<Fence>,
    pub history: Vec<HistoryEntry>,
    /// Ids of removed nodes: never reused.
    pub forgotten: BTreeSet<NodeId>,
    /// The version a promotion is waiting on, if any.
    #[serde(default)]
    pub preparing: Option<ModelRef>,
    /// Admin actions, oldest first, at most [`AUDIT_RETAIN`].
    #[serde(default)]
    pub audit: std::collections::VecDeque<AuditEntry>,
    /// The promotion on probation, if any.
    #[serde(default)]
    pub baking: Option<Bake>,
}

impl Registry {
    /// Applies `cmd`, committed at `(term, index)`.
    pub fn apply(&mut self, term: u64, index: u64, cmd: &Command) -> Outcome {
        match cmd {
            Command::Register { info } => self.register(term, index, info),
            Command::ReportReady { node, model } => {
                match self.versions.get(model) {
                    None => {
                        return Outcome::reject(
                            Rejection::NotFound,
                            format!("{model} is not registered"),
                        )
                    }
                    Some(v) if v.retired => {
                        return Outcome::reject(
                            Rejection::FailedPrecondition,
                            format!("{model} is retired"),
                        )
                    }
                    Some(_) => {}
                }
                if self.forgotten.contains(node) {
                    return Outcome::reject(
                        Rejection::FailedPrecondition,
                        format!("node {node} was removed from the cluster"),
                    );
                }
                self.ready.entry(*node).or_default().insert(model.clone());
                if let Some(f) = self.failed.get_mut(node) {
                    f.remove(model);
                }
                Outcome::ok()
            }
            Command::ReportFailed {
                node,
                model,
                reason,
            } => {
                if let Some(r) = self.ready.get_mut(node) {
                    r.remove(model);
                }
                self.failed
                    .entry(*node)
                    .or_default()
                    .insert(model.clone(), reason.clone());
                Outcome::ok()
            }
            Command::Promote {
                model,
                expect,
                required,
                by,
                at_ms,
                bake_ms,
            } => {
                let outcome =
                    self.promote(term, index, model, expect.as_ref(), required, by, *at_ms);
                if matches!(outcome, Outcome::Applied { .. })
                    && self.active.as_ref().is_some_and(|a| a.index == index)
                {
                    self.start_bake(index, *at_ms, *bake_ms);
                }
                outcome
            }
            Command::BakeVerdict {
                model,
                breach,
                required,
                at_ms,
                summary,
            } => self.bake_verdict(
                term,
                index,
                model,
                breach.as_ref(),
                required,
                (*at_ms, summary),
            ),
            Command::Rollback {
                expect,
                required,
                by,
                at_ms,
            } => self.rollback(term, index, expect.as_ref(), required, by, *at_ms),
            Command::ReportUnloaded { node, model } => {
                if let Some(r) = self.ready.get_mut(node) {
                    r.remove(model);
                }
                Outcome::ok()
            }
            Command::Prepare { model } => match self.versions.get(model) {
                None => Outcome::reject(Rejection::NotFound, format!("{model} is not registered")),
                Some(v) if v.retired => {
                    Outcome::reject(Rejection::FailedPrecondition, format!("{model} is retired"))
                }
                Some(_) => {
                    self.preparing = Some(model.clone());
                    Outcome::ok()
                }
            },
            Command::Retire { model } => self.retire(model),
            Command::ForgetNode { node } => {
                self.forgotten.insert(*node);
                self.ready.remove(node);
                self.failed.remove(node);
                Outcome::ok()
            }
            Command::Audit { entry } => {
                if self.audit.len() >= AUDIT_RETAIN {
                    self.audit.pop_front();
                }
                self.audit.push_back(entry.clone());
                Outcome::ok()
            }
        }
    }

    fn register(&mut self, term: u64, index: u64, info: &VersionInfo) -> Outcome {
        if let Some(existing) = self.versions.get(&info.model) {
            if existing.plaintext_sha256 == info.plaintext_sha256 && !existing.retired {
                return Outcome::ok();
            }
            return Outcome::reject(
                Rejection::AlreadyExists,
                format!(
                    "{} is already registered with content {}",
                    info.model, existing.plaintext_sha256
                ),
            );
        }
        if let Some(lineage) = &info.lineage {
            let parent = ModelRef::new(&info.model.name, &lineage.parent);
            if !self.versions.contains_key(&parent) {
                return Outcome::reject(
                    Rejection::FailedPrecondition,
                    format!("{}'s parent {parent} is not registered", info.model),
                );
            }
        }
        let mut info = info.clone();
        info.retired = false;
        if let Some(lineage) = &info.lineage {
            self.history.push(HistoryEntry {
                action: "register".into(),
                by: info.uploaded_by.clone(),
                at_ms: info.uploaded_at.saturating_mul(1000),
                from: Some(ModelRef::new(&info.model.name, &lineage.parent)),
                to: info.model.clone(),
                term,
                index,
                detail: lineage.summary(),
            });
        }
        self.versions.insert(info.model.clone(), info);
        Outcome::ok()
    }

    #[allow(clippy::too_many_arguments)]
    fn promote(
        &mut self,
        term: u64,
        index: u64,
        model: &ModelRef,
        expect: Option<&ModelRef>,
        required: &[NodeId],
        by: &str,
        at_ms: u64,
    ) -> Outcome {
        match self.versions.get(model) {
            None => {
                return Outcome::reject(Rejection::NotFound, format!("{model} is not registered"))
            }
            Some(v) if v.retired => {
                return Outcome::reject(
                    Rejection::FailedPrecondition,
                    format!("{model} is retired"),
                )
            }
            Some(_) => {}
        }
        if let Some(reject) = self.check_expect(expect) {
            return reject;
        }
        if let Some(active) = &self.active {
            if &active.model == model {
                return Outcome::Applied {
                    fence: Some(active.clone()),
                };
            }
        }
        if let Some(reject) = self.check_ready(model, required) {
            return reject;
        }
        Outcome::Applied {
            fence: Some(self.activate(term, index, model.clone(), "promote", by, at_ms)),
        }
    }

    fn rollback(
        &mut self,
        term: u64,
        index: u64,
        expect: Option<&ModelRef>,
        required: &[NodeId],
        by: &str,
        at_ms: u64,
    ) -> Outcome {
        if let Some(reject) = self.check_expect(expect) {
            return reject;
        }
        let Some(previous) = self.previous.clone() else {
            return Outcome::reject(
                Rejection::FailedPrecondition,
                "no previous version to roll back to",
            );
        };
        if self.versions.get(&previous.model).is_none_or(|v| v.retired) {
            return Outcome::reject(
                Rejection::FailedPrecondition,
                format!("previous version {} is retired", previous.model),
            );
        }
        if let Some(reject) = self.check_ready(&previous.model, required) {
            return reject;
        }
        Outcome::Applied {
            fence: Some(self.activate(term, index, previous.model, "rollback", by, at_ms)),
        }
    }

    fn activate(
        &mut self,
        term: u64,
        index: u64,
        model: ModelRef,
        action: &str,
        by: &str,
        at_ms: u64,
    ) -> Fence {
        let fence = Fence {
            model: model.clone(),
            term,
            index,
        };
        let from = self.active.as_ref().map(|f| f.model.clone());
        self.preparing = None;
        let superseded = self.baking.take();
        self.previous = self.active.replace(fence.clone());
        self.history.push(HistoryEntry {
            action: action.into(),
            by: by.into(),
            at_ms,
            from,
            to: model,
            term,
            index,
            detail: String::new(),
        });
        self.baking = superseded;
        self.supersede_bake();
        fence
    }

    fn retire(&mut self, model: &ModelRef) -> Outcome {
        let in_use = |f: &Option<Fence>| f.as_ref().is_some_and(|f| &f.model == model);
        if in_use(&self.active) || in_use(&self.previous) {
            return Outcome::reject(
                Rejection::FailedPrecondition,
                format!("{model} is active or previous; promote another version first"),
            );
        }
        match self.versions.get_mut(model) {
            None => Outcome::reject(Rejection::NotFound, format!("{model} is not registered")),
            Some(v) => {
                v.retired = true;
                for r in self.ready.values_mut() {
                    r.remove(model);
                }
                Outcome::ok()
            }
        }
    }

    /// Every node in `required` must have reported `model` ready (and not unloaded it).
    fn check_ready(&self, model: &ModelRef, required: &[NodeId]) -> Option<Outcome> {
        let missing: Vec<String> = required
            .iter()
            .filter(|n| !self.is_ready(**n, model))
            .map(|n| match self.failed.get(n).and_then(|f| f.get(model)) {
                Some(reason) => format!("node {n}: {reason}"),
                None => format!("node {n}: not ready"),
            })
            .collect();
        if missing.is_empty() {
            return None;
        }
        Some(Outcome::reject(
            Rejection::FailedPrecondition,
            format!(
                "{model} is not ready on every required node: {}",
                missing.join("; ")
            ),
        ))
    }

    fn check_expect(&self, expect: Option<&ModelRef>) -> Option<Outcome> {
        let expect = expect?;
        let current = self.active.as_ref().map(|f| &f.model);
        if current == Some(expect) {
            return None;
        }
        Some(Outcome::reject(
            Rejection::FailedPrecondition,
            format!(
                "expected active version {expect}, but it is {}",
                current.map_or_else(|| "none".to_string(), ToString::to_string)
            ),
        ))
    }

    pub fn is_ready(&self, node: NodeId, model: &ModelRef) -> bool {
        self.ready.get(&node).is_some_and(|r| r.contains(model))
    }

    /// Nodes that hold a verified copy of `model`, the origin first.
    pub fn holders(&self, model: &ModelRef) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self
            .versions
            .get(model)
            .map(|v| vec![v.origin])
            .unwrap_or_default();
        for (node, versions) in &self.ready {
            if versions.contains(model) && !out.contains(node) {
                out.push(*node);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
