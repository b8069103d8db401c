//! TLS on the client and peer ports of a secure cluster: plaintext is refused, the peer
//! port admits only certificates the cluster CA signed, and rotated certificates take
//! effect without a restart.

use std::time::Duration;

use rankd_proto::peer::v1::peer_client::PeerClient;
use rankd_proto::peer::v1::raft_client::RaftClient;
use rankd_proto::peer::v1::{FetchArtifactRequest, RaftMessage};
use rankd_proto::v1::ranker_client::RankerClient;
use rankd_tests::{init, wait_for, Cluster, TestPki};
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A channel to `addr` over TLS with `tls`, connecting on first use.
fn tls_channel(addr: &str, tls: ClientTlsConfig) -> tonic::transport::Channel {
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("an endpoint")
        .tls_config(tls)
        .expect("TLS settings")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

fn plain_channel(addr: &str) -> tonic::transport::Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("an endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_clients_are_refused_and_tls_clients_served() {
    init();
    let c = Cluster::builder(1)
        .secure()
        .set("server.health_listen", "\"127.0.0.1:0\"")
        .start()
        .await;
    c.serve_v1().await;
    let node = c.node(1);
    let client_addr = node.grpc_addr().to_string();
    let peer_addr = node.peer_addr().expect("a peer port").to_string();

    tracing::info!("--- a plaintext Rank call on the client port fails");
    let err = RankerClient::new(plain_channel(&client_addr))
        .rank(c.example_request())
        .await
        .expect_err("plaintext must not be served");
    tracing::info!(code = ?err.code(), message = err.message(), "plaintext refused");
    assert_ne!(err.code(), tonic::Code::Ok);
    let failures = node
        .metric_value("rankd_tls_handshake_failures_total{port=\"client\"}")
        .await;
    assert!(failures >= Some(1.0), "handshake failures: {failures:?}");

    tracing::info!("--- a plaintext peer call fails too");
    let err = PeerClient::new(plain_channel(&peer_addr))
        .fetch_artifact(FetchArtifactRequest {
            name: c.model_name().into(),
            version: "1".into(),
            from_node: 9,
        })
        .await
        .expect_err("plaintext must not reach the peer port");
    assert_ne!(err.code(), tonic::Code::Ok);

    tracing::info!("--- the plaintext health port answers probes, and serves nothing else");
    let health = node.listener("health").expect("a health port").to_string();
    let status = HealthClient::new(plain_channel(&health))
        .check(HealthCheckRequest {
            service: "rankd.v1.Ranker".into(),
        })
        .await
        .expect("a plaintext probe")
        .into_inner();
    assert_eq!(status.status, rankd_tests::ServingStatus::Serving as i32);
    let err = RankerClient::new(plain_channel(&health))
        .rank(c.example_request())
        .await
        .expect_err("Rank is not on the health port");
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    tracing::info!("--- over TLS, without a client certificate, Rank works");
    let tls = c.security().pki.client_tls(None);
    let resp = RankerClient::new(tls_channel(&client_addr, tls))
        .rank(c.example_request())
        .await
        .expect("rank over TLS")
        .into_inner();
    assert_eq!(resp.items.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_certificate_cannot_reach_raft_or_fetch_artifacts() {
    init();
    let c = Cluster::builder(3).secure().start().await;
    c.serve_v1().await;
    let peer_addr = c.node(2).peer_addr().expect("a peer port").to_string();
    let sec = c.security();
    let dir = tempfile::tempdir().expect("a directory");
    let foreign = TestPki::new(dir.path(), "foreign");
    let ip = c.ip(2);
    let impostor = foreign.issue("node-9", &[ip]);
    // Trusts the cluster CA (so the server checks out) but presents the foreign certificate.
    let as_impostor = sec.pki.client_tls(Some(&impostor));
    let member = sec.pki.issue("node-9", &[ip]);
    let as_member = sec.pki.client_tls(Some(&member));
    let fetch = FetchArtifactRequest {
        name: c.model_name().into(),
        version: "1".into(),
        from_node: 9,
    };
    let garbage_vote = RaftMessage {
        json: b"{}".to_vec(),
    };

    tracing::info!("--- a certificate from the cluster CA reaches both services");
    let mut stream = PeerClient::new(tls_channel(&peer_addr, as_member.clone()))
        .fetch_artifact(fetch.clone())
        .await
        .expect("a member may fetch")
        .into_inner();
    let first = stream.message().await.expect("a chunk");
    assert!(first.is_some(), "the artifact streams");
    let err = RaftClient::new(tls_channel(&peer_addr, as_member))
        .vote(garbage_vote.clone())
        .await
        .expect_err("an empty vote is not a vote");
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "the handler answered: {err:?}"
    );

    tracing::info!("--- a foreign certificate reaches neither: the handshake fails");
    for (what, result) in [
        (
            "fetch",
            PeerClient::new(tls_channel(&peer_addr, as_impostor.clone()))
                .fetch_artifact(fetch.clone())
                .await
                .map(|_| ()),
        ),
        (
            "vote",
            RaftClient::new(tls_channel(&peer_addr, as_impostor))
                .vote(garbage_vote.clone())
                .await
                .map(|_| ()),
        ),
        (
            "vote with a cluster-CA certificate that is not a node's (the harness's)",
            RaftClient::new(tls_channel(
                &peer_addr,
                sec.pki.client_tls(Some(&sec.harness)),
            ))
            .vote(garbage_vote.clone())
            .await
            .map(|_| ()),
        ),
        (
            "vote without any certificate",
            RaftClient::new(tls_channel(&peer_addr, sec.pki.client_tls(None)))
                .vote(garbage_vote)
                .await
                .map(|_| ()),
        ),
    ] {
        let err = result.expect_err(what);
        tracing::info!(what, code = ?err.code(), message = err.message(), "refused");
        // With TLS 1.3 the client may finish its side of the handshake before the server
        // refuses the certificate: it then sees the connection closed (Cancelled) rather
        // than a handshake error. Either way no handler answered.
        assert!(
            matches!(
                err.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ),
            "{what}: a transport failure, not an answer from a handler: {err:?}"
        );
    }
    let refused = c
        .node(2)
        .metric_value("rankd_tls_handshake_failures_total{port=\"peer\"}")
        .await;
    assert!(refused >= Some(4.0), "peer handshake failures: {refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart() {
    init();
    let c = Cluster::builder(1).secure().start().await;
    let node = c.node(1);
    let addr = node.grpc_addr().to_string();
    let pid = node.pid();
    let dir = tempfile::tempdir().expect("a directory");
    let next = TestPki::new(dir.path(), "next");
    let trusts_next = next.client_tls(None);
    let check = |tls: ClientTlsConfig| {
        let addr = addr.clone();
        async move {
            HealthClient::new(tls_channel(&addr, tls))
                .check(HealthCheckRequest::default())
                .await
        }
    };

    tracing::info!("--- a client that trusts only the next CA is refused today");
    assert!(check(trusts_next.clone()).await.is_err());

    tracing::info!("--- the node's certificate files are replaced by ones the next CA signed");
    let rotated = next.issue("node-1", &[c.ip(1), "127.0.0.1".parse().expect("an IP")]);
    let config = std::fs::read_to_string(node.config_path()).expect("the node's config");
    let cert_path = config
        .lines()
        .find_map(|l| l.strip_prefix("client = { cert = \""))
        .and_then(|rest| rest.split('"').next())
        .expect("the client certificate path in the config")
        .to_string();
    let key_path = cert_path.replace(".crt", ".key");
    // Key first, then certificate: a reload in between fails and is retried on the next
    // change, which the certificate write is.
    std::fs::copy(&rotated.key, &key_path).expect("replacing the key");
    std::fs::copy(&rotated.cert, &cert_path).expect("replacing the certificate");

    tracing::info!("--- new connections get the new certificate");
    wait_for(
        "the rotated certificate to be served",
        Duration::from_secs(30),
        || {
            let check = check(trusts_next.clone());
            async move { check.await.map(|_| ()).map_err(|e| format!("{e:?}")) }
        },
    )
    .await;
    assert_eq!(c.node(1).pid(), pid, "the same process");
    let reloads = c
        .node(1)
        .metric_value("rankd_tls_reloads_total{port=\"client\",result=\"ok\"}")
        .await;
    assert!(reloads >= Some(1.0), "reloads: {reloads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failover_client_ranks_over_tls() {
    init();
    let c = Cluster::builder(3).secure().start().await;
    c.serve_v1().await;
    let tls = c.security().pki.client_tls(None);
    let config = rankd_proto::client::ClientConfig {
        tls: Some(tls),
        ..Default::default()
    };
    tracing::info!("--- one address is enough: the others are discovered, over TLS too");
    let client = rankd_proto::client::FailoverClient::connect(
        vec![c.node(1).grpc_addr().to_string()],
        config,
    )
    .await
    .expect("a failover client");
    assert!(
        client.wait_healthy(3, Duration::from_secs(30)).await,
        "healthy nodes: {:?}",
        client.nodes()
    );
    let resp = client.rank(c.example_request()).await.expect("rank");
    assert_eq!(resp.items.len(), 5);

    tracing::info!("--- without TLS settings the same client finds no healthy node");
    let plain = rankd_proto::client::FailoverClient::connect(
        vec![c.node(1).grpc_addr().to_string()],
        rankd_proto::client::ClientConfig::default(),
    )
    .await
    .expect("a failover client");
    assert!(!plain.wait_healthy(1, Duration::from_secs(2)).await);
}
