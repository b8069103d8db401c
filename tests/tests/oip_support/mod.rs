//! Helpers shared by the Open Inference Protocol tests (oip.rs, oip_errors.rs): a client,
//! and ModelInfer requests built from (query, candidates) rows.
// Each test binary uses a different subset of these.
#![allow(dead_code)]

use std::collections::HashMap;

use rankd_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use rankd_proto::inference::infer_parameter::ParameterChoice;
use rankd_proto::inference::model_infer_request::InferInputTensor;
use rankd_proto::inference::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
};
use rankd_tests::{manifest, Node};
use tonic::transport::Channel;

pub type Client = GrpcInferenceServiceClient<Channel>;

pub const MAX_CANDIDATES: usize = 2000;

pub fn model() -> (String, String) {
    let m = manifest();
    let field = |k: &str| m[k].as_str().expect("manifest field").to_string();
    (field("name"), field("version"))
}

pub async fn client(node: &Node) -> Client {
    GrpcInferenceServiceClient::new(node.channel().await)
}

pub fn tensor(
    name: &str,
    datatype: &str,
    shape: &[usize],
    contents: Option<InferTensorContents>,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.iter().map(|&d| d as i64).collect(),
        parameters: HashMap::new(),
        contents,
    }
}

pub fn top_k_param(k: i64) -> HashMap<String, InferParameter> {
    HashMap::from([(
        "top_k".to_string(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(k)),
        },
    )])
}

/// A ModelInfer request for `rows` (query, candidates), data in typed `contents`.
pub fn typed_request(rows: &[(Vec<f32>, Vec<i64>)], top_k: Option<i64>) -> ModelInferRequest {
    let (dq, n) = (rows[0].0.len(), rows[0].1.len());
    let query: Vec<f32> = rows.iter().flat_map(|r| r.0.clone()).collect();
    let ids: Vec<i64> = rows.iter().flat_map(|r| r.1.clone()).collect();
    ModelInferRequest {
        model_name: model().0,
        model_version: String::new(),
        id: "oip-typed".into(),
        parameters: top_k.map(top_k_param).unwrap_or_default(),
        inputs: vec![
            tensor(
                "query",
                "FP32",
                &[rows.len(), dq],
                Some(InferTensorContents {
                    fp32_contents: query,
                    ..Default::default()
                }),
            ),
            tensor(
                "candidate_ids",
                "INT64",
                &[rows.len(), n],
                Some(InferTensorContents {
                    int64_contents: ids,
                    ..Default::default()
                }),
            ),
        ],
        outputs: Vec::new(),
        raw_input_contents: Vec::new(),
    }
}

/// The same request with its data in `raw_input_contents` (little-endian), as Triton
/// clients send it.
pub fn raw_request(rows: &[(Vec<f32>, Vec<i64>)], top_k: Option<i64>) -> ModelInferRequest {
    let mut req = typed_request(rows, top_k);
    req.id = "oip-raw".into();
    req.raw_input_contents = req
        .inputs
        .iter_mut()
        .map(|t| {
            let c = t.contents.take().unwrap_or_default();
            let f: Vec<u8> = c
                .fp32_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let i: Vec<u8> = c
                .int64_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            [f, i].concat()
        })
        .collect();
    req
}

/// The response's outputs as (ids, scores) rows, checking names, types and shapes.
/// Sends `req` and returns its status, which must be an error.
pub async fn refused(c: &mut Client, req: ModelInferRequest, what: &str) -> tonic::Status {
    match c.model_infer(req).await {
        Ok(r) => panic!(
            "{what}: expected an error, got {:?}",
            r.into_inner().outputs
        ),
        Err(s) => s,
    }
}

pub fn rows_of(resp: &ModelInferResponse) -> Vec<(Vec<i64>, Vec<f32>)> {
    assert_eq!(resp.outputs.len(), 2, "item_ids and scores by default");
    assert_eq!(
        resp.raw_output_contents.len(),
        2,
        "outputs travel as raw_output_contents"
    );
    let (ids_t, scores_t) = (&resp.outputs[0], &resp.outputs[1]);
    assert_eq!(
        (ids_t.name.as_str(), ids_t.datatype.as_str()),
        ("item_ids", "INT64")
    );
    assert_eq!(
        (scores_t.name.as_str(), scores_t.datatype.as_str()),
        ("scores", "FP32")
    );
    assert_eq!(ids_t.shape, scores_t.shape);
    let (b, k) = (ids_t.shape[0] as usize, ids_t.shape[1] as usize);
    let ids: Vec<i64> = resp.raw_output_contents[0]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let scores: Vec<f32> = resp.raw_output_contents[1]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    assert_eq!(
        (ids.len(), scores.len()),
        (b * k, b * k),
        "data length matches the shape"
    );
    (0..b)
        .map(|r| {
            (
                ids[r * k..(r + 1) * k].to_vec(),
                scores[r * k..(r + 1) * k].to_vec(),
            )
        })
        .collect()
}
