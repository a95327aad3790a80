//! Revocation at run time (draft-ietf-oauth-status-list §8): per provider, the status lists
//! its tokens name, fetched only from the origins it allows, verified with its own keys,
//! held, and refreshed in the background before their `ttl` runs out; and the per-request
//! lookup of one token's status, which costs a map lookup and a bit read, cache hits included.
//!
//! Fail closed: a list that cannot be fetched is used until `max_stale` after its last good
//! fetch (and never past its own `exp`); then, and while no list was ever fetched, the
//! tokens that name it are answered 503.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use opentelemetry::trace::FutureExt as _;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::clock::unix_now;
use crate::config::{StatusListConfig, StatusListMode};
use crate::keys::fetch::FetchError;
use crate::keys::store::KeyStore;
use crate::obs::metrics::Metrics;
use crate::obs::telemetry::Telemetry;
use crate::verify::VerifyError;
use jwt_authz_core::response::Deny;
use jwt_authz_jose::status_list::{self, Status, StatusList, StatusListError};

mod fetch;
mod stored;

/// The media type of a Status List Token in JWT format (§8.1).
pub const MEDIA_TYPE: &str = "application/statuslist+jwt";

/// How often the refresher looks for lists due for a refresh.
const TICK: Duration = Duration::from_millis(250);

/// A list nobody asked about for this long is forgotten (fetched again when needed).
const IDLE: Duration = Duration::from_secs(3600);

/// Why a list could not be fetched.
#[derive(Debug, thiserror::Error)]
enum ListError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("not a valid Status List Token: {0}")]
    Token(#[from] VerifyError),
    #[error("not a valid Status List Token: {0}")]
    Claims(#[from] StatusListError),
    #[error("body is not text")]
    NotText,
    #[error("issued in the future (iat {0})")]
    FromTheFuture(u64),
    #[error("issued at {fetched} before the list held (iat {held}): refusing to go back")]
    Older { fetched: u64, held: u64 },
}

impl ListError {
    /// The metric label of a failed fetch.
    fn outcome(&self) -> &'static str {
        match self {
            ListError::Fetch(_) => "error",
            _ => "invalid",
        }
    }
}

/// One verified list as fetched.
#[derive(Debug)]
struct Held {
    list: Arc<StatusList>,
    /// The list token's `iat`: a later fetch never replaces it with an older one.
    iat: u64,
    /// Unix seconds past which the list is not used: its `exp`, or `max_stale` after the
    /// last good fetch, whichever comes first.
    usable_until: u64,
    /// When the last good fetch (200, or 304 for the token held) ended.
    fetched_at: u64,
    refresh_at: Instant,
    etag: Option<String>,
    /// The list token's `exp` (§8.3 step 4c).
    exp: Option<u64>,
    ttl: Duration,
    /// The list token as fetched, for the snapshot in `state_dir`.
    token: Arc<str>,
}

#[derive(Debug, Default)]
struct FetchState {
    failures: u32,
    /// No fetch before this after a failure (on demand or in the background).
    retry_at: Option<Instant>,
}

/// One list, by its `uri`.
#[derive(Debug)]
struct List {
    uri: String,
    held: ArcSwapOption<Held>,
    /// Held by the one fetch in progress: concurrent callers wait and use its result.
    fetch: tokio::sync::Mutex<FetchState>,
    /// Unix seconds of the last request that named this list.
    used_at: AtomicU64,
    /// The `iat` of the list last written to `state_dir`: writes run one at a time, and an
    /// older list never replaces a newer one there.
    written: Arc<Mutex<u64>>,
}

impl List {
    /// Records a use at `now` (written only when the second changes: no cache-line
    /// traffic per request).
    fn touch(&self, now: u64) {
        if self.used_at.load(Ordering::Relaxed) != now {
            self.used_at.store(now, Ordering::Relaxed);
        }
    }

    /// The held list if it may be used at `now`.
    fn usable(&self, now: u64) -> Option<Arc<Held>> {
        self.held.load_full().filter(|h| now < h.usable_until)
    }
}

/// The status lists of one provider.
#[derive(Debug)]
pub struct StatusLists {
    keys: Arc<KeyStore>,
    /// `state_dir` and `max_snapshot_age`, when lists are kept for the next start.
    state: Option<crate::keys::snapshot::StateDir>,
    origins: Vec<String>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    lists: ArcSwap<HashMap<Box<str>, Arc<List>>>,
    /// Serializes additions to `lists` (lookups never wait for it).
    adding: Mutex<()>,
    telemetry: Telemetry,
}

impl StatusLists {
    /// The lists of `keys`' provider, if its `status_list.mode` is not off; lists held by
    /// `previous` (the same provider before a reload) are kept.
    pub fn new(
        keys: Arc<KeyStore>,
        client: reqwest::Client,
        metrics: Arc<Metrics>,
        previous: Option<&StatusLists>,
        state: Option<crate::keys::snapshot::StateDir>,
        telemetry: Telemetry,
    ) -> Option<Arc<Self>> {
        let provider = keys.provider();
        if provider.status_list.mode == StatusListMode::Off {
            return None;
        }
        let origins = provider.status_list.origins(provider);
        let lists = previous.map(|p| p.lists.load_full()).unwrap_or_default();
        Some(Arc::new(Self {
            keys,
            state,
            origins,
            client,
            metrics,
            lists: ArcSwap::new(lists),
            adding: Mutex::new(()),
            telemetry,
        }))
    }

    fn config(&self) -> &StatusListConfig {
        &self.keys.provider().status_list
    }

    fn provider_name(&self) -> &str {
        &self.keys.provider().name
    }

    /// The status check of one verified token (§8.3), on every request. Waits (at most
    /// `wait`, like a key fetch) only for a list not held yet or held too long.
    pub async fn check(
        self: &Arc<Self>,
        claims: &Map<String, Value>,
        wait: Duration,
    ) -> Result<(), Deny> {
        let reference = match status_list::reference(claims) {
            Ok(Some(reference)) => reference,
            Ok(None) if self.config().mode == StatusListMode::Required => {
                return Err(Deny::StatusMissing);
            }
            Ok(None) => return Ok(()),
            // §8.3 step 1: a malformed reference rejects the token.
            Err(_) => return Err(Deny::StatusUnusable),
        };
        let now = unix_now();
        // The common case borrows everything: no reference count is taken, no lock.
        {
            let lists = self.lists.load();
            if let Some(list) = lists.get(reference.uri) {
                list.touch(now);
                if let Some(held) = list.held.load().as_ref().filter(|h| now < h.usable_until) {
                    return self.decide(&held.list, reference.idx);
                }
            }
        }
        let list = self.list(reference.uri)?;
        list.touch(now);
        let held = tokio::time::timeout(wait, self.fetch_on_demand(&list))
            .await
            .map_err(|_| Deny::TimedOut)??;
        self.decide(&held.list, reference.idx)
    }

    /// The token's entry read (§8.3 steps 6 and 7).
    fn decide(&self, list: &StatusList, idx: u64) -> Result<(), Deny> {
        match list.get(idx) {
            Ok(Status::Valid) => Ok(()),
            Ok(status) => {
                self.metrics
                    .record_revoked_token(self.provider_name(), status_label(status));
                Err(Deny::TokenRevoked)
            }
            // An index outside the list says nothing; the token is rejected.
            Err(_) => Err(Deny::StatusUnusable),
        }
    }

    /// The list named `uri`, added (empty) on first sight if its origin is allowed.
    fn list(&self, uri: &str) -> Result<Arc<List>, Deny> {
        if let Some(list) = self.lists.load().get(uri) {
            return Ok(Arc::clone(list));
        }
        // Checked once per list, not per request: only allowed URIs are ever in the map.
        // No userinfo: reqwest would send it as Basic credentials.
        let origin = reqwest::Url::parse(uri)
            .ok()
            .filter(|u| u.username().is_empty() && u.password().is_none())
            .map(|u| u.origin().ascii_serialization());
        if !origin.is_some_and(|o| self.origins.contains(&o)) {
            tracing::debug!(provider = %self.provider_name(), uri, "token names a status list outside the allowed origins");
            return Err(Deny::StatusUnusable);
        }
        if !self.keys.provider().allows_url(uri) {
            tracing::debug!(provider = %self.provider_name(), uri, "status list over plain http to another host");
            return Err(Deny::StatusUnusable);
        }
        let _adding = self.adding.lock().unwrap_or_else(|p| p.into_inner());
        let lists = self.lists.load_full();
        if let Some(list) = lists.get(uri) {
            return Ok(Arc::clone(list));
        }
        if lists.len() >= self.config().max_lists {
            tracing::warn!(provider = %self.provider_name(), max_lists = self.config().max_lists, "status_list.max_lists reached; answering 503 for tokens of a new list");
            return Err(Deny::StatusListUnavailable);
        }
        let list = Arc::new(List {
            uri: uri.to_owned(),
            held: ArcSwapOption::empty(),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
            used_at: AtomicU64::new(unix_now()),
            written: Arc::default(),
        });
        let mut next = HashMap::clone(&lists);
        next.insert(uri.into(), Arc::clone(&list));
        self.lists.store(Arc::new(next));
        Ok(list)
    }

    /// A fetch for a request that found no usable list: one at a time per list (callers
    /// arriving meanwhile wait for it, holding no task, and use its result), none while a
    /// failure's backoff runs (503 at once, without queueing). The fetch runs in a task of
    /// its own, so a check that gives up (`limits.check_timeout`) does not cancel it.
    async fn fetch_on_demand(self: &Arc<Self>, list: &Arc<List>) -> Result<Arc<Held>, Deny> {
        let Ok(state) = list.fetch.try_lock() else {
            // A fetch is running: its end releases the lock.
            drop(list.fetch.lock().await);
            return list.usable(unix_now()).ok_or(Deny::StatusListUnavailable);
        };
        if state.retry_at.is_some_and(|at| Instant::now() < at) {
            return list.usable(unix_now()).ok_or(Deny::StatusListUnavailable);
        }
        drop(state);
        let (lists, list) = (Arc::clone(self), Arc::clone(list));
        // Its span is a child of the check's (when traced).
        let fetch = tokio::spawn(
            async move {
                let mut state = list.fetch.lock().await;
                // Another caller's fetch may have run between the two locks.
                if let Some(held) = list.usable(unix_now()) {
                    return Some(held);
                }
                if state.retry_at.is_some_and(|at| Instant::now() < at) {
                    return None;
                }
                lists.fetch_locked(&list, &mut state).await
            }
            .with_current_context(),
        );
        fetch
            .await
            .ok()
            .flatten()
            .ok_or(Deny::StatusListUnavailable)
    }

    /// The held list confirmed current by a 304.
    fn renewed(&self, held: &Held, now: u64) -> Held {
        Held {
            list: Arc::clone(&held.list),
            iat: held.iat,
            usable_until: usable_until(now, self.config().max_stale, held.exp),
            fetched_at: now,
            refresh_at: refresh_at(held.ttl, self.config().max_stale, now, held.exp),
            etag: held.etag.clone(),
            exp: held.exp,
            ttl: held.ttl,
            token: Arc::clone(&held.token),
        }
    }

    /// Runs the background refresh until the returned task is aborted: every list due
    /// (80 % of its `ttl` after its last fetch, or its backoff over) is fetched again, and
    /// lists unused for an hour are forgotten.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let lists = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                lists.refresh_due().await;
            }
        })
    }

    async fn refresh_due(self: &Arc<Self>) {
        let now = Instant::now();
        let unix = unix_now();
        let mut idle = Vec::new();
        for list in self.lists.load().values() {
            if unix.saturating_sub(list.used_at.load(Ordering::Relaxed)) > IDLE.as_secs() {
                idle.push(list.uri.clone());
                continue;
            }
            // Lists never fetched are fetched on demand (a request is waiting for them).
            let Some(held) = list.held.load_full() else {
                continue;
            };
            // A fetch in progress (on demand, or the last tick's) is as good as this one.
            let Ok(state) = list.fetch.try_lock() else {
                continue;
            };
            let due = now >= held.refresh_at && state.retry_at.is_none_or(|at| now >= at);
            drop(state);
            if due {
                // Each list on its own: a slow origin does not hold up the others' refresh.
                let (lists, list) = (Arc::clone(self), Arc::clone(list));
                tokio::spawn(async move {
                    if let Ok(mut state) = list.fetch.try_lock() {
                        lists.fetch_locked(&list, &mut state).await;
                    }
                });
            }
        }
        if !idle.is_empty() {
            let _adding = self.adding.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = HashMap::clone(&self.lists.load_full());
            for uri in &idle {
                next.remove(uri.as_str());
            }
            self.lists.store(Arc::new(next));
            tracing::debug!(provider = %self.provider_name(), forgotten = idle.len(), "status lists unused for an hour forgotten");
        }
    }

    /// Each held list's URI and seconds since its last good fetch (for the metrics).
    pub fn ages(&self) -> Vec<(String, u64)> {
        let now = unix_now();
        self.lists
            .load()
            .values()
            .filter_map(|list| {
                let held = list.held.load();
                held.as_ref()
                    .map(|h| (list.uri.clone(), now.saturating_sub(h.fetched_at)))
            })
            .collect()
    }
}

/// The last second a list fetched at `now` may be used: `max_stale` later, and before its
/// `exp` (§8.3 step 4c: an expired list token is not relied on).
fn usable_until(now: u64, max_stale: Duration, exp: Option<u64>) -> u64 {
    let stale = now.saturating_add(max_stale.as_secs().max(1));
    exp.map_or(stale, |exp| stale.min(exp))
}

/// When to fetch again: before the `ttl` runs out (§13.7: "caches the Status List for
/// time duration of ttl before making checks for updates"), and well before `max_stale`
/// and the list's `exp`.
fn refresh_at(ttl: Duration, max_stale: Duration, now: u64, exp: Option<u64>) -> Instant {
    let mut wait = ttl.min(max_stale / 2);
    if let Some(exp) = exp {
        wait = wait.min(Duration::from_secs(exp.saturating_sub(now)));
    }
    Instant::now() + wait.mul_f64(0.8)
}

fn status_label(status: Status) -> &'static str {
    match status {
        Status::Valid => "valid",
        Status::Invalid => "invalid",
        Status::Suspended => "suspended",
        Status::Other(_) => "other",
    }
}
