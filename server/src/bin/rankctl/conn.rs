//! How rankctl reaches a node: TLS (with an optional client certificate) and the bearer
//! token, set once from the global flags, used by every subcommand.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use rankd_proto::admin::v1::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(clap::Args, Clone, Default)]
pub struct ConnArgs {
    /// Bearer token for admin calls (`rankctl token generate` makes one).
    #[arg(long, env = "RANKD_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) the node's certificate must chain to; implies TLS. Without it,
    /// an `https://` address is verified against the CA in `--ca-cert` only, so pass it.
    #[arg(long, env = "RANKD_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --client-key.
    #[arg(
        long,
        env = "RANKD_CLIENT_CERT",
        global = true,
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    #[arg(
        long,
        env = "RANKD_CLIENT_KEY",
        global = true,
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
}

static ARGS: OnceLock<ConnArgs> = OnceLock::new();

pub fn set(args: ConnArgs) {
    let _ = ARGS.set(args);
}

fn args() -> &'static ConnArgs {
    ARGS.get_or_init(ConnArgs::default)
}

/// Adds `authorization: Bearer ...` to every call when a token was given.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Admin = AdminClient<InterceptedService<Channel, Auth>>;

/// A connected channel to `addr`: `host:port` or `http://` is plaintext; `https://`, or
/// any address when --ca-cert is given, is TLS.
pub async fn channel(addr: &str) -> Result<Channel> {
    let a = args();
    let tls = addr.starts_with("https://") || a.ca_cert.is_some();
    let uri = match addr.split_once("://") {
        Some((_, rest)) if tls => format!("https://{rest}"),
        Some(_) => addr.to_string(),
        None if tls => format!("https://{addr}"),
        None => format!("http://{addr}"),
    };
    let mut endpoint =
        Endpoint::from_shared(uri.clone()).with_context(|| format!("bad address {addr}"))?;
    if tls {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &a.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&a.client_cert, &a.client_key) {
            let cert =
                std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(config)
            .with_context(|| format!("TLS settings for {addr}"))?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {uri}"))
}

/// An Admin client for `addr` that sends the token.
pub async fn admin(addr: &str) -> Result<Admin> {
    let token = match &args().token {
        Some(t) => Some(
            format!("Bearer {}", t.trim())
                .parse()
                .context("the token is not valid metadata")?,
        ),
        None => None,
    };
    Ok(AdminClient::with_interceptor(
        channel(addr).await?,
        Auth(token),
    ))
}
