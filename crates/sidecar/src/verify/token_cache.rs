//! The verified-token cache: SHA-256 of the token → its verified claims, bounded by entries and
//! by bytes, each entry dying at the token's `exp` or after the configured TTL, whichever is
//! first.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::future::Cache;

use crate::config::TokenCacheConfig;
use crate::verify::VerifiedToken;

/// SHA-256 of a token: the cache key, never the token itself.
pub type TokenHash = [u8; 32];

pub fn token_hash(token: &str) -> TokenHash {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A short, non-reversible name for a token, safe to log.
pub fn fingerprint(hash: &TokenHash) -> String {
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone)]
pub struct TokenCache {
    inner: Option<Cache<TokenHash, Arc<VerifiedToken>>>,
}

struct UntilExp {
    ttl: Duration,
}

impl moka::Expiry<TokenHash, Arc<VerifiedToken>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &TokenHash,
        value: &Arc<VerifiedToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let Some(exp) = value.exp else {
            return Some(self.ttl);
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Some(Duration::from_secs(exp.saturating_sub(now)).min(self.ttl))
    }
}

impl TokenCache {
    pub fn new(config: &TokenCacheConfig) -> Self {
        if config.max_entries == 0 {
            return Self { inner: None };
        }
        // moka bounds one weight. Each entry weighs its size in bytes but never less than
        // max_bytes / max_entries, so the byte bound also caps the number of entries.
        let floor = (config.max_bytes / config.max_entries).max(1);
        let cache = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(move |_k: &TokenHash, v: &Arc<VerifiedToken>| {
                let size = (v.approx_size() as u64).max(floor);
                u32::try_from(size).unwrap_or(u32::MAX)
            })
            .expire_after(UntilExp { ttl: config.ttl })
            .build();
        Self { inner: Some(cache) }
    }

    pub async fn get(&self, key: &TokenHash) -> Option<Arc<VerifiedToken>> {
        self.inner.as_ref()?.get(key).await
    }

    pub async fn insert(&self, key: TokenHash, token: Arc<VerifiedToken>) {
        if let Some(cache) = &self.inner {
            cache.insert(key, token).await;
        }
    }

    pub async fn invalidate(&self, key: &TokenHash) {
        if let Some(cache) = &self.inner {
            cache.invalidate(key).await;
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Entries and weighted bytes after pending maintenance has run.
    #[cfg(test)]
    async fn usage(&self) -> (u64, u64) {
        match &self.inner {
            Some(cache) => {
                cache.run_pending_tasks().await;
                (cache.entry_count(), cache.weighted_size())
            }
            None => (0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn token(exp: Option<u64>, padding: usize) -> Arc<VerifiedToken> {
        let mut claims = Map::new();
        claims.insert("pad".into(), "x".repeat(padding).into());
        Arc::new(VerifiedToken {
            provider: 0,
            thumbprint: "t".into(),
            claims,
            exp,
        })
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    }

    #[tokio::test]
    async fn bounded_by_entries() {
        let cache = TokenCache::new(&TokenCacheConfig {
            max_entries: 50,
            max_bytes: 1 << 30,
            ttl: Duration::from_secs(60),
        });
        for i in 0..500u32 {
            cache
                .insert(token_hash(&i.to_string()), token(None, 10))
                .await;
        }
        let (entries, _) = cache.usage().await;
        assert!(entries <= 50, "{entries} entries");
        assert!(entries > 0);
    }

    #[tokio::test]
    async fn bounded_by_bytes() {
        let cache = TokenCache::new(&TokenCacheConfig {
            max_entries: 1_000_000,
            max_bytes: 100_000,
            ttl: Duration::from_secs(60),
        });
        for i in 0..1000u32 {
            cache
                .insert(token_hash(&i.to_string()), token(None, 1000))
                .await;
        }
        let (entries, bytes) = cache.usage().await;
        assert!(bytes <= 100_000, "{bytes} bytes");
        assert!(entries < 100, "{entries} entries of >1000 bytes");
    }

    #[tokio::test]
    async fn entry_dies_at_exp() {
        let cache = TokenCache::new(&TokenCacheConfig {
            max_entries: 10,
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(3600),
        });
        let key = token_hash("a");
        cache.insert(key, token(Some(now() + 1), 1)).await;
        assert!(cache.get(&key).await.is_some());
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(cache.get(&key).await.is_none());
        let past = token_hash("b");
        cache.insert(past, token(Some(now() - 5), 1)).await;
        assert!(cache.get(&past).await.is_none());
    }

    #[tokio::test]
    async fn disabled_cache_holds_nothing() {
        let cache = TokenCache::new(&TokenCacheConfig {
            max_entries: 0,
            max_bytes: 0,
            ttl: Duration::ZERO,
        });
        cache.insert(token_hash("a"), token(None, 1)).await;
        assert!(cache.get(&token_hash("a")).await.is_none());
        assert!(!cache.enabled());
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        let h = token_hash("secret.token.value");
        assert_eq!(fingerprint(&h).len(), 12);
        assert_eq!(
            fingerprint(&h),
            fingerprint(&token_hash("secret.token.value"))
        );
        assert!(!fingerprint(&h).contains("secret"));
    }
}
