//! The tensors into `ModelInfer`: decoding and checking the two inputs. Pure functions over
//! the generated messages, so every rule is unit-tested without a server; the outputs and
//! request parameters are in [`super::outputs`].
//!
//! Conventions (docs/oip.md):
//! - inputs `query` (FP32, shape `[B, Dq]`) and `candidate_ids` (INT64, shape `[B, N]`),
//!   in either order; row `b` of both is one Rank call;
//! - data either in every input's typed `contents` (`fp32_contents`, `int64_contents`) or
//!   for all inputs in `raw_input_contents` (little-endian, one entry per input, in the order
//!   of `inputs`), never both in one request;
//! - outputs `item_ids` (INT64 `[B, k]`) and `scores` (FP32 `[B, k]`), best first, always as
//!   `raw_output_contents`: tritonclient's `InferResult.as_numpy` reads numeric outputs only
//!   from there (typed `contents` come back to it as empty arrays);
//! - `top_k` in the request's `parameters` (`int64_param` or `uint64_param`), 10 when absent
//!   (rankctl's default); other request parameters (`priority`, `timeout`, ...) are ignored.
//!
//! Shapes are checked against the data before anything is allocated from them, so a request
//! cannot make the server reserve memory its bytes do not pay for.

use rankd_proto::inference::model_infer_request::InferInputTensor;
use rankd_proto::inference::InferTensorContents;

pub const QUERY: &str = "query";
pub const CANDIDATES: &str = "candidate_ids";
pub const ITEM_IDS: &str = "item_ids";
pub const SCORES: &str = "scores";
pub const FP32: &str = "FP32";
pub const INT64: &str = "INT64";

const INPUTS_HINT: &str =
    "ModelInfer takes 'query' (FP32 [B, Dq]) and 'candidate_ids' (INT64 [B, N])";
const OUTPUTS_HINT: &str =
    "ModelInfer returns 'item_ids' (INT64 [B, k]) and 'scores' (FP32 [B, k])";

/// A request that does not follow the tensor conventions. Every message names the tensor
/// (or the parameter) it is about; all map to INVALID_ARGUMENT (`crate::error::InferError`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("input '{name}' is missing; {INPUTS_HINT}")]
    MissingInput { name: &'static str },
    #[error("input '{name}': no such input; {INPUTS_HINT}")]
    UnknownInput { name: String },
    #[error("input '{name}' is given twice")]
    DuplicateInput { name: &'static str },
    #[error("input '{name}': datatype '{got}' is not accepted; it must be {want}")]
    Datatype {
        name: &'static str,
        got: String,
        want: &'static str,
    },
    #[error("input '{name}': shape {shape:?} must be {want} (two non-negative dimensions)")]
    Shape {
        name: &'static str,
        shape: Vec<i64>,
        want: &'static str,
    },
    #[error(
        "input '{name}': shape {shape:?} holds {want} elements, but contents.{field} has {got}"
    )]
    Length {
        name: &'static str,
        shape: Vec<i64>,
        want: u64,
        field: &'static str,
        got: u64,
    },
    #[error("input '{name}': shape {shape:?} needs {want} bytes of little-endian {datatype}, but raw_input_contents[{index}] has {got}")]
    RawLength {
        name: &'static str,
        shape: Vec<i64>,
        want: u64,
        datatype: &'static str,
        index: usize,
        got: u64,
    },
    #[error("input '{name}': data is in both contents and raw_input_contents; use one")]
    RawAndTyped { name: &'static str },
    #[error("raw_input_contents has {raw} entries for {inputs} inputs ({names}); give one per input, in the order of inputs")]
    RawCount {
        raw: usize,
        inputs: usize,
        names: String,
    },
    #[error("input '{name}': {want} data belongs in contents.{field}, but contents.{got} is set")]
    WrongContents {
        name: &'static str,
        want: &'static str,
        field: &'static str,
        got: &'static str,
    },
    #[error("inputs 'query' and 'candidate_ids' disagree on the batch size: {query} rows against {candidates}")]
    BatchMismatch { query: u64, candidates: u64 },
    #[error("input 'query': the batch size (first dimension) is 0; send at least one row")]
    EmptyBatch,
    #[error(
        "input '{name}': shared-memory tensors are not supported; send the data in the request"
    )]
    SharedMemory { name: String },
    #[error("requested output '{name}': no such output; {OUTPUTS_HINT}")]
    UnknownOutput { name: String },
    #[error("requested output '{name}' is listed twice")]
    DuplicateOutput { name: String },
    #[error("requested output '{name}': parameter '{parameter}' is not supported")]
    OutputParameter { name: String, parameter: String },
    #[error("parameters[\"top_k\"]: {0}")]
    TopK(String),
}

/// The decoded inputs: `rows` Rank calls, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub query_dim: usize,
    pub candidates_per_row: usize,
    pub query: Vec<f32>,
    pub candidates: Vec<i64>,
}

impl Batch {
    /// Row `i`'s query features and candidate ids. `i` must be below `rows`.
    pub fn row(&self, i: usize) -> (&[f32], &[i64]) {
        let q = i * self.query_dim;
        let c = i * self.candidates_per_row;
        (
            &self.query[q..q + self.query_dim],
            &self.candidates[c..c + self.candidates_per_row],
        )
    }
}

/// One input's expectations.
struct Spec {
    name: &'static str,
    datatype: &'static str,
    shape: &'static str,
    /// The typed field its data belongs in.
    field: &'static str,
}

const SPECS: [Spec; 2] = [
    Spec {
        name: QUERY,
        datatype: FP32,
        shape: "[B, Dq]",
        field: "fp32_contents",
    },
    Spec {
        name: CANDIDATES,
        datatype: INT64,
        shape: "[B, N]",
        field: "int64_contents",
    },
];

/// Decodes `inputs` (with `raw`, the request's `raw_input_contents`) into a [`Batch`].
pub fn decode(inputs: &[InferInputTensor], raw: &[Vec<u8>]) -> Result<Batch, DecodeError> {
    if !raw.is_empty() && raw.len() != inputs.len() {
        let names: Vec<String> = inputs.iter().map(|t| format!("'{}'", t.name)).collect();
        return Err(DecodeError::RawCount {
            raw: raw.len(),
            inputs: inputs.len(),
            names: names.join(", "),
        });
    }
    let mut query = None;
    let mut candidates = None;
    for (index, tensor) in inputs.iter().enumerate() {
        let (spec, slot) = match tensor.name.as_str() {
            QUERY => (&SPECS[0], &mut query),
            CANDIDATES => (&SPECS[1], &mut candidates),
            other => {
                return Err(DecodeError::UnknownInput {
                    name: other.to_string(),
                })
            }
        };
        if slot.is_some() {
            return Err(DecodeError::DuplicateInput { name: spec.name });
        }
        *slot = Some(check(
            spec,
            tensor,
            raw.get(index).map(|r| (index, r.as_slice())),
        )?);
    }
    let (q_dims, q_data) = query.ok_or(DecodeError::MissingInput { name: QUERY })?;
    let (c_dims, c_data) = candidates.ok_or(DecodeError::MissingInput { name: CANDIDATES })?;
    if q_dims[0] != c_dims[0] {
        return Err(DecodeError::BatchMismatch {
            query: q_dims[0],
            candidates: c_dims[0],
        });
    }
    if q_dims[0] == 0 {
        return Err(DecodeError::EmptyBatch);
    }
    // A dimension is bounded by a data length in memory unless the other one is 0; the
    // service refuses batches over its row limit before any row is sliced.
    let dim = |d: u64| usize::try_from(d).unwrap_or(usize::MAX);
    Ok(Batch {
        rows: dim(q_dims[0]),
        query_dim: dim(q_dims[1]),
        candidates_per_row: dim(c_dims[1]),
        query: q_data.f32s(),
        candidates: c_data.i64s(),
    })
}

/// Where one input's elements are, once their count matches its shape.
enum Source<'a> {
    Raw(&'a [u8]),
    Typed(&'a InferTensorContents),
}

impl Source<'_> {
    fn f32s(&self) -> Vec<f32> {
        match self {
            Source::Raw(bytes) => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Source::Typed(c) => c.fp32_contents.clone(),
        }
    }

    fn i64s(&self) -> Vec<i64> {
        match self {
            Source::Raw(bytes) => bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
            Source::Typed(c) => c.int64_contents.clone(),
        }
    }
}

/// Checks one input against its spec: parameters, datatype, shape, and that exactly the
/// shape's element count was sent, in the right place. Returns the shape and the data.
fn check<'a>(
    spec: &Spec,
    tensor: &'a InferInputTensor,
    raw: Option<(usize, &'a [u8])>,
) -> Result<([u64; 2], Source<'a>), DecodeError> {
    if tensor
        .parameters
        .keys()
        .any(|k| k.starts_with("shared_memory"))
    {
        return Err(DecodeError::SharedMemory {
            name: spec.name.to_string(),
        });
    }
    if tensor.datatype != spec.datatype {
        return Err(DecodeError::Datatype {
            name: spec.name,
            got: tensor.datatype.clone(),
            want: spec.datatype,
        });
    }
    let bad_shape = || DecodeError::Shape {
        name: spec.name,
        shape: tensor.shape.clone(),
        want: spec.shape,
    };
    let dims: [u64; 2] = match tensor.shape.as_slice() {
        [a, b] => [
            u64::try_from(*a).map_err(|_| bad_shape())?,
            u64::try_from(*b).map_err(|_| bad_shape())?,
        ],
        _ => return Err(bad_shape()),
    };
    // An overflowing element count is simply more than any request can carry.
    let elements = dims[0].saturating_mul(dims[1]);
    let typed = tensor
        .contents
        .as_ref()
        .filter(|c| !set_fields(c).is_empty());
    let source = match (raw, typed) {
        (Some(_), Some(_)) => return Err(DecodeError::RawAndTyped { name: spec.name }),
        (Some((index, bytes)), None) => {
            let size = if spec.datatype == FP32 { 4 } else { 8 };
            let want = elements.saturating_mul(size);
            if bytes.len() as u64 != want {
                return Err(DecodeError::RawLength {
                    name: spec.name,
                    shape: tensor.shape.clone(),
                    want,
                    datatype: spec.datatype,
                    index,
                    got: bytes.len() as u64,
                });
            }
            Source::Raw(bytes)
        }
        (None, Some(c)) => {
            if let Some(got) = set_fields(c).into_iter().find(|f| *f != spec.field) {
                return Err(DecodeError::WrongContents {
                    name: spec.name,
                    want: spec.datatype,
                    field: spec.field,
                    got,
                });
            }
            let got = if spec.datatype == FP32 {
                c.fp32_contents.len()
            } else {
                c.int64_contents.len()
            };
            if got as u64 != elements {
                return Err(DecodeError::Length {
                    name: spec.name,
                    shape: tensor.shape.clone(),
                    want: elements,
                    field: spec.field,
                    got: got as u64,
                });
            }
            Source::Typed(c)
        }
        // No data at all is right only for a shape with no elements.
        (None, None) if elements == 0 => Source::Raw(&[]),
        (None, None) => {
            return Err(DecodeError::Length {
                name: spec.name,
                shape: tensor.shape.clone(),
                want: elements,
                field: spec.field,
                got: 0,
            })
        }
    };
    Ok((dims, source))
}

/// The typed fields of `c` that hold data.
fn set_fields(c: &InferTensorContents) -> Vec<&'static str> {
    [
        ("bool_contents", c.bool_contents.is_empty()),
        ("int_contents", c.int_contents.is_empty()),
        ("int64_contents", c.int64_contents.is_empty()),
        ("uint_contents", c.uint_contents.is_empty()),
        ("uint64_contents", c.uint64_contents.is_empty()),
        ("fp32_contents", c.fp32_contents.is_empty()),
        ("fp64_contents", c.fp64_contents.is_empty()),
        ("bytes_contents", c.bytes_contents.is_empty()),
    ]
    .into_iter()
    .filter(|(_, empty)| !empty)
    .map(|(name, _)| name)
    .collect()
}

#[cfg(test)]
mod tests;
