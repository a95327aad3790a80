//! The status lists' heads (size, version, latest expiry) kept in memory: every status
//! request needs them, and they change only when a token is recorded or revoked. The store
//! drops the copy after each such write in this process; a copy is also dropped after
//! [`MAX_AGE`], so a revocation by the CLI (another process writing the same database) is
//! served within that time plus the list's ttl.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a copy is used without looking at the database again.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// One list's row of `status_lists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub size: i64,
    /// Bumped by every revocation in the list.
    pub version: i64,
    /// The latest `exp` of a token in the list (0: none yet).
    pub live_until: i64,
}

/// Every list's head, by list id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Heads {
    pub by_list: BTreeMap<i64, Head>,
}

impl Heads {
    /// Ids of the lists that hold a token unexpired at `now`, in order.
    pub fn live(&self, now: i64) -> Vec<i64> {
        self.by_list
            .iter()
            .filter(|(_, head)| head.live_until > now)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// The cached copy. A read started before a write must not store what it read after the
/// write dropped the copy: reads note the generation they started at, writes bump it.
#[derive(Debug, Default)]
pub(crate) struct HeadCache {
    inner: Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    generation: u64,
    copy: Option<(Instant, Arc<Heads>)>,
}

impl HeadCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The copy, if one is younger than [`MAX_AGE`].
    pub(crate) fn fresh(&self) -> Option<Arc<Heads>> {
        let cached = self.lock();
        cached
            .copy
            .as_ref()
            .filter(|(at, _)| at.elapsed() < MAX_AGE)
            .map(|(_, heads)| Arc::clone(heads))
    }

    /// The generation a read starts at; pass it to [`HeadCache::store`].
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps `heads`, read from a read that began at `generation`, unless a write came
    /// since.
    pub(crate) fn store(&self, generation: u64, heads: Arc<Heads>) {
        let mut cached = self.lock();
        if cached.generation == generation {
            cached.copy = Some((Instant::now(), heads));
        }
    }

    /// A write committed (or may have): the next read goes to the database.
    pub(crate) fn invalidate(&self) {
        let mut cached = self.lock();
        cached.generation = cached.generation.wrapping_add(1);
        cached.copy = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(live_until: i64) -> Arc<Heads> {
        Arc::new(Heads {
            by_list: BTreeMap::from([(
                1,
                Head {
                    size: 8,
                    version: 0,
                    live_until,
                },
            )]),
        })
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let cache = HeadCache::default();
        let before = cache.generation();
        cache.invalidate();
        cache.store(before, heads(10));
        assert!(cache.fresh().is_none());
        let now = cache.generation();
        cache.store(now, heads(10));
        assert_eq!(cache.fresh(), Some(heads(10)));
        cache.invalidate();
        assert!(cache.fresh().is_none());
    }

    #[test]
    fn live_lists_are_those_with_a_later_expiry() {
        let heads = Heads {
            by_list: BTreeMap::from([
                (
                    1,
                    Head {
                        size: 8,
                        version: 0,
                        live_until: 100,
                    },
                ),
                (
                    2,
                    Head {
                        size: 8,
                        version: 3,
                        live_until: 200,
                    },
                ),
            ]),
        };
        assert_eq!(heads.live(99), vec![1, 2]);
        assert_eq!(heads.live(100), vec![2]);
        assert_eq!(heads.live(200), Vec::<i64>::new());
    }
}
