//! Signature checks on threads of their own, so that a flood of tokens that each cost a
//! verification (bad signatures, fresh junk) cannot make cache hits wait: hits are answered
//! on the async runtime's threads; a miss hands its signature check to this pool and waits.
//!
//! - Bounded: at most `limits.max_queued_verifications` wait; beyond that a check is
//!   answered 503 (`verify_busy`) at once and counted (`jwt_authz_verifications_shed_total`),
//!   instead of queueing work that would be answered after its caller gave up.
//! - Scheduled apart: the threads run at nice `limits.verify_nice` (10 by default), so when
//!   every CPU is busy the kernel runs the async threads (cache hits, parsing, cheap
//!   rejections) first and signature checks with what is left. Nothing else changes: an
//!   idle machine gives the pool all its CPUs.
//! - A check that gave up (timed out, or its caller went away) while its work waited is
//!   skipped when its turn comes.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::metrics::Metrics;

type Job = Box<dyn FnOnce() + Send>;

/// The pool's settings; a reload that keeps them keeps the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub threads: usize,
    pub queue: usize,
    pub nice: i32,
}

/// Handle to the verification threads; clones share them. The threads end once every
/// handle is dropped and the queue is drained.
#[derive(Clone)]
pub struct VerifyPool {
    jobs: Sender<Job>,
    settings: PoolSettings,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for VerifyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyPool")
            .field("settings", &self.settings)
            .field("queued", &self.jobs.len())
            .finish()
    }
}

/// The pool's queue was full: the work was not done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Counts a job in the queue gauge until it has run or been dropped unrun.
struct Queued(Arc<Metrics>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.record_verification_queued(-1);
    }
}

impl VerifyPool {
    /// Starts `settings.threads` threads.
    pub fn start(settings: PoolSettings, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(settings.queue);
        for index in 0..settings.threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("jwt-authz-verify-{index}"))
                .spawn(move || work(queue, settings.nice))?;
        }
        Ok(Self {
            jobs,
            settings,
            metrics,
        })
    }

    pub fn settings(&self) -> PoolSettings {
        self.settings
    }

    /// Runs `work` on a verification thread and returns its result; `Busy` at once when
    /// `settings.queue` jobs already wait.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.metrics.record_verification_queued(1);
        let queued = Queued(Arc::clone(&self.metrics));
        let job: Job = Box::new(move || {
            let _queued = queued;
            // Nobody waits for it any more: the check timed out or was dropped.
            if !answer.is_closed() {
                let _ = answer.send(work());
            }
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.record_verification_shed();
                return Err(Busy);
            }
        }
        answered.await.map_err(|_| Busy)
    }
}

/// One verification thread: lowers its own priority, then runs jobs until the pool is gone.
fn work(queue: Receiver<Job>, nice: i32) {
    if nice != 0 {
        let me = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(me), nice) {
            tracing::warn!(%error, nice, "cannot lower the verification thread's priority; signature checks compete with cache hits for CPU");
        }
    }
    while let Ok(job) = queue.recv() {
        // A panic in one check must not take the thread (and every later check) with it:
        // the caller sees its answer dropped and fails closed.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            tracing::error!("a signature check panicked; its request is answered 503");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    fn settings(threads: usize, queue: usize) -> PoolSettings {
        PoolSettings {
            threads,
            queue,
            nice: 10,
        }
    }

    /// Occupies the pool's one thread until the returned barrier is passed.
    async fn hold(pool: &VerifyPool) -> (Arc<Barrier>, tokio::task::JoinHandle<Result<(), Busy>>) {
        let gate = Arc::new(Barrier::new(2));
        let (started, running) = tokio::sync::oneshot::channel();
        let held = {
            let pool = pool.clone();
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                pool.run(move || {
                    let _ = started.send(());
                    gate.wait();
                })
                .await
            })
        };
        running.await.unwrap();
        (gate, held)
    }

    fn metric(metrics: &Metrics, name: &str) -> String {
        let text = metrics.encode([]);
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test]
    async fn work_runs_on_a_lowered_thread_of_its_own() {
        let pool = VerifyPool::start(settings(1, 4), Arc::new(Metrics::new())).unwrap();
        let (name, nice) = pool
            .run(|| {
                let name = std::thread::current().name().map(str::to_owned);
                (name, rustix::process::getpriority_process(None).ok())
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("jwt-authz-verify-0"));
        // getpriority(PRIO_PROCESS, 0) names the calling thread on Linux.
        assert_eq!(nice, Some(10));
    }

    #[tokio::test]
    async fn a_full_queue_sheds_at_once_and_counts_it() {
        let metrics = Arc::new(Metrics::new());
        let pool = VerifyPool::start(settings(1, 2), Arc::clone(&metrics)).unwrap();
        // Hold the one thread, then fill the queue of two.
        let (gate, held) = hold(&pool).await;
        let waiting: Vec<_> = (0..2)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.run(move || i).await })
            })
            .collect();
        while pool.jobs.len() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.run(|| 7).await, Err(Busy));
        assert_eq!(
            metric(&metrics, "jwt_authz_verifications_shed_total"),
            "jwt_authz_verifications_shed_total 1"
        );
        assert_eq!(
            metric(&metrics, "jwt_authz_verifications_queued"),
            "jwt_authz_verifications_queued 3"
        );
        tokio::task::spawn_blocking(move || gate.wait())
            .await
            .unwrap();
        held.await.unwrap().unwrap();
        for (i, task) in waiting.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), Ok(i));
        }
        assert_eq!(
            metric(&metrics, "jwt_authz_verifications_queued"),
            "jwt_authz_verifications_queued 0"
        );
    }

    #[tokio::test]
    async fn work_whose_caller_gave_up_is_skipped() {
        let pool = VerifyPool::start(settings(1, 8), Arc::new(Metrics::new())).unwrap();
        let (gate, held) = hold(&pool).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            pool.run(move || flag.store(true, std::sync::atomic::Ordering::SeqCst)),
        )
        .await;
        assert!(gave_up.is_err(), "waits while the thread is held");
        tokio::task::spawn_blocking(move || gate.wait())
            .await
            .unwrap();
        held.await.unwrap().unwrap();
        // The queue is drained in order: once this runs, the abandoned job has had its turn.
        assert_eq!(pool.run(|| 1).await, Ok(1));
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_panicking_check_fails_closed_and_the_thread_lives_on() {
        let pool = VerifyPool::start(settings(1, 4), Arc::new(Metrics::new())).unwrap();
        let panicked: Result<(), Busy> = pool.run(|| panic!("boom")).await;
        assert_eq!(panicked, Err(Busy));
        assert_eq!(pool.run(|| 2).await, Ok(2));
    }
}
