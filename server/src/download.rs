//! `DownloadModel`: a stored version's plaintext bundle, streamed in the packed form
//! `UploadModel` takes, so what comes out can go straight back in (after compression, say).
//!
//! The bundle is decrypted and packed into a staging file on a blocking thread, then read
//! back in chunks as the client takes them: memory stays flat for large item tables, and
//! the plaintext on disk is removed when the stream ends or the client goes away.

use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use rankd_artifact::pack::pack;
use rankd_artifact::Store;
use rankd_kernels::Bundle;
use rankd_proto::admin::v1::DownloadModelResponse;
use tonic::Status;

use crate::error::AdminError;
use crate::model::LoadError;

/// Chunks of the packed bundle.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<DownloadModelResponse, Status>> + Send>>;

const CHUNK: usize = 1 << 20;

/// Packs `name@version` from the store and returns the stream of its bytes. Fails before
/// the stream starts when the version is unknown here, quarantined, or cannot be decrypted.
pub async fn stream(
    store: Arc<Store>,
    name: &str,
    version: &str,
) -> Result<ChunkStream, AdminError> {
    let (name, version) = (name.to_string(), version.to_string());
    let (staged, path) = tokio::task::spawn_blocking(move || -> Result<_, AdminError> {
        let checkout = store
            .checkout(&name, &version)
            .map_err(|e| AdminError::Load(e.into()))?;
        // Opening checks every file against the manifest: a download is as verified as a load.
        let bundle =
            Bundle::open(checkout.dir()).map_err(|e| AdminError::Load(LoadError::from(e)))?;
        let files = bundle.file_names();
        let staged = store
            .staging("download")
            .map_err(|e| AdminError::Load(e.into()))?;
        let path = staged.path().join("bundle.tar");
        let out = std::fs::File::create(&path).map_err(AdminError::io("staging the download"))?;
        pack(checkout.dir(), &files, std::io::BufWriter::new(out))
            .map_err(|e| AdminError::Upload(format!("packing the bundle: {e}")))?;
        Ok((staged, path))
    })
    .await
    .map_err(|e| AdminError::Upload(format!("download thread failed: {e}")))??;

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<DownloadModelResponse, Status>>(4);
    tokio::task::spawn_blocking(move || {
        // Holding the staging directory here removes it once the last chunk is sent or
        // the receiver is gone.
        let _staged = staged;
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.blocking_send(Err(Status::internal(format!(
                    "reading the packed bundle: {e}"
                ))));
                return;
            }
        };
        let mut buf = vec![0u8; CHUNK];
        loop {
            let msg = match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => Ok(DownloadModelResponse {
                    chunk: buf[..n].to_vec(),
                }),
                Err(e) => Err(Status::internal(format!("reading the packed bundle: {e}"))),
            };
            let failed = msg.is_err();
            if tx.blocking_send(msg).is_err() || failed {
                return;
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}
