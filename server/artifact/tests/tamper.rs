//! An artifact altered in any region (header, any segment body, any tag, the end) never
//! decrypts, and never yields plaintext that differs from what was sealed.

use proptest::prelude::*;
use rankd_artifact::header::Header;
use rankd_artifact::stream::TAG;
use rankd_artifact::{open, seal, ArtifactError, Key, Keyring};

const SEGMENT: u32 = 64;

fn ring(id: &str, byte: u8) -> Keyring {
    Keyring::new(id, [(id.to_string(), Key::from_bytes([byte; 32]))]).unwrap()
}

fn header_len(artifact: &[u8]) -> usize {
    Header::read_from(&mut &artifact[..]).unwrap().1.len()
}

/// Start offsets of each sealed segment.
fn segments(artifact: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut at = header_len(artifact);
    let mut out = Vec::new();
    while at < artifact.len() {
        let end = (at + SEGMENT as usize + TAG).min(artifact.len());
        out.push(at..end);
        at = end;
    }
    out
}

fn must_fail(artifact: &[u8], keyring: &Keyring, version: &str) {
    if let Ok(plain) = open(artifact, keyring, "m", version) {
        panic!("altered artifact decrypted to {} bytes", plain.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trips(data in prop::collection::vec(any::<u8>(), 0..1000)) {
        let k = ring("k1", 1);
        let sealed = seal(&data, &k, "m", "1", SEGMENT).unwrap();
        prop_assert_eq!(open(&sealed, &k, "m", "1").unwrap(), data);
    }

    #[test]
    fn any_flipped_bit_fails(data in prop::collection::vec(any::<u8>(), 1..600), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let k = ring("k1", 1);
        let mut sealed = seal(&data, &k, "m", "1", SEGMENT).unwrap();
        let i = pos.index(sealed.len());
        sealed[i] ^= 1 << bit;
        must_fail(&sealed, &k, "1");
    }

    #[test]
    fn any_truncation_or_extension_fails(data in prop::collection::vec(any::<u8>(), 1..600), cut in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 1..40)) {
        let k = ring("k1", 1);
        let sealed = seal(&data, &k, "m", "1", SEGMENT).unwrap();
        must_fail(&sealed[..cut.index(sealed.len())], &k, "1");
        let mut longer = sealed.clone();
        longer.extend_from_slice(&extra);
        must_fail(&longer, &k, "1");
    }

    #[test]
    fn reordered_duplicated_or_dropped_segments_fail(data in prop::collection::vec(any::<u8>(), 200..600), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let k = ring("k1", 1);
        let sealed = seal(&data, &k, "m", "1", SEGMENT).unwrap();
        let segs = segments(&sealed);
        let head = &sealed[..segs[0].start];
        let body = |order: &[usize]| {
            let mut out = head.to_vec();
            for &i in order {
                out.extend_from_slice(&sealed[segs[i].clone()]);
            }
            out
        };
        let n = segs.len();
        let (i, j) = (a.index(n), b.index(n));
        let mut order: Vec<usize> = (0..n).collect();
        if i != j {
            order.swap(i, j);
            must_fail(&body(&order), &k, "1");
        }
        let mut dup: Vec<usize> = (0..n).collect();
        dup.insert(i, i);
        must_fail(&body(&dup), &k, "1");
        let dropped: Vec<usize> = (0..n).filter(|&s| s != i).collect();
        must_fail(&body(&dropped), &k, "1");
    }

    #[test]
    fn segments_swapped_in_from_another_artifact_fail(data in prop::collection::vec(any::<u8>(), 200..600), which in any::<prop::sample::Index>()) {
        let k = ring("k1", 1);
        let one = seal(&data, &k, "m", "1", SEGMENT).unwrap();
        // Same key, same model, other version; and the same version sealed twice.
        for other in [seal(&data, &k, "m", "2", SEGMENT).unwrap(), seal(&data, &k, "m", "1", SEGMENT).unwrap()] {
            let (s1, s2) = (segments(&one), segments(&other));
            let i = which.index(s1.len().min(s2.len()));
            let mut mixed = one.clone();
            mixed.splice(s1[i].clone(), other[s2[i].clone()].iter().copied());
            must_fail(&mixed, &k, "1");
        }
    }
}

#[test]
fn an_artifact_for_another_version_is_named() {
    let k = ring("k1", 1);
    let sealed = seal(b"bundle", &k, "m", "2", SEGMENT).unwrap();
    let err = open(&sealed, &k, "m", "1").unwrap_err();
    assert!(matches!(err, ArtifactError::WrongModel { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "artifact belongs to m version 2, expected m version 1"
    );
}

#[test]
fn relabelling_the_header_breaks_every_segment() {
    let k = ring("k1", 1);
    let sealed = seal(b"some bundle bytes", &k, "m", "2", SEGMENT).unwrap();
    // Rewrite the version in the header from "2" to "1": the header parses and names the
    // expected version, but it is no longer the associated data the segments were sealed with.
    let hl = header_len(&sealed);
    let mut relabelled = sealed.clone();
    assert_eq!(relabelled[hl - 1], b'2');
    relabelled[hl - 1] = b'1';
    let err = open(&relabelled, &k, "m", "1").unwrap_err();
    assert!(
        matches!(err, ArtifactError::Authentication { segment: 0 }),
        "{err}"
    );
}

#[test]
fn an_unknown_key_is_named_and_a_wrong_key_fails() {
    let sealed = seal(b"bundle", &ring("k1", 1), "m", "1", SEGMENT).unwrap();
    let err = open(&sealed, &ring("k2", 1), "m", "1").unwrap_err();
    assert_eq!(
        err.to_string(),
        "artifact was encrypted with key \"k1\", which is not in the keyring"
    );
    // Same id, different key material.
    let err = open(&sealed, &ring("k1", 2), "m", "1").unwrap_err();
    assert!(
        matches!(err, ArtifactError::Authentication { segment: 0 }),
        "{err}"
    );
}

#[test]
fn any_listed_key_decrypts_and_the_primary_encrypts() {
    let old = Key::from_bytes([1; 32]);
    let new = Key::from_bytes([2; 32]);
    let before = Keyring::new("old", [("old".to_string(), old.clone())]).unwrap();
    let after = Keyring::new("new", [("old".to_string(), old), ("new".to_string(), new)]).unwrap();
    let sealed_old = seal(b"v1", &before, "m", "1", SEGMENT).unwrap();
    assert_eq!(open(&sealed_old, &after, "m", "1").unwrap(), b"v1");
    let sealed_new = seal(b"v1", &after, "m", "1", SEGMENT).unwrap();
    assert_eq!(
        Header::read_from(&mut &sealed_new[..]).unwrap().0.key_id,
        "new"
    );
    assert!(open(&sealed_new, &before, "m", "1").is_err());
}

#[test]
fn exact_multiples_of_the_segment_size_round_trip() {
    let k = ring("k1", 1);
    for len in [
        0,
        SEGMENT as usize,
        2 * SEGMENT as usize,
        3 * SEGMENT as usize + 1,
    ] {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let sealed = seal(&data, &k, "m", "1", SEGMENT).unwrap();
        assert_eq!(open(&sealed, &k, "m", "1").unwrap(), data, "len {len}");
    }
}
