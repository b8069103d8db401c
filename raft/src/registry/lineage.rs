//! Where a compressed version came from, and what the quality guard measured for it.
//!
//! Figures are stored as integers in parts per million so the registry stays `Eq` and every
//! node's snapshot compares byte for byte; they are exact to the precision anyone reads them.

use serde::{Deserialize, Serialize};

/// A compressed version's parent and the guard's verdict, recorded at registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The parent's version, under the same model name.
    pub parent: String,
    /// "int8", "prune", "distill", "fp16" or "bf16", as the exporter named it.
    pub method: String,
    /// The method's parameters as the exporter wrote them (compact JSON).
    pub params: String,
    /// The cut-off of the held-out set (NDCG@k) and how many queries it has.
    pub k: u32,
    pub eval_queries: u32,
    /// NDCG@k of this version and of its parent, measured by the registering node on the
    /// same held-out set through the serving engine.
    pub ndcg_ppm: u32,
    pub parent_ndcg_ppm: u32,
    /// Mean share of the parent's top k this version also ranks in its top k.
    pub overlap_ppm: u32,
    /// The largest drop the guard allowed, relative to the parent's NDCG.
    pub margin_ppm: u32,
    /// Present when the drop exceeded the margin and an operator registered the version
    /// anyway: their stated reason (who did it is the version's `uploaded_by`).
    #[serde(default)]
    pub override_reason: Option<String>,
}

/// A fraction in [0, 1] (or a small ratio) as parts per million, saturating.
pub fn to_ppm(x: f64) -> u32 {
    if !x.is_finite() || x <= 0.0 {
        return 0;
    }
    (x * 1e6).round().min(f64::from(u32::MAX)) as u32
}

pub fn from_ppm(x: u32) -> f64 {
    f64::from(x) / 1e6
}

impl Lineage {
    /// The relative NDCG drop from the parent, in percent (negative when it improved).
    pub fn drop_pct(&self) -> f64 {
        relative_drop_pct(from_ppm(self.parent_ndcg_ppm), from_ppm(self.ndcg_ppm))
    }

    /// One line for history and listings, e.g.
    /// `int8 of 1: NDCG@10 0.9371 vs 0.9399 (-0.30%, margin 1.00%), top-10 overlap 0.93`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} of {}: NDCG@{} {:.4} vs {:.4} ({:+.2}%, margin {:.2}%), top-{} overlap {:.2} on {} held-out queries",
            self.method,
            self.parent,
            self.k,
            from_ppm(self.ndcg_ppm),
            from_ppm(self.parent_ndcg_ppm),
            -self.drop_pct(),
            from_ppm(self.margin_ppm) * 100.0,
            self.k,
            from_ppm(self.overlap_ppm),
            self.eval_queries,
        );
        if let Some(reason) = &self.override_reason {
            s.push_str(&format!("; quality override: {reason}"));
        }
        s
    }
}

/// `100 * (parent - child) / parent`; 0 when the parent scored 0 (nothing to lose).
pub fn relative_drop_pct(parent: f64, child: f64) -> f64 {
    if parent <= 0.0 {
        return 0.0;
    }
    100.0 * (parent - child) / parent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_round_trips_and_saturates() {
        assert_eq!(to_ppm(0.939_912), 939_912);
        assert_eq!(to_ppm(f64::NAN), 0);
        assert_eq!(to_ppm(-1.0), 0);
        assert_eq!(to_ppm(1e9), u32::MAX);
        assert!((from_ppm(939_912) - 0.939_912).abs() < 1e-12);
    }

    #[test]
    fn summary_states_the_drop_against_the_margin() {
        let l = Lineage {
            parent: "1".into(),
            method: "prune".into(),
            params: "{}".into(),
            k: 10,
            eval_queries: 200,
            ndcg_ppm: 900_000,
            parent_ndcg_ppm: 1_000_000,
            overlap_ppm: 500_000,
            margin_ppm: 10_000,
            override_reason: Some("canary only".into()),
        };
        assert!((l.drop_pct() - 10.0).abs() < 1e-9);
        let s = l.summary();
        assert!(
            s.contains("NDCG@10 0.9000 vs 1.0000 (-10.00%, margin 1.00%)"),
            "{s}"
        );
        assert!(s.ends_with("quality override: canary only"), "{s}");
    }
}
