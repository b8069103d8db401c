//! Scheduler behaviour with a scripted ranker standing in for libtorch.

use std::sync::Mutex;

use rankd_kernels::{ModelInfo, Precision, Ranker};

use super::*;

/// Records each batch's `top_k`s; blocks a batch containing `top_k == GATE` until released,
/// and fails any batch containing `top_k == POISON`.
struct Scripted {
    info: ModelInfo,
    batches: Mutex<Vec<Vec<usize>>>,
    gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    entered: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

const GATE: usize = 77;
const POISON: usize = 66;

impl Ranker for Scripted {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn rank_batch(
        &self,
        batch: &[RankInput<'_>],
    ) -> Result<Vec<Result<Ranked, KernelError>>, KernelError> {
        let ks: Vec<usize> = batch.iter().map(|r| r.top_k).collect();
        self.batches.lock().unwrap().push(ks.clone());
        if ks.contains(&GATE) {
            if let Some(tx) = self.entered.lock().unwrap().take() {
                tx.send(()).unwrap();
            }
            if let Some(rx) = self.gate.lock().unwrap().take() {
                rx.recv().unwrap();
            }
        }
        if ks.contains(&POISON) {
            return Err(KernelError::Torch("poison".into()));
        }
        Ok(batch
            .iter()
            .map(|r| {
                Ok(Ranked {
                    ids: r.candidates[..1].to_vec(),
                    scores: vec![r.top_k as f32],
                })
            })
            .collect())
    }
}

struct Fixture {
    sched: Scheduler,
    ranker: Arc<Scripted>,
    release: std::sync::mpsc::Sender<()>,
    entered: std::sync::mpsc::Receiver<()>,
}

fn fixture(capacity: usize, delay: Duration) -> Fixture {
    fixture_waiting(capacity, delay, None)
}

fn fixture_waiting(capacity: usize, delay: Duration, max_wait: Option<Duration>) -> Fixture {
    fixture_with(capacity, delay, max_wait, Duration::ZERO)
}

fn fixture_with(
    capacity: usize,
    delay: Duration,
    max_wait: Option<Duration>,
    idle_spin: Duration,
) -> Fixture {
    let (release, gate) = std::sync::mpsc::channel();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let ranker = Arc::new(Scripted {
        info: ModelInfo {
            name: "m".into(),
            version: "1".into(),
            query_dim: 1,
            item_dim: 1,
            item_count: 10,
            device: "cpu".into(),
            precision: Precision::Fp32,
        },
        batches: Mutex::new(Vec::new()),
        gate: Mutex::new(Some(gate)),
        entered: Mutex::new(Some(entered_tx)),
    });
    let slot = Arc::new(ModelSlot::new());
    slot.install(Arc::new(Loaded::new(ranker.clone(), 0.0)));
    let sched = Scheduler::start(
        slot,
        SchedulerConfig {
            max_batch_size: 8,
            max_batch_items: 1000,
            max_queue_delay: delay,
            queue_capacity: capacity,
            max_queue_wait: max_wait,
            workers: 1,
            idle_spin,
        },
        Arc::new(Metrics::new()),
    );
    Fixture {
        sched,
        ranker,
        release,
        entered,
    }
}

type Reply = oneshot::Receiver<Result<Scored, ServeError>>;

fn job(top_k: usize, deadline: Option<Instant>) -> (Job, Reply) {
    sized_job(top_k, 1, deadline)
}

fn sized_job(top_k: usize, candidates: usize, deadline: Option<Instant>) -> (Job, Reply) {
    let (tx, rx) = oneshot::channel();
    let job = Job {
        query: vec![0.0],
        candidates: vec![3; candidates],
        top_k,
        deadline,
        enqueued: Instant::now(),
        reply: tx,
        observed: true,
    };
    (job, rx)
}

fn wait(rx: Reply) -> Result<Ranked, ServeError> {
    rx.blocking_recv()
        .expect("the scheduler always replies")
        .map(|s| s.ranked)
}

impl Fixture {
    /// Submits a job that occupies the only worker until `release` is signalled.
    fn occupy_worker(&self) -> Reply {
        let (j, rx) = job(GATE, None);
        self.sched.submit(j).unwrap();
        self.entered.recv().unwrap();
        rx
    }

    fn batches(&self) -> Vec<Vec<usize>> {
        self.ranker.batches.lock().unwrap().clone()
    }
}

#[test]
fn a_lone_request_does_not_wait_for_the_batch_window() {
    // A window this long would make the test time out if a lone request waited for it.
    let f = fixture(16, Duration::from_secs(3600));
    let (j, rx) = job(1, None);
    f.sched.submit(j).unwrap();
    assert_eq!(wait(rx).unwrap().scores, vec![1.0]);
    assert_eq!(f.batches(), vec![vec![1]]);
}

#[test]
fn requests_queued_behind_a_running_batch_run_together() {
    let f = fixture(16, Duration::ZERO);
    let first = f.occupy_worker();
    let rxs: Vec<_> = (1..=5)
        .map(|k| {
            let (j, rx) = job(k, None);
            f.sched.submit(j).unwrap();
            rx
        })
        .collect();
    f.release.send(()).unwrap();
    wait(first).unwrap();
    for (k, rx) in (1..=5).zip(rxs) {
        assert_eq!(wait(rx).unwrap().scores, vec![k as f32]);
    }
    assert_eq!(f.batches(), vec![vec![GATE], vec![1, 2, 3, 4, 5]]);
}

#[test]
fn the_worker_waits_for_requests_already_arriving() {
    let f = fixture(16, Duration::from_secs(3600));
    let arriving = f.sched.arrival();
    let (j1, rx1) = job(1, None);
    f.sched.submit(j1).unwrap();
    // The worker now holds job 1 and waits, because one more call has arrived.
    let (j2, rx2) = job(2, None);
    f.sched.submit(j2).unwrap();
    drop(arriving);
    wait(rx1).unwrap();
    wait(rx2).unwrap();
    assert_eq!(f.batches(), vec![vec![1, 2]]);
}

#[test]
fn a_full_queue_refuses_instead_of_growing() {
    let f = fixture(2, Duration::ZERO);
    let first = f.occupy_worker();
    let (a, rxa) = job(1, None);
    let (b, rxb) = job(2, None);
    f.sched.submit(a).unwrap();
    f.sched.submit(b).unwrap();
    let (c, _rxc) = job(3, None);
    let err = f.sched.submit(c).unwrap_err();
    assert!(
        matches!(err, ServeError::QueueFull { capacity: 2 }),
        "{err}"
    );
    // try_submit hands the refused job back, so the caller can forward it.
    let (d, _rxd) = job(4, None);
    let (err, back) = f.sched.try_submit(d).unwrap_err();
    assert!(matches!(err, ServeError::QueueFull { .. }), "{err}");
    assert_eq!(back.map(|j| j.top_k), Some(4));
    f.release.send(()).unwrap();
    wait(first).unwrap();
    wait(rxa).unwrap();
    wait(rxb).unwrap();
}

#[test]
fn a_request_that_waited_past_the_queue_limit_is_refused_for_another_replica() {
    let f = fixture_waiting(16, Duration::ZERO, Some(Duration::from_millis(20)));
    let first = f.occupy_worker();
    let (late, rx_late) = job(5, None);
    f.sched.submit(late).unwrap();
    // The worker is held well past the limit while the job waits behind it.
    std::thread::sleep(Duration::from_millis(60));
    f.release.send(()).unwrap();
    wait(first).unwrap();
    let err = wait(rx_late).unwrap_err();
    assert!(
        matches!(err, ServeError::QueueWait { limit_ms: 20, waited_ms } if waited_ms >= 60),
        "{err}"
    );
    assert_eq!(f.batches(), vec![vec![GATE]], "the late job never ran");
    // A job that did not wait long runs as usual.
    let (quick, rx_quick) = job(6, None);
    f.sched.submit(quick).unwrap();
    assert!(wait(rx_quick).is_ok());
}

#[test]
fn the_engine_stays_healthy_through_failing_batches() {
    let f = fixture(16, Duration::ZERO);
    assert!(f.sched.healthy());
    let (bad, rx_bad) = job(POISON, None);
    f.sched.submit(bad).unwrap();
    assert!(wait(rx_bad).is_err());
    assert!(f.sched.healthy(), "a failed batch must not stop a worker");
}

#[test]
fn an_expired_request_is_answered_without_running_the_model() {
    let f = fixture(16, Duration::ZERO);
    let first = f.occupy_worker();
    let (j, rx) = job(5, Some(Instant::now()));
    f.sched.submit(j).unwrap();
    f.release.send(()).unwrap();
    wait(first).unwrap();
    let err = wait(rx).unwrap_err();
    assert!(matches!(err, ServeError::DeadlineExpired { .. }), "{err}");
    assert_eq!(f.batches(), vec![vec![GATE]]);
}

#[test]
fn a_failing_request_does_not_fail_its_batch_mates() {
    let f = fixture(16, Duration::ZERO);
    let first = f.occupy_worker();
    let (good, rx_good) = job(1, None);
    let (bad, rx_bad) = job(POISON, None);
    f.sched.submit(good).unwrap();
    f.sched.submit(bad).unwrap();
    f.release.send(()).unwrap();
    wait(first).unwrap();
    assert!(wait(rx_good).is_ok());
    let err = wait(rx_bad).unwrap_err();
    assert!(matches!(err, ServeError::Inference(_)), "{err}");
    assert_eq!(
        f.batches(),
        vec![vec![GATE], vec![1, POISON], vec![1], vec![POISON]]
    );
}

#[test]
fn shutdown_finishes_queued_work() {
    let f = fixture(16, Duration::ZERO);
    let (j, rx) = job(4, None);
    f.sched.submit(j).unwrap();
    f.sched.shutdown();
    assert!(wait(rx).is_ok());
}

#[test]
fn batches_stop_at_the_item_budget_and_the_overflow_leads_the_next() {
    // Budget 1000 rows: 3 x 300 fit; a 400-row request would make 4 x 400.
    let f = fixture(16, Duration::ZERO);
    let first = f.occupy_worker();
    let rxs: Vec<_> = [(1, 300), (2, 300), (3, 300), (4, 400), (5, 100)]
        .into_iter()
        .map(|(k, n)| {
            let (j, rx) = sized_job(k, n, None);
            f.sched.submit(j).unwrap();
            rx
        })
        .collect();
    f.release.send(()).unwrap();
    wait(first).unwrap();
    for rx in rxs {
        wait(rx).unwrap();
    }
    assert_eq!(f.batches(), vec![vec![GATE], vec![1, 2, 3], vec![4, 5]]);
}

#[test]
fn a_request_larger_than_the_budget_still_runs_alone() {
    let f = fixture(16, Duration::ZERO);
    let (j, rx) = sized_job(9, 5000, None);
    f.sched.submit(j).unwrap();
    wait(rx).unwrap();
    assert_eq!(f.batches(), vec![vec![9]]);
}

#[test]
fn without_an_active_model_requests_are_refused_not_dropped() {
    let sched = Scheduler::start(
        Arc::new(ModelSlot::new()),
        SchedulerConfig {
            max_batch_size: 8,
            max_batch_items: 1000,
            max_queue_delay: Duration::ZERO,
            queue_capacity: 4,
            max_queue_wait: None,
            workers: 1,
            idle_spin: Duration::ZERO,
        },
        Arc::new(Metrics::new()),
    );
    let (j, rx) = job(1, None);
    sched.submit(j).unwrap();
    assert!(matches!(wait(rx), Err(ServeError::NoModel)));
}

#[test]
fn a_polling_worker_takes_each_job_as_it_comes() {
    // An hour of polling: the worker never falls back to blocking during this test.
    let f = fixture_with(16, Duration::ZERO, None, Duration::from_secs(3600));
    for k in 1..=3 {
        let (j, rx) = job(k, None);
        f.sched.submit(j).unwrap();
        assert_eq!(wait(rx).unwrap().scores, vec![k as f32]);
    }
    assert_eq!(f.batches(), vec![vec![1], vec![2], vec![3]]);
}

#[test]
fn a_polling_worker_stops_when_the_queue_closes() {
    let f = fixture_with(16, Duration::ZERO, None, Duration::from_secs(3600));
    let (j, rx) = job(1, None);
    f.sched.submit(j).unwrap();
    wait(rx).unwrap();
    // The worker is polling now; shutdown joins it, so it must notice the closed queue
    // rather than poll out its hour.
    let (done_tx, done) = std::sync::mpsc::channel();
    let sched = f.sched;
    std::thread::spawn(move || {
        sched.shutdown();
        let _ = done_tx.send(());
    });
    done.recv_timeout(Duration::from_secs(30))
        .expect("shutdown joined the polling worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_call_polls_for_its_answer_until_another_arrives() {
    let f = fixture_with(16, Duration::ZERO, None, Duration::from_secs(3600));
    let sched = &f.sched;

    // Alone: the answer is polled for, so `alone` is asked on every poll.
    let asked = AtomicUsize::new(0);
    let (j, rx) = job(1, None);
    sched.submit(j).unwrap();
    let answer = sched
        .reply(rx, || {
            asked.fetch_add(1, Ordering::Relaxed);
            true
        })
        .await
        .unwrap();
    assert_eq!(answer.unwrap().ranked.scores, vec![1.0]);
    assert!(asked.load(Ordering::Relaxed) >= 1);

    // Not alone: asked once, then the task parks until the worker answers.
    let asked = AtomicUsize::new(0);
    let (j, rx) = job(GATE, None);
    sched.submit(j).unwrap();
    let waiter = sched.reply(rx, || {
        asked.fetch_add(1, Ordering::Relaxed);
        false
    });
    // Blocks this task's thread until the worker holds the job; the waiter has been polled
    // (and has parked) by then, since `join!` polls it first.
    let releaser = async {
        f.entered.recv().unwrap();
        f.release.send(()).unwrap();
    };
    let (answer, ()) = tokio::join!(waiter, releaser);
    assert_eq!(answer.unwrap().unwrap().ranked.scores, vec![GATE as f32]);
    assert_eq!(asked.load(Ordering::Relaxed), 1);
}
