//! `artifact_header`: the plaintext header of an encrypted model artifact
//! (`rankd_artifact::header`), the first thing read from a file on disk or an artifact
//! fetched from a peer, before any key is involved.
//!
//! Asserts:
//! - parsing arbitrary bytes never panics; a refusal is BadMagic, UnsupportedVersion or
//!   BadHeader, never an I/O error (reading from a slice can only run out);
//! - an accepted header is within the format's bounds, the raw bytes returned are exactly
//!   the prefix consumed (they are the segments' associated data), and encoding the parsed
//!   header gives those bytes back;
//! - the other way round, a header built from the input's bytes either encodes and parses
//!   back to itself (also with trailing bytes after it), or is refused by the encoder for a
//!   field that is out of bounds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rankd_artifact::header::{Header, MAX_SEGMENT, MIN_SEGMENT, NONCE_PREFIX};
use rankd_artifact::keyring::MAX_KEY_ID;
use rankd_artifact::ArtifactError;

/// `header::MAX_NAME` (private): the longest model name or version, in bytes.
const MAX_NAME: usize = 256;

fuzz_target!(|data: &[u8]| {
    parse(data);
    if let Some(header) = header_from(data) {
        encode(&header, data);
    }
});

fn parse(data: &[u8]) {
    let mut rest = data;
    match Header::read_from(&mut rest) {
        Ok((header, raw)) => {
            assert_eq!(raw.as_slice(), &data[..raw.len()]);
            assert_eq!(rest.len(), data.len() - raw.len());
            assert!(in_bounds(&header), "{header:?}");
            let encoded = header.encode().expect("a parsed header encodes");
            assert_eq!(encoded, raw);
        }
        Err(e) => assert!(
            matches!(
                e,
                ArtifactError::BadMagic
                    | ArtifactError::UnsupportedVersion(_)
                    | ArtifactError::BadHeader(_)
            ),
            "{e:?}"
        ),
    }
}

fn encode(header: &Header, data: &[u8]) {
    match header.encode() {
        Ok(bytes) => {
            assert!(in_bounds(header), "{header:?}");
            let (parsed, raw) = Header::read_from(&mut bytes.as_slice()).expect("round trip");
            assert_eq!(&parsed, header);
            assert_eq!(raw, bytes);
            let mut longer = bytes.clone();
            longer.extend_from_slice(data);
            let (parsed, raw) = Header::read_from(&mut longer.as_slice()).expect("trailing");
            assert_eq!(&parsed, header);
            assert_eq!(raw, bytes);
        }
        Err(e) => {
            assert!(!in_bounds(header), "{header:?} refused: {e}");
            assert!(matches!(e, ArtifactError::BadHeader(_)), "{e:?}");
        }
    }
}

fn in_bounds(h: &Header) -> bool {
    (MIN_SEGMENT..=MAX_SEGMENT).contains(&h.segment_size)
        && (1..=MAX_KEY_ID).contains(&h.key_id.len())
        && h.model_name.len() <= MAX_NAME
        && h.model_version.len() <= MAX_NAME
}

/// A header from the input's bytes: segment size, nonce prefix, then key id, model name and
/// version separated by 0x00 (invalid UTF-8 replaced).
fn header_from(data: &[u8]) -> Option<Header> {
    let (seg, rest) = data.split_first_chunk::<4>()?;
    let (nonce, rest) = rest.split_first_chunk::<NONCE_PREFIX>()?;
    let mut parts = rest.splitn(3, |&b| b == 0).map(String::from_utf8_lossy);
    Some(Header {
        segment_size: u32::from_le_bytes(*seg),
        nonce_prefix: *nonce,
        key_id: parts.next().unwrap_or_default().into_owned(),
        model_name: parts.next().unwrap_or_default().into_owned(),
        model_version: parts.next().unwrap_or_default().into_owned(),
    })
}
