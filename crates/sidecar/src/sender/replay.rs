//! Where the sidecar remembers DPoP proofs' `jti`s (RFC 9449 §11.1): in memory
//! ([`MemoryStore`], one replica), or shared by every replica in Redis (or Valkey), where
//! `SET key 1 NX PX ttl` is the atomic "first use?" each asks, so a proof refused by one is
//! not accepted by the next. Failure is never "first use": an unreachable or slow store is an
//! error the caller answers 503.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// `trust_eviction_policy`: the eviction check is skipped.
    trust_eviction_policy: bool,
    /// The last eviction-policy check: when, and what it found.
    policy: Arc<Mutex<PolicyCheck>>,
}

/// How long a safe eviction policy is believed before it is read again (it can be changed
/// with `CONFIG SET`, and a reconnect may reach another server).
const POLICY_BELIEVED: Duration = Duration::from_secs(30);
/// How soon an unsafe (or unreadable) policy is read again.
const POLICY_RETRIED: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct PolicyCheck {
    checked_at: Option<Instant>,
    verdict: Option<Result<(), String>>,
}

/// A failure to reach the server (as opposed to its refusing a command).
fn unreachable(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
}

/// Whether Redis may evict a proof's key before its TTL: only `noeviction` never does
/// (a full Redis then refuses the write, answered 503, never a replay), or no memory limit
/// at all (`maxmemory 0`). Every `allkeys-*` policy evicts any key, and every `volatile-*`
/// policy evicts exactly the keys with a TTL, which every proof's key has.
pub fn eviction_verdict(policy: &str, maxmemory: &str) -> Result<(), String> {
    if policy == "noeviction" || maxmemory == "0" {
        return Ok(());
    }
    Err(format!(
        "maxmemory-policy {policy} (maxmemory {maxmemory}) lets Redis evict remembered DPoP \
         proofs before their window ends, and an evicted proof would be accepted again; set \
         maxmemory-policy noeviction (a full Redis then refuses writes: 503, never a replay) \
         or, having checked it another way, dpop.replay_store.redis.trust_eviction_policy: true"
    ))
}

impl RedisStore {
    /// Does not connect yet (start-up does not depend on the store; requests needing it are
    /// answered 503 until it answers). `url` is `redis://[user:password@]host:port[/db]`.
    pub fn new(
        url: &str,
        prefix: &str,
        timeout: Duration,
        trust_eviction_policy: bool,
    ) -> Result<Self, StoreError> {
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
            trust_eviction_policy,
            policy: Arc::default(),
        })
    }

    /// Reads the server's eviction policy (at start, then every [`POLICY_BELIEVED`], every
    /// [`POLICY_RETRIED`] while it is unsafe): `Err` while Redis may evict a proof early, so
    /// that DPoP requests are answered 503 rather than risk a replay.
    pub async fn check_eviction_policy(&self) -> Result<(), StoreError> {
        if self.trust_eviction_policy {
            return Ok(());
        }
        {
            let mut check = self.policy.lock().unwrap_or_else(|p| p.into_inner());
            let fresh_for = match &check.verdict {
                Some(Ok(())) => POLICY_BELIEVED,
                _ => POLICY_RETRIED,
            };
            // (A claim in the future, below, has not elapsed either: while one request reads
            // the policy, the others go by the previous verdict.)
            if let (Some(verdict), Some(at)) = (&check.verdict, check.checked_at)
                && at.elapsed() < fresh_for
            {
                return verdict.clone().map_err(StoreError::Unavailable);
            }
            // Claimed until the answer is in (one reader at a time).
            check.checked_at = Some(Instant::now() + self.timeout);
        }
        let mut command = redis::cmd("CONFIG");
        command.arg("GET").arg("maxmemory*");
        let mut connection = self.connection.clone();
        let read =
            command.query_async::<std::collections::HashMap<String, String>>(&mut connection);
        let verdict = match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(config)) => match (config.get("maxmemory-policy"), config.get("maxmemory")) {
                (Some(policy), Some(maxmemory)) => eviction_verdict(policy, maxmemory),
                _ => Err("CONFIG GET maxmemory* did not name the eviction policy".to_owned()),
            },
            // Refused by the server (CONFIG disabled or renamed, an ACL without it).
            Ok(Err(error)) if !unreachable(&error) => Err(format!(
                "cannot read maxmemory-policy ({error}); if CONFIG is disabled here, check \
                     that the policy is noeviction and set \
                     dpop.replay_store.redis.trust_eviction_policy: true"
            )),
            // Unreachable: no verdict on the policy; read again next time.
            unreachable => {
                self.policy
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .checked_at = None;
                return Err(StoreError::Unavailable(match unreachable {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer within {:?}", self.timeout),
                }));
            }
        };
        let mut check = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        check.checked_at = Some(Instant::now());
        check.verdict = Some(verdict.clone());
        verdict.map_err(StoreError::Unavailable)
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
        self.check_eviction_policy().await?;
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
