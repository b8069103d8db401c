//! `TorchRanker`: a TorchScript model plus its item table, resident on one device.
//!
//! Invariants:
//! - The item table never leaves the device after load; a request moves only its query and
//!   candidate ids in, and only the top-k scores and positions out.
//! - Every libtorch call goes through a fallible `f_*` API, so a libtorch exception becomes a
//!   `KernelError`, never a panic.
//! - A `TorchRanker` exists only after warmup and golden replay succeeded.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use tch::{CModule, Device, Kind, Tensor};

use crate::bundle::{Bundle, StoredPrecision, ITEMS_TENSOR, MODEL_FILE};
use crate::device::{DeviceSpec, Precision};
use crate::error::{first_line, torch_err, KernelError};
use crate::input::{validate, RankInput, Ranked};
use crate::{golden, ModelInfo, Ranker};

/// How to load and run a bundle.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub device: DeviceSpec,
    pub precision: Precision,
    /// libtorch intra-op threads; 0 keeps libtorch's default. Process-wide.
    pub torch_threads: usize,
    /// Absolute score tolerance for golden replay; `None` uses the precision's default.
    pub golden_tolerance: Option<f32>,
    /// `(batch, candidates)` shapes run at load time so the first real request does not pay
    /// for TorchScript's profiling runs and allocator growth.
    pub warmup_shapes: Vec<(usize, usize)>,
    pub warmup_iterations: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            device: DeviceSpec::Auto,
            precision: Precision::Fp32,
            torch_threads: 0,
            golden_tolerance: None,
            warmup_shapes: vec![(1, 100), (1, 1000), (8, 100)],
            warmup_iterations: 3,
        }
    }
}

pub struct TorchRanker {
    module: CModule,
    /// `[item_count, item_dim]` at the serving precision, on `device`.
    items: Tensor,
    device: Device,
    kind: Kind,
    /// Each request gets its own forward pass (see [`TorchRanker::rank_batch`]).
    isolate_requests: bool,
    info: ModelInfo,
}

impl TorchRanker {
    /// Loads `bundle` onto the configured device, warms it up and replays the golden set.
    /// Returns the ranker and the seconds the whole load took.
    pub fn load(bundle: &Bundle, cfg: &EngineConfig) -> Result<(TorchRanker, f64), KernelError> {
        let start = Instant::now();
        if cfg.torch_threads > 0 {
            crate::set_intra_op_threads(cfg.torch_threads);
        }
        let m = &bundle.manifest;
        let stored = m.stored_precision();
        // Checked before the device is resolved too, so a CUDA node refuses an int8 bundle
        // with this reason even while its GPU is unavailable.
        if stored == StoredPrecision::Int8 {
            if let DeviceSpec::Cuda(i) = cfg.device {
                return Err(KernelError::Int8OnCuda {
                    device: format!("cuda:{i}"),
                });
            }
        }
        let device = cfg.device.resolve()?;
        if stored == StoredPrecision::Int8 && device != Device::Cpu {
            return Err(KernelError::Int8OnCuda {
                device: device_name(device),
            });
        }
        cfg.precision.check_device(device)?;
        let kind = cfg.precision.kind();

        let model_err = |reason: String| KernelError::ModelFile {
            file: MODEL_FILE.into(),
            reason,
        };
        let mut module = CModule::load_on_device(bundle.model_path(), device).map_err(|e| {
            model_err(format!(
                "not a loadable TorchScript module: {}",
                first_line(&e.to_string())
            ))
        })?;
        module.f_set_eval().map_err(torch_err)?;
        // An int8 module's packed weights are not floating point: it runs as stored (on the
        // CPU at fp32, checked above). Half-precision bundles are widened or kept to match.
        if stored != StoredPrecision::Int8 && kind != stored_kind(stored) {
            // `CModule::to` panics on a libtorch error instead of returning it.
            catch_unwind(AssertUnwindSafe(|| module.to(device, kind, false)))
                .map_err(|_| model_err(format!("cannot convert weights to {}", cfg.precision)))?;
        }
        let items = load_items(bundle, device, stored_kind(stored), kind)?;
        let ranker = TorchRanker {
            module,
            items,
            device,
            kind,
            isolate_requests: stored == StoredPrecision::Int8
                && m.quantization.as_deref() != Some("static"),
            info: ModelInfo {
                name: m.name.clone(),
                version: m.version.clone(),
                query_dim: m.query_dim,
                item_dim: m.item_dim,
                item_count: m.item_count,
                device: device_name(device),
                precision: cfg.precision,
            },
        };
        ranker.warmup(cfg)?;
        let tol = cfg
            .golden_tolerance
            .unwrap_or_else(|| cfg.precision.default_golden_tolerance());
        golden::validate(&ranker, &bundle.golden, tol)?;
        Ok((ranker, start.elapsed().as_secs_f64()))
    }

    /// Runs synthetic batches of the configured shapes. The first forward is also where a
    /// manifest whose dimensions disagree with the model shows up, so failures here are
    /// reported as shape errors.
    fn warmup(&self, cfg: &EngineConfig) -> Result<(), KernelError> {
        let info = &self.info;
        let shape_err = |reason: String| KernelError::Shape {
            query_dim: info.query_dim,
            item_dim: info.item_dim,
            reason,
        };
        let query = vec![0.5f32; info.query_dim];
        for &(batch, n) in &cfg.warmup_shapes {
            let ids: Vec<i64> = (0..n).map(|i| (i % info.item_count) as i64).collect();
            let inputs = vec![
                RankInput {
                    query: &query,
                    candidates: &ids,
                    top_k: 10,
                };
                batch.max(1)
            ];
            for _ in 0..cfg.warmup_iterations.max(1) {
                self.forward(&inputs)
                    .map_err(|e| shape_err(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Gather, forward, top-k, copy back. Inputs must already be validated.
    fn forward(
        &self,
        batch: &[RankInput<'_>],
    ) -> Result<Vec<Result<Ranked, KernelError>>, KernelError> {
        let _no_grad = tch::no_grad_guard();
        let b = batch.len();
        let dq = self.info.query_dim;
        let n_max = batch.iter().map(|r| r.candidates.len()).max().unwrap_or(0);
        let k_max = batch.iter().map(|r| r.top_k).max().unwrap_or(0).min(n_max);
        let (b_i, n_i, dq_i, di_i) = (
            to_i64(b),
            to_i64(n_max),
            to_i64(dq),
            to_i64(self.info.item_dim),
        );

        // Short lists are padded with item 0 and masked to -inf before top-k.
        let mut queries = Vec::with_capacity(b * dq);
        let mut ids = Vec::with_capacity(b * n_max);
        let mut ragged = false;
        for r in batch {
            queries.extend_from_slice(r.query);
            ids.extend_from_slice(r.candidates);
            let pad = n_max - r.candidates.len();
            ragged |= pad > 0;
            ids.extend(std::iter::repeat_n(0i64, pad));
        }
        let t = |r: Result<Tensor, tch::TchError>| r.map_err(torch_err);
        let q = t(Tensor::f_from_slice(&queries))?;
        let q = t(t(t(q.f_view([b_i, dq_i]))?.f_to_device(self.device))?.f_to_kind(self.kind))?;
        let idx = t(t(Tensor::f_from_slice(&ids))?.f_to_device(self.device))?;
        let items = t(t(self.items.f_index_select(0, &idx))?.f_view([b_i, n_i, di_i]))?;

        let scores = t(self.module.forward_ts(&[q, items]))?;
        if scores.size() != [b_i, n_i] {
            return Err(KernelError::Torch(format!(
                "model returned scores of shape {:?}, expected [{b}, {n_max}]",
                scores.size()
            )));
        }
        let scores = if ragged {
            let lens: Vec<i64> = batch.iter().map(|r| to_i64(r.candidates.len())).collect();
            let lens =
                t(t(t(Tensor::f_from_slice(&lens))?.f_view([b_i, 1]))?.f_to_device(self.device))?;
            let pos = t(t(Tensor::f_arange(n_i, (Kind::Int64, self.device)))?.f_unsqueeze(0))?;
            let pad_mask = t(pos.f_ge_tensor(&lens))?;
            t(scores.f_masked_fill(&pad_mask, f64::NEG_INFINITY))?
        } else {
            scores
        };
        let (top_scores, top_pos) = scores
            .f_topk(to_i64(k_max), 1, true, true)
            .map_err(torch_err)?;
        let top_scores =
            t(t(t(top_scores.f_to_kind(Kind::Float))?.f_to_device(Device::Cpu))?.f_view([-1]))?;
        let top_pos = t(t(top_pos.f_to_device(Device::Cpu))?.f_view([-1]))?;
        let top_scores = Vec::<f32>::try_from(&top_scores).map_err(torch_err)?;
        let top_pos = Vec::<i64>::try_from(&top_pos).map_err(torch_err)?;

        Ok(batch
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let k = r.top_k.min(r.candidates.len());
                let row = i * k_max..i * k_max + k;
                collect_row(r.candidates, &top_pos[row.clone()], &top_scores[row])
            })
            .collect())
    }
}

/// Maps top-k positions back to item ids. A non-finite score means the model misbehaved on
/// this request (NaN sorts first in top-k, so one NaN anywhere in the row shows up here).
fn collect_row(candidates: &[i64], pos: &[i64], scores: &[f32]) -> Result<Ranked, KernelError> {
    if let Some(&score) = scores.iter().find(|s| !s.is_finite()) {
        return Err(KernelError::NonFiniteScore { score });
    }
    let ids = pos
        .iter()
        .map(|&p| {
            usize::try_from(p)
                .ok()
                .and_then(|p| candidates.get(p).copied())
                .ok_or_else(|| {
                    KernelError::Torch(format!(
                        "top-k returned position {p} outside the candidates"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Ranked {
        ids,
        scores: scores.to_vec(),
    })
}

// SAFETY: `tch::Tensor` is not `Sync` because it wraps a raw pointer, but the only tensor
// held here, `items`, is never mutated after `load` returns: requests only read it through
// `index_select`, and concurrent reads of one libtorch tensor are safe. `CModule` is `Sync`
// in tch, and TorchScript's `forward` may be called from several threads at once.
unsafe impl Sync for TorchRanker {}

impl Ranker for TorchRanker {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn rank_batch(
        &self,
        batch: &[RankInput<'_>],
    ) -> Result<Vec<Result<Ranked, KernelError>>, KernelError> {
        for r in batch {
            validate(&self.info, r)?;
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Dynamic int8 quantisation picks one activation scale per forward pass from the
        // whole input tensor, so in a shared batch a request's scores would depend on the
        // requests it happened to be batched with. Each request runs alone instead: the
        // same request always gets the same scores, as it does in the exporter's golden set.
        // Static int8 (scales fixed at export) batches like any other model.
        if self.isolate_requests && batch.len() > 1 {
            let mut out = Vec::with_capacity(batch.len());
            for r in batch {
                out.extend(self.forward(std::slice::from_ref(r))?);
            }
            return Ok(out);
        }
        self.forward(batch)
    }
}

/// The dtype the bundle's weights and item table are stored in (int8 bundles keep fp32
/// items and activations).
fn stored_kind(stored: StoredPrecision) -> Kind {
    match stored {
        StoredPrecision::Fp16 => Kind::Half,
        StoredPrecision::Bf16 => Kind::BFloat16,
        StoredPrecision::Fp32 | StoredPrecision::Int8 => Kind::Float,
    }
}

fn load_items(
    bundle: &Bundle,
    device: Device,
    stored: Kind,
    kind: Kind,
) -> Result<Tensor, KernelError> {
    let m = &bundle.manifest;
    let bad = |reason: String| KernelError::ItemTable(reason);
    let tensors = Tensor::read_safetensors(bundle.items_path())
        .map_err(|e| bad(first_line(&e.to_string())))?;
    let (_, items) = tensors
        .into_iter()
        .find(|(name, _)| name == ITEMS_TENSOR)
        .ok_or_else(|| bad(format!("no tensor named {ITEMS_TENSOR:?}")))?;
    if items.kind() != stored {
        return Err(bad(format!(
            "dtype {:?}, but the manifest's precision {} stores {stored:?}",
            items.kind(),
            m.precision
        )));
    }
    let want = [to_i64(m.item_count), to_i64(m.item_dim)];
    if items.size() != want {
        return Err(bad(format!(
            "shape {:?} does not match the manifest's item_count {} x item_dim {}",
            items.size(),
            m.item_count,
            m.item_dim
        )));
    }
    let items = items
        .f_to_device(device)
        .and_then(|t| t.f_to_kind(kind))
        .and_then(|t| t.f_contiguous())
        .map_err(torch_err)?;
    Ok(items)
}

fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

/// Sizes here come from validated requests and manifests, far below i64::MAX.
fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
