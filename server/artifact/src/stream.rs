//! Segment-wise AES-256-GCM encryption with the STREAM construction (BE32 counter).
//!
//! Each segment's nonce is the artifact's random 7-byte prefix, a 32-bit big-endian segment
//! counter and a last-segment flag; its associated data is the whole header. Hence a segment
//! that is flipped, moved, duplicated or dropped, an artifact cut short (even at a segment
//! boundary: the new final segment lacks the last flag), or a segment taken from another
//! artifact (another prefix, another header) fails to authenticate. Memory stays at one
//! segment whatever the artifact's size.

use std::io::{self, Read, Write};

use aead_stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::{Aes256Gcm, KeyInit};

use crate::error::ArtifactError;
use crate::header::{Header, NONCE_PREFIX};
use crate::keyring::{Key, Keyring};

/// AES-GCM tag bytes appended to every segment.
pub const TAG: usize = 16;
/// Default plaintext bytes per segment.
pub const DEFAULT_SEGMENT: u32 = 1 << 20;

fn cipher(key: &Key) -> Aes256Gcm {
    // A 32-byte key always has the right length for AES-256.
    Aes256Gcm::new(key.bytes().into())
}

/// Encrypts everything written to it into `inner`. Call [`ArtifactWriter::finish`]: an
/// artifact without its final segment is rejected when read.
pub struct ArtifactWriter<W: Write> {
    inner: W,
    enc: Option<EncryptorBE32<Aes256Gcm>>,
    aad: Vec<u8>,
    buf: Vec<u8>,
    segment: usize,
    plaintext_len: u64,
}

impl<W: Write> ArtifactWriter<W> {
    /// Writes the header for `name`/`version` under the keyring's primary key.
    pub fn new(
        mut inner: W,
        keyring: &Keyring,
        name: &str,
        version: &str,
        segment_size: u32,
    ) -> Result<Self, ArtifactError> {
        let (key_id, key) = keyring.primary();
        let mut nonce_prefix = [0u8; NONCE_PREFIX];
        getrandom::fill(&mut nonce_prefix).map_err(|e| ArtifactError::Io {
            context: "drawing a nonce prefix".into(),
            source: io::Error::other(e.to_string()),
        })?;
        let header = Header {
            segment_size,
            nonce_prefix,
            key_id: key_id.to_string(),
            model_name: name.to_string(),
            model_version: version.to_string(),
        };
        let aad = header.encode()?;
        inner
            .write_all(&aad)
            .map_err(ArtifactError::io("writing the artifact header"))?;
        let enc = EncryptorBE32::from_aead(cipher(key), (&nonce_prefix).into());
        let segment = segment_size as usize;
        Ok(ArtifactWriter {
            inner,
            enc: Some(enc),
            aad,
            buf: Vec::with_capacity(segment + TAG),
            segment,
            plaintext_len: 0,
        })
    }

    /// Seals the final segment, flushes, and returns the inner writer and the plaintext size.
    pub fn finish(mut self) -> Result<(W, u64), ArtifactError> {
        let enc = self
            .enc
            .take()
            .ok_or_else(|| ArtifactError::Pack("artifact already finished".into()))?;
        enc.encrypt_last_in_place(&self.aad, &mut self.buf)
            .map_err(|_| ArtifactError::Pack("encrypting the final segment failed".into()))?;
        self.inner
            .write_all(&self.buf)
            .map_err(ArtifactError::io("writing the final segment"))?;
        self.inner
            .flush()
            .map_err(ArtifactError::io("flushing the artifact"))?;
        Ok((self.inner, self.plaintext_len))
    }

    fn seal_full_segment(&mut self) -> io::Result<()> {
        let enc = self
            .enc
            .as_mut()
            .ok_or_else(|| io::Error::other("artifact already finished"))?;
        enc.encrypt_next_in_place(&self.aad, &mut self.buf)
            .map_err(|_| io::Error::other("segment counter exhausted"))?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write> Write for ArtifactWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full buffer is sealed only once more data arrives, so the last segment is the
        // one `finish` seals, never an empty one after an exact multiple.
        if self.buf.len() == self.segment {
            self.seal_full_segment()?;
        }
        let n = data.len().min(self.segment - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.plaintext_len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts an artifact as it is read. Any authentication failure surfaces as an
/// `io::Error` wrapping [`ArtifactError`] (see [`ArtifactError::from_io`]), and no
/// plaintext of a failed segment is ever returned.
pub struct ArtifactReader<R: Read> {
    inner: R,
    dec: Option<DecryptorBE32<Aes256Gcm>>,
    header: Header,
    aad: Vec<u8>,
    /// Ciphertext read ahead: one segment plus one byte tells whether it is the last.
    pending: Vec<u8>,
    plain: Vec<u8>,
    pos: usize,
    segment_index: u64,
    done: bool,
}

impl<R: Read> ArtifactReader<R> {
    /// Reads the header and checks it names `name`/`version` and a key the keyring holds.
    pub fn open(
        mut inner: R,
        keyring: &Keyring,
        name: &str,
        version: &str,
    ) -> Result<Self, ArtifactError> {
        let (header, aad) = Header::read_from(&mut inner)?;
        if header.model_name != name || header.model_version != version {
            return Err(ArtifactError::WrongModel {
                expected: format!("{name} version {version}"),
                found: format!("{} version {}", header.model_name, header.model_version),
            });
        }
        let key = keyring
            .get(&header.key_id)
            .ok_or_else(|| ArtifactError::UnknownKey {
                key_id: header.key_id.clone(),
            })?;
        let dec = DecryptorBE32::from_aead(cipher(key), (&header.nonce_prefix).into());
        let cap = header.segment_size as usize + TAG + 1;
        Ok(ArtifactReader {
            inner,
            dec: Some(dec),
            aad,
            pending: Vec::with_capacity(cap),
            plain: Vec::with_capacity(cap),
            pos: 0,
            segment_index: 0,
            done: false,
            header,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    fn next_segment(&mut self) -> Result<(), ArtifactError> {
        let sealed = self.header.segment_size as usize + TAG;
        while self.pending.len() <= sealed {
            let start = self.pending.len();
            self.pending.resize(sealed + 1, 0);
            let n = self
                .inner
                .read(&mut self.pending[start..])
                .map_err(ArtifactError::io("reading the artifact"))?;
            self.pending.truncate(start + n);
            if n == 0 {
                break;
            }
        }
        let last = self.pending.len() <= sealed;
        let take = self.pending.len().min(sealed);
        if take < TAG {
            return Err(ArtifactError::Truncated);
        }
        self.plain.clear();
        self.plain.extend_from_slice(&self.pending[..take]);
        self.pending.drain(..take);
        let failed = ArtifactError::Authentication {
            segment: self.segment_index,
        };
        if last {
            let dec = self.dec.take().ok_or(ArtifactError::Truncated)?;
            dec.decrypt_last_in_place(&self.aad, &mut self.plain)
                .map_err(|_| failed)?;
            self.done = true;
        } else {
            let dec = self.dec.as_mut().ok_or(ArtifactError::Truncated)?;
            dec.decrypt_next_in_place(&self.aad, &mut self.plain)
                .map_err(|_| failed)?;
        }
        self.segment_index += 1;
        self.pos = 0;
        Ok(())
    }
}

impl<R: Read> Read for ArtifactReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            if let Err(e) = self.next_segment() {
                // Never hand out the bytes of a segment that failed.
                self.plain.clear();
                self.pos = 0;
                return Err(io::Error::other(e));
            }
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl ArtifactError {
    /// Recovers the artifact error carried inside an `io::Error` from [`ArtifactReader`].
    pub fn from_io(e: io::Error) -> ArtifactError {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ArtifactError>())
        {
            Some(_) => match e.into_inner().map(|b| b.downcast::<ArtifactError>()) {
                Some(Ok(inner)) => *inner,
                _ => ArtifactError::Truncated,
            },
            None => ArtifactError::Io {
                context: "reading the artifact".into(),
                source: e,
            },
        }
    }
}

/// Encrypts `plaintext` in memory (tests, small artifacts).
pub fn seal(
    plaintext: &[u8],
    keyring: &Keyring,
    name: &str,
    version: &str,
    segment_size: u32,
) -> Result<Vec<u8>, ArtifactError> {
    let mut w = ArtifactWriter::new(Vec::new(), keyring, name, version, segment_size)?;
    w.write_all(plaintext)
        .map_err(ArtifactError::io("encrypting"))?;
    Ok(w.finish()?.0)
}

/// Decrypts a whole artifact in memory (tests, small artifacts).
pub fn open(
    artifact: &[u8],
    keyring: &Keyring,
    name: &str,
    version: &str,
) -> Result<Vec<u8>, ArtifactError> {
    let mut r = ArtifactReader::open(artifact, keyring, name, version)?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(ArtifactError::from_io)?;
    Ok(out)
}
