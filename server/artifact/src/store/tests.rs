use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::keyring::Key;

fn ring(id: &str, byte: u8) -> Arc<Keyring> {
    Arc::new(Keyring::new(id, [(id.to_string(), Key::from_bytes([byte; 32]))]).unwrap())
}

fn bundle(content: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("manifest.json"), b"{}").unwrap();
    fs::write(dir.path().join("model.pt"), content).unwrap();
    dir
}

const FILES: &[&str] = &["manifest.json", "model.pt"];

fn store(dir: &Path) -> Store {
    Store::open(dir, ring("k1", 1), 4096).unwrap()
}

#[test]
fn stores_lists_and_checks_out_a_version() {
    let data = tempfile::tempdir().unwrap();
    let s = store(data.path());
    let src = bundle(&[5u8; 10_000]);
    let rec = s.put(src.path(), FILES, "m", "1", "alice").unwrap();
    assert_eq!(rec.key_id, "k1");
    assert_eq!(rec.uploaded_by, "alice");
    assert_eq!(s.list(), vec![rec.clone()]);
    assert!(data.path().join("artifacts").join(&rec.sha256).exists());
    let co = s.checkout("m", "1").unwrap();
    assert_eq!(
        fs::read(co.dir().join("model.pt")).unwrap(),
        vec![5u8; 10_000]
    );
    let mode = fs::metadata(co.dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let staged = co.dir().to_path_buf();
    drop(co);
    assert!(!staged.exists(), "plaintext outlived its checkout");
}

#[test]
fn the_same_content_is_idempotent_and_other_content_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let s = store(data.path());
    let first = s.put(bundle(b"a").path(), FILES, "m", "1", "x").unwrap();
    assert_eq!(
        s.put(bundle(b"a").path(), FILES, "m", "1", "y").unwrap(),
        first
    );
    let err = s
        .put(bundle(b"b").path(), FILES, "m", "1", "x")
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    assert_eq!(s.list().len(), 1);
    // Nothing but the one artifact is on disk, and staging is empty.
    assert_eq!(
        fs::read_dir(data.path().join("artifacts")).unwrap().count(),
        1
    );
    assert_eq!(
        fs::read_dir(data.path().join("staging")).unwrap().count(),
        0
    );
}

#[test]
fn activation_is_durable_and_keeps_the_previous_version() {
    let data = tempfile::tempdir().unwrap();
    {
        let s = store(data.path());
        s.put(bundle(b"a").path(), FILES, "m", "1", "x").unwrap();
        s.put(bundle(b"b").path(), FILES, "m", "2", "x").unwrap();
        s.set_active("m", "1").unwrap();
        s.set_active("m", "2").unwrap();
        assert!(matches!(
            s.set_active("m", "9"),
            Err(StoreError::NotFound { .. })
        ));
    }
    let s = store(data.path());
    assert_eq!(s.active().unwrap().version, "2");
    assert_eq!(s.previous().unwrap().version, "1");
    assert_eq!(s.list().len(), 2);
}

#[test]
fn the_scrub_quarantines_a_tampered_artifact() {
    let data = tempfile::tempdir().unwrap();
    let s = store(data.path());
    let good = s.put(bundle(b"good").path(), FILES, "m", "1", "x").unwrap();
    let bad = s.put(bundle(b"bad").path(), FILES, "m", "2", "x").unwrap();
    let path = data.path().join("artifacts").join(&bad.sha256);
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 0x40;
    fs::write(&path, bytes).unwrap();

    let err = s.checkout("m", "2").err().unwrap();
    assert!(
        matches!(err, StoreError::Artifact(ArtifactError::Checksum { .. })),
        "{err}"
    );

    let results = s.scrub();
    assert_eq!(results.iter().filter(|r| r.ok).count(), 1);
    let failed = results.iter().find(|r| !r.ok).unwrap();
    assert_eq!(failed.model.version, "2");
    assert!(data.path().join("quarantine").join(&bad.sha256).exists());
    assert!(matches!(
        s.checkout("m", "2"),
        Err(StoreError::Quarantined { .. })
    ));
    assert!(
        s.checkout("m", "1").is_ok(),
        "the good version {} was harmed",
        good.version
    );
}

#[test]
fn a_keyring_without_the_artifacts_key_names_it() {
    let data = tempfile::tempdir().unwrap();
    store(data.path())
        .put(bundle(b"a").path(), FILES, "m", "1", "x")
        .unwrap();
    let other = Store::open(data.path(), ring("k2", 2), 4096).unwrap();
    let err = other.checkout("m", "1").err().unwrap();
    assert_eq!(
        err.to_string(),
        "artifact was encrypted with key \"k1\", which is not in the keyring"
    );
}

#[test]
fn leftover_staging_is_cleared_on_open() {
    let data = tempfile::tempdir().unwrap();
    let s = store(data.path());
    let leftover = s.staging("upload").unwrap().path().to_path_buf();
    fs::create_dir_all(&leftover).unwrap();
    fs::write(leftover.join("partial.tar"), b"half an upload").unwrap();
    drop(s);
    let _s = store(data.path());
    assert_eq!(
        fs::read_dir(data.path().join("staging")).unwrap().count(),
        0
    );
}

#[test]
fn removing_keeps_active_and_previous_versions() {
    let data = tempfile::tempdir().unwrap();
    let s = store(data.path());
    for v in ["1", "2", "3"] {
        s.put(bundle(v.as_bytes()).path(), FILES, "m", v, "x")
            .unwrap();
    }
    s.set_active("m", "1").unwrap();
    s.set_active("m", "2").unwrap();
    assert!(matches!(s.remove("m", "1"), Err(StoreError::InUse { .. })));
    assert!(matches!(s.remove("m", "2"), Err(StoreError::InUse { .. })));
    let gone = s.get("m", "3").unwrap();
    s.remove("m", "3").unwrap();
    assert!(s.get("m", "3").is_none());
    assert!(!data.path().join("artifacts").join(gone.sha256).exists());
}

fn two_key_ring(primary: &str) -> Arc<Keyring> {
    Arc::new(
        Keyring::new(
            primary,
            [
                ("k1".to_string(), Key::from_bytes([1; 32])),
                ("k2".to_string(), Key::from_bytes([2; 32])),
            ],
        )
        .unwrap(),
    )
}

#[test]
fn rotation_re_encrypts_under_the_new_primary_and_is_idempotent() {
    let data = tempfile::tempdir().unwrap();
    let s = store(data.path());
    let before = s
        .put(bundle(&[9u8; 50_000]).path(), FILES, "m", "1", "x")
        .unwrap();
    s.set_active("m", "1").unwrap();
    s.set_keyring(two_key_ring("k2"));
    assert_eq!(s.rotate().unwrap(), 1);
    let after = s.get("m", "1").unwrap();
    assert_eq!(after.key_id, "k2");
    assert_ne!(after.sha256, before.sha256);
    assert_eq!(after.plaintext_sha256, before.plaintext_sha256);
    assert!(!data.path().join("artifacts").join(&before.sha256).exists());
    assert_eq!(
        s.rotate().unwrap(),
        0,
        "a second run has nothing left to do"
    );

    // Readable with a keyring that no longer holds the old key.
    let only_new = Store::open(data.path(), ring("k2", 2), 4096).unwrap();
    let co = only_new.checkout("m", "1").unwrap();
    assert_eq!(
        fs::read(co.dir().join("model.pt")).unwrap(),
        vec![9u8; 50_000]
    );
    assert_eq!(only_new.active().unwrap().version, "1");
}

#[test]
fn rotation_without_the_old_key_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let s = store(data.path());
    let before = s.put(bundle(b"a").path(), FILES, "m", "1", "x").unwrap();
    s.set_keyring(ring("k2", 2));
    let err = s.rotate().unwrap_err();
    assert!(
        matches!(err, StoreError::Artifact(ArtifactError::UnknownKey { .. })),
        "{err}"
    );
    assert_eq!(s.get("m", "1").unwrap(), before);
    assert!(data.path().join("artifacts").join(&before.sha256).exists());
    assert!(s.staging_is_empty_for_tests());
}

#[test]
fn a_crash_mid_rotation_leaves_an_orphan_that_reopening_removes() {
    let data = tempfile::tempdir().unwrap();
    let s = store(data.path());
    let rec = s.put(bundle(b"a").path(), FILES, "m", "1", "x").unwrap();
    // What a crash after the rename but before the record update leaves: a second,
    // unreferenced artifact.
    let orphan = data.path().join("artifacts").join("f".repeat(64));
    fs::write(&orphan, b"sealed under the new key, never recorded").unwrap();
    drop(s);
    let s = Store::open(data.path(), two_key_ring("k2"), 4096).unwrap();
    assert!(!orphan.exists());
    assert!(
        s.checkout("m", "1").is_ok(),
        "record {} was harmed",
        rec.sha256
    );
    assert_eq!(s.rotate().unwrap(), 1);
}

#[test]
fn gc_keeps_the_newest_and_never_the_active_or_previous() {
    let data = tempfile::tempdir().unwrap();
    let s = store(data.path());
    for v in ["1", "2", "3", "4", "5"] {
        s.put(bundle(v.as_bytes()).path(), FILES, "m", v, "x")
            .unwrap();
    }
    s.set_active("m", "1").unwrap();
    s.set_active("m", "2").unwrap();
    // Active 2, previous 1; of 3, 4, 5 keep the newest one.
    let removed: Vec<String> = s.gc(1).unwrap().into_iter().map(|m| m.version).collect();
    assert_eq!(removed, vec!["4", "3"]);
    let left: Vec<String> = s.list().into_iter().map(|r| r.version).collect();
    assert_eq!(left, vec!["1", "2", "5"]);
    assert_eq!(
        fs::read_dir(data.path().join("artifacts")).unwrap().count(),
        3
    );
    assert!(s.gc(0).unwrap().iter().all(|m| m.version == "5"));
    assert!(s.checkout("m", "1").is_ok() && s.checkout("m", "2").is_ok());
}
