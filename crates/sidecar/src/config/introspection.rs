//! `providers[].introspection`: opaque access tokens checked at the provider's RFC 7662
//! endpoint, and the validation of it.
//!
//! Design: introspection is a way a provider takes tokens, not a provider of its own. A
//! provider with an `introspection` block still verifies the JWTs it issues locally with its
//! keys (no round trip, and a JWT is never sent anywhere), and sends the endpoint only the
//! tokens that are not JWTs. One identity provider that hands out both kinds (most do, by
//! client or by request) is one provider here: one `issuer`, one set of audiences, rules
//! and modes. Its keys also verify RFC 9701 signed introspection answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::{ConfigError, ProviderConfig, invalid, read_small_file, validate_http_url};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The introspection endpoint (RFC 7662 §2); absent: the `introspection_endpoint` of
    /// `<issuer>/.well-known/openid-configuration` (RFC 8414 §2), which must then be of the
    /// issuer's origin.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// This sidecar's client identifier at the provider (RFC 7662 §2.1 requires the caller
    /// to authenticate).
    pub client_id: String,
    /// How the client authenticates (RFC 6749 §2.3.1, RFC 7523 §2.2).
    pub client_auth: ClientAuth,
    /// One call's limit, connection included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// A larger answer is refused (401 `invalid_token`, never held whole).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub cache: IntrospectionCacheConfig,
    /// Calls to the endpoint per second (a token bucket of `burst`) for tokens not seen
    /// active lately; tokens seen active within the hour have a bucket of the same size of
    /// their own (then this one), so a flood of made-up tokens cannot starve them. Beyond
    /// it, a check that would call answers 503.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Calls in flight at once; beyond it, a check that would call answers 503.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Ask for, and accept only, JWT-secured answers (RFC 9701), verified with this
    /// provider's keys.
    #[serde(default)]
    pub jwt_response: bool,
    /// A PEM bundle of CA certificates: the only roots trusted for the endpoint (and its
    /// discovery).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Client authentication at the introspection endpoint. Secrets and keys are read from
/// files (never written in the configuration itself), at start and at each reload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded client id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic { secret_file: PathBuf },
    /// `client_id` and `client_secret` in the request body (RFC 6749 §2.3.1).
    ClientSecretPost { secret_file: PathBuf },
    /// A JWT signed with this client's private key (RFC 7523 §2.2; OpenID Connect Core §9):
    /// `key_file` a PKCS#8 PEM key of `algorithm`'s kind, `kid` named in its header, `aud`
    /// the endpoint URL unless `audience` names another (some servers want their issuer).
    PrivateKeyJwt {
        key_file: PathBuf,
        #[serde(default = "default_assertion_algorithm")]
        algorithm: Algorithm,
        #[serde(default)]
        kid: Option<String>,
        #[serde(default)]
        audience: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionCacheConfig {
    /// Answers held at once (0: none held, every check calls the endpoint).
    #[serde(default = "default_cache_entries")]
    pub max_entries: u64,
    /// And the bytes they may hold (an answer's claims are weighed, each at least
    /// `max_bytes / max_entries`).
    #[serde(default = "default_cache_bytes")]
    pub max_bytes: u64,
    /// How long an `active` answer is used, at most (and never past the token's `exp`): a
    /// token revoked at the provider passes here for up to this long.
    #[serde(default = "default_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// How long an inactive answer is used: repeated calls with a dead token cost no round
    /// trip (and a token that becomes active, which introspection never promises, waits this
    /// long).
    #[serde(default = "default_inactive_ttl", with = "humantime_serde")]
    pub inactive_ttl: Duration,
}

impl Default for IntrospectionCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: default_cache_entries(),
            max_bytes: default_cache_bytes(),
            max_ttl: default_max_ttl(),
            inactive_ttl: default_inactive_ttl(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default = "default_per_second")]
    pub per_second: f64,
    #[serde(default = "default_burst")]
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: default_per_second(),
            burst: default_burst(),
        }
    }
}

/// The largest secret or key file read.
pub const MAX_CREDENTIAL_BYTES: u64 = 16 * 1024;

/// The longest `timeout`: a check waits on the call, and checks have their own bound.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest `cache.max_ttl`: how long a revoked token may still pass.
const MAX_CACHE_TTL: Duration = Duration::from_secs(60 * 60);

/// The largest answer `max_body_bytes` may allow.
const MAX_BODY_LIMIT: usize = 1024 * 1024;

impl IntrospectionConfig {
    pub(super) fn validate(
        &self,
        field: &str,
        provider: &ProviderConfig,
    ) -> Result<(), ConfigError> {
        match &self.endpoint {
            Some(url) => {
                let f = format!("{field}.endpoint");
                validate_http_url(&f, url)?;
                provider.check_url_transport(&f, url, "the introspection endpoint")?;
            }
            None => {
                validate_http_url(&format!("{field}.endpoint"), &provider.issuer).map_err(
                    |_| {
                        invalid(
                            format!("{field}.endpoint"),
                            "without an endpoint, discovery needs an http(s) issuer URL",
                        )
                    },
                )?;
                provider.check_url_transport(
                    &format!("{field}.endpoint"),
                    &provider.issuer,
                    "the introspection endpoint",
                )?;
            }
        }
        if self.client_id.is_empty() || self.client_id.chars().any(char::is_control) {
            return Err(invalid(
                format!("{field}.client_id"),
                "must be non-empty, without control characters",
            ));
        }
        self.client_auth.validate(&format!("{field}.client_auth"))?;
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(invalid(
                format!("{field}.timeout"),
                "must be more than 0 and at most 30s",
            ));
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_BODY_LIMIT {
            return Err(invalid(
                format!("{field}.max_body_bytes"),
                format!("must be between 1 and {MAX_BODY_LIMIT}"),
            ));
        }
        let cache = &self.cache;
        if cache.max_ttl.is_zero() || cache.max_ttl > MAX_CACHE_TTL {
            return Err(invalid(
                format!("{field}.cache.max_ttl"),
                "must be more than 0 and at most 1h: a token revoked at the provider passes for \
                 up to this long (cache.max_entries: 0 holds nothing)",
            ));
        }
        if cache.max_entries > 0 && cache.max_bytes < cache.max_entries {
            return Err(invalid(
                format!("{field}.cache.max_bytes"),
                "must be at least max_entries",
            ));
        }
        if cache.inactive_ttl > cache.max_ttl {
            return Err(invalid(
                format!("{field}.cache.inactive_ttl"),
                "must not be longer than max_ttl",
            ));
        }
        if !(self.rate_limit.per_second > 0.0 && self.rate_limit.per_second.is_finite()) {
            return Err(invalid(
                format!("{field}.rate_limit.per_second"),
                "must be a number greater than 0",
            ));
        }
        if self.rate_limit.burst == 0 {
            return Err(invalid(
                format!("{field}.rate_limit.burst"),
                "must be greater than 0",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(invalid(
                format!("{field}.max_in_flight"),
                "must be greater than 0",
            ));
        }
        if let Some(path) = &self.ca_file {
            ca_certificates(path).map_err(|m| invalid(format!("{field}.ca_file"), m))?;
        }
        Ok(())
    }

    /// The certificates of `ca_file` (none when it is not set).
    pub fn ca_certificates(&self) -> Result<Vec<reqwest::Certificate>, String> {
        match &self.ca_file {
            Some(path) => ca_certificates(path),
            None => Ok(Vec::new()),
        }
    }
}

fn ca_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

impl ClientAuth {
    /// The secret or key must be readable now (and the key usable), so a typo fails at
    /// start; the file is read again at every call.
    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match self {
            ClientAuth::ClientSecretBasic { secret_file }
            | ClientAuth::ClientSecretPost { secret_file } => {
                read_secret(secret_file).map_err(|m| invalid(format!("{field}.secret_file"), m))?;
            }
            ClientAuth::PrivateKeyJwt {
                key_file,
                algorithm,
                kid,
                audience,
            } => {
                if audience.as_deref().is_some_and(str::is_empty) {
                    return Err(invalid(format!("{field}.audience"), "must not be empty"));
                }
                if !matches!(
                    algorithm,
                    Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256
                ) {
                    return Err(invalid(
                        format!("{field}.algorithm"),
                        format!("{algorithm:?}: one of RS256, PS256, ES256"),
                    ));
                }
                if kid
                    .as_deref()
                    .is_some_and(|k| k.is_empty() || k.chars().any(char::is_control))
                {
                    return Err(invalid(format!("{field}.kid"), "must not be empty"));
                }
                signing_key(key_file, *algorithm)
                    .map_err(|m| invalid(format!("{field}.key_file"), m))?;
            }
        }
        Ok(())
    }
}

/// A client secret file: one secret of RFC 6749's VSCHARs (printable ASCII, spaces
/// included; Appendix A.2), surrounding whitespace trimmed, at most
/// [`MAX_CREDENTIAL_BYTES`]. Errors never quote it.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let text = read_small_file(path, MAX_CREDENTIAL_BYTES)?;
    let secret = text.trim();
    if secret.is_empty() || !secret.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(format!(
            "{} must hold one secret of printable ASCII characters",
            path.display()
        ));
    }
    Ok(secret.to_owned())
}

/// The private key of a `private_key_jwt` client: a PKCS#8 PEM key for `algorithm` (RSA for
/// RS256 and PS256, P-256 for ES256). Errors never quote it.
pub fn signing_key(path: &Path, algorithm: Algorithm) -> Result<jsonwebtoken::EncodingKey, String> {
    let pem = read_small_file(path, MAX_CREDENTIAL_BYTES)?;
    let key = match algorithm {
        Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .map_err(|_| {
        format!(
            "{} does not hold a PEM private key for {algorithm:?}",
            path.display()
        )
    })?;
    // A key that reads but cannot sign (a public key, the wrong curve) fails here, not at
    // the first call.
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        &serde_json::json!({"probe": true}),
        &key,
    )
    .map_err(|_| format!("{}: the key cannot sign {algorithm:?}", path.display()))?;
    Ok(key)
}

/// Under `limits.check_timeout`'s default (2s), so that a slow endpoint is this call's
/// timeout (counted as such), not the whole check's.
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_cache_bytes() -> u64 {
    16 * 1024 * 1024
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

fn default_max_in_flight() -> usize {
    64
}

fn default_assertion_algorithm() -> Algorithm {
    Algorithm::RS256
}

fn default_cache_entries() -> u64 {
    100_000
}

fn default_max_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_inactive_ttl() -> Duration {
    Duration::from_secs(10)
}

fn default_per_second() -> f64 {
    100.0
}

fn default_burst() -> u32 {
    200
}
