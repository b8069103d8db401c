//! TLS and admin-authorization series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabel {
    /// client | admin | peer
    pub port: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortResult {
    pub port: &'static str,
    /// ok | failed
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    /// The admin RPC, e.g. "Promote".
    pub method: &'static str,
    /// UNAUTHENTICATED | PERMISSION_DENIED
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SurfaceLabel {
    /// rank | admin
    pub surface: &'static str,
}

#[derive(Default)]
pub struct TlsMetrics {
    pub reloads: Family<PortResult, Counter>,
    pub handshake_failures: Family<PortLabel, Counter>,
    pub cert_not_after: Family<PortLabel, Gauge>,
}

#[derive(Default)]
pub struct AuthMetrics {
    pub denied: Family<DeniedLabels, Counter>,
    pub rate_limited: Family<SurfaceLabel, Counter>,
}

impl TlsMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tls_reloads",
            "Certificate reloads after the files changed, by port and result",
            self.reloads.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Connections refused during the TLS handshake (plaintext clients, unknown CAs, timeouts)",
            self.handshake_failures.clone(),
        );
        registry.register(
            "tls_cert_not_after_timestamp_seconds",
            "When the certificate each TLS port serves expires (Unix seconds)",
            self.cert_not_after.clone(),
        );
    }
}

impl AuthMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "admin_denied",
            "Admin calls refused: no or unknown credential (UNAUTHENTICATED), role too low (PERMISSION_DENIED)",
            self.denied.clone(),
        );
        registry.register(
            "rate_limited",
            "Calls refused with RESOURCE_EXHAUSTED because their client identity exceeded its rate",
            self.rate_limited.clone(),
        );
    }
}
