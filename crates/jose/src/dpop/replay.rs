//! Remembering DPoP proofs' `jti` for the acceptance window (RFC 9449 §11.1), so a proof is
//! accepted once: the key a proof is remembered by, the store's errors, and the in-process
//! store (one replica; the sidecar adds a shared Redis store). Failure is never "first
//! use": a full store is an error the caller answers 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;

/// A proof's identity in the store: SHA-256 over the provider, the key thumbprint and the
/// `jti`, so a client cannot make its `jti` collide with another key's, and no
/// client-chosen string is used as a store key.
pub type ProofKey = [u8; 32];

/// Builds the key for one proof.
pub fn proof_key(provider: &str, jkt: &str, jti: &str) -> ProofKey {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [provider, jkt, jti] {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("replay store full ({0} proofs remembered)")]
    Full(u64),
    #[error("replay store unavailable: {0}")]
    Unavailable(String),
}

/// In-process: correct for one replica only.
#[derive(Clone)]
pub struct MemoryStore {
    seen: Cache<ProofKey, ()>,
    /// Proofs held (moka's own count lags inserts): up on insert, down on expiry.
    held: Arc<AtomicU64>,
    max_entries: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryStore(max {})", self.max_entries)
    }
}

impl MemoryStore {
    /// Remembers up to `max_entries` proofs for `window` each. When full, new proofs are
    /// refused rather than old ones forgotten early (forgetting would let them be replayed).
    pub fn new(window: Duration, max_entries: u64) -> Self {
        let held = Arc::new(AtomicU64::new(0));
        let released = Arc::clone(&held);
        Self {
            // moka would evict at capacity; the count check below refuses long before
            // (concurrent inserts can pass it together, hence the margin).
            seen: Cache::builder()
                .time_to_live(window)
                .max_capacity(max_entries.saturating_mul(2))
                .eviction_listener(move |_, _, _| {
                    released.fetch_sub(1, Ordering::AcqRel);
                })
                .build(),
            held,
            max_entries,
        }
    }

    /// `Ok(true)` the first time `key` is seen within the window, `Ok(false)` for a replay.
    pub async fn first_use(&self, key: &ProofKey) -> Result<bool, StoreError> {
        if self.held.load(Ordering::Acquire) >= self.max_entries {
            // Expired entries are released lazily; settle them before refusing.
            self.seen.run_pending_tasks().await;
            if self.held.load(Ordering::Acquire) >= self.max_entries {
                // A replay is still told apart from a new proof.
                if self.seen.contains_key(key) {
                    return Ok(false);
                }
                return Err(StoreError::Full(self.max_entries));
            }
        }
        let fresh = self.seen.entry(*key).or_insert(()).await.is_fresh();
        if fresh {
            self.held.fetch_add(1, Ordering::AcqRel);
        }
        Ok(fresh)
    }

    /// Whether `key` is held (a proof seen within the window).
    pub fn holds(&self, key: &ProofKey) -> bool {
        self.seen.contains_key(key)
    }
}
