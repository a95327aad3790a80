//! Remembering DPoP proofs' `jti` for the acceptance window (RFC 9449 §11.1), so a proof is
//! accepted once. One replica can keep them in memory; several must share a store, or a
//! proof refused by one is accepted by the next: Redis (or Valkey), where `SET key 1 NX PX
//! ttl` is the atomic "first use?" every replica asks.
//!
//! Failure is never "first use": an unreachable or slow store, or a full memory store, is an
//! error the caller answers 503.

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

/// Where `jti`s are remembered.
#[derive(Clone)]
pub enum ReplayStore {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl std::fmt::Debug for ReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayStore::Memory(m) => write!(f, "ReplayStore::Memory(max {})", m.max_entries),
            ReplayStore::Redis(r) => write!(f, "ReplayStore::Redis({})", r.prefix),
        }
    }
}

impl ReplayStore {
    /// `Ok(true)` the first time `key` is seen within `ttl`, `Ok(false)` for a replay.
    pub async fn first_use(&self, key: &ProofKey, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            ReplayStore::Memory(m) => m.first_use(key).await,
            ReplayStore::Redis(r) => r.first_use(key, ttl).await,
        }
    }
}

/// In-process: correct for one replica only.
#[derive(Clone)]
pub struct MemoryStore {
    seen: Cache<ProofKey, ()>,
    /// Proofs held (moka's own count lags inserts): up on insert, down on expiry.
    held: Arc<AtomicU64>,
    max_entries: u64,
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

    async fn first_use(&self, key: &ProofKey) -> Result<bool, StoreError> {
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
}

/// Shared by every replica: Redis or Valkey, over one multiplexed connection that
/// reconnects by itself.
#[derive(Clone)]
pub struct RedisStore {
    connection: redis::aio::ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl RedisStore {
    /// Does not connect yet (start-up does not depend on the store; requests needing it are
    /// answered 503 until it answers). `url` is `redis://[user:password@]host:port[/db]`.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let connection = redis::aio::ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            timeout,
        })
    }

    async fn first_use(&self, key: &ProofKey, ttl: Duration) -> Result<bool, StoreError> {
        let mut name = String::with_capacity(self.prefix.len() + 64);
        name.push_str(&self.prefix);
        for byte in key {
            use std::fmt::Write as _;
            let _ = write!(name, "{byte:02x}");
        }
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("SET");
        command.arg(&name).arg(1).arg("NX").arg("PX").arg(millis);
        let set = command.query_async::<Option<String>>(&mut connection);
        // The manager's own timeouts cover each attempt; this bounds the whole call.
        match tokio::time::timeout(self.timeout, set).await {
            Ok(Ok(reply)) => Ok(reply.is_some()),
            Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }
}
