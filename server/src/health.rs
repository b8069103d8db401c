//! Readiness as probes see it: grpc.health.v1 for the node (`""`) and the Ranker service,
//! mirrored in the `rankd_ready` metric.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rankd_proto::v1::ranker_server::RankerServer;
use tonic_health::server::HealthReporter;

use crate::metrics::Metrics;
use crate::service::RankService;

pub const RANKER_SERVICE: &str = <RankerServer<RankService> as tonic::server::NamedService>::NAME;

/// A health "service" that is SERVING from the moment the node answers gRPC until it exits,
/// whatever readiness says: the target of a liveness probe. A node that is loading a model,
/// waiting for `cluster init` or lagging is alive and must not be restarted for it.
pub const LIVENESS_SERVICE: &str = "rankd.liveness";

#[derive(Clone)]
pub struct Readiness {
    reporter: HealthReporter,
    metrics: Arc<Metrics>,
    serving: Arc<AtomicBool>,
}

impl Readiness {
    pub fn new(reporter: HealthReporter, metrics: Arc<Metrics>) -> Readiness {
        Readiness {
            reporter,
            metrics,
            serving: Arc::new(AtomicBool::new(false)),
        }
    }

    /// What was last reported.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    pub async fn set(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        self.reporter
            .set_service_status(RANKER_SERVICE, status)
            .await;
        self.metrics.ready.set(i64::from(serving));
    }

    /// Reports the node alive ([`LIVENESS_SERVICE`]); called once, when the port opens.
    pub async fn alive(&self) {
        self.reporter
            .set_service_status(LIVENESS_SERVICE, tonic_health::ServingStatus::Serving)
            .await;
    }

    /// Ends every Watch stream (before shutdown, so watchers do not hold it up).
    pub async fn clear(&mut self) {
        self.reporter.clear_service_status(LIVENESS_SERVICE).await;
        self.reporter.clear_service_status("").await;
        self.reporter.clear_service_status(RANKER_SERVICE).await;
    }
}
