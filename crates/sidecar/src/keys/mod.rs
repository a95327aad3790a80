//! Key sets: a fetched JWKS document turned, once per fetch, into ready verifiers, each pinned
//! to the algorithms its key type (and declared `alg`) allows.

use std::time::SystemTime;

use jsonwebtoken::Algorithm;

use crate::config::ProviderConfig;

pub mod fetch;
pub mod snapshot;
pub mod store;
#[cfg(test)]
mod tests;

/// One public key, ready to verify tokens (read by the verification steps the sidecar and the
/// dynamic module share).
pub use jwt_authz_jose::verify::VerifyingKey;

/// The usable keys of one provider, as of one fetch.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<VerifyingKey>,
    /// Indexes of `keys` in thumbprint order: a cache hit asks [`KeySet::contains`] on every
    /// check, in O(log n) comparisons.
    by_thumbprint: Vec<usize>,
    /// When the document was fetched; `None` for the empty set held before the first fetch.
    pub fetched_at: Option<SystemTime>,
    /// The keys were dropped for being older than `max_stale` (`fetched_at` says when the
    /// last good fetch was).
    pub expired: bool,
    /// The keys came from the snapshot in `state_dir` (the first fetch failed); `fetched_at`
    /// is the snapshot's fetch.
    pub from_snapshot: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("not a JWKS document: {0}")]
    NotJwks(serde_json::Error),
    #[error("no usable keys in the JWKS ({skipped} skipped)")]
    NoUsableKeys { skipped: usize },
}

#[derive(serde::Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Builds the key set for `provider` from a JWKS document. Keys that cannot be used
    /// safely are skipped with a warning; a document with none left is an error, so that a
    /// broken publication never replaces a good key set.
    pub fn parse(body: &[u8], provider: &ProviderConfig) -> Result<Self, KeySetError> {
        let raw: RawJwks = serde_json::from_slice(body).map_err(KeySetError::NotJwks)?;
        let mut keys = Vec::with_capacity(raw.keys.len());
        let mut skipped = 0;
        for value in raw.keys {
            match VerifyingKey::from_jwk_value(value, &provider.algorithms) {
                Ok(key) => keys.push(key),
                Err(reason) => {
                    skipped += 1;
                    tracing::warn!(provider = %provider.name, %reason, "skipping JWKS key");
                }
            }
        }
        if keys.is_empty() {
            return Err(KeySetError::NoUsableKeys { skipped });
        }
        let mut by_thumbprint: Vec<usize> = (0..keys.len()).collect();
        by_thumbprint.sort_by(|&a, &b| keys[a].thumbprint.cmp(&keys[b].thumbprint));
        Ok(Self {
            by_thumbprint,
            keys,
            fetched_at: Some(SystemTime::now()),
            expired: false,
            from_snapshot: false,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How long these keys may still be trusted without a successful fetch: `max_stale`
    /// from the fetch that produced them. The one rule for "how old may keys be", whatever
    /// their source; `None` when there is nothing to trust.
    pub fn trusted_for(
        &self,
        max_stale: std::time::Duration,
        now: SystemTime,
    ) -> Option<std::time::Duration> {
        if self.keys.is_empty() {
            return None;
        }
        let age = now.duration_since(self.fetched_at?).unwrap_or_default();
        max_stale.checked_sub(age).filter(|left| !left.is_zero())
    }

    /// The empty set that replaces keys older than `max_stale`.
    pub fn expired_from(&self) -> Self {
        Self {
            keys: Vec::new(),
            by_thumbprint: Vec::new(),
            fetched_at: self.fetched_at,
            expired: true,
            from_snapshot: false,
        }
    }

    /// Whether a key with this thumbprint is still published.
    pub fn contains(&self, thumbprint: &str) -> bool {
        self.by_thumbprint
            .binary_search_by(|&i| self.keys[i].thumbprint.as_str().cmp(thumbprint))
            .is_ok()
    }

    pub fn by_kid<'a, 'k>(
        &'a self,
        kid: &'k str,
    ) -> impl Iterator<Item = &'a VerifyingKey> + use<'a, 'k> {
        self.keys
            .iter()
            .filter(move |k| k.kid.as_deref() == Some(kid))
    }

    pub fn for_algorithm(&self, alg: Algorithm) -> impl Iterator<Item = &VerifyingKey> + '_ {
        self.keys
            .iter()
            .filter(move |k| k.algorithms.contains(&alg))
    }
}
