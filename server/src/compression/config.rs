//! `[compression]`: how much ranking quality a compressed version may give up.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// The largest NDCG@10 drop a compressed version may show against its parent, in
    /// percent of the parent's NDCG, measured by the registering node on the held-out set.
    /// A larger drop is refused unless the upload carries a quality override.
    pub max_ndcg_drop_pct: f64,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            max_ndcg_drop_pct: 1.0,
        }
    }
}

impl CompressionConfig {
    pub fn validate(&self) -> Result<(), String> {
        let m = self.max_ndcg_drop_pct;
        if !m.is_finite() || !(0.0..=100.0).contains(&m) {
            return Err(format!(
                "compression.max_ndcg_drop_pct = {m} must be within 0..=100 (percent of the parent's NDCG@10)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_margin_is_one_percent_and_nonsense_is_refused() {
        assert_eq!(CompressionConfig::default().max_ndcg_drop_pct, 1.0);
        assert!(CompressionConfig::default().validate().is_ok());
        for bad in [-0.1, 100.5, f64::NAN] {
            let c = CompressionConfig {
                max_ndcg_drop_pct: bad,
            };
            assert!(c.validate().is_err(), "{bad}");
        }
    }
}
