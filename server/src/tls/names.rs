//! Which names a certificate carries, and the name patterns the peer port admits.
//!
//! The cluster CA may sign more than node certificates (operators' identities for the admin
//! API, frontends' for rate limits). Being signed is therefore not enough to act as a
//! member: the peer port also requires one of the certificate's names to match
//! `tls.peer.allowed_names`, checked during the handshake ([`NamedClients`]), so a
//! certificate that is not a node's never reaches Raft, artifacts or forwarded calls.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The subject common names, then the DNS subject alternative names, of a DER certificate.
pub fn cert_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        names.extend(san.value.general_names.iter().filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        }));
    }
    names
}

/// `pattern` is a name, or a name with one `*` standing for any run of characters
/// (`node-*`, `*.rankd-peer.rankd.svc`).
pub fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, suffix)) => {
            name.len() >= prefix.len() + suffix.len()
                && name.starts_with(prefix)
                && name.ends_with(suffix)
        }
    }
}

/// A client-certificate verifier that also requires an allowed name.
#[derive(Debug)]
pub struct NamedClients {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub allowed: Vec<String>,
}

impl ClientCertVerifier for NamedClients {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = cert_names(end_entity.as_ref());
        if names
            .iter()
            .any(|n| self.allowed.iter().any(|p| name_matches(p, n)))
        {
            return Ok(verified);
        }
        tracing::warn!(?names, "peer certificate from the cluster CA refused: none of its names is in tls.peer.allowed_names");
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn patterns_match_whole_names_with_one_wildcard() {
        assert!(name_matches("node-1", "node-1"));
        assert!(!name_matches("node-1", "node-10"));
        assert!(name_matches("node-*", "node-10"));
        assert!(!name_matches("node-*", "ops-node-1"));
        assert!(name_matches("*.peer.svc", "rankd-0.peer.svc"));
        assert!(!name_matches("*.peer.svc", "rankd-0.peer.svc.evil"));
        assert!(
            !name_matches("a*a", "a"),
            "prefix and suffix may not overlap"
        );
        assert!(name_matches("*", "anything"));
    }
}
