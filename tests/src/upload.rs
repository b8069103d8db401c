//! Uploading bundles the way `rankctl upload` does: pack, then metadata and chunks.

use std::path::Path;

use rankd_proto::admin::v1::admin_client::AdminClient;
use rankd_proto::admin::v1::upload_model_request::Part;
use rankd_proto::admin::v1::{UploadMetadata, UploadModelRequest, UploadModelResponse};
use tonic::transport::Channel;

/// The bundle in `dir` packed (tar of manifest.json and the files it lists).
pub fn pack_bundle(dir: &Path) -> Vec<u8> {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json")).expect("reading manifest"),
    )
    .expect("parsing manifest");
    let mut files = vec!["manifest.json".to_string()];
    files.extend(
        manifest["files"]
            .as_object()
            .expect("manifest files")
            .keys()
            .cloned(),
    );
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    rankd_artifact::pack::pack(dir, &names, &mut out).expect("packing the bundle");
    out
}

/// The upload messages: metadata announcing `total_bytes`, then `body` in 256 KiB chunks.
pub fn upload_messages(
    name: &str,
    version: &str,
    total_bytes: u64,
    body: &[u8],
) -> Vec<UploadModelRequest> {
    let mut msgs = vec![UploadModelRequest {
        part: Some(Part::Metadata(UploadMetadata {
            name: name.into(),
            version: version.into(),
            total_bytes,
            uploaded_by: "tests".into(),
            quality_override: String::new(),
        })),
    }];
    msgs.extend(body.chunks(256 << 10).map(|c| UploadModelRequest {
        part: Some(Part::Chunk(c.to_vec())),
    }));
    msgs
}

/// Uploads the bundle in `dir` under the name and version its manifest gives.
pub async fn upload_dir(
    client: &mut AdminClient<Channel>,
    dir: &Path,
) -> Result<UploadModelResponse, tonic::Status> {
    upload_dir_overriding(client, dir, "").await
}

/// [`upload_dir`] with the upload's `quality_override` reason (empty: none).
pub async fn upload_dir_overriding(
    client: &mut AdminClient<Channel>,
    dir: &Path,
    quality_override: &str,
) -> Result<UploadModelResponse, tonic::Status> {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json")).expect("reading manifest"),
    )
    .expect("parsing manifest");
    let (name, version) = (
        manifest["name"].as_str().unwrap_or_default().to_string(),
        manifest["version"].as_str().unwrap_or_default().to_string(),
    );
    let body = pack_bundle(dir);
    let mut msgs = upload_messages(&name, &version, body.len() as u64, &body);
    if let Some(Part::Metadata(m)) = msgs.first_mut().and_then(|m| m.part.as_mut()) {
        m.quality_override = quality_override.to_string();
    }
    client
        .upload_model(futures::stream::iter(msgs))
        .await
        .map(tonic::Response::into_inner)
}
