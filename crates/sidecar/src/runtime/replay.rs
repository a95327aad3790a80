//! The DPoP replay store in force, and what it remembers across reloads.
//!
//! RFC 9449 §11.1 asks that a proof be accepted once within its window. A reload must not
//! open a gap in that, whatever it changes:
//! - the store is kept when its settings are unchanged (Redis also when a window changes:
//!   each key carries its own expiry);
//! - a store replaced by another (memory to Redis, another URL, prefix or size, or a
//!   memory store whose window changes: it holds every proof for one window) is *retired*:
//!   still asked "seen before?" until every proof it holds has expired;
//! - when any provider's window changes, a proof issued before the reload is held to the
//!   shortest acceptance window in force before it (an *epoch*): the store held it for at
//!   least that long, so a longer new window cannot accept it again once its entry has
//!   expired. An epoch is kept for as long as any configuration could accept such a proof;
//! - with DPoP turned off, the store is kept (dormant) for as long as any configuration could
//!   accept a proof it saw, so turning DPoP back on, with any window, forgets nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::{Config, DpopMode, MAX_PROOF_AGE, MAX_PROOF_LEEWAY, ReplayStoreConfig};
use crate::sender::replay::{MemoryStore, ProofKey, RedisStore, ReplayStore, StoreError};

use super::StartError;

/// The DPoP replay store in force, with what it was built from.
#[derive(Debug, Clone)]
pub(super) struct Replay {
    pub(super) store: ReplayStore,
    config: ReplayStoreConfig,
    windows: Windows,
    /// Stores replaced by a reload, asked until what they hold has expired.
    retired: Vec<Retired>,
    /// Acceptance windows in force before a reload, for proofs issued before it.
    epochs: Vec<Epoch>,
    /// Unix seconds of the reload that turned DPoP off (kept, dormant, while what it holds
    /// could be accepted should DPoP be turned back on).
    off_since: Option<u64>,
    /// Unix seconds of the last store-failure warning: one a minute at most, so an outage
    /// does not flood the log (every failure is counted in the metrics).
    warned_at: Arc<std::sync::atomic::AtomicU64>,
}

/// The longest any configuration accepts a proof after its `iat`, and the most a proof's
/// `iat` may be ahead of the clock: past `t + LONGEST_LEEWAY + LONGEST_ACCEPT`, no proof
/// used up to `t` can be accepted again, whatever the configuration.
const LONGEST_ACCEPT: u64 = MAX_PROOF_AGE.as_secs() + MAX_PROOF_LEEWAY.as_secs();
const LONGEST_LEEWAY: u64 = MAX_PROOF_LEEWAY.as_secs();

/// The DPoP providers' windows, in whole seconds (proof `iat`s are whole seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Windows {
    /// Each provider's (issuer, held, accepted) in issuer order: a change to any one of them
    /// is a change (Redis keys carry their own provider's hold).
    each: Vec<(String, u64, u64)>,
    /// The longest any proof is held (`max_age + 2 × leeway`).
    longest_held: u64,
    /// The shortest acceptance after `iat` (`max_age + leeway`, RFC 9449 §4.3 check 11):
    /// every proof accepted is held at least this long after its `iat`.
    shortest_accept: u64,
    /// The longest acceptance after `iat`.
    longest_accept: u64,
    /// The largest leeway into the future: proofs used before a reload at `t` have
    /// `iat <= t + leeway`.
    leeway: u64,
}

#[derive(Debug, Clone)]
struct Retired {
    store: ReplayStore,
    /// Unix seconds after which it holds nothing.
    until: u64,
}

#[derive(Debug, Clone, Copy)]
struct Epoch {
    /// Proofs with `iat` up to this may have been used before the reload.
    issued_up_to: u64,
    /// ... and were held at least this long after their `iat`.
    accept: u64,
    /// Unix seconds after which no such proof can be accepted by any window.
    until: u64,
}

/// Why a proof is refused (or cannot be checked).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Seen before.
    Replayed,
    /// Issued before a reload, older than the window it was remembered for.
    Stale,
    Store(StoreError),
}

fn windows(config: &Config) -> Option<Windows> {
    let providers = config
        .providers
        .iter()
        .filter(|p| p.dpop.mode != DpopMode::Off);
    let dpop = providers.clone().map(|p| &p.dpop);
    let accepts = || dpop.clone().map(|d| (d.max_age + d.leeway).as_secs());
    let mut each: Vec<(String, u64, u64)> = providers
        .map(|p| {
            let d = &p.dpop;
            let accept = (d.max_age + d.leeway).as_secs();
            (p.issuer.clone(), ceil_secs(d.replay_window()), accept)
        })
        .collect();
    each.sort();
    Some(Windows {
        each,
        longest_held: dpop.clone().map(|d| ceil_secs(d.replay_window())).max()?,
        shortest_accept: accepts().min()?,
        longest_accept: accepts().max()?,
        leeway: dpop.clone().map(|d| d.leeway.as_secs()).max()?,
    })
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

impl Replay {
    /// The store for `config`'s DPoP providers, if any, carrying over what `previous`
    /// remembers (see the module's documentation). `now` is Unix seconds.
    pub(super) fn start(
        config: &Config,
        previous: Option<&Replay>,
        now: u64,
    ) -> Result<Option<Self>, StartError> {
        let wanted = &config.dpop.replay_store;
        let Some(windows) = windows(config) else {
            // DPoP off: nothing is accepted, but what was seen is kept while it could still
            // be accepted, in case the next reload turns DPoP back on.
            return Ok(previous
                .map(|p| Self {
                    off_since: p.off_since.or(Some(now)),
                    ..p.aged(now)
                })
                .filter(|p| now <= p.remembered_until()));
        };
        let Some(previous) = previous else {
            return Ok(Some(Self {
                store: build(wanted, &windows)?,
                config: wanted.clone(),
                windows,
                retired: Vec::new(),
                epochs: Vec::new(),
                off_since: None,
                warned_at: Arc::default(),
            }));
        };
        let mut next = previous.aged(now);
        next.off_since = None;
        let memory_window_changed = matches!(wanted, ReplayStoreConfig::Memory { .. })
            && previous.windows.longest_held != windows.longest_held;
        if &previous.config != wanted || memory_window_changed {
            next.retired.push(Retired {
                store: previous.store.clone(),
                until: now.saturating_add(previous.windows.longest_held),
            });
            next.store = build(wanted, &windows)?;
            next.config = wanted.clone();
            tracing::info!(
                "the DPoP replay store changed: the previous one is still asked for {}s",
                previous.windows.longest_held
            );
        }
        if previous.windows != windows {
            let old = &previous.windows;
            let issued_up_to = now.saturating_add(old.leeway);
            next.epochs.push(Epoch {
                issued_up_to,
                accept: old.shortest_accept,
                // A later reload may lengthen the window again: kept until no configuration
                // could accept what it governs.
                until: issued_up_to.saturating_add(LONGEST_ACCEPT),
            });
            next.windows = windows;
        }
        Ok(Some(next))
    }

    /// A copy without the retired stores and epochs that no longer matter at `now`.
    fn aged(&self, now: u64) -> Self {
        let mut aged = self.clone();
        aged.retired.retain(|r| now <= r.until);
        aged.epochs.retain(|e| now <= e.until);
        aged
    }

    /// Until when something this remembers could still be accepted, by any configuration
    /// (asked of a dormant store: DPoP may come back with the longest window).
    fn remembered_until(&self) -> u64 {
        let held = self
            .off_since
            .unwrap_or(0)
            .saturating_add(LONGEST_LEEWAY + LONGEST_ACCEPT);
        let retired = self.retired.iter().map(|r| r.until);
        let epochs = self.epochs.iter().map(|e| e.until);
        retired.chain(epochs).fold(held, u64::max)
    }

    /// Remembers a proof accepted at `now` (Unix seconds) with `iat`, held for `ttl`;
    /// refused if seen before (here or in a retired store) or issued before a reload that
    /// may have forgotten it.
    pub(super) async fn first_use(
        &self,
        key: &ProofKey,
        iat: u64,
        ttl: Duration,
        now: u64,
    ) -> Result<(), Refusal> {
        let stale = self
            .epochs
            .iter()
            .any(|e| now <= e.until && iat <= e.issued_up_to && now > iat.saturating_add(e.accept));
        if stale {
            return Err(Refusal::Stale);
        }
        for retired in self.retired.iter().filter(|r| now <= r.until) {
            if retired.store.holds(key).await.map_err(Refusal::Store)? {
                return Err(Refusal::Replayed);
            }
        }
        match self.store.first_use(key, ttl).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Refusal::Replayed),
            Err(error) => Err(Refusal::Store(error)),
        }
    }

    pub(super) fn kind(&self) -> &'static str {
        match self.store {
            ReplayStore::Memory(_) => "memory",
            ReplayStore::Redis(_) => "redis",
        }
    }

    /// Whether a store failure at `now` is to be logged as a warning.
    pub(super) fn should_warn(&self, now: u64) -> bool {
        let last = self.warned_at.load(Ordering::Relaxed);
        now >= last.saturating_add(60)
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

fn build(wanted: &ReplayStoreConfig, windows: &Windows) -> Result<ReplayStore, StartError> {
    Ok(match wanted {
        // Every proof held for the longest window (Redis keys carry their provider's).
        ReplayStoreConfig::Memory { max_entries } => ReplayStore::Memory(MemoryStore::new(
            Duration::from_secs(windows.longest_held),
            *max_entries,
        )),
        ReplayStoreConfig::Redis {
            url,
            key_prefix,
            timeout,
            trust_eviction_policy,
        } => {
            let store = RedisStore::new(url, key_prefix, *timeout, *trust_eviction_policy)
                .map_err(StartError::ReplayStore)?;
            // Said at start, not only at the first DPoP request (which would get 503).
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let store = store.clone();
                runtime.spawn(async move {
                    match store.check_eviction_policy().await {
                        Ok(()) => tracing::debug!("the DPoP replay store's eviction policy is safe"),
                        Err(error) => tracing::error!(%error, "DPoP requests will be answered 503 until this is fixed"),
                    }
                });
            }
            ReplayStore::Redis(store)
        }
    })
}

#[cfg(test)]
mod tests;
