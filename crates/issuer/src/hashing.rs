//! A bound on password verifications in flight. Each argon2id check holds ~19 MiB for its
//! duration on the blocking pool (up to 512 threads): unbounded, one burst of logins takes
//! gigabytes. At most `concurrency` run at once, `queue` more may wait, and anything beyond
//! is answered 503 at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct HashGate {
    running: Arc<Semaphore>,
    /// Verifications running or waiting.
    admitted: AtomicUsize,
    max_admitted: usize,
    /// Logins refused since the last warning, and when that was, so a flood logs a line
    /// every few seconds rather than one per refused login.
    refused: AtomicUsize,
    last_warning: std::sync::Mutex<Option<std::time::Instant>>,
}

/// At most one "saturated" warning per this interval.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// A place among the running or waiting verifications, given back when dropped.
#[derive(Debug)]
pub struct Admission {
    gate: Arc<HashGate>,
}

impl HashGate {
    pub fn new(concurrency: usize, queue: usize) -> Arc<Self> {
        let concurrency = concurrency.max(1);
        Arc::new(Self {
            running: Arc::new(Semaphore::new(concurrency)),
            admitted: AtomicUsize::new(0),
            max_admitted: concurrency + queue,
            refused: AtomicUsize::new(0),
            last_warning: std::sync::Mutex::new(None),
        })
    }

    /// Counts a refused login; returns how many were refused since the last warning when
    /// it is time for another one.
    pub fn refused(&self) -> Option<usize> {
        self.refused.fetch_add(1, Ordering::AcqRel);
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return None;
        }
        *last = Some(std::time::Instant::now());
        Some(self.refused.swap(0, Ordering::AcqRel))
    }

    /// A place if fewer than `concurrency + queue` verifications are running or waiting.
    pub fn try_enter(self: &Arc<Self>) -> Option<Admission> {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.max_admitted {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admission {
            gate: Arc::clone(self),
        })
    }
}

impl Admission {
    /// Waits for a running slot; keep the permit (and the admission) while hashing.
    pub async fn run(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.gate.running).acquire_owned().await.ok()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.gate.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admits_concurrency_plus_queue_and_gives_places_back() {
        let gate = HashGate::new(2, 1);
        let a = gate.try_enter().unwrap();
        let b = gate.try_enter().unwrap();
        let c = gate.try_enter().unwrap();
        assert!(gate.try_enter().is_none());
        let _pa = a.run().await.unwrap();
        let _pb = b.run().await.unwrap();
        // The third waits for a running slot.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), c.run())
                .await
                .is_err()
        );
        drop(a);
        assert!(gate.try_enter().is_some());
    }
}
