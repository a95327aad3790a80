//! Where the sidecar remembers DPoP proofs' `jti`s (RFC 9449 §11.1): in memory
//! ([`MemoryStore`], one replica), or shared by every replica in Redis (or Valkey), where
//! `SET key 1 NX PX ttl` is the atomic "first use?" each asks, so a proof refused by one is
//! not accepted by the next. Failure is never "first use": an unreachable or slow store is an
//! error the caller answers 503.

use std::time::Duration;

pub use jwt_authz_jose::dpop::replay::{MemoryStore, ProofKey, StoreError, proof_key};

/// Where `jti`s are remembered.
#[derive(Clone)]
pub enum ReplayStore {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl std::fmt::Debug for ReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayStore::Memory(m) => write!(f, "ReplayStore::{m:?}"),
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

    /// Whether `key` was seen and is still remembered (asked of a store a reload replaced).
    pub async fn holds(&self, key: &ProofKey) -> Result<bool, StoreError> {
        match self {
            ReplayStore::Memory(m) => Ok(m.holds(key)),
            ReplayStore::Redis(r) => r.holds(key).await,
        }
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

    fn name(&self, key: &ProofKey) -> String {
        let mut name = String::with_capacity(self.prefix.len() + 64);
        name.push_str(&self.prefix);
        for byte in key {
            use std::fmt::Write as _;
            let _ = write!(name, "{byte:02x}");
        }
        name
    }

    async fn first_use(&self, key: &ProofKey, ttl: Duration) -> Result<bool, StoreError> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut command = redis::cmd("SET");
        command
            .arg(self.name(key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis);
        let reply: Option<String> = self.query(command).await?;
        Ok(reply.is_some())
    }

    async fn holds(&self, key: &ProofKey) -> Result<bool, StoreError> {
        let mut command = redis::cmd("EXISTS");
        command.arg(self.name(key));
        Ok(self.query::<u64>(command).await? > 0)
    }

    async fn query<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        let reply = command.query_async::<T>(&mut connection);
        // The manager's own timeouts cover each attempt; this bounds the whole call.
        match tokio::time::timeout(self.timeout, reply).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }
}
