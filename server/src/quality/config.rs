//! `[quality]`: live model-quality monitoring on each node.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Seconds between golden-set replays on the serving version (only while no request
    /// waits); 0 disables them.
    pub golden_replay_interval_s: u64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            golden_replay_interval_s: 30,
        }
    }
}

impl QualityConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.golden_replay_interval_s > 86_400 {
            return Err((
                "quality.golden_replay_interval_s",
                "must be at most 86400 (a day); 0 disables replays".into(),
            ));
        }
        Ok(())
    }
}
