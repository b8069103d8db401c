//! Whether a drill fault is injected on this node (see `crate::fault`), so no dashboard
//! mistakes a drill for a real gray failure.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Default)]
pub struct FaultMetrics {
    pub latency: Gauge<f64, AtomicU64>,
    pub error_ratio: Gauge<f64, AtomicU64>,
}

impl FaultMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "fault_injected_latency_seconds",
            "Latency InjectFault adds to every Rank call on this node (0: none)",
            self.latency.clone(),
        );
        registry.register(
            "fault_injected_error_ratio",
            "Share of Rank calls InjectFault makes fail on this node (0: none)",
            self.error_ratio.clone(),
        );
    }
}
