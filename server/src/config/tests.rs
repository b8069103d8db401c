use super::*;

fn invalid_field(cfg: &Config) -> &'static str {
    match cfg.validate() {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

/// Plaintext and no credentials, said explicitly.
fn dev() -> Config {
    let mut c = Config::default();
    c.tls.mode = crate::tls::SecurityMode::InsecureDev;
    c.auth.mode = crate::tls::SecurityMode::InsecureDev;
    c
}

#[test]
fn dev_mode_is_valid() {
    dev().validate().unwrap();
}

#[test]
fn defaults_demand_tls_and_credentials() {
    let mut c = Config::default();
    assert_eq!(invalid_field(&c), "tls.client");
    let tls = |name: &str| crate::tls::ListenerTls {
        cert: format!("{name}.crt").into(),
        key: format!("{name}.key").into(),
        client_ca: None,
    };
    c.tls.client = Some(tls("client"));
    assert_eq!(invalid_field(&c), "tls.peer");
    c.tls.peer = Some(crate::tls::PeerTls {
        cert: "peer.crt".into(),
        key: "peer.key".into(),
        ca: "ca.crt".into(),
        allowed_names: vec![],
    });
    assert_eq!(
        invalid_field(&c),
        "tls.peer.allowed_names",
        "any certificate from the CA would be a member"
    );
    c.tls.peer = c.tls.peer.take().map(|p| crate::tls::PeerTls {
        allowed_names: vec!["node-*".into()],
        ..p
    });
    assert_eq!(invalid_field(&c), "auth");
    c.server.admin_listen = Some(SocketAddr::from(([127, 0, 0, 1], 50071)));
    assert_eq!(invalid_field(&c), "tls.admin");
    c.tls.admin = Some(tls("admin"));
    c.auth.identities.push(crate::auth::IdentityEntry {
        subject: "ops".into(),
        role: crate::auth::Role::Admin,
    });
    assert_eq!(
        invalid_field(&c),
        "auth.identities",
        "no client CA to verify them"
    );
    c.tls.admin = Some(crate::tls::ListenerTls {
        client_ca: Some("ca.crt".into()),
        ..tls("admin")
    });
    c.validate().unwrap();
    c.auth.tokens.push(crate::auth::TokenEntry {
        name: "ci".into(),
        role: crate::auth::Role::Operator,
        sha256: "not-a-hash".into(),
    });
    assert_eq!(invalid_field(&c), "auth.tokens");
}

/// Spoils one setting of a valid config.
type Spoil = fn(&mut Config);

/// Each spoiled config is refused, naming `field`.
fn assert_refused(cases: &[(&str, Spoil)]) {
    for (field, spoil) in cases {
        let mut c = dev();
        spoil(&mut c);
        assert_eq!(invalid_field(&c), *field);
    }
}

#[test]
fn rejects_unsafe_values() {
    assert_refused(&[
        ("batching.max_batch_size", |c| c.batching.max_batch_size = 0),
        ("batching.queue_capacity", |c| c.batching.queue_capacity = 4),
        ("model.precision", |c| {
            c.model.device = DeviceSpec::Cpu;
            c.model.precision = Precision::Fp16;
        }),
        ("server.metrics_listen", |c| {
            c.server.metrics_listen = c.server.listen
        }),
        ("batching.max_queue_delay_us", |c| {
            c.batching.max_queue_delay_us = 1_000_000
        }),
        ("batching.idle_spin_us", |c| {
            c.batching.idle_spin_us = 10_001
        }),
        ("raft", |c| c.raft.heartbeat_interval_ms = 250),
        ("cluster.lag_timeout_ms", |c| c.cluster.lag_timeout_ms = 100),
        ("cluster.heartbeat_interval_ms", |c| {
            c.cluster.heartbeat_interval_ms = 0
        }),
        ("cluster.heartbeat_missed", |c| {
            c.cluster.heartbeat_missed = 1
        }),
        ("cluster.id", |c| c.cluster.id = 0),
    ]);
    let mut c = dev();
    c.batching.idle_spin_us = 10_000;
    c.validate().unwrap();
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
fn file_then_env_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rankd.toml");
    std::fs::write(
        &path,
        "node_id = \"from-file\"\n[batching]\nmax_batch_size = 8\nworkers = 2\n\
         [tls]\nmode = \"insecure-dev\"\n[auth]\nmode = \"insecure-dev\"\n",
    )
    .unwrap();
    figment::Jail::expect_with(|jail| {
        jail.set_env("RANKD_BATCHING__WORKERS", "3");
        jail.set_env("RANKD_NODE_ID", "from-env");
        let flags = serde_json::json!({ "node_id": "from-flag" });
        let c = Config::load(Some(&path), flags).unwrap();
        assert_eq!(c.batching.max_batch_size, 8);
        assert_eq!(c.batching.workers, 3);
        assert_eq!(c.node_id, "from-flag");
        Ok(())
    });
}

#[test]
fn unknown_keys_and_missing_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rankd.toml");
    std::fs::write(&path, "[batching]\nmax_bach_size = 8\n").unwrap();
    let err = Config::load(Some(&path), serde_json::json!({})).unwrap_err();
    assert!(err.to_string().contains("max_bach_size"), "{err}");
    let err = Config::load(Some(&dir.path().join("nope.toml")), serde_json::json!({})).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn unsafe_bake_and_outlier_settings_are_named() {
    assert_refused(&[
        ("bake.max_error_ratio", |c| c.bake.max_error_ratio = 1.5),
        ("bake.max_p99_ms", |c| c.bake.max_p99_ms = f64::NAN),
        ("bake.max_drift_psi", |c| c.bake.max_drift_psi = 0.0),
        ("bake.check_interval_ms", |c| c.bake.check_interval_ms = 5),
        ("outlier.window_ms", |c| c.outlier.window_ms = 100),
        ("outlier.latency_ratio", |c| c.outlier.latency_ratio = 1.0),
        ("outlier.probe_per_s", |c| c.outlier.probe_per_s = 5000),
    ]);
    let mut off = dev();
    off.bake.window_ms = 0;
    off.outlier.probe_per_s = 0;
    off.validate()
        .expect("no bake and no probes is a valid choice");
}
