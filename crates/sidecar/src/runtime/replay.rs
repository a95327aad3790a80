//! The DPoP replay store in force, kept across a reload whose settings keep it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::config::{Config, DpopMode, ReplayStoreConfig};
use crate::sender::replay::{MemoryStore, RedisStore, ReplayStore};

use super::StartError;

/// The DPoP replay store in force, with what it was built from: a reload that changes
/// neither keeps it (and every `jti` it remembers).
#[derive(Debug, Clone)]
pub(super) struct Replay {
    pub(super) store: ReplayStore,
    config: ReplayStoreConfig,
    window: std::time::Duration,
    /// Unix seconds of the last store-failure warning: one a minute at most, so an outage
    /// does not flood the log (every failure is counted in the metrics).
    warned_at: Arc<std::sync::atomic::AtomicU64>,
}

impl Replay {
    /// The store for `config`'s DPoP providers, if any; carried over from `previous` when
    /// its settings are unchanged.
    pub(super) fn start(
        config: &Config,
        previous: Option<&Replay>,
    ) -> Result<Option<Self>, StartError> {
        let Some(window) = config
            .providers
            .iter()
            .filter(|p| p.dpop.mode != DpopMode::Off)
            .map(|p| p.dpop.replay_window())
            .max()
        else {
            return Ok(None);
        };
        let wanted = &config.dpop.replay_store;
        if let Some(previous) = previous.filter(|p| &p.config == wanted && p.window == window) {
            return Ok(Some(previous.clone()));
        }
        let store = match wanted {
            ReplayStoreConfig::Memory { max_entries } => {
                ReplayStore::Memory(MemoryStore::new(window, *max_entries))
            }
            ReplayStoreConfig::Redis {
                url,
                key_prefix,
                timeout,
            } => ReplayStore::Redis(
                RedisStore::new(url, key_prefix, *timeout).map_err(StartError::ReplayStore)?,
            ),
        };
        Ok(Some(Self {
            store,
            config: wanted.clone(),
            window,
            warned_at: Arc::default(),
        }))
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
