//! The quality guard for compressed versions.
//!
//! A bundle whose manifest names a `lineage` (a parent version and a compression method) is
//! measured before it is registered: the node that received the upload ranks a held-out set
//! with the new version and with its parent, through the same engine that serves requests,
//! and refuses the version when its NDCG@k falls more than `compression.max_ndcg_drop_pct`
//! below the parent's. The exporter's own report is shown to people but never trusted here.
//!
//! The held-out set is the parent's `eval.json` when it has one (the parent is already
//! registered, so the upload cannot choose an easier set), else the new bundle's own.

pub mod config;

use std::sync::Arc;

use rankd_artifact::Store;
use rankd_kernels::quality::{self, EvalSet};
use rankd_kernels::{Bundle, EngineConfig, KernelError, Ranker, TorchRanker};
use rankd_raft::registry::Registry;
use rankd_raft::registry::{relative_drop_pct, to_ppm};
use rankd_raft::{Lineage, ModelRef};

pub use config::CompressionConfig;

use crate::model::{LoadError, Loaded};

/// Why a compressed version was not registered.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("lineage: {child}'s parent {parent} is not registered; register the parent first")]
    ParentUnknown { child: ModelRef, parent: ModelRef },
    #[error("lineage: this node cannot read {parent}, the parent of {child}: {source}")]
    ParentUnavailable {
        child: ModelRef,
        parent: ModelRef,
        #[source]
        source: Box<LoadError>,
    },
    #[error("{child} cannot be measured against its parent {parent}: neither bundle has eval.json (held-out queries with graded labels); export with `package --eval` or from the demo exporter")]
    NoEvalSet { child: ModelRef, parent: ModelRef },
    #[error("measuring NDCG@k of {model} on the held-out set failed: {source}")]
    Measure {
        model: ModelRef,
        #[source]
        source: KernelError,
    },
    #[error("{child}: NDCG@{k} {ndcg:.4} is {drop_pct:.2}% below its parent {parent}'s {parent_ndcg:.4} on {queries} held-out queries, more than compression.max_ndcg_drop_pct = {margin_pct:.2}%; upload with a quality override (rankctl upload --quality-override \"reason\") to register it anyway")]
    Degraded {
        child: ModelRef,
        parent: ModelRef,
        k: usize,
        queries: usize,
        ndcg: f64,
        parent_ndcg: f64,
        drop_pct: f64,
        margin_pct: f64,
    },
}

/// What the guard needs from the node: the registry as applied here, the store, and the
/// parent when it is already loaded (so it is not loaded twice).
pub struct GuardContext<'a> {
    pub registry: &'a Registry,
    pub store: &'a Store,
    pub engine: &'a EngineConfig,
    pub parent_loaded: Option<Arc<Loaded>>,
    pub policy: &'a CompressionConfig,
    /// The upload's `quality_override`; empty: none.
    pub override_reason: &'a str,
}

/// Measures a freshly validated bundle against its parent. `Ok(None)`: the bundle has no
/// lineage and nothing is checked. Runs libtorch: call from a blocking thread.
pub fn check(
    ctx: &GuardContext<'_>,
    child_bundle: &Bundle,
    child: &dyn Ranker,
) -> Result<Option<Lineage>, Box<GuardError>> {
    against_parent(ctx, child_bundle, child).map_err(Box::new)
}

// Built at most once per refused upload: the error's size does not matter here.
#[allow(clippy::result_large_err)]
fn against_parent(
    ctx: &GuardContext<'_>,
    child_bundle: &Bundle,
    child: &dyn Ranker,
) -> Result<Option<Lineage>, GuardError> {
    let m = &child_bundle.manifest;
    let Some(lin) = &m.lineage else {
        return Ok(None);
    };
    let child_ref = ModelRef::new(&m.name, &m.version);
    let parent_ref = ModelRef::new(&m.name, &lin.parent);
    if !ctx.registry.versions.contains_key(&parent_ref) {
        return Err(GuardError::ParentUnknown {
            child: child_ref,
            parent: parent_ref,
        });
    }
    let unavailable = |source: LoadError| GuardError::ParentUnavailable {
        child: child_ref.clone(),
        parent: parent_ref.clone(),
        source: Box::new(source),
    };
    // One checkout serves both the parent's held-out set and, when the parent is not
    // loaded here, its model; the plaintext is gone when the checkout drops.
    let checkout = ctx
        .store
        .checkout(&parent_ref.name, &parent_ref.version)
        .map_err(|e| unavailable(e.into()))?;
    let parent_bundle = Bundle::open(checkout.dir()).map_err(|e| unavailable(e.into()))?;
    let parent_set = parent_bundle
        .eval_set()
        .map_err(|e| unavailable(e.into()))?;
    let child_set = child_bundle
        .eval_set()
        .map_err(|source| GuardError::Measure {
            model: child_ref.clone(),
            source,
        })?;
    let set: EvalSet = match (parent_set, child_set) {
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => {
            return Err(GuardError::NoEvalSet {
                child: child_ref,
                parent: parent_ref,
            })
        }
    };
    set.check(m).map_err(|source| GuardError::Measure {
        model: child_ref.clone(),
        source,
    })?;
    let parent: Arc<dyn Ranker> = match &ctx.parent_loaded {
        Some(l) => l.ranker.clone(),
        None => {
            let (r, _) =
                TorchRanker::load(&parent_bundle, ctx.engine).map_err(|e| unavailable(e.into()))?;
            Arc::new(r)
        }
    };
    drop(checkout);

    let measure = |model: &ModelRef, r: &dyn Ranker| {
        quality::rankings(r, &set).map_err(|source| GuardError::Measure {
            model: model.clone(),
            source,
        })
    };
    let child_ranked = measure(&child_ref, child)?;
    let parent_ranked = measure(&parent_ref, parent.as_ref())?;
    let ndcg = quality::ndcg(&set, &child_ranked);
    let parent_ndcg = quality::ndcg(&set, &parent_ranked);
    let drop_pct = relative_drop_pct(parent_ndcg, ndcg);
    let margin_pct = ctx.policy.max_ndcg_drop_pct;
    let override_reason = ctx.override_reason.trim();
    if drop_pct > margin_pct {
        if override_reason.is_empty() {
            return Err(GuardError::Degraded {
                child: child_ref,
                parent: parent_ref,
                k: set.k,
                queries: set.queries.len(),
                ndcg,
                parent_ndcg,
                drop_pct,
                margin_pct,
            });
        }
        tracing::warn!(
            model = %child_ref, parent = %parent_ref, ndcg, parent_ndcg, drop_pct, margin_pct,
            reason = override_reason, "quality guard overridden"
        );
    }
    tracing::info!(
        model = %child_ref, parent = %parent_ref, method = %lin.method, ndcg, parent_ndcg,
        drop_pct, "quality guard measured a compressed version"
    );
    Ok(Some(Lineage {
        parent: lin.parent.clone(),
        method: lin.method.clone(),
        params: lin.params.to_string(),
        k: u32::try_from(set.k).unwrap_or(u32::MAX),
        eval_queries: u32::try_from(set.queries.len()).unwrap_or(u32::MAX),
        ndcg_ppm: to_ppm(ndcg),
        parent_ndcg_ppm: to_ppm(parent_ndcg),
        overlap_ppm: to_ppm(quality::overlap(&child_ranked, &parent_ranked, set.k)),
        margin_ppm: to_ppm(margin_pct / 100.0),
        // Recorded only when it was needed, so the history shows overrides that mattered.
        override_reason: (drop_pct > margin_pct).then(|| override_reason.to_string()),
    }))
}

/// The registry's lineage in the admin API's shape.
pub fn lineage_proto(l: &Lineage) -> rankd_proto::admin::v1::Lineage {
    use rankd_raft::registry::from_ppm;
    rankd_proto::admin::v1::Lineage {
        parent_version: l.parent.clone(),
        method: l.method.clone(),
        params: l.params.clone(),
        k: l.k,
        eval_queries: l.eval_queries,
        ndcg: from_ppm(l.ndcg_ppm),
        parent_ndcg: from_ppm(l.parent_ndcg_ppm),
        drop_pct: l.drop_pct(),
        top_k_overlap: from_ppm(l.overlap_ppm),
        margin_pct: from_ppm(l.margin_ppm) * 100.0,
        quality_override: l.override_reason.clone().unwrap_or_default(),
        summary: l.summary(),
    }
}
