//! The only crate in rankd that touches libtorch (through `tch`).
//!
//! It loads a model bundle (see [`bundle`]) onto a device, converts it to the serving
//! precision, warms it up, replays the bundle's golden set, and then ranks batches of
//! requests: gather each request's candidate rows from the device-resident item table, run
//! the TorchScript `forward(query [B, Dq], items [B, N, Di]) -> scores [B, N]`, take the
//! top k on the device, and copy only those back.
//!
//! Everything else in rankd sees the [`Ranker`] trait and plain Rust types.
//! `rank_batch` blocks for the length of a forward pass: call it from dedicated threads,
//! never from an async runtime's workers.

pub mod bundle;
pub mod device;
pub mod engine;
pub mod error;
pub mod golden;
pub mod input;
pub mod quality;

pub use bundle::{Bundle, GoldenCase, GoldenSet, Lineage, Manifest, StoredPrecision};
pub use device::{DeviceSpec, Precision};
pub use engine::{EngineConfig, TorchRanker};
pub use error::{InputError, KernelError};
pub use input::{validate, RankInput, Ranked};

/// What a loaded model is, for responses, metrics and health.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub query_dim: usize,
    pub item_dim: usize,
    pub item_count: usize,
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub precision: Precision,
}

/// A loaded, validated model that ranks batches.
pub trait Ranker: Send + Sync {
    fn info(&self) -> &ModelInfo;

    /// Ranks every input of `batch` in one forward pass. The outer error means the whole
    /// batch failed (an invalid input or a libtorch failure); an inner error affects only
    /// that request (the model produced a non-finite score for it).
    fn rank_batch(
        &self,
        batch: &[RankInput<'_>],
    ) -> Result<Vec<Result<Ranked, KernelError>>, KernelError>;
}

/// Whether libtorch in this process can use CUDA (false when `libtorch_cuda` was not linked).
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

/// libtorch's intra-op thread count in this process now.
pub fn intra_op_threads() -> usize {
    usize::try_from(tch::get_num_threads()).unwrap_or(1)
}

/// Sets libtorch's intra-op thread count for the whole process (as loading a model with
/// `EngineConfig::torch_threads` does).
pub fn set_intra_op_threads(n: usize) {
    tch::set_num_threads(i32::try_from(n).unwrap_or(i32::MAX));
}

/// CUDA device count as libtorch sees it.
pub fn cuda_device_count() -> usize {
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}
