//! Host and process series, written by `crate::host`.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Default)]
pub struct HostMetrics {
    pub data_dir_available: Gauge,
    pub data_dir_capacity: Gauge,
    pub resident_memory: Gauge,
    pub cpu_seconds: Counter<f64, AtomicU64>,
}

impl HostMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "data_dir_available_bytes",
            "Bytes rankd may still write on the data directory's filesystem",
            self.data_dir_available.clone(),
        );
        registry.register(
            "data_dir_capacity_bytes",
            "Size of the data directory's filesystem",
            self.data_dir_capacity.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the rankd process",
            self.resident_memory.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "CPU time (user and system) the rankd process has used",
            self.cpu_seconds.clone(),
        );
    }
}
