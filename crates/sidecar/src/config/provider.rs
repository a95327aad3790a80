//! `providers[]`: each token issuer, where its keys come from and how they are cached, and
//! the validation of each.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::{
    CertificateBinding, ConfigError, DpopProviderConfig, IntrospectionConfig, Mode,
    StatusListConfig, TokenSource, invalid, is_loopback, validate_header_name, validate_http_url,
};

/// One trusted token issuer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    /// Must equal the token's `iss` exactly; it is also how a token finds its provider.
    pub issuer: String,
    /// The token's `aud` must contain at least one of these.
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Tokens without `exp` never expire; accepting them has to be asked for.
    #[serde(default = "default_true")]
    pub require_exp: bool,
    /// Claims that must be present (any value) in every accepted token.
    #[serde(default)]
    pub required_claims: Vec<String>,
    #[serde(default = "jwt_authz_core::config::default_token_sources")]
    pub token_sources: Vec<TokenSource>,
    #[serde(default)]
    pub jwks_cache: JwksCacheConfig,
    /// How a private JWKS (and discovery) endpoint is reached.
    #[serde(default)]
    pub jwks_http: JwksHttpConfig,
    /// Overrides the top-level `mode` for this provider's tokens (a rule's `mode` wins).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Allow keys (and discovery) over plain `http://` to hosts other than loopback. Off:
    /// anyone on the path could swap the keys. For private networks that need it, such as
    /// the compose demo's backend network; a warning is logged at start.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// JOSE `typ` header values accepted (RFC 8725 §3.11; RFC 9068 access tokens are
    /// `at+jwt`), compared case-insensitively with the `application/` prefix optional. When
    /// set, a token without `typ` is refused; empty accepts any.
    #[serde(default)]
    pub token_types: Vec<String>,
    /// Refuse tokens whose `exp - iat` is longer; tokens then need both claims.
    #[serde(default, with = "humantime_serde")]
    pub max_lifetime: Option<Duration>,
    /// DPoP-bound tokens (RFC 9449): off, optional or required.
    #[serde(default)]
    pub dpop: DpopProviderConfig,
    /// Certificate-bound tokens (RFC 8705 §3): whether tokens without a binding pass.
    #[serde(default)]
    pub certificate_binding: CertificateBinding,
    /// Revocation by Token Status List: whether tokens' `status` references are checked.
    #[serde(default)]
    pub status_list: StatusListConfig,
    /// Opaque tokens (any token that is not a JWS compact serialization) checked at this
    /// provider's RFC 7662 introspection endpoint; its JWTs are still verified locally.
    #[serde(default)]
    pub introspection: Option<IntrospectionConfig>,
    /// The provider issues JWT-SVIDs of this SPIFFE trust domain: `sub` must be a SPIFFE ID
    /// in it (JWT-SVID §3.1).
    #[serde(default)]
    pub spiffe: Option<SpiffeConfig>,
}

/// `providers[].spiffe`: the trust domain whose JWT-SVIDs the provider's keys (the trust
/// bundle's `jwt-svid` keys) sign.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpiffeConfig {
    pub trust_domain: String,
}

/// TLS trust and credentials for fetching keys from a private endpoint, such as a Kubernetes
/// API server's service-account JWKS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksHttpConfig {
    /// A PEM bundle of CA certificates: the only roots trusted for this provider's fetches.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A file holding a bearer token sent with each fetch; read anew every time, so a
    /// projected token that the kubelet rotates keeps working. Only sent over https.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
}

/// Where a provider's public keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JwksSource {
    /// A JWKS document over HTTP(S).
    Uri(String),
    /// `jwks_uri` read from `<issuer>/.well-known/openid-configuration`.
    Discovery,
    /// A JWKS document on local disk, re-read on the refresh schedule.
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksCacheConfig {
    /// Lower bound for the key set's lifetime, whatever `Cache-Control` says.
    #[serde(default = "default_min_ttl", with = "humantime_serde")]
    pub min_ttl: Duration,
    /// Upper bound for the key set's lifetime.
    #[serde(default = "default_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// At most one refetch per this interval is triggered by tokens with an unknown `kid`.
    #[serde(default = "default_unknown_kid_interval", with = "humantime_serde")]
    pub unknown_kid_interval: Duration,
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
    #[serde(default = "default_max_jwks_bytes")]
    pub max_body_bytes: usize,
    /// The longest wait between retries after failed fetches.
    #[serde(default = "default_max_retry_interval", with = "humantime_serde")]
    pub max_retry_interval: Duration,
    /// Keys are trusted at most this long after the last successful fetch. When refreshes
    /// keep failing past it, the keys are dropped: the provider's requests answer 503 and
    /// `/readyz` says why, rather than a removed key staying valid for whoever can block
    /// the route to the identity provider.
    #[serde(default = "default_max_stale", with = "humantime_serde")]
    pub max_stale: Duration,
}

impl Default for JwksCacheConfig {
    fn default() -> Self {
        Self {
            min_ttl: default_min_ttl(),
            max_ttl: default_max_ttl(),
            unknown_kid_interval: default_unknown_kid_interval(),
            fetch_timeout: default_fetch_timeout(),
            max_body_bytes: default_max_jwks_bytes(),
            max_retry_interval: default_max_retry_interval(),
            max_stale: default_max_stale(),
        }
    }
}

impl ProviderConfig {
    pub(super) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(invalid(format!("{field}.name"), "must not be empty"));
        }
        if self.issuer.is_empty() {
            return Err(invalid(format!("{field}.issuer"), "must not be empty"));
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(invalid(
                format!("{field}.audiences"),
                "at least one non-empty audience is required",
            ));
        }
        match &self.jwks {
            JwksSource::Uri(uri) => {
                validate_http_url(&format!("{field}.jwks.uri"), uri)?;
                self.check_transport(&format!("{field}.jwks.uri"), uri)?;
            }
            JwksSource::Discovery => {
                validate_http_url(&format!("{field}.issuer"), &self.issuer).map_err(|_| {
                    invalid(
                        format!("{field}.issuer"),
                        "jwks: discovery needs an http(s) issuer URL",
                    )
                })?;
                self.check_transport(&format!("{field}.issuer"), &self.issuer)?;
            }
            JwksSource::File(path) => {
                if path.as_os_str().is_empty() {
                    return Err(invalid(format!("{field}.jwks.file"), "must not be empty"));
                }
            }
        }
        if self.algorithms.is_empty() {
            return Err(invalid(
                format!("{field}.algorithms"),
                "at least one algorithm is required",
            ));
        }
        for (i, alg) in self.algorithms.iter().enumerate() {
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(invalid(
                    format!("{field}.algorithms[{i}]"),
                    format!("{alg:?} is not allowed: shared-secret algorithms are never accepted"),
                ));
            }
        }
        if self.token_sources.is_empty() {
            return Err(invalid(
                format!("{field}.token_sources"),
                "at least one token source is required",
            ));
        }
        for (i, source) in self.token_sources.iter().enumerate() {
            let f = format!("{field}.token_sources[{i}]");
            match source {
                TokenSource::Bearer => {}
                TokenSource::Header { name, .. } => validate_header_name(&f, name)?,
                TokenSource::Cookie(name) | TokenSource::Query(name) => {
                    if name.is_empty() || name.contains([';', '=', '&', ' ']) {
                        return Err(invalid(f, format!("invalid name {name:?}")));
                    }
                }
            }
        }
        for (i, claim) in self.required_claims.iter().enumerate() {
            if claim.is_empty() {
                return Err(invalid(
                    format!("{field}.required_claims[{i}]"),
                    "must not be empty",
                ));
            }
        }
        for (i, typ) in self.token_types.iter().enumerate() {
            if media_type(typ).is_none() {
                return Err(invalid(
                    format!("{field}.token_types[{i}]"),
                    format!("{typ:?} is not a media type such as at+jwt or application/jwt"),
                ));
            }
        }
        if self.max_lifetime.is_some_and(|d| d.is_zero()) {
            return Err(invalid(
                format!("{field}.max_lifetime"),
                "must be greater than 0",
            ));
        }
        self.jwks_http
            .validate(&format!("{field}.jwks_http"), self)?;
        self.dpop.validate(&format!("{field}.dpop"))?;
        self.status_list
            .validate(&format!("{field}.status_list"), self)?;
        if let Some(introspection) = &self.introspection {
            introspection.validate(&format!("{field}.introspection"), self)?;
        }
        if let Some(spiffe) = &self.spiffe {
            jwt_authz_jose::spiffe::check_trust_domain(&spiffe.trust_domain).map_err(|e| {
                invalid(
                    format!("{field}.spiffe.trust_domain"),
                    format!("{:?}: {e}", spiffe.trust_domain),
                )
            })?;
            // JWT-SVID §3: `exp` is required, and so is `aud` (always, here).
            if !self.require_exp {
                return Err(invalid(
                    format!("{field}.require_exp"),
                    "a JWT-SVID must carry exp (JWT-SVID §3): require_exp cannot be false with spiffe",
                ));
            }
            if self.introspection.is_some() {
                return Err(invalid(
                    format!("{field}.spiffe"),
                    "JWT-SVIDs are JWTs: a SPIFFE provider introspects nothing",
                ));
            }
        }
        self.jwks_cache.validate(&format!("{field}.jwks_cache"))
    }

    /// Keys come over https, from loopback, or with `allow_insecure_http` said explicitly.
    fn check_transport(&self, field: &str, url: &str) -> Result<(), ConfigError> {
        self.check_url_transport(field, url, "keys")
    }

    /// `what` (keys, the introspection endpoint) is reached over https, on loopback, or with
    /// `allow_insecure_http` said explicitly.
    pub(super) fn check_url_transport(
        &self,
        field: &str,
        url: &str,
        what: &str,
    ) -> Result<(), ConfigError> {
        if self.allows_url(url) {
            return Ok(());
        }
        Err(invalid(
            field,
            format!(
                "{url:?}: {what} must be reached over https (plain http is allowed to \
                 loopback, or with allow_insecure_http: true)"
            ),
        ))
    }

    /// Whether keys (or discovery) may be fetched from `url`: https, http to a loopback
    /// host, or any http with `allow_insecure_http`.
    pub fn allows_url(&self, url: &str) -> bool {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return false;
        };
        match parsed.scheme() {
            "https" => true,
            "http" => self.allow_insecure_http || is_loopback(&parsed),
            _ => false,
        }
    }

    /// Whether a token's `typ` header is one this provider accepts.
    pub fn accepts_type(&self, typ: Option<&str>) -> bool {
        jwt_authz_jose::verify::accepts_type(&self.token_types, typ)
    }

    /// This provider's verification rules, as the shared verification steps read them
    /// (`jwt_authz_jose::verify`).
    pub fn profile(&self) -> jwt_authz_jose::verify::Profile<'_> {
        jwt_authz_jose::verify::Profile {
            issuer: &self.issuer,
            algorithms: &self.algorithms,
            leeway: self.leeway.as_secs(),
            require_exp: self.require_exp,
            required_claims: &self.required_claims,
            max_lifetime: self.max_lifetime.map(|d| d.as_secs()),
            token_types: &self.token_types,
            spiffe_trust_domain: self.spiffe.as_ref().map(|s| s.trust_domain.as_str()),
        }
    }
}

pub use jwt_authz_jose::verify::media_type;

impl JwksHttpConfig {
    /// The CA file must hold certificates and the token file must be readable now, so a typo
    /// fails at start-up; the token is re-read at every fetch.
    pub(super) fn validate(
        &self,
        field: &str,
        provider: &ProviderConfig,
    ) -> Result<(), ConfigError> {
        if self.ca_file.is_none() && self.bearer_token_file.is_none() {
            return Ok(());
        }
        let url = match &provider.jwks {
            JwksSource::Uri(uri) => uri.as_str(),
            JwksSource::Discovery => provider.issuer.as_str(),
            JwksSource::File(_) => {
                return Err(invalid(
                    field,
                    "applies to jwks: uri or discovery, not to a file",
                ));
            }
        };
        self.ca_certificates()
            .map_err(|message| invalid(format!("{field}.ca_file"), message))?;
        if let Some(path) = &self.bearer_token_file {
            if !url.starts_with("https://") {
                return Err(invalid(
                    format!("{field}.bearer_token_file"),
                    format!("the token is only sent over https, and {url:?} is not"),
                ));
            }
            read_bearer_token(path)
                .map_err(|message| invalid(format!("{field}.bearer_token_file"), message))?;
        }
        Ok(())
    }

    /// The certificates of `ca_file` (none when it is not set).
    pub fn ca_certificates(&self) -> Result<Vec<reqwest::Certificate>, String> {
        let Some(path) = &self.ca_file else {
            return Ok(Vec::new());
        };
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: holds no PEM certificate", path.display()));
        }
        Ok(certs)
    }
}

/// The largest bearer token file read (Kubernetes projected tokens are ~1 KiB).
pub const MAX_BEARER_TOKEN_BYTES: u64 = 16 * 1024;

/// Reads a bearer token file: surrounding whitespace trimmed, non-empty, at most
/// [`MAX_BEARER_TOKEN_BYTES`], and usable as a header value. Errors never quote the token.
pub fn read_bearer_token(path: &Path) -> Result<String, String> {
    let text = read_small_file(path, MAX_BEARER_TOKEN_BYTES)?;
    let token = text.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{} must hold one token of printable characters",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

/// A file of credentials read whole, refused past `limit` bytes (read through the bound, so
/// a huge or growing file is never held whole). Errors name the file, never its contents.
pub fn read_small_file(path: &Path, limit: u64) -> Result<String, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > limit {
        return Err(format!("{} is larger than {limit} bytes", path.display()));
    }
    Ok(text)
}

impl JwksCacheConfig {
    pub(super) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.min_ttl.is_zero() {
            return Err(invalid(
                format!("{field}.min_ttl"),
                "must be greater than 0",
            ));
        }
        if self.max_ttl < self.min_ttl {
            return Err(invalid(
                format!("{field}.max_ttl"),
                "must not be less than min_ttl",
            ));
        }
        if self.fetch_timeout.is_zero() {
            return Err(invalid(
                format!("{field}.fetch_timeout"),
                "must be greater than 0",
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(invalid(
                format!("{field}.max_body_bytes"),
                "must be greater than 0",
            ));
        }
        if self.max_retry_interval.is_zero() {
            return Err(invalid(
                format!("{field}.max_retry_interval"),
                "must be greater than 0",
            ));
        }
        if self.max_stale < self.max_ttl {
            return Err(invalid(
                format!("{field}.max_stale"),
                "must not be less than max_ttl (keys would be dropped while still fresh)",
            ));
        }
        Ok(())
    }
}

fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::RS256]
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

fn default_true() -> bool {
    true
}

fn default_min_ttl() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_max_ttl() -> Duration {
    Duration::from_secs(60 * 60)
}

fn default_max_stale() -> Duration {
    Duration::from_secs(4 * 60 * 60)
}

fn default_unknown_kid_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_max_jwks_bytes() -> usize {
    512 * 1024
}

fn default_max_retry_interval() -> Duration {
    Duration::from_secs(60)
}
