//! Each provider's key store: fetched at start-up, refreshed in the background before its
//! `Cache-Control` lifetime runs out, refetched early (rate-limited, one fetch shared by all
//! waiters) when a token names an unknown `kid`, and kept as it was when a fetch fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use opentelemetry::trace::FutureExt as _;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::{self, JwksSource, ProviderConfig};
use crate::keys::KeySet;
use crate::obs::metrics::Metrics;
use crate::obs::telemetry::Telemetry;

#[cfg(test)]
mod tests;

use super::fetch::{FetchError, max_age, read_body, read_limited, retry_delay};
use super::snapshot::{SnapshotError, SnapshotFile};

/// Gives a waiter's place back however its wait ends (including a cancelled check).
struct WaiterSlot<'a>(&'a AtomicUsize);

impl Drop for WaiterSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bookkeeping of the fetches; its lock is what makes concurrent refetches share one fetch.
#[derive(Debug, Default)]
struct FetchState {
    /// When the last refetch forced by an unknown `kid` (or by having no keys) started.
    /// Scheduled refreshes do not count: a refresh just before the issuer published a new
    /// key must not hold back the first token that names it.
    last_forced: Option<Instant>,
    /// `jwks_uri` learned by OIDC discovery; forgotten after a failure so it is looked up anew.
    discovered: Option<String>,
    /// `jwks_uri` of the key snapshot started from: used while discovery is unreachable.
    remembered: Option<String>,
}

#[derive(Debug)]
pub struct KeyStore {
    provider: Arc<ProviderConfig>,
    /// Where good key sets are kept for the next start (`state_dir`).
    snapshot: Option<SnapshotFile>,
    current: ArcSwap<KeySet>,
    fetch: Mutex<FetchState>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    /// Checks waiting for a refetch right now, and how many may.
    waiters: AtomicUsize,
    max_waiters: usize,
    telemetry: Telemetry,
}

/// Too many checks are already waiting on this provider's key fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many checks waiting on a key fetch")]
pub struct FetchBusy;

impl KeyStore {
    /// A store holding `initial` (a key set carried over from the previous configuration) or
    /// nothing until its first fetch.
    pub fn new(
        provider: Arc<ProviderConfig>,
        initial: Option<Arc<KeySet>>,
        client: reqwest::Client,
        metrics: Arc<Metrics>,
        max_waiters: usize,
        snapshot: Option<SnapshotFile>,
        telemetry: Telemetry,
    ) -> Arc<Self> {
        Arc::new(Self {
            provider,
            snapshot,
            current: ArcSwap::new(initial.unwrap_or_default()),
            fetch: Mutex::new(FetchState::default()),
            client,
            metrics,
            waiters: AtomicUsize::new(0),
            max_waiters,
            telemetry,
        })
    }

    pub fn provider(&self) -> &ProviderConfig {
        &self.provider
    }

    /// The key set in force.
    pub fn keys(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Whether the key with this thumbprint is still published (the per-request check of a
    /// cached token; it borrows the key set instead of taking a reference count).
    pub fn holds(&self, thumbprint: &str) -> bool {
        self.current.load().contains(thumbprint)
    }

    /// Whether any key is held.
    pub fn has_keys(&self) -> bool {
        !self.current.load().is_empty()
    }

    /// Fetches now unless another forced refetch started within `unknown_kid_interval`.
    /// Callers that arrive while a fetch is running wait for it and then use its result; at
    /// most `max_waiters` wait at once (a flood of tokens naming unknown keys needs no valid
    /// signature, only a known `iss`), the rest get [`FetchBusy`] at once.
    pub async fn refetch_rate_limited(self: &Arc<Self>) -> Result<(), FetchBusy> {
        if self.waiters.fetch_add(1, Ordering::AcqRel) >= self.max_waiters {
            self.waiters.fetch_sub(1, Ordering::AcqRel);
            return Err(FetchBusy);
        }
        let _waiting = WaiterSlot(&self.waiters);
        // The fetch runs in a task of its own: a check that gives up (limits.check_timeout)
        // must not cancel it halfway, or no refetch would happen for unknown_kid_interval.
        // Its span is a child of the check's (when traced).
        let store = Arc::clone(self);
        let fetch = tokio::spawn(
            async move {
                let mut state = store.fetch.lock().await;
                let interval = store.provider.jwks_cache.unknown_kid_interval;
                if state.last_forced.is_some_and(|at| at.elapsed() < interval) {
                    return;
                }
                state.last_forced = Some(Instant::now());
                let _ = store.fetch_locked(&mut state).await;
            }
            .with_current_context(),
        );
        let _ = fetch.await;
        Ok(())
    }

    /// Runs the refresh loop until the returned task is aborted.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let store = Arc::clone(self);
        tokio::spawn(async move { store.refresh_loop().await })
    }

    async fn refresh_loop(&self) {
        let mut failures = 0u32;
        let mut first = true;
        loop {
            // Keys past max_stale go before the fetch, not after it has timed out.
            self.drop_if_stale();
            let wait = {
                let mut state = self.fetch.lock().await;
                match self.fetch_locked(&mut state).await {
                    Ok(ttl) => {
                        failures = 0;
                        ttl.mul_f64(0.9)
                    }
                    Err(error) => {
                        // The first fetch could not reach the provider, and nothing is
                        // held: the snapshot, if any. An answer from the provider (an
                        // empty key set, a 404) is never overruled by a snapshot.
                        if first && error.is_unreachable() && self.current.load().is_empty() {
                            self.start_from_snapshot(&mut state).await;
                        }
                        failures = failures.saturating_add(1);
                        retry_delay(failures, self.provider.jwks_cache.max_retry_interval)
                    }
                }
            };
            first = false;
            // Wake up when the keys held would outlive max_stale, to drop them on time if
            // no fetch has succeeded by then.
            match self.drop_if_stale() {
                Some(left) => tokio::time::sleep(wait.min(left)).await,
                None => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Drops the keys held if no fetch has succeeded within `max_stale`; otherwise says how
    /// long they may still be trusted.
    fn drop_if_stale(&self) -> Option<Duration> {
        let max_stale = self.provider.jwks_cache.max_stale;
        let keys = self.current.load_full();
        let left = keys.trusted_for(max_stale, std::time::SystemTime::now());
        if left.is_none() && !keys.is_empty() {
            tracing::error!(
                provider = %self.provider.name,
                ?max_stale,
                "no successful JWKS fetch within max_stale; dropping the keys held"
            );
            // Unless a fetch on demand replaced them meanwhile.
            self.current
                .compare_and_swap(&keys, Arc::new(keys.expired_from()));
        }
        left
    }

    /// The keys of the provider's snapshot, when it is sound and young enough; otherwise
    /// the reason is logged and nothing changes (the network stays the only source).
    async fn start_from_snapshot(&self, state: &mut FetchState) {
        let Some(snapshot) = self.snapshot.clone() else {
            return;
        };
        let provider = Arc::clone(&self.provider);
        let limit = provider.jwks_cache.max_body_bytes;
        let loaded = tokio::task::spawn_blocking(move || {
            let loaded = snapshot.load(&provider, limit)?;
            // Nothing in a snapshot is configuration: the jwks_uri it remembers from
            // discovery must pass the rules a discovered one does, or none of it is used.
            if let Some(uri) = &loaded.jwks_uri {
                check_jwks_uri(&provider, uri)
                    .map_err(|e| SnapshotError::Corrupt(format!("remembered {e}")))?;
            }
            let mut keys = KeySet::parse(&loaded.jwks, &provider)
                .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
            keys.fetched_at = Some(loaded.fetched_at);
            keys.from_snapshot = true;
            Ok::<_, SnapshotError>((keys, loaded.jwks_uri))
        })
        .await;
        let name = self.provider.name.as_str();
        match loaded {
            Ok(Ok((keys, jwks_uri))) => {
                // Discovery down and the JWKS up: fetches go where discovery last said, but
                // only on the issuer's own origin. A snapshot is not configuration: a
                // remembered URI elsewhere is dropped (its keys are still used) and fetches
                // wait for discovery to answer again.
                state.remembered = jwks_uri.filter(|uri| {
                    let same = same_origin(&self.provider.issuer, uri);
                    if !same {
                        tracing::warn!(provider = %self.provider.name, %uri, "the key snapshot remembers a jwks_uri off the issuer's origin; not fetching from it until discovery answers");
                    }
                    same
                });
                let age = keys
                    .fetched_at
                    .and_then(|at| at.elapsed().ok())
                    .unwrap_or_default()
                    .as_secs();
                let kids: Vec<&str> = keys.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
                tracing::warn!(
                    provider = name,
                    keys = keys.keys.len(),
                    kids = ?kids,
                    age_seconds = age,
                    path = %self.snapshot.as_ref().map(|s| s.path().display().to_string()).unwrap_or_default(),
                    "JWKS unreachable at start; using the keys of the snapshot in state_dir until a fetch succeeds"
                );
                // Unless a fetch on demand got fresh keys meanwhile.
                let empty = self.current.load_full();
                if empty.is_empty() {
                    self.current.compare_and_swap(&empty, Arc::new(keys));
                }
            }
            Ok(Err(SnapshotError::Missing)) => {
                tracing::info!(provider = name, "no key snapshot to start from");
            }
            Ok(Err(error)) => {
                tracing::warn!(provider = name, %error, "ignoring the key snapshot");
            }
            Err(error) => tracing::error!(provider = name, %error, "snapshot task failed"),
        }
    }

    /// Writes the snapshot of a good fetch, in the background; a failure is logged (the
    /// snapshot is an aid to the next start, never needed for this one).
    fn write_snapshot(
        &self,
        body: Vec<u8>,
        fetched_at: std::time::SystemTime,
        jwks_uri: Option<String>,
    ) {
        let Some(snapshot) = self.snapshot.clone() else {
            return;
        };
        let provider = Arc::clone(&self.provider);
        tokio::task::spawn_blocking(move || {
            if let Err(error) = snapshot.write(&provider, &body, fetched_at, jwks_uri.as_deref()) {
                tracing::warn!(provider = %provider.name, path = %snapshot.path().display(), %error, "cannot write the key snapshot");
            }
        });
    }

    /// One fetch; on success the new key set replaces the old one and its lifetime is
    /// returned. On failure the old key set stays in force.
    async fn fetch_locked(&self, state: &mut FetchState) -> Result<Duration, FetchError> {
        let span = self.telemetry.fetch_span(
            "jwt-authz jwks fetch",
            &self.provider.name,
            &self.source_description(),
        );
        let result = self
            .fetch_document(state)
            .await
            .and_then(|(body, max_age)| {
                let keys = KeySet::parse(&body, &self.provider)?;
                Ok((keys, max_age, body))
            });
        match &result {
            Ok(_) => span.finish("ok", None),
            Err(error) => span.finish("error", Some(error)),
        }
        let provider = self.provider.name.as_str();
        match result {
            Ok((keys, max_age, body)) => {
                let cache = &self.provider.jwks_cache;
                let ttl = max_age
                    .unwrap_or(cache.min_ttl)
                    .clamp(cache.min_ttl, cache.max_ttl);
                tracing::debug!(provider, keys = keys.keys.len(), ?ttl, "JWKS fetched");
                let fetched_at = keys.fetched_at.unwrap_or_else(std::time::SystemTime::now);
                self.current.store(Arc::new(keys));
                self.metrics.record_fetch(provider, true);
                self.write_snapshot(body, fetched_at, state.discovered.clone());
                Ok(ttl)
            }
            Err(error) => {
                state.discovered = None;
                let held = self.current.load().keys.len();
                tracing::warn!(provider, %error, held_keys = held, "JWKS fetch failed; keeping the keys held");
                self.metrics.record_fetch(provider, false);
                Err(error)
            }
        }
    }

    /// Where keys come from, for a fetch's span.
    fn source_description(&self) -> String {
        match &self.provider.jwks {
            JwksSource::File(path) => path.display().to_string(),
            JwksSource::Uri(uri) => uri.clone(),
            JwksSource::Discovery => format!(
                "{}/.well-known/openid-configuration",
                self.provider.issuer.trim_end_matches('/')
            ),
        }
    }

    /// The JWKS body and the `max-age` it was served with.
    async fn fetch_document(
        &self,
        state: &mut FetchState,
    ) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let cache = &self.provider.jwks_cache;
        let uri = match &self.provider.jwks {
            JwksSource::File(path) => return read_limited(path, cache.max_body_bytes).await,
            JwksSource::Uri(uri) => uri.clone(),
            JwksSource::Discovery => match &state.discovered {
                Some(uri) => uri.clone(),
                None => match (self.discover().await, &state.remembered) {
                    (Ok(uri), _) => {
                        state.discovered = Some(uri.clone());
                        uri
                    }
                    (Err(error), Some(uri)) if error.is_unreachable() => {
                        tracing::debug!(provider = %self.provider.name, %error, %uri, "discovery unreachable; using the jwks_uri of the key snapshot");
                        uri.clone()
                    }
                    (Err(error), _) => return Err(error),
                },
            },
        };
        let (body, max_age) = self.get(&uri).await?;
        Ok((body, max_age))
    }

    async fn discover(&self) -> Result<String, FetchError> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let issuer = &self.provider.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let (body, _) = self.get(&url).await?;
        let doc: Discovery = serde_json::from_slice(&body)
            .map_err(|e| FetchError::Discovery(format!("invalid document: {e}")))?;
        if doc.issuer != *issuer {
            return Err(FetchError::Discovery(format!(
                "document names issuer {:?}, expected {issuer:?}",
                doc.issuer
            )));
        }
        check_jwks_uri(&self.provider, &doc.jwks_uri)?;
        Ok(doc.jwks_uri)
    }

    async fn get(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let cache = &self.provider.jwks_cache;
        let mut request = self
            .client
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .timeout(cache.fetch_timeout);
        if let Some(path) = &self.provider.jwks_http.bearer_token_file {
            // Read at every fetch: a projected service-account token is rotated in place.
            let token = config::read_bearer_token(path).map_err(FetchError::Credentials)?;
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let max_age = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = read_body(response, cache.max_body_bytes).await?;
        Ok((body, max_age))
    }
}

/// The rules a `jwks_uri` named by discovery (or remembered in a snapshot of its answer) must
/// meet before anything is fetched from it: an http(s) URL, https unless
/// `allow_insecure_http` allows it, and on the issuer's origin when a bearer token is sent.
pub(crate) fn check_jwks_uri(provider: &ProviderConfig, jwks_uri: &str) -> Result<(), FetchError> {
    let issuer = &provider.issuer;
    match reqwest::Url::parse(jwks_uri) {
        // The bearer token goes only where the configuration says: the issuer's origin.
        Ok(u)
            if provider.jwks_http.bearer_token_file.is_some()
                && reqwest::Url::parse(issuer).map(|i| i.origin()).ok() != Some(u.origin()) =>
        {
            Err(FetchError::Discovery(format!(
                "jwks_uri {jwks_uri:?} is not on the issuer's origin, and the bearer token is only \
                 sent there; set jwks: {{uri: ...}} instead"
            )))
        }
        Ok(_) if !provider.allows_url(jwks_uri) => Err(FetchError::Discovery(format!(
            "jwks_uri {jwks_uri:?} is plain http to another host; keys must come over https \
             (or set allow_insecure_http)"
        ))),
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        _ => Err(FetchError::Discovery(format!(
            "jwks_uri {jwks_uri:?} is not an http(s) URL"
        ))),
    }
}

/// Whether `url` is on `issuer`'s origin (scheme, host and port).
fn same_origin(issuer: &str, url: &str) -> bool {
    match (reqwest::Url::parse(issuer), reqwest::Url::parse(url)) {
        (Ok(issuer), Ok(url)) => issuer.origin() == url.origin(),
        _ => false,
    }
}
