//! Dynamic batching: Rank calls from many connections coalesce into one forward pass.
//!
//! Requests enter a bounded queue; when it is full the caller gets `QueueFull` at once
//! (RESOURCE_EXHAUSTED) instead of the queue growing. Dedicated inference threads (never
//! the async runtime's workers) each take a request, add whatever else is queued, and run
//! the batch.
//!
//! Waiting for a batch to fill costs latency, so a worker waits (at most
//! `max_queue_delay` after the first request was queued) only while more requests are
//! already on their way in: the service counts calls between arrival and enqueue
//! ([`Scheduler::arrival`]). A lone request runs immediately; under load, requests that
//! arrive while a batch runs are picked up together by the next one.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use rankd_kernels::{KernelError, RankInput, Ranked};
use tokio::sync::oneshot;

use crate::error::ServeError;
use crate::metrics::Metrics;
use crate::model::{Loaded, ModelSlot};

/// One request waiting for inference. Inputs are already validated.
/// How often a worker waiting for a batch to fill re-checks whether calls are still arriving.
const ARRIVAL_POLL: Duration = Duration::from_micros(200);

pub struct Job {
    pub query: Vec<f32>,
    pub candidates: Vec<i64>,
    pub top_k: usize,
    pub deadline: Option<Instant>,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Scored, ServeError>>,
    /// False for the cluster's own probe calls (see `cluster::probe`): they measure the node,
    /// but their scores must not move the version's score statistics or drift baseline.
    pub observed: bool,
}

/// A ranking and the model version that produced it.
pub struct Scored {
    pub ranked: Ranked,
    pub model: Arc<Loaded>,
}

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub max_batch_size: usize,
    /// Most scored rows per batch (requests × longest candidate list, padding included).
    /// Past the device's sweet spot a bigger batch only adds latency.
    pub max_batch_items: usize,
    pub max_queue_delay: Duration,
    pub queue_capacity: usize,
    /// A job that waited longer than this is refused (RESOURCE_EXHAUSTED) instead of run.
    pub max_queue_wait: Option<Duration>,
    pub workers: usize,
    /// How long an idle worker polls the queue before it blocks (`batching.idle_spin_us`).
    pub idle_spin: Duration,
}

pub struct Scheduler {
    tx: Option<Sender<Job>>,
    idle_spin: Duration,
    arrivals: Arc<AtomicUsize>,
    capacity: usize,
    workers: Vec<JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

/// Marks a request as on its way to the queue for as long as it lives.
pub struct Arrival(Arc<AtomicUsize>);

impl Drop for Arrival {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Scheduler {
    pub fn start(slot: Arc<ModelSlot>, cfg: SchedulerConfig, metrics: Arc<Metrics>) -> Scheduler {
        let (tx, rx) = crossbeam_channel::bounded(cfg.queue_capacity);
        let arrivals = Arc::new(AtomicUsize::new(0));
        let workers = (0..cfg.workers.max(1))
            .map(|i| {
                let worker = Worker {
                    rx: rx.clone(),
                    slot: slot.clone(),
                    arrivals: arrivals.clone(),
                    metrics: metrics.clone(),
                    max_batch: cfg.max_batch_size.max(1),
                    max_items: cfg.max_batch_items.max(1),
                    max_delay: cfg.max_queue_delay,
                    max_wait: cfg.max_queue_wait,
                    idle_spin: cfg.idle_spin,
                    carry: None,
                };
                std::thread::Builder::new()
                    .name(format!("rankd-infer-{i}"))
                    .spawn(move || worker.run())
                    .expect("spawning an inference thread at startup")
            })
            .collect();
        Scheduler {
            tx: Some(tx),
            idle_spin: cfg.idle_spin,
            arrivals,
            capacity: cfg.queue_capacity,
            workers,
            metrics,
        }
    }

    /// Call when a Rank request arrives, before validating it; drop after `submit`.
    pub fn arrival(&self) -> Arrival {
        self.arrivals.fetch_add(1, Ordering::AcqRel);
        Arrival(self.arrivals.clone())
    }

    pub fn submit(&self, job: Job) -> Result<(), ServeError> {
        self.try_submit(job).map_err(|(e, _)| e)
    }

    /// Like [`Self::submit`], but a job refused because the queue is full comes back, so
    /// the caller can send it elsewhere.
    pub fn try_submit(&self, job: Job) -> Result<(), (ServeError, Option<Box<Job>>)> {
        let tx = self.tx.as_ref().ok_or((ServeError::EngineStopped, None))?;
        // Counted before the send so a worker's decrement can never precede it.
        self.metrics.queue_depth.inc();
        let res = match tx.try_send(job) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(job)) => {
                self.metrics.reject("queue_full");
                Err((
                    ServeError::QueueFull {
                        capacity: self.capacity,
                    },
                    Some(Box::new(job)),
                ))
            }
            Err(TrySendError::Disconnected(_)) => Err((ServeError::EngineStopped, None)),
        };
        self.metrics.queue_depth.dec();
        res
    }

    /// Waits for a submitted job's answer. With `idle_spin` set and `alone()` true (this is
    /// the node's only call in flight), the waiting task polls for the answer instead of
    /// parking: the async runtime's thread stays awake, so the answer does not wait for it
    /// to be woken. Each poll yields to the runtime, so other connections are still served;
    /// once a second call is in flight, or `idle_spin` has passed, the task parks as usual.
    pub async fn reply(
        &self,
        mut rx: oneshot::Receiver<Result<Scored, ServeError>>,
        alone: impl Fn() -> bool,
    ) -> Result<Result<Scored, ServeError>, oneshot::error::RecvError> {
        if !self.idle_spin.is_zero() {
            let until = Instant::now() + self.idle_spin;
            while alone() && Instant::now() < until {
                match rx.try_recv() {
                    Ok(answer) => return Ok(answer),
                    Err(oneshot::error::TryRecvError::Closed) => break,
                    Err(oneshot::error::TryRecvError::Empty) => tokio::task::yield_now().await,
                }
            }
        }
        rx.await
    }

    /// Every inference worker thread is still running. A worker only ends when the queue
    /// closes at shutdown, or by a panic inside the engine; either way this node must stop
    /// reporting SERVING, since queued calls would wait for nobody.
    pub fn healthy(&self) -> bool {
        self.tx.is_some() && self.workers.iter().all(|w| !w.is_finished())
    }

    /// Stops taking requests, lets the workers finish what is queued, and joins them.
    pub fn shutdown(mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

struct Worker {
    rx: Receiver<Job>,
    slot: Arc<ModelSlot>,
    arrivals: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    max_batch: usize,
    max_items: usize,
    max_delay: Duration,
    max_wait: Option<Duration>,
    idle_spin: Duration,
    /// A job taken from the queue that did not fit the last batch; it heads the next one.
    carry: Option<Job>,
}

enum Polled {
    Job(Job),
    Closed,
    /// Nothing arrived while polling.
    Idle,
}

impl Worker {
    fn run(mut self) {
        while let Some(first) = self.carry.take().or_else(|| self.next_job()) {
            let batch = self.fill(first);
            self.execute(batch);
        }
    }

    /// The next job; `None` once the queue is closed and empty.
    fn next_job(&self) -> Option<Job> {
        let job = match self.poll_for_job() {
            Polled::Job(job) => job,
            Polled::Closed => return None,
            Polled::Idle => self.rx.recv().ok()?,
        };
        self.metrics.queue_depth.dec();
        Some(job)
    }

    /// Polls the queue for up to `idle_spin` before the caller blocks on it. Blocking puts
    /// the thread (and on a VM, often its virtual CPU) to sleep, and the next job then pays
    /// for the wakeup. Between polls the thread yields, so anything else runnable on this
    /// core (the gRPC runtime, above all) is not held up by the polling.
    fn poll_for_job(&self) -> Polled {
        if self.idle_spin.is_zero() {
            return Polled::Idle;
        }
        let until = Instant::now() + self.idle_spin;
        loop {
            match self.rx.try_recv() {
                Ok(job) => return Polled::Job(job),
                Err(TryRecvError::Disconnected) => return Polled::Closed,
                Err(TryRecvError::Empty) if Instant::now() >= until => return Polled::Idle,
                Err(TryRecvError::Empty) => std::thread::yield_now(),
            }
        }
    }

    fn fill(&mut self, first: Job) -> Vec<Job> {
        let window_end = first.enqueued + self.max_delay;
        let mut longest = first.candidates.len();
        let mut batch = vec![first];
        while batch.len() < self.max_batch {
            let job = match self.rx.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if self.arrivals.load(Ordering::Acquire) == 0 || now >= window_end {
                        break;
                    }
                    // Wait in short slices: an arriving call may fail validation and never
                    // enqueue, and the arrival count must be re-read to notice that.
                    match self.rx.recv_deadline(window_end.min(now + ARRIVAL_POLL)) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            self.metrics.queue_depth.dec();
            let n = longest.max(job.candidates.len());
            if (batch.len() + 1) * n > self.max_items {
                self.carry = Some(job);
                break;
            }
            longest = n;
            batch.push(job);
        }
        batch
    }

    fn execute(&self, batch: Vec<Job>) {
        let now = Instant::now();
        let mut live = Vec::with_capacity(batch.len());
        for job in batch {
            if job.reply.is_closed() {
                // The caller gave up (deadline or cancellation); nobody would read the answer.
                self.metrics.reject("caller_gone");
            } else if job.deadline.is_some_and(|d| d <= now) {
                self.metrics.reject("deadline_in_queue");
                let _ = job.reply.send(Err(ServeError::DeadlineExpired {
                    stage: "while queued",
                }));
            } else if let Some(limit) = self
                .max_wait
                .filter(|w| now.duration_since(job.enqueued) > *w)
            {
                self.metrics.reject("queue_wait");
                let _ = job.reply.send(Err(ServeError::QueueWait {
                    waited_ms: now.duration_since(job.enqueued).as_millis() as u64,
                    limit_ms: limit.as_millis() as u64,
                }));
            } else {
                self.metrics
                    .queue_wait
                    .observe(now.duration_since(job.enqueued).as_secs_f64());
                live.push(job);
            }
        }
        if live.is_empty() {
            return;
        }
        // One model for the whole batch, even if an activation swaps the slot meanwhile.
        let Some(model) = self.slot.current() else {
            for job in live {
                let _ = job.reply.send(Err(ServeError::NoModel));
            }
            return;
        };
        match self.rank(&model, &live) {
            Ok(results) => reply_all(live, results, &model, &self.metrics),
            // One bad request must not fail its batch-mates: retry each alone.
            Err(_) if live.len() > 1 => {
                for job in live {
                    let res = self.rank(&model, std::slice::from_ref(&job));
                    let res = res.unwrap_or_else(|e| vec![Err(e)]);
                    reply_all(vec![job], res, &model, &self.metrics);
                }
            }
            Err(e) => reply_all(live, vec![Err(e)], &model, &self.metrics),
        }
    }

    fn rank(
        &self,
        model: &Loaded,
        jobs: &[Job],
    ) -> Result<Vec<Result<Ranked, KernelError>>, KernelError> {
        let inputs: Vec<RankInput<'_>> = jobs
            .iter()
            .map(|j| RankInput {
                query: &j.query,
                candidates: &j.candidates,
                top_k: j.top_k,
            })
            .collect();
        let start = Instant::now();
        let res = catch_unwind(AssertUnwindSafe(|| model.ranker.rank_batch(&inputs)))
            .unwrap_or_else(|_| Err(KernelError::Torch("inference panicked".into())));
        self.metrics
            .inference
            .observe(start.elapsed().as_secs_f64());
        self.metrics.inference_batches.inc();
        self.metrics.batch_size.observe(jobs.len() as f64);
        res
    }
}

fn reply_all(
    jobs: Vec<Job>,
    results: Vec<Result<Ranked, KernelError>>,
    model: &Arc<Loaded>,
    metrics: &Metrics,
) {
    model.scores.record(
        results
            .iter()
            .zip(&jobs)
            .filter(|(_, j)| j.observed)
            .map(|(r, _)| r),
    );
    let mut results = results.into_iter();
    for job in jobs {
        let res = match results.next() {
            Some(Ok(ranked)) => Ok(Scored {
                ranked,
                model: model.clone(),
            }),
            Some(Err(e)) => {
                metrics.inference_errors.inc();
                tracing::warn!(error = %e, "inference failed");
                Err(ServeError::Inference(e))
            }
            None => {
                metrics.inference_errors.inc();
                Err(ServeError::Inference(KernelError::Torch(
                    "engine returned fewer results than requests".into(),
                )))
            }
        };
        let _ = job.reply.send(res);
    }
}

#[cfg(test)]
mod tests;
