//! Configuration of sender-constrained tokens: DPoP (RFC 9449) per provider with one replay
//! store for the whole process, and certificate binding (RFC 8705 §3) per provider.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::{ConfigError, invalid};

/// A provider's DPoP setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpopMode {
    /// `Authorization: DPoP` is refused, and so is every DPoP-bound token (`cnf.jkt`): its
    /// binding could not be checked, and a bound token is never accepted as a bearer token.
    #[default]
    Off,
    /// Bearer tokens without a binding and DPoP-bound tokens with a valid proof.
    Optional,
    /// Only DPoP-bound tokens with a valid proof.
    Required,
}

/// The longest `providers[].dpop.max_age` and `leeway` accepted: together, the longest any
/// configuration can accept a proof after its `iat`.
pub const MAX_PROOF_AGE: Duration = Duration::from_secs(3600);
pub const MAX_PROOF_LEEWAY: Duration = Duration::from_secs(300);

/// `providers[].dpop`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopProviderConfig {
    #[serde(default)]
    pub mode: DpopMode,
    /// Proof signature algorithms accepted (RFC 9449 §4.3 check 5): asymmetric only.
    #[serde(default = "default_proof_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// How old a proof's `iat` may be (§4.3 check 11, §11.1). Its `jti` is remembered for
    /// this long plus `leeway`, so the window also sizes the replay store.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// How far ahead of our clock a proof's `iat` may be.
    #[serde(default = "default_proof_leeway", with = "humantime_serde")]
    pub leeway: Duration,
}

impl Default for DpopProviderConfig {
    fn default() -> Self {
        Self {
            mode: DpopMode::Off,
            algorithms: default_proof_algorithms(),
            max_age: default_max_age(),
            leeway: default_proof_leeway(),
        }
    }
}

impl DpopProviderConfig {
    pub(super) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.mode == DpopMode::Off {
            return Ok(());
        }
        if self.algorithms.is_empty() {
            return Err(invalid(
                format!("{field}.algorithms"),
                "at least one algorithm is required",
            ));
        }
        if let Some(alg) = self
            .algorithms
            .iter()
            .find(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
        {
            return Err(invalid(
                format!("{field}.algorithms"),
                format!(
                    "{alg:?} is symmetric; a proof is signed with the client's private key (RFC 9449 §4.2)"
                ),
            ));
        }
        if self.max_age.is_zero() || self.max_age > MAX_PROOF_AGE {
            return Err(invalid(
                format!("{field}.max_age"),
                "must be between 1s and 1h (every proof's jti is remembered this long)",
            ));
        }
        if self.leeway > MAX_PROOF_LEEWAY {
            return Err(invalid(format!("{field}.leeway"), "must be at most 5m"));
        }
        Ok(())
    }

    /// How long a proof's `jti` must be remembered: as long as the proof is accepted.
    pub fn replay_window(&self) -> Duration {
        self.max_age + self.leeway * 2
    }
}

/// `providers[].certificate_binding` (RFC 8705 §3). A token whose `cnf` names a certificate
/// (`x5t#S256`) is always checked against the client certificate; this decides whether
/// tokens without such a binding are accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateBinding {
    #[default]
    Optional,
    Required,
}

/// The top-level `dpop` section: what every DPoP provider shares.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopConfig {
    /// Where proofs' `jti`s are remembered (§11.1).
    #[serde(default)]
    pub replay_store: ReplayStoreConfig,
    /// The scheme of the URI clients address (`https`), for the `htu` comparison (§4.3 check
    /// 9). Unset: the scheme the proxy reports (Envoy's gRPC `CheckRequest` carries it; the
    /// HTTP front ends do not, so there it must be set). Set it when TLS ends in front of
    /// the proxy.
    #[serde(default)]
    pub scheme: Option<String>,
    /// Server nonces (RFC 9449 §9): when set, every proof must carry a nonce issued here
    /// (clients get one from a `use_dpop_nonce` answer's `DPoP-Nonce` header).
    #[serde(default)]
    pub nonce: Option<NonceConfig>,
}

/// `dpop.nonce`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceConfig {
    /// At least 32 random bytes, the same file for every replica (each then accepts the
    /// others' nonces). Read at start and on every reload.
    pub secret_file: PathBuf,
    /// A nonce is accepted for one to two lifetimes after it is issued.
    #[serde(default = "default_nonce_lifetime", with = "humantime_serde")]
    pub lifetime: Duration,
}

impl DpopConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(scheme) = &self.scheme
            && !matches!(scheme.as_str(), "http" | "https")
        {
            return Err(invalid("dpop.scheme", "must be http or https"));
        }
        if let Some(nonce) = &self.nonce
            && (nonce.lifetime < Duration::from_secs(10)
                || nonce.lifetime > Duration::from_secs(3600))
        {
            return Err(invalid("dpop.nonce.lifetime", "must be between 10s and 1h"));
        }
        self.replay_store.validate()
    }
}

/// `dpop.replay_store`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ReplayStoreConfig {
    /// In this process: right for one replica only (another replica would accept a proof
    /// this one saw).
    Memory {
        #[serde(default = "default_memory_entries")]
        max_entries: u64,
    },
    /// Redis or Valkey, shared by every replica.
    Redis {
        /// `redis://[user:password@]host:port[/db]` or `rediss://` for TLS.
        url: String,
        #[serde(default = "default_prefix")]
        key_prefix: String,
        /// How long one store call may take before the request is answered 503.
        #[serde(default = "default_store_timeout", with = "humantime_serde")]
        timeout: Duration,
        /// Skip the check that the server never evicts a proof early (`maxmemory-policy
        /// noeviction`, or no `maxmemory`): for servers where `CONFIG GET` is disabled and
        /// the policy has been checked another way.
        #[serde(default)]
        trust_eviction_policy: bool,
    },
}

impl Default for ReplayStoreConfig {
    fn default() -> Self {
        Self::Memory {
            max_entries: default_memory_entries(),
        }
    }
}

impl ReplayStoreConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Self::Memory { max_entries } => {
                if *max_entries == 0 {
                    return Err(invalid(
                        "dpop.replay_store.memory.max_entries",
                        "must be greater than 0",
                    ));
                }
            }
            Self::Redis {
                url,
                key_prefix,
                timeout,
                ..
            } => {
                let field = "dpop.replay_store.redis";
                if !(url.starts_with("redis://") || url.starts_with("rediss://"))
                    || url.len() > 2048
                {
                    return Err(invalid(
                        format!("{field}.url"),
                        "must be a redis:// or rediss:// URL",
                    ));
                }
                if key_prefix.len() > 128 || key_prefix.chars().any(|c| c.is_control()) {
                    return Err(invalid(
                        format!("{field}.key_prefix"),
                        "at most 128 characters, no control characters",
                    ));
                }
                if timeout.is_zero() || *timeout > Duration::from_secs(10) {
                    return Err(invalid(
                        format!("{field}.timeout"),
                        "must be between 1ms and 10s",
                    ));
                }
            }
        }
        Ok(())
    }
}

fn default_proof_algorithms() -> Vec<Algorithm> {
    vec![
        Algorithm::ES256,
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::EdDSA,
    ]
}

fn default_max_age() -> Duration {
    Duration::from_secs(60)
}

fn default_proof_leeway() -> Duration {
    Duration::from_secs(5)
}

fn default_nonce_lifetime() -> Duration {
    Duration::from_secs(300)
}

fn default_memory_entries() -> u64 {
    1_000_000
}

fn default_prefix() -> String {
    "jwt-authz:dpop:".to_owned()
}

fn default_store_timeout() -> Duration {
    Duration::from_millis(250)
}
