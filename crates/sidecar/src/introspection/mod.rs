//! Opaque access tokens, checked at their provider's introspection endpoint (RFC 7662).
//!
//! A token that is not a JWS compact serialization goes to the one provider that introspects
//! tokens from the place it came in (configuration refuses two). Its answer is cached by the
//! token's SHA-256 (never the token): an active one until the token's `exp` and at most
//! `cache.max_ttl`, an inactive (or otherwise final) one for `cache.inactive_ttl`; concurrent
//! checks of one token share one call; the cache outlives a reload that leaves the provider
//! as it was. Calls are rate limited, with a bucket of their own for tokens seen active in
//! the last hour (made-up tokens, which never are, cannot starve them), and bounded in
//! number; the endpoint unreachable, slow, erring or refusing this client is 503 (nothing is
//! known of the token), never 401. The answer's members are the token's claims from there
//! on: audiences, rules, identity headers, DPoP and certificate binding (`cnf`) as for a JWT.
//!
//! - here: the cache, the limits and one call;
//! - [`client`]: the request (endpoint, client authentication, body);
//! - [`answer`]: reading and checking what the endpoint said.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::future::Cache;
use tokio::sync::{OnceCell, Semaphore};

use crate::clock::unix_now;
use crate::config::{IntrospectionConfig, ProviderConfig};
use crate::keys::fetch::{self, FetchError};
use crate::keys::store::KeyStore;
use crate::obs::metrics::Metrics;
use crate::verify::token_cache::TokenHash;
use crate::verify::{VerifiedToken, VerifyError};

pub mod answer;
pub mod client;

use answer::Said;

/// The `thumbprint` of an introspected token: no key verified it (a JWK thumbprint is
/// base64url and never holds `:`).
pub const INTROSPECTED: &str = "introspection:";

/// Whether `token` is a JWS compact serialization (three parts, RFC 7515 §7.1), which is
/// verified locally; anything else is opaque.
pub fn is_jws_shaped(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

/// A cached answer: the verified token, or why the token does not pass.
#[derive(Debug, Clone)]
enum Answer {
    Active(Arc<VerifiedToken>),
    Refused(VerifyError),
}

#[derive(Debug, Clone)]
struct Cached {
    answer: Answer,
    ttl: Duration,
}

impl Cached {
    /// Bytes, roughly, for the cache's bound.
    fn weight(&self) -> u64 {
        match &self.answer {
            Answer::Active(token) => token.approx_size() as u64,
            Answer::Refused(_) => 64,
        }
    }
}

struct ForItsTtl;

impl moka::Expiry<TokenHash, Cached> for ForItsTtl {
    fn expire_after_create(&self, _: &TokenHash, value: &Cached, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// How long a token seen active keeps its place in the reserved bucket.
const KNOWN_FOR: Duration = Duration::from_secs(60 * 60);

/// What one provider's introspection keeps across a reload that leaves the provider's
/// configuration (and its place in it) as it was: its answers, the tokens seen active, the
/// endpoint discovery found.
#[derive(Debug, Clone)]
struct Held {
    cache: Option<Cache<TokenHash, Cached>>,
    known: Cache<TokenHash, ()>,
    /// The configured endpoint, or the one discovery found (found once; a failed discovery
    /// is tried again by the next call).
    endpoint: Arc<OnceCell<String>>,
}

/// One provider's introspection: its endpoint, client, cache and limits.
#[derive(Debug)]
pub struct Introspector {
    provider: usize,
    config: Arc<ProviderConfig>,
    /// `config.introspection`, which an introspector is built only with.
    settings: IntrospectionConfig,
    client: reqwest::Client,
    credentials: client::Credentials,
    held: Held,
    /// Calls for tokens not seen active lately, and the reserve of those that were.
    bucket: std::sync::Mutex<Bucket>,
    known_bucket: std::sync::Mutex<Bucket>,
    in_flight: Arc<Semaphore>,
    /// The provider's keys: they verify RFC 9701 answers.
    keys: Arc<KeyStore>,
    metrics: Arc<Metrics>,
    /// When a failure was last logged as a warning (seconds since the epoch): at most one a
    /// minute, the metrics count each.
    last_warning: AtomicU64,
}

/// A token bucket: `per_second` calls, `burst` at once.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    per_second: f64,
    burst: f64,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Introspector {
    /// The introspector of the provider at `index`, whose configuration has `introspection`
    /// (`None` otherwise), keeping `previous`'s answers when that was the same provider in
    /// the same place; `Err` when its HTTP client cannot be built (the CA file) or its
    /// credentials read.
    pub fn new(
        index: usize,
        keys: Arc<KeyStore>,
        metrics: Arc<Metrics>,
        previous: Option<&Introspector>,
    ) -> Result<Option<Self>, String> {
        let config = Arc::new(keys.provider().clone());
        let Some(settings) = config.introspection.clone() else {
            return Ok(None);
        };
        let client = client::http_client(&settings)?;
        let credentials = client::Credentials::load(&settings)?;
        let held = match previous.filter(|p| p.provider == index && *p.config == *config) {
            Some(previous) => previous.held.clone(),
            None => {
                let cache = &settings.cache;
                let floor = (cache.max_bytes / cache.max_entries.max(1)).max(1);
                Held {
                    cache: (cache.max_entries > 0).then(|| {
                        Cache::builder()
                            .max_capacity(cache.max_bytes)
                            .weigher(move |_: &TokenHash, v: &Cached| {
                                u32::try_from(v.weight().max(floor)).unwrap_or(u32::MAX)
                            })
                            .expire_after(ForItsTtl)
                            .build()
                    }),
                    known: Cache::builder()
                        .max_capacity(cache.max_entries.max(10_000))
                        .time_to_live(KNOWN_FOR)
                        .build(),
                    endpoint: Arc::new(OnceCell::new_with(settings.endpoint.clone())),
                }
            }
        };
        let bucket = || {
            std::sync::Mutex::new(Bucket {
                tokens: f64::from(settings.rate_limit.burst),
                at: Instant::now(),
                per_second: settings.rate_limit.per_second,
                burst: f64::from(settings.rate_limit.burst),
            })
        };
        Ok(Some(Self {
            provider: index,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            bucket: bucket(),
            known_bucket: bucket(),
            settings,
            credentials,
            held,
            client,
            keys,
            metrics,
            config,
            last_warning: AtomicU64::new(0),
        }))
    }

    /// The provider's configuration this introspector was built from.
    pub fn provider_config(&self) -> &ProviderConfig {
        &self.config
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    /// The token's verified claims, from the cache or one call (shared with every concurrent
    /// check of the same token), and whether the cache answered.
    pub async fn check(
        &self,
        hash: &TokenHash,
        token: &str,
    ) -> Result<(Arc<VerifiedToken>, bool), VerifyError> {
        let (cached, hit) = match &self.held.cache {
            Some(cache) => match cache.get(hash).await {
                Some(cached) => (cached, true),
                // A call made here, or joined: concurrent checks share the first's.
                None => {
                    let entry = cache
                        .entry(*hash)
                        .or_try_insert_with(self.call(hash, token))
                        .await
                        .map_err(|error| (*error).clone())?;
                    (entry.into_value(), false)
                }
            },
            None => (self.call(hash, token).await?, false),
        };
        self.metrics.record_introspection_cache(self.name(), hit);
        match cached.answer {
            Answer::Active(token) => Ok((token, hit)),
            Answer::Refused(error) => Err(error),
        }
    }

    /// One call to the endpoint, within the rate limit and `max_in_flight`: the answer to
    /// cache, or why there is none to cache (the endpoint could not be asked, or its answer
    /// could not be read).
    async fn call(&self, hash: &TokenHash, token: &str) -> Result<Cached, VerifyError> {
        let settings = &self.settings;
        // The permit first: a call refused for it spends nothing of the rate.
        let Ok(_permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            return Err(self.failed("busy", VerifyError::IntrospectionBusy, &""));
        };
        let at = Instant::now();
        let take = |bucket: &std::sync::Mutex<Bucket>| {
            bucket
                .lock()
                .map(|mut bucket| bucket.take(at))
                .unwrap_or(false)
        };
        let known = self.held.known.contains_key(hash);
        if !((known && take(&self.known_bucket)) || take(&self.bucket)) {
            return Err(self.failed("rate_limited", VerifyError::IntrospectionBusy, &""));
        }
        let endpoint = match self
            .held
            .endpoint
            .get_or_try_init(|| client::discover(&self.client, &self.config))
            .await
        {
            Ok(endpoint) => endpoint,
            Err(error) => {
                return Err(self.failed(
                    "no_endpoint",
                    VerifyError::IntrospectionUnavailable,
                    &error,
                ));
            }
        };
        let now = unix_now();
        let request = client::build(
            &self.client,
            endpoint,
            settings,
            &self.credentials,
            token,
            now,
        )
        .map_err(|error| {
            self.failed("credentials", VerifyError::IntrospectionUnavailable, &error)
        })?;
        let response = request.send().await.map_err(|error| {
            let outcome = if error.is_timeout() {
                "timeout"
            } else {
                "unreachable"
            };
            self.failed(outcome, VerifyError::IntrospectionUnavailable, &error)
        })?;
        match response.status().as_u16() {
            200 => {}
            // RFC 7662 §2.3, RFC 6749 §5.2: this client's credentials were refused. The
            // token may be fine: 503 and a warning, never 401.
            status @ (400 | 401 | 403) => {
                return Err(self.failed(
                    "auth_refused",
                    VerifyError::IntrospectionUnavailable,
                    &format!("HTTP {status}: the endpoint refused this client's authentication"),
                ));
            }
            status => {
                return Err(self.failed(
                    "error",
                    VerifyError::IntrospectionUnavailable,
                    &format!("HTTP {status}"),
                ));
            }
        }
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        let body = match fetch::read_body(response, settings.max_body_bytes).await {
            Ok(body) => body,
            Err(FetchError::TooLarge(limit)) => {
                return Err(self.failed(
                    "bad_answer",
                    VerifyError::BadIntrospection,
                    &format!("answer larger than {limit} bytes"),
                ));
            }
            Err(error) => {
                let outcome = match &error {
                    FetchError::Request(e) if e.is_timeout() => "timeout",
                    _ => "unreachable",
                };
                return Err(self.failed(outcome, VerifyError::IntrospectionUnavailable, &error));
            }
        };
        let said = self
            .read_answer(media_type.as_deref(), &body, now)
            .await
            .map_err(|error| match error {
                VerifyError::IntrospectionUnavailable => self.failed(
                    "unreachable",
                    error,
                    &"the provider's keys for a signed answer are unavailable",
                ),
                _ => self.failed("bad_answer", error, &"the answer cannot be read"),
            })?;
        let inactive_ttl = settings.cache.inactive_ttl;
        let claims = match said {
            Said::Inactive => {
                self.metrics.record_introspection(self.name(), "inactive");
                return Ok(Cached {
                    answer: Answer::Refused(VerifyError::Inactive),
                    ttl: inactive_ttl,
                });
            }
            Said::Active(claims) => claims,
        };
        self.metrics.record_introspection(self.name(), "active");
        match answer::check_active(&self.config, &claims, now) {
            Ok(exp) => {
                self.held.known.insert(*hash, ()).await;
                let until_exp = exp.map_or(settings.cache.max_ttl, |exp| {
                    Duration::from_secs(exp.saturating_sub(now))
                });
                Ok(Cached {
                    answer: Answer::Active(Arc::new(VerifiedToken {
                        provider: self.provider,
                        thumbprint: INTROSPECTED.to_owned(),
                        claims,
                        exp,
                    })),
                    ttl: until_exp.min(settings.cache.max_ttl),
                })
            }
            // Not valid yet (or issued ahead of this clock): another call may pass.
            Err(refused @ (VerifyError::NotYetValid | VerifyError::IssuedInFuture)) => Err(refused),
            // An answer about this token that will not change (expired, another issuer, not an
            // access token): as an inactive one.
            Err(refused) => Ok(Cached {
                answer: Answer::Refused(refused),
                ttl: inactive_ttl,
            }),
        }
    }

    /// The answer's JSON object, read from the body (RFC 7662 §2.2), or from the verified
    /// JWT that carries it (RFC 9701 §5) when the provider asks for those.
    async fn read_answer(
        &self,
        media_type: Option<&str>,
        body: &[u8],
        now: u64,
    ) -> Result<Said, VerifyError> {
        let settings = &self.settings;
        let object = if settings.jwt_response {
            if media_type != Some(client::JWT_ANSWER) {
                return Err(VerifyError::BadIntrospection);
            }
            let jwt = std::str::from_utf8(body)
                .map_err(|_| VerifyError::BadIntrospection)?
                .trim();
            let claims = crate::verify::verify_signed_introspection(&self.keys, jwt).await?;
            // Issued for this call: at most the call's time (and the clocks' leeway) ago.
            let fresh = settings.timeout.as_secs() + 1 + self.config.leeway.as_secs();
            answer::signed_object(&self.config, &settings.client_id, claims, now, fresh)?
        } else {
            serde_json::from_slice(body).map_err(|_| VerifyError::BadIntrospection)?
        };
        answer::read(object)
    }

    /// Counts a call that gave no answer to cache, logs why (a warning at most once a
    /// minute, never the token), and returns the check's error.
    fn failed(
        &self,
        outcome: &'static str,
        error: VerifyError,
        why: &dyn std::fmt::Display,
    ) -> VerifyError {
        self.metrics.record_introspection(self.name(), outcome);
        let now = unix_now();
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(provider = %self.name(), outcome, %why, "token introspection failed (warned once a minute; jwt_authz_introspections_total counts each)");
        } else {
            tracing::debug!(provider = %self.name(), outcome, %why, "token introspection failed");
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_jws_compact_serialization_is_verified_locally() {
        assert!(is_jws_shaped("a.b.c"));
        for opaque in ["opaque", "ory_at_abc.def", "a.b.c.d.e", ""] {
            assert!(!is_jws_shaped(opaque), "{opaque}");
        }
    }

    #[test]
    fn the_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket {
            tokens: 2.0,
            at: start,
            per_second: 10.0,
            burst: 2.0,
        };
        assert!(bucket.take(start) && bucket.take(start));
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_millis(100)));
        assert!(!bucket.take(start + Duration::from_millis(150)));
        // Idle for long: never more than the burst.
        let later = start + Duration::from_secs(60);
        assert!(bucket.take(later) && bucket.take(later) && !bucket.take(later));
    }
}
