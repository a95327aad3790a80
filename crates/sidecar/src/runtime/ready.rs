//! Readiness: whether every provider holds keys, which do not and why, which run on a
//! snapshot, and each key set's status for the metrics.

use crate::obs::metrics::KeySetStatus;

use super::Runtime;

impl Runtime {
    /// Ready once every provider holds keys.
    pub fn ready(&self) -> bool {
        self.verifier.providers().iter().all(|p| p.store.has_keys())
    }

    /// Providers that hold no keys, each with why: not fetched yet, or dropped because no
    /// fetch succeeded within `max_stale`.
    pub fn providers_without_keys(&self) -> Vec<String> {
        self.verifier
            .providers()
            .iter()
            .filter(|p| !p.store.has_keys())
            .map(|p| {
                let keys = p.store.keys();
                let name = &p.config().name;
                match keys.fetched_at.filter(|_| keys.expired) {
                    Some(at) => format!(
                        "{name} (keys dropped: last good fetch {}s ago, max_stale {}s)",
                        at.elapsed().unwrap_or_default().as_secs(),
                        p.config().jwks_cache.max_stale.as_secs()
                    ),
                    None => format!("{name} (no keys fetched yet)"),
                }
            })
            .collect()
    }

    /// Providers whose keys came from a snapshot (their first fetch failed), each with the
    /// snapshot's age: ready, but worth saying.
    pub fn providers_on_snapshot(&self) -> Vec<String> {
        self.verifier
            .providers()
            .iter()
            .filter_map(|p| {
                let keys = p.store.keys();
                (keys.from_snapshot && !keys.is_empty()).then(|| {
                    let age = keys
                        .fetched_at
                        .and_then(|at| at.elapsed().ok())
                        .unwrap_or_default()
                        .as_secs();
                    format!("{} ({age}s old)", p.config().name)
                })
            })
            .collect()
    }

    pub fn key_set_status(&self) -> Vec<KeySetStatus> {
        self.verifier
            .providers()
            .iter()
            .map(|p| {
                let keys = p.store.keys();
                KeySetStatus {
                    provider: p.config().name.clone(),
                    keys: keys.keys.len(),
                    fetched_at: keys.fetched_at,
                    from_snapshot: keys.from_snapshot,
                    status_lists: self
                        .status_lists
                        .get(p.index)
                        .and_then(Option::as_ref)
                        .map(|s| s.ages())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }
}
