//! `in_proxy`: the in-proxy mode, where the Wasm filter inside Envoy decides requests whose
//! token it holds verified claims for and calls the sidecar for the rest. One section read
//! by both: the sidecar serves the callout endpoints under `prefix` on `listen.http`; the
//! filter calls them through Envoy's `cluster`.

use std::time::Duration;

use serde::Deserialize;

use super::{Invalid, invalid};

/// The longest callout timeout, poll interval or confirmation bound accepted.
const MAX_DURATION: Duration = Duration::from_secs(300);
/// The most tokens one Envoy worker's filter may hold.
const MAX_CACHED_TOKENS: usize = 1_000_000;
/// The most bytes of tokens and claims one worker's filter may hold: each worker has its
/// own Wasm VM, whose linear memory (wasm32) cannot pass 4 GiB, and Envoy runs one per
/// worker, so a quarter of that is the ceiling.
const MAX_CACHED_BYTES: usize = 1 << 30;
/// The least: room for a few of the largest tokens (`max_token_bytes` is at most 64 KiB).
const MIN_CACHED_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InProxyConfig {
    /// Where the sidecar answers the filter: `<prefix>/check/<original path>` and
    /// `<prefix>/generation`, on `listen.http`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The Envoy cluster that reaches the sidecar's `listen.http` port (filter only).
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// How long the filter waits for the sidecar's answer before failing closed.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Verified tokens each Envoy worker's filter holds; 0 sends every token to the sidecar.
    #[serde(default = "default_max_cached_tokens")]
    pub max_cached_tokens: usize,
    /// The bytes those tokens may take in each worker's filter (token, claims as JSON and
    /// bookkeeping, counted per entry): the least recently used go first past it.
    #[serde(default = "default_max_cached_bytes")]
    pub max_cached_bytes: usize,
    /// How often the filter asks the sidecar whether its key sets changed (each change
    /// empties the filter's cache): the bound on a removed key's tokens staying usable
    /// in-proxy, on top of the sidecar's own key refresh.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Cached claims are used only while the sidecar confirmed its key sets within this
    /// long; past it (the sidecar unreachable) every token goes to the sidecar, and fails
    /// closed while it does not answer.
    #[serde(default = "default_max_unconfirmed", with = "humantime_serde")]
    pub max_unconfirmed: Duration,
}

impl Default for InProxyConfig {
    fn default() -> Self {
        Self {
            prefix: default_prefix(),
            cluster: default_cluster(),
            timeout: default_timeout(),
            max_cached_tokens: default_max_cached_tokens(),
            max_cached_bytes: default_max_cached_bytes(),
            poll_interval: default_poll_interval(),
            max_unconfirmed: default_max_unconfirmed(),
        }
    }
}

impl InProxyConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        let p = &self.prefix;
        if !p.starts_with('/')
            || p.len() < 2
            || p.len() > 256
            || p.ends_with('/')
            || p.contains(['?', '#', '%', ';'])
            || p.contains("//")
            || p.split('/').any(|s| s == "." || s == "..")
            || !p.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(invalid(
                "in_proxy.prefix",
                format!(
                    "{p:?} must be a plain absolute path other than \"/\", without a trailing '/', query, escapes or dot-segments (at most 256 bytes)"
                ),
            ));
        }
        if self.cluster.is_empty()
            || self.cluster.len() > 256
            || !self.cluster.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(invalid(
                "in_proxy.cluster",
                "must be an Envoy cluster name (1 to 256 visible ASCII characters)",
            ));
        }
        let within = |field: &str, d: Duration, min: Duration| {
            if d < min || d > MAX_DURATION {
                return Err(invalid(
                    field,
                    format!("must be between {min:?} and {MAX_DURATION:?}"),
                ));
            }
            Ok(())
        };
        within("in_proxy.timeout", self.timeout, Duration::from_millis(10))?;
        within(
            "in_proxy.poll_interval",
            self.poll_interval,
            Duration::from_millis(100),
        )?;
        within(
            "in_proxy.max_unconfirmed",
            self.max_unconfirmed,
            self.poll_interval,
        )?;
        if !(MIN_CACHED_BYTES..=MAX_CACHED_BYTES).contains(&self.max_cached_bytes) {
            return Err(invalid(
                "in_proxy.max_cached_bytes",
                format!("must be between {MIN_CACHED_BYTES} and {MAX_CACHED_BYTES}"),
            ));
        }
        if self.max_cached_tokens > MAX_CACHED_TOKENS {
            return Err(invalid(
                "in_proxy.max_cached_tokens",
                format!("must be at most {MAX_CACHED_TOKENS}"),
            ));
        }
        Ok(())
    }

    /// The path of a callout asking about `target` (the original path and query).
    pub fn check_path(&self, target: &str) -> String {
        format!("{}/check{target}", self.prefix)
    }

    /// The path of the filter's poll.
    pub fn generation_path(&self) -> String {
        format!("{}/generation", self.prefix)
    }
}

fn default_prefix() -> String {
    "/in-proxy".to_owned()
}

fn default_cluster() -> String {
    "jwt_authz_http".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_max_cached_tokens() -> usize {
    10_000
}

fn default_max_cached_bytes() -> usize {
    32 << 20
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_max_unconfirmed() -> Duration {
    Duration::from_secs(10)
}
