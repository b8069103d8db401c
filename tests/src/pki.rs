//! Certificate authorities for the TLS tests: a CA, certificates it signs, and the client
//! TLS settings that trust it. Each test makes its own, so nothing is shared or checked in.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// One certificate and its key, written as PEM files.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl IssuedCert {
    pub fn identity(&self) -> Identity {
        Identity::from_pem(read(&self.cert), read(&self.key))
    }

    /// The private key's PEM body: what must never show up in a log.
    pub fn key_pem(&self) -> String {
        String::from_utf8_lossy(&read(&self.key)).into_owned()
    }
}

/// A CA whose files live in `dir`.
pub struct TestPki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    pub ca_cert: PathBuf,
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

impl TestPki {
    /// A new CA named `name`, files in `dir` (created).
    pub fn new(dir: &Path, name: &str) -> TestPki {
        std::fs::create_dir_all(dir).expect("a pki directory");
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("a self-signed CA");
        let ca_cert = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&ca_cert, cert.pem()).expect("writing the CA certificate");
        TestPki {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
            ca_cert,
        }
    }

    /// A certificate with subject CN `name`, valid for `ips` and `localhost`, written as
    /// `<file>.crt` / `<file>.key`.
    pub fn issue_as(&self, file: &str, name: &str, ips: &[IpAddr]) -> IssuedCert {
        let key = KeyPair::generate().expect("a key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string()]).expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, name);
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing a certificate");
        let issued = IssuedCert {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("writing a certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("writing a key");
        issued
    }

    pub fn issue(&self, name: &str, ips: &[IpAddr]) -> IssuedCert {
        self.issue_as(name, name, ips)
    }

    /// Client TLS that trusts this CA, presenting `identity` when given.
    pub fn client_tls(&self, identity: Option<&IssuedCert>) -> ClientTlsConfig {
        let mut c =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&self.ca_cert)));
        if let Some(id) = identity {
            c = c.identity(id.identity());
        }
        c
    }
}
