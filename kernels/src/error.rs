use std::path::PathBuf;

/// Everything that can go wrong between a bundle on disk and a ranked list.
///
/// Variants split into two families: load-time problems (the bundle is unusable and must
/// never be served) and request-time problems (one batch or one request failed; the engine
/// keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: malformed JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("bundle manifest: {0}")]
    Manifest(String),
    #[error("{file}: sha256 {actual} does not match the manifest's {expected}")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{file}: {reason}")]
    ModelFile { file: String, reason: String },
    #[error("item table: {0}")]
    ItemTable(String),
    #[error("device: {0}")]
    Device(String),
    #[error("precision {precision} is not supported on {device}: half precision needs CUDA")]
    PrecisionUnsupported { precision: String, device: String },
    #[error("an int8 bundle (quantised linear layers on fbgemm CPU kernels) runs on CPU only, and this node is configured for {device}: serve it from a node with device = \"cpu\", or compress the parent with --method fp16 for CUDA")]
    Int8OnCuda { device: String },
    #[error(
        "model does not fit the manifest (query_dim {query_dim}, item_dim {item_dim}): {reason}"
    )]
    Shape {
        query_dim: usize,
        item_dim: usize,
        reason: String,
    },
    #[error("golden set case {case}: {reason}")]
    Golden { case: usize, reason: String },
    #[error("invalid input: {0}")]
    Input(#[from] InputError),
    #[error("model produced a non-finite score ({score}) for the request")]
    NonFiniteScore { score: f32 },
    #[error("libtorch: {0}")]
    Torch(String),
}

/// A request that does not fit the loaded model; defined next to the checks, in
/// [`rankd_proto::request`], which needs no libtorch.
pub use rankd_proto::request::InputError;

/// libtorch errors carry a C++ backtrace after the first line; operators need the first line.
pub(crate) fn torch_err(e: tch::TchError) -> KernelError {
    KernelError::Torch(first_line(&e.to_string()))
}

pub(crate) fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown error")
        .to_string()
}
