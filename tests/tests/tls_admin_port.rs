//! The admin surface on its own port with its own TLS settings (`server.admin_listen`,
//! `[tls.admin]`), and the loud warning a plaintext development node logs at start.

use std::time::Duration;

use rankd_proto::admin::v1::admin_client::AdminClient;
use rankd_proto::admin::v1::HistoryRequest;
use rankd_tests::{init, Bearer, Node, TestPki};
use sha2::{Digest, Sha256};
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic::Code;

fn admin(addr: &str, tls: Option<ClientTlsConfig>, token: &str) -> rankd_tests::CallerAdmin {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut e = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .expect("an endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    if let Some(tls) = tls {
        e = e.tls_config(tls).expect("TLS settings");
    }
    let bearer = Bearer::new(Some(token));
    AdminClient::with_interceptor(e.connect_lazy(), bearer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_can_live_on_its_own_tls_port() {
    init();
    let dir = tempfile::tempdir().expect("a directory");
    let client_ca = TestPki::new(dir.path(), "client");
    let admin_ca = TestPki::new(dir.path(), "admin");
    let localhost = ["127.0.0.1".parse().expect("an IP")];
    let client_cert = client_ca.issue("node-client", &localhost);
    let admin_cert = admin_ca.issue("node-admin", &localhost);
    let token = "rkd_admin-port-test-token-0123456789abcdef";
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let tls = |c: &rankd_tests::IssuedCert| {
        format!(
            "{{ cert = {:?}, key = {:?} }}",
            c.cert.display().to_string(),
            c.key.display().to_string()
        )
    };
    let node = Node::builder()
        .set_str("tls.mode", "required")
        .set("tls.client", &tls(&client_cert))
        .set("tls.admin", &tls(&admin_cert))
        .set(
            "tls.peer",
            &format!(
                "{{ cert = {:?}, key = {:?}, ca = {:?}, allowed_names = [\"node-client\"] }}",
                client_cert.cert.display().to_string(),
                client_cert.key.display().to_string(),
                client_ca.ca_cert.display().to_string()
            ),
        )
        .set_str("auth.mode", "required")
        .set(
            "auth.tokens",
            &format!("[{{ name = \"ops\", role = \"admin\", sha256 = {hash:?} }}]"),
        )
        .set_str("server.admin_listen", "127.0.0.1:0")
        .client_tls(client_ca.client_tls(None))
        .start()
        .await;
    let admin_addr = node.listener("admin").expect("an admin port").to_string();
    let client_addr = node.grpc_addr().to_string();

    tracing::info!("--- the admin port serves Admin with its own certificate");
    admin(&admin_addr, Some(admin_ca.client_tls(None)), token)
        .history(HistoryRequest {})
        .await
        .expect("history on the admin port");

    tracing::info!("--- the client port serves Rank but not Admin");
    let err = admin(&client_addr, Some(client_ca.client_tls(None)), token)
        .history(HistoryRequest {})
        .await
        .expect_err("admin is not on the client port");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    let q = rankd_tests::example_query();
    node.rank_client()
        .await
        .rank(rankd_tests::rank_request(&q.query, &q.candidates, 3))
        .await
        .expect("rank on the client port");

    tracing::info!("--- each port is verified against its own CA; plaintext fails on both");
    let err = admin(&admin_addr, Some(client_ca.client_tls(None)), token)
        .history(HistoryRequest {})
        .await
        .expect_err("the admin port's certificate is not from the client CA");
    assert_ne!(err.code(), Code::Ok);
    let err = admin(&admin_addr, None, token)
        .history(HistoryRequest {})
        .await
        .expect_err("plaintext");
    assert_ne!(err.code(), Code::Ok);
    assert!(
        !node.log().contains("INSECURE"),
        "a secure node warns of nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_dev_mode_is_announced_loudly() {
    init();
    let node = Node::start().await;
    let log = node.log();
    for port in ["client", "peer"] {
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains("INSECURE") && l.contains(port)),
            "no WARN line for the plaintext {port} port:\n{log}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("INSECURE") && l.contains("auth.mode")),
        "no WARN line for anonymous admin:\n{log}"
    );
}
