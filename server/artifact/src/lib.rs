//! Model artifacts at rest: a bundle packed into one file and encrypted with AES-256-GCM
//! as a stream of fixed-size segments (the STREAM construction), so memory stays flat for
//! any model size.
//!
//! An artifact is a plaintext [`header::Header`] followed by sealed segments. The header's
//! bytes are every segment's associated data and bind the model name, version and key id;
//! see [`stream`] for what tampering this detects. Keys come from a [`Keyring`].

pub mod error;
pub mod file;
pub mod header;
pub mod keyring;
pub mod pack;
pub mod store;
pub mod stream;

pub use error::ArtifactError;
pub use file::{open_bundle, seal_bundle, Sealed};
pub use keyring::{Key, Keyring};
pub use store::{Checkout, ModelRecord, ModelRef, RecordState, ScrubResult, Store, StoreError};
pub use stream::{open, seal, ArtifactReader, ArtifactWriter, DEFAULT_SEGMENT};
