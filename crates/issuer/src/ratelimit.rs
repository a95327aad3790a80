//! Requests per client address on the public endpoints (status lists, keys, discovery,
//! logout): a token bucket per address (IPv4 address, IPv6 /64, as in [`crate::throttle`])
//! that holds `burst` requests and refills at `rate` a second. An address with an empty
//! bucket is told how long until it holds one request again.
//!
//! The table is bounded: at most `capacity` addresses, the least recently seen dropped first
//! (it comes back with a full bucket, which a flood of addresses gets anyway).

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::throttle::Network;

/// Addresses tracked at most by default (each ~60 bytes with the table's overhead).
pub const DEFAULT_CAPACITY: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    /// `None`: requests whose address is unknown (a router served without connection
    /// information) share one bucket rather than going unlimited.
    buckets: Mutex<LruCache<Option<Network>, Bucket>>,
}

impl RateLimit {
    /// `rate` requests a second, up to `burst` at once (both at least 1).
    pub fn new(rate: u32, burst: u32) -> Self {
        Self::with_capacity(rate, burst, DEFAULT_CAPACITY)
    }

    pub fn with_capacity(rate: u32, burst: u32, capacity: usize) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Takes one request from `network`'s bucket, or says how long until there is one.
    pub fn check(&self, network: Option<Network>) -> Result<(), Duration> {
        self.check_at(network, Instant::now())
    }

    /// Whether `network`'s bucket holds a request now, without taking it: for requests
    /// that spend the bucket only when they fail (introspection's client authentication).
    pub fn peek(&self, network: Option<Network>) -> Result<(), Duration> {
        self.take_at(network, Instant::now(), false)
    }

    fn check_at(&self, network: Option<Network>, now: Instant) -> Result<(), Duration> {
        self.take_at(network, now, true)
    }

    fn take_at(&self, network: Option<Network>, now: Instant, take: bool) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let burst = self.burst;
        let bucket = buckets.get_or_insert_mut(network, || Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            if take {
                bucket.tokens -= 1.0;
            }
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    /// Addresses tracked now (for tests and the bound).
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn net(s: &str) -> Option<Network> {
        Some(Network::from(s.parse::<IpAddr>().unwrap()))
    }

    #[test]
    fn a_burst_then_the_rate_per_address() {
        let limit = RateLimit::new(2, 3);
        let t0 = Instant::now();
        let a = net("192.0.2.1");
        for _ in 0..3 {
            assert!(limit.check_at(a, t0).is_ok());
        }
        let wait = limit.check_at(a, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another address has its own bucket, and so does an unknown one.
        assert!(limit.check_at(net("192.0.2.2"), t0).is_ok());
        assert!(limit.check_at(None, t0).is_ok());
        // Half a second later one request more, not two.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limit.check_at(a, t1).is_ok());
        assert!(limit.check_at(a, t1).is_err());
        // Refilled, but never beyond the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limit.check_at(a, t2).is_ok());
        }
        assert!(limit.check_at(a, t2).is_err());
    }

    #[test]
    fn a_peek_takes_nothing() {
        let limit = RateLimit::new(1, 1);
        let a = net("192.0.2.1");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limit.take_at(a, t0, false).is_ok());
        }
        assert!(limit.check_at(a, t0).is_ok());
        assert!(limit.take_at(a, t0, false).is_err());
    }

    #[test]
    fn an_ipv6_slash_64_shares_a_bucket() {
        let limit = RateLimit::new(1, 1);
        let t0 = Instant::now();
        assert!(limit.check_at(net("2001:db8:0:1::1"), t0).is_ok());
        assert!(limit.check_at(net("2001:db8:0:1::2"), t0).is_err());
        assert!(limit.check_at(net("2001:db8:0:2::1"), t0).is_ok());
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_addresses() {
        let limit = RateLimit::with_capacity(1, 1, 1000);
        for i in 0..20_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            let _ = limit.check(Some(Network::from(ip)));
        }
        assert_eq!(limit.tracked(), 1000);
    }
}
