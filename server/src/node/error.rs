//! Why a node did not start, and the exit code each reason maps to.

use std::net::SocketAddr;

use rankd_artifact::ArtifactError;
use rankd_kernels::KernelError;

use crate::config::ConfigError;
use crate::error::ClusterError;
use crate::model::LoadError;

/// Why a node did not start. Each maps to a distinct exit code so supervisors can tell a
/// bad config from a bad model from a busy port.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Keyring(ArtifactError),
    #[error("{what}: {source}")]
    Model {
        what: String,
        #[source]
        source: LoadError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl StartError {
    /// sysexits: 64 usage/config, 65 data (the model or the store), 69 unavailable (ports).
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) | StartError::Keyring(_) | StartError::Tls(_) => 64,
            StartError::Model {
                source:
                    LoadError::Kernel(KernelError::PrecisionUnsupported { .. } | KernelError::Device(_)),
                ..
            } => 64,
            StartError::Model { .. } => 65,
            StartError::Bind { .. } => 69,
            StartError::Cluster(_) => 65,
            StartError::Serve(_) => 1,
        }
    }
}
