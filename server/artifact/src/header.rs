//! The plaintext artifact header. Its exact bytes are the associated data of every
//! segment, so changing any field (key id, model name, version, segment size, nonce
//! prefix) makes every segment fail authentication.
//!
//! Layout, little-endian:
//! `b"RANKDART"` · format u16 · segment size u32 · nonce prefix [7] ·
//! key id (u8 length + bytes) · model name (u16 length + bytes) · version (u16 length + bytes)

use std::io::Read;

use crate::error::ArtifactError;
use crate::keyring::MAX_KEY_ID;

pub const MAGIC: &[u8; 8] = b"RANKDART";
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of the STREAM nonce prefix for AES-GCM's 96-bit nonce with the BE32 counter.
pub const NONCE_PREFIX: usize = 7;
pub const MIN_SEGMENT: u32 = 16;
pub const MAX_SEGMENT: u32 = 16 << 20;
const MAX_NAME: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub segment_size: u32,
    pub nonce_prefix: [u8; NONCE_PREFIX],
    pub key_id: String,
    pub model_name: String,
    pub model_version: String,
}

impl Header {
    pub fn encode(&self) -> Result<Vec<u8>, ArtifactError> {
        let bad = |m: String| Err(ArtifactError::BadHeader(m));
        if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&self.segment_size) {
            return bad(format!(
                "segment size {} outside {MIN_SEGMENT}..={MAX_SEGMENT}",
                self.segment_size
            ));
        }
        if self.key_id.is_empty() || self.key_id.len() > MAX_KEY_ID {
            return bad("key id length".into());
        }
        if self.model_name.len() > MAX_NAME || self.model_version.len() > MAX_NAME {
            return bad(format!(
                "model name and version must be at most {MAX_NAME} bytes"
            ));
        }
        let mut out = Vec::with_capacity(
            32 + self.key_id.len() + self.model_name.len() + self.model_version.len(),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.segment_size.to_le_bytes());
        out.extend_from_slice(&self.nonce_prefix);
        out.push(self.key_id.len() as u8);
        out.extend_from_slice(self.key_id.as_bytes());
        for s in [&self.model_name, &self.model_version] {
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Ok(out)
    }

    /// Reads one header, returning it and its exact bytes (the segments' associated data).
    /// Every length is bounded before anything is allocated.
    pub fn read_from(r: &mut impl Read) -> Result<(Header, Vec<u8>), ArtifactError> {
        let mut raw = Vec::new();
        let magic = take(r, &mut raw, 8)?;
        if magic != MAGIC {
            return Err(ArtifactError::BadMagic);
        }
        let v = take(r, &mut raw, 2)?;
        let version = u16::from_le_bytes([v[0], v[1]]);
        if version != FORMAT_VERSION {
            return Err(ArtifactError::UnsupportedVersion(version));
        }
        let seg = take(r, &mut raw, 4)?;
        let segment_size = u32::from_le_bytes([seg[0], seg[1], seg[2], seg[3]]);
        if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&segment_size) {
            return Err(ArtifactError::BadHeader(format!(
                "segment size {segment_size}"
            )));
        }
        let mut nonce_prefix = [0u8; NONCE_PREFIX];
        nonce_prefix.copy_from_slice(&take(r, &mut raw, NONCE_PREFIX)?);
        let key_len = take(r, &mut raw, 1)?[0] as usize;
        if key_len == 0 || key_len > MAX_KEY_ID {
            return Err(ArtifactError::BadHeader(format!("key id length {key_len}")));
        }
        let key_id = utf8(take(r, &mut raw, key_len)?, "key id")?;
        let mut strings = Vec::with_capacity(2);
        for what in ["model name", "model version"] {
            let l = take(r, &mut raw, 2)?;
            let len = u16::from_le_bytes([l[0], l[1]]) as usize;
            if len > MAX_NAME {
                return Err(ArtifactError::BadHeader(format!("{what} length {len}")));
            }
            strings.push(utf8(take(r, &mut raw, len)?, what)?);
        }
        let model_version = strings.pop().unwrap_or_default();
        let model_name = strings.pop().unwrap_or_default();
        Ok((
            Header {
                segment_size,
                nonce_prefix,
                key_id,
                model_name,
                model_version,
            },
            raw,
        ))
    }
}

/// Reads exactly `n` bytes, appends them to `raw`, and returns them.
fn take(r: &mut impl Read, raw: &mut Vec<u8>, n: usize) -> Result<Vec<u8>, ArtifactError> {
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ArtifactError::BadHeader("ends early".into()),
        _ => ArtifactError::Io {
            context: "reading the artifact header".into(),
            source: e,
        },
    })?;
    raw.extend_from_slice(&buf);
    Ok(buf)
}

fn utf8(bytes: Vec<u8>, what: &str) -> Result<String, ArtifactError> {
    String::from_utf8(bytes).map_err(|_| ArtifactError::BadHeader(format!("{what} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            segment_size: 1 << 20,
            nonce_prefix: [1, 2, 3, 4, 5, 6, 7],
            key_id: "k1".into(),
            model_name: "demo".into(),
            model_version: "3".into(),
        }
    }

    #[test]
    fn round_trips() {
        let bytes = header().encode().unwrap();
        let (h, raw) = Header::read_from(&mut bytes.as_slice()).unwrap();
        assert_eq!(h, header());
        assert_eq!(raw, bytes);
    }

    #[test]
    fn rejects_garbage_without_allocating_wildly() {
        let mut bytes = header().encode().unwrap();
        bytes[0] = b'X';
        assert!(matches!(
            Header::read_from(&mut bytes.as_slice()),
            Err(ArtifactError::BadMagic)
        ));
        let mut bytes = header().encode().unwrap();
        bytes[8] = 9;
        assert!(matches!(
            Header::read_from(&mut bytes.as_slice()),
            Err(ArtifactError::UnsupportedVersion(9))
        ));
        let bytes = header().encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                Header::read_from(&mut &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }
}
