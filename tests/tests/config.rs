//! Configuration: `--check-config`, invalid settings (exit 64), environment overrides, and
//! ports that cannot be bound (exit 69).

use std::time::Duration;

use rankd_tests::{init, run_rankd, Node, NodeBuilder};

/// sysexits EX_USAGE: bad config or command line.
const EX_USAGE: i32 = 64;
/// sysexits EX_UNAVAILABLE: a port cannot be bound.
const EX_UNAVAILABLE: i32 = 69;

#[tokio::test]
async fn check_config_accepts_a_valid_file_and_prints_the_effective_config() {
    init();
    tracing::info!("--- --check-config on a valid file");
    let out = NodeBuilder::new().max_candidates(1234).check_config().await;
    out.assert_code(0);
    assert!(
        out.stdout.contains("max_candidates = 1234"),
        "effective config printed:\n{}",
        out.stdout
    );
}

#[tokio::test]
async fn check_config_refuses_half_precision_on_cpu() {
    init();
    tracing::info!("--- --check-config with precision fp16 on device cpu");
    let out = NodeBuilder::new()
        .set_str("model.device", "cpu")
        .set_str("model.precision", "fp16")
        .check_config()
        .await;
    out.assert_code(EX_USAGE);
    assert!(
        out.error_line().contains("model.precision"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn serve_refuses_half_precision_on_cpu() {
    init();
    tracing::info!("--- serve with precision fp16 on device cpu");
    let out = NodeBuilder::new()
        .set_str("model.device", "cpu")
        .set_str("model.precision", "fp16")
        .start_expect_failure()
        .await;
    out.assert_code(EX_USAGE);
    assert!(
        out.error_line().contains("model.precision"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn serve_refuses_unknown_keys() {
    init();
    tracing::info!("--- serve with a misspelt key");
    let out = NodeBuilder::new()
        .set("batching.max_bach_size", "8")
        .start_expect_failure()
        .await;
    out.assert_code(EX_USAGE);
    assert!(out.error_line().contains("max_bach_size"), "{}", out.stderr);
}

#[tokio::test]
async fn serve_refuses_unsafe_values() {
    init();
    tracing::info!("--- serve with queue_capacity below max_batch_size");
    let out = NodeBuilder::new()
        .max_batch_size(64)
        .queue_capacity(8)
        .start_expect_failure()
        .await;
    out.assert_code(EX_USAGE);
    assert!(
        out.error_line().contains("batching.queue_capacity"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn missing_config_file_and_unknown_flags_are_usage_errors() {
    init();
    tracing::info!("--- --config naming a file that does not exist");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = run_rankd(
        &["--check-config", "--config", missing.to_str().unwrap()],
        &[],
        Duration::from_secs(30),
    )
    .await;
    out.assert_code(EX_USAGE);
    assert!(out.error_line().contains("nope.toml"), "{}", out.stderr);

    tracing::info!("--- an unknown flag");
    let out = run_rankd(&["serve", "--no-such-flag"], &[], Duration::from_secs(30)).await;
    out.assert_code(EX_USAGE);
    assert!(out.stderr.contains("--no-such-flag"), "{}", out.stderr);
}

#[tokio::test]
async fn environment_overrides_the_file_and_flags_override_the_environment() {
    init();
    tracing::info!("--- RANKD_BATCHING__MAX_CANDIDATES and RANKD_NODE_ID over the file");
    let out = NodeBuilder::new()
        .max_candidates(1234)
        .node_id("from-file")
        .env("RANKD_BATCHING__MAX_CANDIDATES", "777")
        .env("RANKD_NODE_ID", "from-env")
        .check_config()
        .await;
    out.assert_code(0);
    assert!(
        out.stdout.contains("max_candidates = 777"),
        "env beats file:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("node_id = \"from-env\""),
        "env beats file:\n{}",
        out.stdout
    );

    tracing::info!("--- --node-id flag over RANKD_NODE_ID");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rankd.toml");
    std::fs::write(
        &config,
        "node_id = \"from-file\"\n[tls]\nmode = \"insecure-dev\"\n[auth]\nmode = \"insecure-dev\"\n",
    )
    .unwrap();
    let out = run_rankd(
        &[
            "--check-config",
            "--config",
            config.to_str().unwrap(),
            "--node-id",
            "from-flag",
        ],
        &[("RANKD_NODE_ID", "from-env")],
        Duration::from_secs(30),
    )
    .await;
    out.assert_code(0);
    assert!(
        out.stdout.contains("node_id = \"from-flag\""),
        "flag beats env:\n{}",
        out.stdout
    );
}

#[tokio::test]
async fn config_file_can_be_named_by_rankd_config() {
    init();
    tracing::info!("--- RANKD_CONFIG names the config file (the --config flag's documented env)");
    let out = NodeBuilder::new()
        .max_candidates(4321)
        .config_via_env()
        .check_config()
        .await;
    out.assert_code(0);
    assert!(
        out.stdout.contains("max_candidates = 4321"),
        "the file was read:\n{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_in_use_are_reported_with_exit_69() {
    init();
    let first = Node::start().await;

    tracing::info!("--- a second node on the first node's gRPC port");
    let out = Node::builder()
        .listen(&first.grpc_addr().to_string())
        .start_expect_failure()
        .await;
    out.assert_code(EX_UNAVAILABLE);
    let line = out.error_line();
    assert!(line.contains(&first.grpc_addr().to_string()), "{line}");

    tracing::info!("--- a second node on the first node's metrics port");
    let out = Node::builder()
        .metrics_listen(&first.metrics_addr().to_string())
        .start_expect_failure()
        .await;
    out.assert_code(EX_UNAVAILABLE);
    let line = out.error_line();
    assert!(line.contains(&first.metrics_addr().to_string()), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_json_object_per_line() {
    init();
    let node = Node::builder().set_str("log.format", "json").start().await;
    let example = rankd_tests::example_query();
    node.rank_client()
        .await
        .rank(rankd_tests::rank_request(
            &example.query,
            &example.candidates,
            5,
        ))
        .await
        .expect("rank");

    tracing::info!("--- every stderr line is a JSON object with a level");
    let log = node.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the node logged nothing");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "no level: {line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("\"serving\"")),
        "the serving event is logged:\n{log}"
    );

    tracing::info!("--- a refused call logs its request id and the caller's trace id");
    let mut bad = rankd_tests::rank_request(&example.query[1..], &example.candidates, 5);
    bad.request_id = "req-traced".into();
    let mut call = tonic::Request::new(bad);
    call.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let err = node
        .rank_client()
        .await
        .rank(call)
        .await
        .expect_err("a short query");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    rankd_tests::wait_until(
        "the refusal logged with both ids",
        std::time::Duration::from_secs(10),
        || async {
            node.log().lines().any(|l| {
                l.contains("rank refused")
                    && l.contains("req-traced")
                    && l.contains("4bf92f3577b34da6a3ce929d0e0e4736")
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_settings_take_effect_and_polling_workers_serve() {
    init();
    // 5 runtime and 3 libtorch threads: neither library's one-per-core default on the machines
    // this runs on.
    let node = Node::builder()
        .set("server.runtime_threads", "5")
        .set("model.torch_threads", "3")
        .set("batching.workers", "2")
        .set("batching.idle_spin_us", "2000")
        .start()
        .await;

    tracing::info!("--- the pools have the configured sizes");
    let m = node.metrics().await;
    assert_eq!(m.value(r#"rankd_threads{pool="runtime"}"#), Some(5.0));
    assert_eq!(m.value(r#"rankd_threads{pool="inference"}"#), Some(2.0));
    assert_eq!(m.value(r#"rankd_threads{pool="torch"}"#), Some(3.0));

    tracing::info!("--- workers that poll the queue answer calls, one after another and together");
    let example = rankd_tests::example_query();
    let mut client = node.rank_client().await;
    let req = || rankd_tests::rank_request(&example.query, &example.candidates, 5);
    let first = client.rank(req()).await.expect("rank").into_inner();
    for _ in 0..20 {
        let again = client.rank(req()).await.expect("rank").into_inner();
        assert_eq!(again.items, first.items);
    }
    let calls = (0..16).map(|_| {
        let mut c = client.clone();
        let r = req();
        async move { c.rank(r).await }
    });
    for res in futures::future::join_all(calls).await {
        assert_eq!(res.expect("rank").into_inner().items, first.items);
    }
}
