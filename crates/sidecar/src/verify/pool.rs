//! Signature checks on threads of their own, so that a flood of tokens that each cost a
//! verification (bad signatures, fresh junk) cannot make cache hits wait: hits are answered
//! on the async runtime's threads; while the pool isolates (see the last point), a miss
//! hands its signature check to this pool and waits.
//!
//! - Bounded: at most `limits.max_queued_verifications` wait; beyond that a check is
//!   answered 503 (`verify_busy`) at once and counted (`jwt_authz_verifications_shed_total`),
//!   instead of queueing work that would be answered after its caller gave up.
//! - Scheduled apart: the threads run at nice `limits.verify_nice` (19 by default), so when
//!   every CPU is busy the kernel runs the async threads (cache hits, parsing, cheap
//!   rejections) first and signature checks with what is left. Nothing else changes: an
//!   idle machine gives the pool all its CPUs. (Measured: at nice 10 the kernel still gave
//!   the verification thread slices long enough to push cached checks' p99 to 4-5x; at 19,
//!   1.2-1.8x. BENCHMARKS.md, "Flood".)
//! - A check that gave up (timed out, or its caller went away) while its work waited is
//!   skipped when its turn comes.
//! - Only while attacked: the hand-off has a price, a thread switch there and back for
//!   every token not in the cache, which on a CPU shared by both sides costs more than the
//!   parsing around the signature (BENCHMARKS.md, "signature verified every time"). So
//!   while tokens pass their signature checks, a check runs where it arrived, on the async
//!   thread; once `limits.isolate_after_refusals` tokens are refused after their signature
//!   check within one second (forged signatures, or replayed tokens with invalid claims),
//!   every check goes to the threads until ten seconds pass without such a second. A
//!   flood thus gets a few dozen checks on the async threads before it is isolated.
//!   `limits.isolate_after_refusals: 0` isolates always; `limits.verify_threads: 0`
//!   never.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::obs::metrics::Metrics;

type Job = Box<dyn FnOnce() + Send>;

/// The queue the threads share. A mutex and a condition variable rather than a channel:
/// a waiting thread sleeps at once instead of spinning and yielding first, which on a
/// machine where the async threads and the verification threads share one CPU costs the
/// async threads their time.
struct Queue {
    state: Mutex<State>,
    ready: Condvar,
}

struct State {
    jobs: VecDeque<Job>,
    /// Threads asleep on `ready`: a push wakes one only when there is one to wake.
    idle: usize,
    /// Cleared when the last handle is dropped: the threads finish the queue and end.
    open: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A job runs outside the lock, so a poisoned lock holds a consistent queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The last handle closes the queue.
struct Closer(Arc<Queue>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().open = false;
        self.0.ready.notify_all();
    }
}

/// The pool's settings; a reload that keeps them keeps the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub threads: usize,
    pub queue: usize,
    pub nice: i32,
    /// Refusals in one second that isolate checks on the threads; 0: always isolated.
    pub isolate_after: u32,
    /// How long isolation lasts after the last second that reached `isolate_after`.
    pub isolation: Duration,
}

/// Whether checks go to the threads: always (`after` 0), or for a while after a second in
/// which `after` tokens were refused after their signature check.
struct Alarm {
    after: u32,
    hold_ms: u64,
    epoch: Instant,
    /// The current second since `epoch` (high 32 bits) and the refusals in it (low 32).
    window: AtomicU64,
    /// Milliseconds since `epoch` until which checks are isolated.
    until: AtomicU64,
}

impl Alarm {
    fn new(after: u32, hold: Duration) -> Self {
        Self {
            after,
            hold_ms: u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
            window: AtomicU64::new(0),
            until: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn raised(&self) -> bool {
        self.after == 0 || self.now_ms() < self.until.load(Ordering::Relaxed)
    }

    /// Counts a refusal; true when it raised the alarm (it was not raised before).
    fn refused(&self) -> bool {
        if self.after == 0 {
            return false;
        }
        let now = self.now_ms();
        let second = (now / 1000) & 0xffff_ffff;
        let mut count = 0;
        // Second and count in one word: a new second starts its count at one, exactly once.
        let _ = self
            .window
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |window| {
                count = if window >> 32 == second {
                    ((window & 0xffff_ffff) + 1).min(u64::from(u32::MAX))
                } else {
                    1
                };
                Some((second << 32) | count)
            });
        if count < u64::from(self.after) {
            return false;
        }
        let until = now.saturating_add(self.hold_ms);
        self.until.fetch_max(until, Ordering::Relaxed) <= now
    }
}

/// Handle to the verification threads; clones share them. The threads end once every
/// handle is dropped and the queue is drained.
#[derive(Clone)]
pub struct VerifyPool {
    queue: Arc<Closer>,
    alarm: Arc<Alarm>,
    settings: PoolSettings,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for VerifyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyPool")
            .field("settings", &self.settings)
            .field("queued", &self.queued())
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
        let queue = Arc::new(Queue {
            state: Mutex::new(State {
                jobs: VecDeque::with_capacity(settings.queue.min(4096)),
                idle: 0,
                open: true,
            }),
            ready: Condvar::new(),
        });
        let closer = Arc::new(Closer(Arc::clone(&queue)));
        for index in 0..settings.threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("jwt-authz-verify-{index}"))
                .spawn(move || work(&queue, settings.nice))?;
        }
        Ok(Self {
            queue: closer,
            alarm: Arc::new(Alarm::new(settings.isolate_after, settings.isolation)),
            settings,
            metrics,
        })
    }

    /// Jobs waiting for a thread (not those running).
    fn queued(&self) -> usize {
        self.queue.0.lock().jobs.len()
    }

    pub fn settings(&self) -> PoolSettings {
        self.settings
    }

    /// True while checks are isolated on the threads.
    pub fn isolating(&self) -> bool {
        self.settings.threads > 0 && self.alarm.raised()
    }

    /// A token was refused after its signature check (a forged signature, or claims that do
    /// not hold on a genuine one): the work an attacker makes us do. Enough of them in one
    /// second isolate the checks that follow.
    pub fn refused(&self) {
        if self.settings.threads > 0 && self.alarm.refused() {
            self.metrics.record_verification_isolation();
            tracing::warn!(
                refusals_per_second = self.settings.isolate_after,
                "tokens refused after their signature check: signature checks move to the verification threads"
            );
        }
    }

    /// Runs `work` and returns its result. While isolating, on a verification thread,
    /// `Busy` at once when `settings.queue` jobs already wait; otherwise here, on the
    /// caller's thread (no hand-off).
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        if !self.isolating() {
            return Ok(work());
        }
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.metrics.record_verification_queued(1);
        let queued = Queued(Arc::clone(&self.metrics));
        let job: Job = Box::new(move || {
            // Nobody waits for it any more: the check timed out or was dropped.
            if answer.is_closed() {
                return;
            }
            let result = work();
            // Off the gauge before the caller hears the answer, so that a caller who has
            // its answer never sees its own check still counted.
            drop(queued);
            let _ = answer.send(result);
        });
        if self.enqueue(job).is_err() {
            self.metrics.record_verification_shed();
            return Err(Busy);
        }
        answered.await.map_err(|_| Busy)
    }

    /// Queues `job` unless the queue is full (the job is dropped, unrun) or closed.
    fn enqueue(&self, job: Job) -> Result<(), Busy> {
        let queue = &self.queue.0;
        let wake = {
            let mut state = queue.lock();
            if state.jobs.len() >= self.settings.queue || !state.open {
                return Err(Busy);
            }
            state.jobs.push_back(job);
            state.idle > 0
        };
        if wake {
            queue.ready.notify_one();
        }
        Ok(())
    }
}

/// One verification thread: lowers its own priority, then runs jobs until the pool is gone.
fn work(queue: &Queue, nice: i32) {
    if nice != 0 {
        let me = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(me), nice) {
            tracing::warn!(%error, nice, "cannot lower the verification thread's priority; signature checks compete with cache hits for CPU");
        }
    }
    let mut state = queue.lock();
    loop {
        let Some(job) = state.jobs.pop_front() else {
            if !state.open {
                return;
            }
            state.idle += 1;
            state = queue.ready.wait(state).unwrap_or_else(|p| p.into_inner());
            state.idle -= 1;
            continue;
        };
        drop(state);
        // A panic in one check must not take the thread (and every later check) with it:
        // the caller sees its answer dropped and fails closed.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            tracing::error!("a signature check panicked; its request is answered 503");
        }
        state = queue.lock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    /// Always isolated.
    fn settings(threads: usize, queue: usize) -> PoolSettings {
        PoolSettings {
            threads,
            queue,
            nice: 10,
            isolate_after: 0,
            isolation: Duration::from_secs(10),
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
        while pool.queued() < 2 {
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

    fn on_a_thread_of_its_own(pool: &VerifyPool) -> impl Future<Output = Result<bool, Busy>> {
        let caller = std::thread::current().id();
        pool.run(move || std::thread::current().id() != caller)
    }

    #[tokio::test]
    async fn checks_move_to_the_threads_while_tokens_are_refused() {
        let metrics = Arc::new(Metrics::new());
        let isolation = Duration::from_secs(1);
        let pool = VerifyPool::start(
            PoolSettings {
                isolate_after: 3,
                isolation,
                ..settings(1, 4)
            },
            Arc::clone(&metrics),
        )
        .unwrap();
        assert_eq!(on_a_thread_of_its_own(&pool).await, Ok(false));
        pool.refused();
        pool.refused();
        assert_eq!(on_a_thread_of_its_own(&pool).await, Ok(false), "2 of 3");
        // A test that straddles a second boundary restarts the count once; a fourth
        // refusal in the same second as two others raises it either way.
        for _ in 0..4 {
            pool.refused();
        }
        assert!(pool.isolating());
        assert_eq!(on_a_thread_of_its_own(&pool).await, Ok(true));
        assert_eq!(
            metric(&metrics, "jwt_authz_verification_isolations_total"),
            "jwt_authz_verification_isolations_total 1",
            "raised once, however many refusals follow"
        );
        tokio::time::sleep(isolation + Duration::from_millis(50)).await;
        assert!(!pool.isolating());
        assert_eq!(on_a_thread_of_its_own(&pool).await, Ok(false));
    }

    #[tokio::test]
    async fn isolation_is_always_on_at_zero_and_never_without_threads() {
        let always = VerifyPool::start(settings(1, 4), Arc::new(Metrics::new())).unwrap();
        assert_eq!(on_a_thread_of_its_own(&always).await, Ok(true));
        let never = VerifyPool::start(settings(0, 4), Arc::new(Metrics::new())).unwrap();
        for _ in 0..10 {
            never.refused();
        }
        assert!(!never.isolating());
        assert_eq!(on_a_thread_of_its_own(&never).await, Ok(false));
    }

    #[tokio::test]
    async fn a_panicking_check_fails_closed_and_the_thread_lives_on() {
        let pool = VerifyPool::start(settings(1, 4), Arc::new(Metrics::new())).unwrap();
        let panicked: Result<(), Busy> = pool.run(|| panic!("boom")).await;
        assert_eq!(panicked, Err(Busy));
        assert_eq!(pool.run(|| 2).await, Ok(2));
    }
}
