//! Login throttling: attempts are counted per key (a username, a username from one client
//! address, a client address) within a sliding window. An attempt is counted as it starts,
//! under the same lock as the check, so parallel guesses cannot all slip past the limit; it
//! is settled when its result is known (a success clears the user's counts, an attempt that
//! never reached the password check is taken back).
//!
//! The table is bounded: at most `capacity` keys, the least recently used evicted first, and
//! keys are 64-bit keyed hashes (never the username itself), so a flood of made-up names
//! costs a fixed amount of memory and O(1) per login.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

/// Keys tracked at most by default (each holds at most `limit` instants).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// What a limit counts attempts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject<'a> {
    /// All attempts for a username, from anywhere (the loose limit).
    User(&'a str),
    /// Attempts for a username from one client address (the tight limit).
    UserFrom(&'a str, Network),
    /// All attempts from one client address, whatever the username.
    Address(Network),
}

/// A client's network: an IPv4 address, or the /64 of an IPv6 address (one subscriber
/// usually holds a whole /64 and can rotate through it at will).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    V4([u8; 4]),
    V6Slash64([u8; 8]),
}

impl From<IpAddr> for Network {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Network::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Network::V4(v4.octets()),
                None => {
                    let mut prefix = [0; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Network::V6Slash64(prefix)
                }
            },
        }
    }
}

/// A subject and how many attempts it may make within the window.
pub type Limit<'a> = (Subject<'a>, u32);

#[derive(Debug)]
pub struct Throttle {
    window: Duration,
    hasher: RandomState,
    attempts: Mutex<LruCache<u64, VecDeque<Instant>>>,
}

/// An attempt that was counted; settle it with [`Throttle::succeeded`] or
/// [`Throttle::withdraw`], or leave it counted (a failure).
#[derive(Debug)]
#[must_use]
pub struct Attempt {
    keys: Vec<u64>,
    at: Instant,
}

impl Throttle {
    pub fn new(window: Duration) -> Self {
        Self::with_capacity(window, DEFAULT_CAPACITY)
    }

    pub fn with_capacity(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            hasher: RandomState::new(),
            attempts: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    fn key(&self, subject: &Subject<'_>) -> u64 {
        self.hasher.hash_one(subject)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<u64, VecDeque<Instant>>> {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an attempt against every limit, or, if any limit is reached, counts nothing
    /// and says how long to wait.
    pub fn begin(&self, limits: &[Limit<'_>]) -> Result<Attempt, Duration> {
        let now = Instant::now();
        let keys: Vec<u64> = limits.iter().map(|(s, _)| self.key(s)).collect();
        let mut table = self.lock();
        let mut wait = None;
        for (key, (_, max)) in keys.iter().zip(limits) {
            let Some(entries) = table.get_mut(key) else {
                continue;
            };
            while entries
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                entries.pop_front();
            }
            if entries.len() >= *max as usize
                && let Some(oldest) = entries.front()
            {
                let left = self.window.saturating_sub(now.duration_since(*oldest));
                wait = wait.max(Some(left));
            }
        }
        if let Some(wait) = wait {
            return Err(wait);
        }
        for (key, (_, max)) in keys.iter().zip(limits) {
            let entries = table.get_or_insert_mut(*key, VecDeque::new);
            entries.push_back(now);
            while entries.len() > (*max as usize).max(1) {
                entries.pop_front();
            }
        }
        Ok(Attempt { keys, at: now })
    }

    /// The attempt never reached the password check (the server was busy): take it back.
    pub fn withdraw(&self, attempt: Attempt) {
        let mut table = self.lock();
        for key in &attempt.keys {
            if let Some(entries) = table.peek_mut(key)
                && let Some(i) = entries.iter().rposition(|t| *t == attempt.at)
            {
                entries.remove(i);
            }
        }
    }

    /// The attempt succeeded: the user's counts (`clear`) start over, and the attempt is
    /// taken back from the others.
    pub fn succeeded(&self, attempt: Attempt, clear: &[Subject<'_>]) {
        let cleared: Vec<u64> = clear.iter().map(|s| self.key(s)).collect();
        {
            let mut table = self.lock();
            for key in &cleared {
                table.pop(key);
            }
        }
        self.withdraw(attempt);
    }

    /// Keys tracked now (for tests and the bound).
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Network {
        Network::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn counts_attempts_as_they_start_and_unlocks_after_the_window() {
        let t = Throttle::new(Duration::from_millis(300));
        let limits = [
            (Subject::User("a"), 3),
            (Subject::Address(v4("10.0.0.1")), 10),
        ];
        let _a = t.begin(&limits).unwrap();
        let _b = t.begin(&limits).unwrap();
        let _c = t.begin(&limits).unwrap();
        // Three attempts in flight, none settled: the fourth is refused all the same.
        let wait = t.begin(&limits).unwrap_err();
        assert!(wait <= Duration::from_millis(300));
        assert!(
            t.begin(&[(Subject::User("b"), 3)]).is_ok(),
            "other users unaffected"
        );
        std::thread::sleep(Duration::from_millis(350));
        assert!(t.begin(&limits).is_ok());
    }

    #[test]
    fn success_clears_the_user_and_withdraw_takes_an_attempt_back() {
        let t = Throttle::new(Duration::from_secs(60));
        let user = [(Subject::User("a"), 2)];
        let first = t.begin(&user).unwrap();
        t.withdraw(first);
        let _failed = t.begin(&user).unwrap();
        let ok = t.begin(&user).unwrap();
        assert!(t.begin(&user).is_err());
        t.succeeded(ok, &[Subject::User("a")]);
        assert!(t.begin(&user).is_ok());
    }

    #[test]
    fn ipv6_addresses_count_by_slash_64() {
        let a = Network::from("2001:db8:1:2::1".parse::<IpAddr>().unwrap());
        let b = Network::from("2001:db8:1:2:ffff:1:2:3".parse::<IpAddr>().unwrap());
        let other = Network::from("2001:db8:1:3::1".parse::<IpAddr>().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(
            Network::from("::ffff:10.0.0.1".parse::<IpAddr>().unwrap()),
            v4("10.0.0.1")
        );
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_names() {
        let t = Throttle::with_capacity(Duration::from_secs(60), 1000);
        let name = "x".repeat(4096);
        for i in 0..20_000 {
            let user = format!("{name}{i}");
            let _ = t.begin(&[(Subject::User(&user), 5)]);
        }
        assert_eq!(t.tracked(), 1000);
    }
}
