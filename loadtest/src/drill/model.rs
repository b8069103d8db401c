//! What a drill measures, scenario by scenario: the contract between the drill runner
//! (which injects faults and measures) and the report writer (Markdown, JSON, charts).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::load::record::{Second, Window};

/// One scenario's outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// `follower-crash`, `leader-crash`, ...
    pub name: String,
    /// What the fault was, in words ("SIGKILL node 2 (a follower), restart after 3 s").
    pub fault: String,
    /// How isolation was done, where it matters ("per-node TCP proxy on the peer port").
    pub isolation: String,
    /// Set when the scenario could not run here (e.g. against an existing cluster), with why.
    pub skipped: Option<String>,
    /// The scenario takes the whole service down on purpose (every node stopped): its
    /// failed requests are reported but not gated by the failed-requests objective.
    #[serde(default)]
    pub outage_expected: bool,
    /// The fault reaches every replica at once while the service stays up (a bad version
    /// promoted everywhere): like a whole-service outage, its RTO is left out of the
    /// single-node MTTR of the availability estimate; unlike one, its failed requests are
    /// gated.
    #[serde(default)]
    pub every_replica: bool,
    /// The scenario's own RTO limit in ms, in place of the drill's (`--max-rto-ms`), where
    /// its recovery has a bound by design (bad-model: the bake window it promoted with).
    #[serde(default)]
    pub rto_limit_ms: Option<f64>,
    /// Fault injection and repair, in seconds from the start of the load.
    pub fault_start_s: f64,
    pub fault_end_s: f64,
    /// From the fault to the cluster noticing it (a survivor's peer table marking the node
    /// down, a scrub failing, ...). `None` when nothing is there to detect.
    pub detection_ms: Option<f64>,
    /// From the fault to full service: every node SERVING the agreed version.
    pub rto_ms: Option<f64>,
    /// Acknowledged promotions lost.
    pub rpo_lost_promotions: u64,
    /// Longest time two nodes served different versions during the scenario (ms), as seen by
    /// the load: `None` when the load never saw two versions at once.
    pub divergence_ms: Option<f64>,
    /// Latency and failures before, during and after the fault.
    pub before: Window,
    pub during: Window,
    pub after: Window,
    /// Failed calls over the whole scenario, by code.
    pub failed_by_code: BTreeMap<String, u64>,
    pub sent: u64,
    /// Per-second timeline of the load.
    pub timeline: Vec<Second>,
    /// Scenario-specific findings ("node 3 NOT_SERVING: ...", "no wrong answer served").
    pub notes: Vec<String>,
    /// Each objective and whether it held.
    pub objectives: Vec<ObjectiveCheck>,
}

impl ScenarioResult {
    pub fn failed(&self) -> u64 {
        self.failed_by_code.values().sum()
    }

    pub fn passed(&self) -> bool {
        self.skipped.is_some() || self.objectives.iter().all(|o| o.held)
    }
}

/// One objective against one scenario's figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectiveCheck {
    /// "failed requests", "RTO", "RPO", "wrong answers".
    pub what: String,
    /// The limit, in words ("≤ 0", "≤ 5000 ms").
    pub limit: String,
    /// The measured value, in words.
    pub measured: String,
    pub held: bool,
}

/// Limits a drill gates on; `rankload drill` exits non-zero when one is missed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Objectives {
    pub max_failed_requests: u64,
    pub max_rto_ms: f64,
    pub max_rpo: u64,
}

impl Default for Objectives {
    fn default() -> Self {
        Objectives {
            max_failed_requests: 0,
            max_rto_ms: 5000.0,
            max_rpo: 0,
        }
    }
}

/// Inputs of the availability estimate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AvailabilityInputs {
    /// Failures per node per year (configurable; default 12: one a month).
    pub failures_per_node_year: f64,
    pub replicas: u32,
}

/// A whole drill run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    /// Machine, in words, and UTC date.
    pub machine: String,
    pub date: String,
    /// "local 3-node cluster (real rankd processes)" or "existing cluster at ...".
    pub target: String,
    pub rate: u32,
    pub objectives: Objectives,
    pub availability: AvailabilityInputs,
    pub scenarios: Vec<ScenarioResult>,
}
