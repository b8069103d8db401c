//! Bake windows: a promotion on probation.
//!
//! A Promote may carry a bake window. While it runs, the leader (in the server crate)
//! watches every node's live signals and ends the bake with one [`Command::BakeVerdict`]:
//! either a breach, which rolls back to the previous version in the same entry, or a clean
//! window, which records the version as baked.
//!
//! Invariants:
//! - At most one bake runs, and only for the active version: a later Promote or Rollback
//!   ends it (recorded as superseded), so a stale verdict can never roll back a version an
//!   operator chose since. A verdict for anything but the bake in progress is rejected.
//! - The window is stamped by the proposer (`at_ms + bake_ms`); `apply` reads no clock, so
//!   a leader change mid-bake resumes the same window from the replicated state.
//! - A breach's figures are text: the state machine stays `Eq` and every node records the
//!   same bytes.

use serde::{Deserialize, Serialize};

use super::{HistoryEntry, ModelRef, Outcome, Registry, Rejection};
use crate::types::NodeId;

/// The bake in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bake {
    pub model: ModelRef,
    /// The version it replaced: what a breach rolls back to.
    pub from: Option<ModelRef>,
    pub started_ms: u64,
    pub until_ms: u64,
    /// The log index of the promotion being baked.
    pub index: u64,
}

/// One signal over its threshold on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breach {
    /// "error_ratio", "p99", "golden" or "drift".
    pub signal: String,
    pub node: NodeId,
    /// The measured value and the threshold, formatted by the proposer (e.g. "0.312",
    /// "0.050").
    pub measured: String,
    pub threshold: String,
}

impl Breach {
    pub fn describe(&self) -> String {
        format!(
            "{} on node {}: {} against a threshold of {}",
            self.signal, self.node, self.measured, self.threshold
        )
    }
}

/// Who the history names for the leader's own verdicts.
pub const BAKE_WATCH: &str = "bake-watch";

impl Registry {
    /// Starts a bake for the version just activated at `index`: none when `bake_ms` is 0 or
    /// for a first promotion, which has nothing to roll back to.
    pub(super) fn start_bake(&mut self, index: u64, at_ms: u64, bake_ms: u64) {
        let (Some(active), Some(from)) = (self.active.clone(), self.previous.clone()) else {
            return;
        };
        self.baking = (bake_ms > 0).then(|| Bake {
            model: active.model,
            from: Some(from.model),
            started_ms: at_ms,
            until_ms: at_ms.saturating_add(bake_ms),
            index,
        });
    }

    /// Ends a bake because an operator switched versions before its verdict.
    pub(super) fn supersede_bake(&mut self) {
        if let Some(b) = self.baking.take() {
            if let Some(last) = self.history.last_mut() {
                let note = format!("ended the bake of {} before its verdict", b.model);
                last.detail = if last.detail.is_empty() {
                    note
                } else {
                    format!("{}; {note}", last.detail)
                };
            }
        }
    }

    /// The verdict on the bake of `model`, stamped `at_ms`: a breach rolls back to the
    /// version it replaced (every node in `required` must hold it ready, as for a Rollback);
    /// none marks it baked, recording `summary` (what could be judged).
    pub(super) fn bake_verdict(
        &mut self,
        term: u64,
        index: u64,
        model: &ModelRef,
        breach: Option<&Breach>,
        required: &[NodeId],
        (at_ms, summary): (u64, &str),
    ) -> Outcome {
        let Some(bake) = self.baking.clone().filter(|b| &b.model == model) else {
            return Outcome::reject(
                Rejection::FailedPrecondition,
                format!("{model} is not being baked"),
            );
        };
        let Some(breach) = breach else {
            self.baking = None;
            self.history.push(HistoryEntry {
                action: "baked".into(),
                by: BAKE_WATCH.into(),
                at_ms,
                from: None,
                to: model.clone(),
                term,
                index,
                detail: if summary.is_empty() {
                    format!(
                        "no signal breached its threshold in {} ms",
                        bake.until_ms.saturating_sub(bake.started_ms)
                    )
                } else {
                    format!(
                        "no signal breached its threshold in {} ms; {summary}",
                        bake.until_ms.saturating_sub(bake.started_ms)
                    )
                },
            });
            return Outcome::ok();
        };
        let Some(from) = bake.from.clone() else {
            return Outcome::reject(
                Rejection::FailedPrecondition,
                format!("{model} has no previous version to roll back to"),
            );
        };
        if self.versions.get(&from).is_none_or(|v| v.retired) {
            return Outcome::reject(
                Rejection::FailedPrecondition,
                format!("previous version {from} is retired"),
            );
        }
        if let Some(reject) = self.check_ready(&from, required) {
            return reject;
        }
        self.baking = None;
        let fence = self.activate(term, index, from, "rollback", BAKE_WATCH, at_ms);
        if let Some(last) = self.history.last_mut() {
            last.detail = format!(
                "automatic, during the bake of {model}: {}",
                breach.describe()
            );
        }
        Outcome::Applied { fence: Some(fence) }
    }
}
