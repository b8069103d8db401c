//! Clusters with TLS on every port and credentials on the admin API
//! ([`super::ClusterBuilder::secure`]): a private CA per cluster, one certificate per node
//! (valid for its loopback IP), a client certificate the harness itself uses as an admin
//! identity, and a reader and an operator token for tests to call with.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use rankd_proto::admin::v1::admin_client::AdminClient;
use rankd_proto::admin::v1::UploadModelResponse;
use sha2::{Digest, Sha256};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

use super::Cluster;
use crate::builder::NodeBuilder;
use crate::pki::{IssuedCert, TestPki};
use crate::upload::{pack_bundle, upload_messages};

/// The cluster's CA, the harness's identity and the tokens the nodes accept.
pub struct Security {
    pub pki: TestPki,
    /// Subject "harness", role admin: what the harness's own clients present.
    pub harness: IssuedCert,
    /// Token named "reader-bot", role reader.
    pub reader_token: String,
    /// Token named "deploy-bot", role operator.
    pub operator_token: String,
}

fn token(seed: &str) -> String {
    // Unique per cluster and unguessable enough for a test; real tokens come from
    // `rankctl token generate`.
    let nonce = format!(
        "{seed}-{}-{:?}",
        std::process::id(),
        std::time::Instant::now()
    );
    format!("rkd_{}", hex::encode(Sha256::digest(nonce.as_bytes())))
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

impl Security {
    pub fn new(root: &Path) -> Security {
        let pki = TestPki::new(&root.join("pki"), "cluster");
        let harness = pki.issue("harness", &[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        Security {
            pki,
            harness,
            reader_token: token("reader"),
            operator_token: token("operator"),
        }
    }

    /// Every node: TLS required on the client and peer ports (client certificates from the
    /// cluster CA accepted as identities), credentials required for admin calls, and a
    /// reload check every second so rotation tests stay short.
    pub fn configure(&self, b: NodeBuilder, id: u64, ip: IpAddr) -> NodeBuilder {
        let cert = self.pki.issue(
            &format!("node-{id}"),
            &[ip, IpAddr::V4(Ipv4Addr::LOCALHOST)],
        );
        let (c, k, ca) = (
            toml_str(&cert.cert.display().to_string()),
            toml_str(&cert.key.display().to_string()),
            toml_str(&self.pki.ca_cert.display().to_string()),
        );
        let hash = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
        b.set_str("tls.mode", "required")
            .set("tls.reload_interval_s", "1")
            .set(
                "tls.client",
                &format!("{{ cert = {c}, key = {k}, client_ca = {ca} }}"),
            )
            .set(
                "tls.peer",
                &format!("{{ cert = {c}, key = {k}, ca = {ca}, allowed_names = [\"node-*\"] }}"),
            )
            .set_str("auth.mode", "required")
            .set(
                "auth.tokens",
                &format!(
                    "[{{ name = \"reader-bot\", role = \"reader\", sha256 = {:?} }}, \
                     {{ name = \"deploy-bot\", role = \"operator\", sha256 = {:?} }}]",
                    hash(&self.reader_token),
                    hash(&self.operator_token)
                ),
            )
            .set(
                "auth.identities",
                "[{ subject = \"harness\", role = \"admin\" }]",
            )
            .client_tls(self.pki.client_tls(Some(&self.harness)))
    }
}

/// Adds `authorization: Bearer <token>` to every call (no header without a token).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Bearer {
        Bearer(token.map(|t| format!("Bearer {t}").parse().expect("metadata")))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// An Admin client calling as someone other than the harness.
pub type CallerAdmin = AdminClient<InterceptedService<Channel, Bearer>>;

impl Cluster {
    /// An Admin client for node `id` over TLS (trusting the cluster CA) that presents
    /// `identity` (none: no client certificate) and sends `token` (none: no credential).
    pub fn admin_as(
        &self,
        id: u64,
        token: Option<&str>,
        identity: Option<&IssuedCert>,
    ) -> CallerAdmin {
        let tls = self.security().pki.client_tls(identity);
        let channel = Endpoint::from_shared(format!("https://{}", self.node(id).grpc_addr()))
            .expect("an endpoint")
            .tls_config(tls)
            .expect("client TLS settings")
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        AdminClient::with_interceptor(channel, Bearer::new(token))
    }

    /// Uploads `version` of the test bundle to node `id` through `client`.
    pub async fn upload_as(
        &self,
        client: &mut CallerAdmin,
        version: &str,
    ) -> Result<UploadModelResponse, tonic::Status> {
        let body = pack_bundle(&self.version_dir(version));
        let msgs = upload_messages(self.model_name(), version, body.len() as u64, &body);
        client
            .upload_model(futures::stream::iter(msgs))
            .await
            .map(tonic::Response::into_inner)
    }
}
