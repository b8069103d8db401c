//! Live score statistics: the serving version's score quantiles, mean, spread, broken-output
//! shares and drift (PSI) are exported with Prometheus names, and a version that ranks like
//! its parent but scores differently shows up as drift against the scores served before it.

use std::time::Duration;

use rankd_proto::v1::ranker_client::RankerClient;
use rankd_tests::exporter::compress;
use rankd_tests::{golden_set, init, rank_request, upload_dir, wait_for, Cluster};

/// Rank requests over the golden queries, so the scores have a realistic spread.
async fn traffic(c: &Cluster, requests: usize) {
    let cases = golden_set().cases;
    let mut client = RankerClient::new(c.channel(1));
    for i in 0..requests {
        let case = &cases[i % cases.len()];
        client
            .rank(rank_request(&case.query, &case.candidates, 10))
            .await
            .expect("rank");
    }
}

async fn psi_of(c: &Cluster, version: &str) -> Result<f64, String> {
    let m = c.node(1).metrics().await;
    m.value(&format!("rankd_score_drift_psi{{version=\"{version}\"}}"))
        .ok_or_else(|| format!("no drift for version {version} yet"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_statistics_are_exported_and_a_shifted_model_drifts() {
    init();
    let c = Cluster::start(1).await;
    c.serve_v1().await;

    tracing::info!("--- version 1 serves enough traffic to be its own baseline");
    traffic(&c, 150).await;
    let stable = wait_for("drift of version 1", Duration::from_secs(30), || async {
        psi_of(&c, "1").await
    })
    .await;
    assert!(stable < 0.1, "the same traffic is stable: PSI {stable}");
    let m = c.node(1).metrics().await;
    for series in [
        r#"rankd_score_quantile{version="1",quantile="0.5"}"#,
        r#"rankd_score_quantile{version="1",quantile="0.99"}"#,
        r#"rankd_score_mean{version="1"}"#,
        r#"rankd_score_stddev{version="1"}"#,
        r#"rankd_scores_observed{version="1"}"#,
    ] {
        assert!(m.value(series).is_some(), "{series} is exported");
    }
    assert_eq!(
        m.value(r#"rankd_score_nonfinite_ratio{version="1"}"#),
        Some(0.0)
    );
    assert_eq!(
        m.value(r#"rankd_score_constant_ratio{version="1"}"#),
        Some(0.0)
    );
    assert!(m.value(r#"rankd_score_stddev{version="1"}"#).unwrap() > 0.1);

    tracing::info!("--- promote a version with the same ranking, every score 3 higher");
    let work = tempfile::tempdir().unwrap();
    let shifted = compress(&c.version_dir("1"), "shift:3", &work.path().join("s"), &[]);
    upload_dir(&mut c.admin(1).await, &shifted)
        .await
        .expect("a shifted model passes its golden set and the NDCG guard");
    let fence = c.must_promote(1, "1-shift3").await;
    c.wait_all_serving(&fence).await;
    traffic(&c, 150).await;
    let drift = wait_for(
        "drift of the shifted version",
        Duration::from_secs(30),
        || async { psi_of(&c, "1-shift3").await },
    )
    .await;
    assert!(drift > 1.0, "a 3-point shift is a major drift: PSI {drift}");
    let m = c.node(1).metrics().await;
    assert!(
        m.value(r#"rankd_score_mean{version="1"}"#).is_none(),
        "the old version's series are gone"
    );
    let mean = m.value(r#"rankd_score_mean{version="1-shift3"}"#).unwrap();
    assert!(mean > 2.0, "{mean}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_version_replays_its_golden_set_while_idle() {
    init();
    let c = Cluster::builder(1)
        .set("quality.golden_replay_interval_s", "1")
        .start()
        .await;
    c.serve_v1().await;
    let passes = wait_for("a golden replay round", Duration::from_secs(60), || async {
        let m = c.node(1).metrics().await;
        match m.value(r#"rankd_golden_replays_total{result="pass"}"#) {
            Some(n) if n >= 1.0 => Ok(m),
            _ => Err("no passing round yet".to_string()),
        }
    })
    .await;
    assert_eq!(
        passes.value(r#"rankd_golden_replay_pass{version="1"}"#),
        Some(1.0)
    );
    assert_eq!(
        passes.value(r#"rankd_golden_replay_agreement{version="1"}"#),
        Some(1.0)
    );
    let err = passes
        .value(r#"rankd_golden_replay_max_score_error{version="1"}"#)
        .expect("max score error is exported");
    assert!(err < 1e-3, "{err}");
    assert_eq!(
        passes.value_or_zero(r#"rankd_golden_replays_total{result="fail"}"#),
        0.0
    );
}
