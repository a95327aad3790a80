//! Failed-login throttling: after too many failures for a username or a client address
//! within a window, logins for it answer 429 until the oldest failure leaves the window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Above this many tracked keys, keys with no failure inside the window are dropped.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub struct Throttle {
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// A key to throttle on and its limit.
pub type Limit<'a> = (&'a str, u32);

impl Throttle {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long to wait before trying again, if any key is over its limit.
    pub fn retry_after(&self, limits: &[Limit<'_>]) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.lock();
        limits
            .iter()
            .filter_map(|(key, max)| {
                let entries = map.get_mut(*key)?;
                while entries
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    entries.pop_front();
                }
                if *max > 0 && entries.len() >= *max as usize {
                    entries
                        .front()
                        .map(|oldest| self.window.saturating_sub(now.duration_since(*oldest)))
                } else {
                    None
                }
            })
            .max()
    }

    pub fn record_failure(&self, limits: &[Limit<'_>]) {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED {
            let window = self.window;
            map.retain(|_, v| v.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        for (key, max) in limits {
            let entries = map.entry((*key).to_owned()).or_default();
            entries.push_back(now);
            while entries.len() > (*max as usize).max(1) {
                entries.pop_front();
            }
        }
    }

    /// A successful login clears its username's failures (not its address's).
    pub fn clear(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_limit_and_unlocks_after_the_window() {
        let t = Throttle::new(Duration::from_millis(300));
        let limits = [("u:a", 3), ("a:1", 10)];
        for _ in 0..3 {
            assert_eq!(t.retry_after(&limits), None);
            t.record_failure(&limits);
        }
        let wait = t.retry_after(&limits).expect("locked");
        assert!(wait <= Duration::from_millis(300));
        assert_eq!(t.retry_after(&[("u:b", 3)]), None, "other users unaffected");
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(t.retry_after(&limits), None);
        t.record_failure(&limits);
        t.clear("u:a");
        assert_eq!(t.retry_after(&[("u:a", 1)]), None);
    }
}
