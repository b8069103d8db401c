use std::path::PathBuf;

/// Why an artifact could not be written, read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("keyring {path}: {reason}")]
    Keyring { path: PathBuf, reason: String },
    #[error("artifact was encrypted with key {key_id:?}, which is not in the keyring")]
    UnknownKey { key_id: String },
    #[error("not a rankd artifact (bad magic)")]
    BadMagic,
    #[error("artifact format version {0} is not supported")]
    UnsupportedVersion(u16),
    #[error("artifact header is malformed: {0}")]
    BadHeader(String),
    #[error("artifact belongs to {found}, expected {expected}")]
    WrongModel { expected: String, found: String },
    #[error("artifact segment {segment} failed authentication: tampered, truncated, reordered, or the wrong key")]
    Authentication { segment: u64 },
    #[error("artifact ends before its final segment (truncated)")]
    Truncated,
    #[error("artifact sha256 {actual} does not match the recorded {expected}")]
    Checksum { expected: String, actual: String },
    #[error("bundle pack: {0}")]
    Pack(String),
}

impl ArtifactError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArtifactError {
        let context = context.into();
        move |source| ArtifactError::Io { context, source }
    }
}
