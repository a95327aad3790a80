//! `limits` and `token_cache`: the bounds that keep a flood from piling up, and the
//! verified-token cache.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// Bounds that keep a flood (of checks, or of tokens naming unknown keys) from piling up.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// A check whose token verification (which may wait on a key fetch) takes longer is
    /// answered 503; the fetch itself goes on in the background.
    #[serde(default = "default_check_timeout", with = "humantime_serde")]
    pub check_timeout: Duration,
    /// Checks in flight at once; more are answered 503 at once.
    #[serde(default = "default_max_concurrent_checks")]
    pub max_concurrent_checks: usize,
    /// Checks waiting on one provider's key fetch; more are answered 503 at once instead of
    /// queueing behind a slow JWKS.
    #[serde(default = "default_max_key_fetch_waiters")]
    pub max_key_fetch_waiters: usize,
    /// Threads that check signatures of tokens not in the cache (unset: one per CPU the
    /// process may run on). Cache hits never wait for them. 0: signatures are checked on
    /// the async threads (no hand-off, no flood isolation).
    #[serde(default)]
    pub verify_threads: Option<usize>,
    /// Tokens waiting for a verification thread; more are answered 503 at once
    /// (`verify_busy`), so a flood of junk tokens is shed instead of queued.
    #[serde(default = "default_max_queued_verifications")]
    pub max_queued_verifications: usize,
    /// The verification threads' nice value (0–19, default 19): under a flood that fills
    /// every CPU, checks answered from the cache are scheduled ahead of signature checks.
    #[serde(default = "default_verify_nice")]
    pub verify_nice: i32,
    /// Refused signature checks in one second from which signature checks move to the
    /// verification threads, for ten seconds after the last second that reached it: while
    /// nobody sends forged tokens, a token not in the cache is checked where it arrived
    /// (no hand-off). 0: always on the verification threads.
    #[serde(default = "default_isolate_after_refusals")]
    pub isolate_after_refusals: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            check_timeout: default_check_timeout(),
            max_concurrent_checks: default_max_concurrent_checks(),
            max_key_fetch_waiters: default_max_key_fetch_waiters(),
            verify_threads: None,
            max_queued_verifications: default_max_queued_verifications(),
            verify_nice: default_verify_nice(),
            isolate_after_refusals: default_isolate_after_refusals(),
        }
    }
}

/// At most this many verification threads and queued verifications.
pub const MAX_VERIFY_THREADS: usize = 256;
pub const MAX_QUEUED_VERIFICATIONS: usize = 1 << 20;
/// Beyond a million refused signatures a second nothing is left to protect.
pub const MAX_ISOLATE_AFTER_REFUSALS: u32 = 1_000_000;

impl LimitsConfig {
    /// The verification threads to run: `verify_threads`, or one per CPU available.
    pub fn verify_threads(&self) -> usize {
        self.verify_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCacheConfig {
    /// 0 turns the cache off.
    #[serde(default = "default_cache_entries")]
    pub max_entries: u64,
    #[serde(default = "default_cache_bytes")]
    pub max_bytes: u64,
    /// An entry lives at most this long, and never past the token's `exp`.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: default_cache_entries(),
            max_bytes: default_cache_bytes(),
            ttl: default_cache_ttl(),
        }
    }
}

impl TokenCacheConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_entries > 0 && self.max_bytes == 0 {
            return Err(invalid(
                "token_cache.max_bytes",
                "must be greater than 0 when the cache is on",
            ));
        }
        if self.max_entries > 0 && self.ttl.is_zero() {
            return Err(invalid(
                "token_cache.ttl",
                "must be greater than 0 when the cache is on",
            ));
        }
        Ok(())
    }
}

fn default_check_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_max_queued_verifications() -> usize {
    1024
}

fn default_verify_nice() -> i32 {
    19
}

fn default_isolate_after_refusals() -> u32 {
    32
}

fn default_max_concurrent_checks() -> usize {
    4096
}

fn default_max_key_fetch_waiters() -> usize {
    64
}

fn default_cache_entries() -> u64 {
    100_000
}

fn default_cache_bytes() -> u64 {
    16 * 1024 * 1024
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(5 * 60)
}
