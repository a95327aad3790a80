//! Key sets: a fetched JWKS document turned, once per fetch, into ready verifiers, each pinned
//! to the algorithms its key type (and declared `alg`) allows.

use std::time::SystemTime;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
    ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::ProviderConfig;
use jwt_authz_jose::crypto::PreparedKey;

pub mod fetch;
pub mod snapshot;
pub mod store;
#[cfg(test)]
mod tests;

/// One public key, ready to verify tokens.
pub struct VerifyingKey {
    pub kid: Option<String>,
    /// RFC 7638 thumbprint: identifies the key material whatever its `kid`.
    pub thumbprint: String,
    /// The algorithms this key may verify: its type's, narrowed by its `alg` and the provider.
    pub algorithms: Vec<Algorithm>,
    /// The key parsed by aws-lc once for each of `algorithms`.
    prepared: Vec<PreparedKey>,
}

impl VerifyingKey {
    /// Whether `signature` over `message` was made with this key under `alg`; never for an
    /// algorithm the key is not pinned to.
    pub fn verify_signature(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.prepared
            .iter()
            .find(|p| p.alg == alg)
            .is_some_and(|p| p.verify(message, signature))
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("thumbprint", &self.thumbprint)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

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
            match VerifyingKey::from_jwk_value(value, provider) {
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

impl VerifyingKey {
    fn from_jwk_value(value: serde_json::Value, provider: &ProviderConfig) -> Result<Self, String> {
        if value.get("kty").and_then(|v| v.as_str()) == Some("oct") {
            return Err("symmetric (oct) keys are never accepted".into());
        }
        let kid_hint = value
            .get("kid")
            .and_then(|v| v.as_str())
            .unwrap_or("<none>")
            .to_owned();
        if value.get("d").is_some() {
            return Err(format!("key {kid_hint} carries private material"));
        }
        let jwk: Jwk = serde_json::from_value(value)
            .map_err(|e| format!("key {kid_hint}: invalid JWK: {e}"))?;
        // A SPIFFE trust bundle marks its JWT authorities `jwt-svid` (SPIFFE Trust Domain and
        // Bundle §4.2.1), its X.509 ones `x509-svid`: only the former sign JWTs.
        let signs_jwts = |key_use: &PublicKeyUse| match key_use {
            PublicKeyUse::Signature => true,
            PublicKeyUse::Other(other) => other == "jwt-svid",
            PublicKeyUse::Encryption => false,
        };
        if let Some(key_use) = &jwk.common.public_key_use
            && !signs_jwts(key_use)
        {
            return Err(format!("key {kid_hint}: not a signing key"));
        }
        if let Some(ops) = &jwk.common.key_operations
            && !ops.contains(&KeyOperations::Verify)
        {
            return Err(format!("key {kid_hint}: key_ops does not allow verify"));
        }
        let by_type: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => return Err(format!("key {kid_hint}: unsupported curve")),
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
                _ => return Err(format!("key {kid_hint}: unsupported curve")),
            },
            AlgorithmParameters::OctetKey(_) => {
                return Err("symmetric (oct) keys are never accepted".into());
            }
            _ => return Err(format!("key {kid_hint}: unsupported key type")),
        };
        if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
            let bits = rsa_modulus_bits(&rsa.n)
                .ok_or_else(|| format!("key {kid_hint}: invalid RSA modulus"))?;
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "key {kid_hint}: RSA key of {bits} bits is shorter than {MIN_RSA_BITS}"
                ));
            }
        }
        let mut algorithms: Vec<Algorithm> = by_type
            .iter()
            .copied()
            .filter(|a| provider.algorithms.contains(a))
            .collect();
        if let Some(declared) = &jwk.common.key_algorithm {
            let declared = declared_algorithm(declared)
                .ok_or_else(|| format!("key {kid_hint}: unsupported alg {declared:?}"))?;
            if !by_type.contains(&declared) {
                return Err(format!(
                    "key {kid_hint}: alg {declared:?} does not match the key type"
                ));
            }
            algorithms.retain(|a| *a == declared);
        }
        if algorithms.is_empty() {
            return Err(format!(
                "key {kid_hint}: none of the provider's algorithms fits this key"
            ));
        }
        let decoding_key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| format!("key {kid_hint}: unusable key material: {e}"))?;
        let thumbprint = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| format!("key {kid_hint}: cannot compute thumbprint: {e}"))?;
        let prepared = jwt_authz_jose::crypto::prepare(&decoding_key, &algorithms);
        // An algorithm aws-lc could not parse the key for is one this key never verifies.
        algorithms.retain(|alg| prepared.iter().any(|p| p.alg == *alg));
        if algorithms.is_empty() {
            return Err(format!("key {kid_hint}: unusable key material"));
        }
        Ok(Self {
            kid: jwk.common.key_id.clone(),
            thumbprint,
            algorithms,
            prepared,
        })
    }
}

/// Shorter RSA keys are refused at parse time (aws-lc would refuse them at every verify).
const MIN_RSA_BITS: usize = 2048;

fn rsa_modulus_bits(n: &str) -> Option<usize> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .ok()?;
    let first = bytes.iter().position(|b| *b != 0)?;
    let significant = &bytes[first..];
    Some(significant.len() * 8 - significant[0].leading_zeros() as usize)
}

fn declared_algorithm(alg: &KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}
