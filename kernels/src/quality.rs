//! Ranking quality of a loaded model on a held-out set: NDCG@k and top-k overlap.
//!
//! This is what the compression guard measures, on the node, through the same engine that
//! serves requests: a compressed version's quality is never taken from the exporter's word.
//!
//! NDCG uses gain `2^label - 1` and discount `1 / log2(rank + 2)`, the exporter's definition,
//! so the figures it writes into a bundle's report are comparable with the guard's.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::bundle::Manifest;
use crate::error::KernelError;
use crate::input::RankInput;
use crate::Ranker;

/// Queries ranked per forward pass while measuring: large enough to be quick, small enough
/// that a measurement never holds a big batch on the device.
const EVAL_BATCH: usize = 32;

/// `eval.json`: held-out queries, each with candidates and a graded label per candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSet {
    /// The cut-off the set is meant for (10 for NDCG@10).
    pub k: usize,
    pub queries: Vec<EvalQuery>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalQuery {
    pub query: Vec<f32>,
    pub candidates: Vec<i64>,
    /// Graded relevance per candidate, 0 = irrelevant.
    pub labels: Vec<u32>,
}

impl EvalSet {
    /// Checks the set fits the model it ships with, so a measurement cannot fail half-way.
    pub fn check(&self, m: &Manifest) -> Result<(), KernelError> {
        let bad = |reason: String| KernelError::Manifest(format!("eval.json: {reason}"));
        if self.k == 0 {
            return Err(bad("k must be positive".into()));
        }
        if self.queries.is_empty() {
            return Err(bad("has no queries".into()));
        }
        for (i, q) in self.queries.iter().enumerate() {
            if q.query.len() != m.query_dim {
                return Err(bad(format!(
                    "query {i} has {} features, the model takes {}",
                    q.query.len(),
                    m.query_dim
                )));
            }
            if q.candidates.is_empty() || q.candidates.len() != q.labels.len() {
                return Err(bad(format!(
                    "query {i} has {} candidates and {} labels",
                    q.candidates.len(),
                    q.labels.len()
                )));
            }
            if let Some(id) = q
                .candidates
                .iter()
                .find(|&&id| usize::try_from(id).map_or(true, |id| id >= m.item_count))
            {
                return Err(bad(format!("query {i} names unknown item id {id}")));
            }
            if q.labels.iter().any(|&l| l > 30) {
                return Err(bad(format!("query {i} has a label above 30")));
            }
        }
        Ok(())
    }
}

/// The top-k candidate ids of every query, in rank order.
pub fn rankings(ranker: &dyn Ranker, set: &EvalSet) -> Result<Vec<Vec<i64>>, KernelError> {
    let mut out = Vec::with_capacity(set.queries.len());
    for chunk in set.queries.chunks(EVAL_BATCH) {
        let inputs: Vec<RankInput<'_>> = chunk
            .iter()
            .map(|q| RankInput {
                query: &q.query,
                candidates: &q.candidates,
                top_k: set.k.min(q.candidates.len()),
            })
            .collect();
        for ranked in ranker.rank_batch(&inputs)? {
            out.push(ranked?.ids);
        }
    }
    Ok(out)
}

/// Mean NDCG@k of `rankings` (one per query of `set`).
pub fn ndcg(set: &EvalSet, rankings: &[Vec<i64>]) -> f64 {
    let discount = |rank: usize| 1.0 / ((rank + 2) as f64).log2();
    let gain = |label: u32| 2f64.powi(label as i32) - 1.0;
    let mut total = 0.0;
    for (q, ranked) in set.queries.iter().zip(rankings) {
        let label_of = |id: i64| {
            q.candidates
                .iter()
                .position(|&c| c == id)
                .map_or(0, |p| q.labels[p])
        };
        let dcg: f64 = ranked
            .iter()
            .take(set.k)
            .enumerate()
            .map(|(r, &id)| gain(label_of(id)) * discount(r))
            .sum();
        let mut ideal: Vec<u32> = q.labels.clone();
        ideal.sort_unstable_by(|a, b| b.cmp(a));
        let idcg: f64 = ideal
            .iter()
            .take(set.k)
            .enumerate()
            .map(|(r, &l)| gain(l) * discount(r))
            .sum();
        total += dcg / idcg.max(1e-12);
    }
    total / set.queries.len().max(1) as f64
}

/// Mean share of one ranking's top k that the other also ranks in its top k.
pub fn overlap(a: &[Vec<i64>], b: &[Vec<i64>], k: usize) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 || k == 0 {
        return 0.0;
    }
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            let ys: HashSet<&i64> = y.iter().take(k).collect();
            let hits = x.iter().take(k).filter(|id| ys.contains(id)).count();
            hits as f64 / k.min(x.len()).max(1) as f64
        })
        .sum();
    sum / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(labels: Vec<u32>) -> EvalSet {
        EvalSet {
            k: 3,
            queries: vec![EvalQuery {
                query: vec![0.0],
                candidates: (0..labels.len() as i64).collect(),
                labels,
            }],
        }
    }

    #[test]
    fn ideal_ranking_scores_one_and_reversed_scores_less() {
        let s = set(vec![0, 1, 3, 2]);
        assert!((ndcg(&s, &[vec![2, 3, 1]]) - 1.0).abs() < 1e-12);
        let worse = ndcg(&s, &[vec![0, 1, 3]]);
        assert!(worse < 0.6, "{worse}");
    }

    #[test]
    fn ndcg_matches_a_hand_computed_value() {
        // gains: id1 -> 1, id2 -> 7; ranking [1, 2, 0]: dcg = 1/1 + 7/log2(3) + 0
        // ideal [2, 1, 0]: 7/1 + 1/log2(3)
        let s = set(vec![0, 1, 3]);
        let want = (1.0 + 7.0 / 3f64.log2()) / (7.0 + 1.0 / 3f64.log2());
        assert!((ndcg(&s, &[vec![1, 2, 0]]) - want).abs() < 1e-12);
    }

    #[test]
    fn overlap_counts_shared_ids() {
        let a = vec![vec![1, 2, 3], vec![4, 5, 6]];
        let b = vec![vec![3, 2, 9], vec![4, 5, 6]];
        assert!((overlap(&a, &b, 3) - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
    }
}
