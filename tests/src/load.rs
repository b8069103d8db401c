//! Steady, open-loop Rank load through the failover client, for the failover tests and the
//! `rankload failover` drills.
//!
//! Each call starts at its scheduled time whether or not earlier calls have returned, and its
//! latency counts from that time: a stall shows as latency and failures, never as fewer calls
//! sent (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rankd_proto::client::FailoverClient;
use rankd_proto::v1::RankRequest;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One call's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When it was scheduled, from the start of the load.
    pub at: Duration,
    pub latency: Duration,
    /// The serving node (`node_id`), or the error.
    pub result: Result<String, String>,
}

/// What the load saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub outcomes: Vec<Outcome>,
}

impl LoadReport {
    pub fn sent(&self) -> usize {
        self.outcomes.len()
    }

    pub fn failures(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| o.result.is_err()).collect()
    }

    /// Successful calls by serving node.
    pub fn served_by(&self) -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        for o in &self.outcomes {
            if let Ok(node) = &o.result {
                *by.entry(node.clone()).or_default() += 1;
            }
        }
        by
    }

    /// Latencies in milliseconds, sorted.
    pub fn latencies_ms(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .outcomes
            .iter()
            .map(|o| o.latency.as_secs_f64() * 1000.0)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }
}

/// A running load; [`stop`](Self::stop) ends it and waits for the calls in flight.
pub struct SteadyLoad {
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<Vec<JoinHandle<()>>>,
    started: Instant,
}

impl SteadyLoad {
    /// `rate` calls per second of `request`, each with `deadline`.
    pub fn start(
        client: FailoverClient,
        request: RankRequest,
        rate: u32,
        deadline: Duration,
    ) -> SteadyLoad {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let every = Duration::from_secs(1) / rate.max(1);
        let task = tokio::spawn({
            let outcomes = outcomes.clone();
            async move {
                let mut calls = Vec::new();
                let mut tick = tokio::time::interval_at(started, every);
                // Late ticks fire at once, so the schedule holds however busy the runtime is.
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                loop {
                    let scheduled = tokio::select! {
                        t = tick.tick() => t,
                        _ = stopped.changed() => break,
                    };
                    let (client, request, outcomes) =
                        (client.clone(), request.clone(), outcomes.clone());
                    calls.push(tokio::spawn(async move {
                        let result = client
                            .rank_with_deadline(request, deadline)
                            .await
                            .map(|r| r.node_id)
                            .map_err(|s| format!("{:?}: {}", s.code(), s.message()));
                        let o = Outcome {
                            at: scheduled - started,
                            latency: scheduled.elapsed(),
                            result,
                        };
                        outcomes.lock().unwrap_or_else(|p| p.into_inner()).push(o);
                    }));
                    calls.retain(|c| !c.is_finished());
                }
                calls
            }
        });
        SteadyLoad {
            outcomes,
            stop,
            task,
            started,
        }
    }

    /// Time since the load started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Calls answered so far, with the node that served each (or the error).
    pub fn snapshot(&self) -> LoadReport {
        LoadReport {
            outcomes: self
                .outcomes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Stops scheduling calls, waits for those in flight, and reports every call.
    pub async fn stop(self) -> LoadReport {
        let _ = self.stop.send(true);
        let SteadyLoad { outcomes, task, .. } = self;
        let calls = task.await.unwrap_or_default();
        for c in calls {
            let _ = c.await;
        }
        let mut report = LoadReport {
            outcomes: outcomes.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        report.outcomes.sort_by_key(|o| o.at);
        report
    }
}
