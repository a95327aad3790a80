//! The configuration file: its YAML shape, defaults, and the validation that runs once at
//! start-up (and on every reload) so that a bad file is rejected with the offending field named.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

mod binding;
mod status;
mod telemetry;
#[cfg(test)]
mod tests;

pub use binding::{
    CertificateBinding, DpopConfig, DpopMode, DpopProviderConfig, NonceConfig, ReplayStoreConfig,
};
pub use status::{StatusListConfig, StatusListMode};
pub use telemetry::TracingConfig;

// The decision's part of the file: shared with the in-proxy filter.
pub use jwt_authz_core::config::{
    Access, ClaimHeader, ClaimRequirement, DecisionConfig, DecisionProvider, EscapedSlashes,
    IdentityConfig, InProxyConfig, Invalid, MatchConfig, Mode, PathConfig, PathMatch,
    PathParameters, RuleConfig, TokenSource, validate_header_name,
};

/// Everything jwt-authz needs to run, as read from `--config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// `shadow`: would-be denials are allowed, counted and logged (rules and providers may
    /// say otherwise; the most specific applies). For watching a rollout on real traffic.
    #[serde(default)]
    pub mode: Mode,
    /// The `realm` named in `WWW-Authenticate` challenges.
    #[serde(default = "jwt_authz_core::config::default_realm")]
    pub realm: String,
    /// Tokens longer than this are denied before any parsing.
    #[serde(default = "jwt_authz_core::config::default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// How request paths are read before rules match them.
    #[serde(default)]
    pub paths: PathConfig,
    /// Bounds on the work one check, or a flood of them, can cause.
    #[serde(default)]
    pub limits: LimitsConfig,
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub token_cache: TokenCacheConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Route rules, first match wins; a request that matches none must carry a valid token.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// The HTTP authorization endpoints, served when `listen.http` is set.
    #[serde(default)]
    pub http: HttpConfig,
    /// What every DPoP provider shares: the replay store, the public scheme.
    #[serde(default)]
    pub dpop: DpopConfig,
    /// A directory where every good JWKS is kept (public keys only), so that a restart
    /// while an identity provider is down starts from its last keys. Unset: none kept.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// A snapshot older than this is not used (and keys are dropped at `max_stale` after
    /// their fetch, snapshot or not).
    #[serde(default = "default_max_snapshot_age", with = "humantime_serde")]
    pub max_snapshot_age: Duration,
    /// OpenTelemetry spans for checks and fetches (off unless `tracing.otlp_endpoint`).
    #[serde(default)]
    pub tracing: TracingConfig,
    /// The in-proxy mode (the Wasm filter in Envoy): when set, `listen.http` also answers
    /// the filter's callouts under `in_proxy.prefix`.
    #[serde(default)]
    pub in_proxy: Option<InProxyConfig>,
}

fn default_max_snapshot_age() -> Duration {
    Duration::from_secs(4 * 3600)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    #[serde(default = "default_grpc_addr")]
    pub grpc: SocketAddr,
    #[serde(default = "default_admin_addr")]
    pub admin: SocketAddr,
    /// The HTTP authorization port ([`HttpConfig`]): off unless set.
    #[serde(default)]
    pub http: Option<SocketAddr>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            grpc: default_grpc_addr(),
            admin: default_admin_addr(),
            http: None,
        }
    }
}

/// What the HTTP authorization port (`listen.http`) answers. Both kinds of endpoint decide
/// with the same runtime, rules and metrics as the gRPC port.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Envoy / Istio HTTP ext_authz (`http_service.path_prefix`, `envoyExtAuthzHttp.pathPrefix`):
    /// a request under this prefix *is* the request to decide on (its method, its path after
    /// the prefix, its headers). `null` turns it off.
    #[serde(default = "default_ext_authz_prefix")]
    pub ext_authz_prefix: Option<String>,
    /// Forward-auth endpoints (nginx `auth_request`, Traefik `ForwardAuth`, Caddy
    /// `forward_auth`): the request to decide on is described by headers the proxy sets.
    #[serde(default = "default_forward_auth")]
    pub forward_auth: Vec<ForwardAuthEndpoint>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            ext_authz_prefix: default_ext_authz_prefix(),
            forward_auth: default_forward_auth(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthEndpoint {
    /// Exact path of the endpoint (its query is ignored).
    pub path: String,
    /// Which headers carry the original request. Only these are read; the proxy must
    /// overwrite them on every request (see the README's per-proxy table).
    pub headers: ForwardedHeaders,
}

/// A family of headers a proxy uses to describe the original request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeaders {
    /// `X-Forwarded-Method`, `X-Forwarded-Uri`, `X-Forwarded-Host` (Traefik, Caddy).
    XForwarded,
    /// `X-Original-Method`, `X-Original-URI`, `X-Original-Host` (nginx `auth_request`).
    XOriginal,
}

impl ForwardedHeaders {
    /// The (method, URI, host) header names, lowercase.
    pub fn names(self) -> [&'static str; 3] {
        match self {
            ForwardedHeaders::XForwarded => {
                ["x-forwarded-method", "x-forwarded-uri", "x-forwarded-host"]
            }
            ForwardedHeaders::XOriginal => {
                ["x-original-method", "x-original-uri", "x-original-host"]
            }
        }
    }
}

impl HttpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let endpoint = |field: &str, path: &str| {
            if !path.starts_with('/')
                || path.len() > 256
                || path.contains(['?', '#', '%', ';'])
                || path.contains("//")
                || path.split('/').any(|s| s == "." || s == "..")
                || !path.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(invalid(
                    field,
                    format!(
                        "{path:?} must be a plain absolute path (no query, escapes, dot-segments or empty segments; at most 256 bytes)"
                    ),
                ));
            }
            Ok(())
        };
        if let Some(prefix) = &self.ext_authz_prefix {
            endpoint("http.ext_authz_prefix", prefix)?;
            if prefix == "/" || prefix.ends_with('/') {
                return Err(invalid(
                    "http.ext_authz_prefix",
                    format!(
                        "{prefix:?} must not end with '/': Envoy appends the original path, which starts with one"
                    ),
                ));
            }
        }
        let mut seen = HashSet::new();
        for (i, fa) in self.forward_auth.iter().enumerate() {
            let field = format!("http.forward_auth[{i}].path");
            endpoint(&field, &fa.path)?;
            if !seen.insert(fa.path.as_str()) {
                return Err(invalid(field, format!("duplicate endpoint {:?}", fa.path)));
            }
            // An ext_authz request's path is the client's own: a forward-auth endpoint under
            // the prefix would let a client's path pick the endpoint, and the reverse would
            // let forward-auth paths be read as original requests.
            if let Some(prefix) = &self.ext_authz_prefix
                && (under(&fa.path, prefix) || under(prefix, &fa.path))
            {
                return Err(invalid(
                    field,
                    format!(
                        "{:?} overlaps http.ext_authz_prefix {prefix:?}: the two kinds of endpoint must be apart",
                        fa.path
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl HttpConfig {
    /// The in-proxy callouts' `prefix` shares no path with the other endpoints: a client's
    /// path (which follows the ext_authz prefix) must never name a callout endpoint.
    fn apart_from(&self, in_proxy: &str) -> Result<(), ConfigError> {
        let endpoints = self
            .ext_authz_prefix
            .iter()
            .map(|p| ("http.ext_authz_prefix", p.as_str()))
            .chain(
                self.forward_auth
                    .iter()
                    .map(|f| ("http.forward_auth[].path", f.path.as_str())),
            );
        for (field, path) in endpoints {
            if under(path, in_proxy) || under(in_proxy, path) {
                return Err(invalid(
                    "in_proxy.prefix",
                    format!("{in_proxy:?} overlaps {field} {path:?}: the endpoints must be apart"),
                ));
            }
        }
        Ok(())
    }
}

/// `path` is `prefix` or inside it (segment-wise).
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `jwt_authz=debug`.
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

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

/// Bounds that keep a flood (of checks, or of tokens naming unknown keys) from piling up.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// A check whose token verification (which may wait on a key fetch) takes longer is
    /// answered 503; the fetch itself goes on in the background.
    #[serde(default = "default_check_timeout", with = "humantime_serde")]
    pub check_timeout: Duration,
    /// Checks in flight at once; more are answered 503 at once.
    #[serde(default = "default_max_concurrent_checks")]
    pub max_concurrent_checks: usize,
    /// Checks waiting on one provider's key fetch; more are answered 503 at once instead of
    /// queueing behind a slow JWKS.
    #[serde(default = "default_max_key_fetch_waiters")]
    pub max_key_fetch_waiters: usize,
    /// Threads that check signatures of tokens not in the cache (unset: one per CPU the
    /// process may run on). Cache hits never wait for them. 0: signatures are checked on
    /// the async threads (no hand-off, no flood isolation).
    #[serde(default)]
    pub verify_threads: Option<usize>,
    /// Tokens waiting for a verification thread; more are answered 503 at once
    /// (`verify_busy`), so a flood of junk tokens is shed instead of queued.
    #[serde(default = "default_max_queued_verifications")]
    pub max_queued_verifications: usize,
    /// The verification threads' nice value (0–19, default 19): under a flood that fills
    /// every CPU, checks answered from the cache are scheduled ahead of signature checks.
    #[serde(default = "default_verify_nice")]
    pub verify_nice: i32,
    /// Refused signature checks in one second from which signature checks move to the
    /// verification threads, for ten seconds after the last second that reached it: while
    /// nobody sends forged tokens, a token not in the cache is checked where it arrived
    /// (no hand-off). 0: always on the verification threads.
    #[serde(default = "default_isolate_after_refusals")]
    pub isolate_after_refusals: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            check_timeout: default_check_timeout(),
            max_concurrent_checks: default_max_concurrent_checks(),
            max_key_fetch_waiters: default_max_key_fetch_waiters(),
            verify_threads: None,
            max_queued_verifications: default_max_queued_verifications(),
            verify_nice: default_verify_nice(),
            isolate_after_refusals: default_isolate_after_refusals(),
        }
    }
}

/// At most this many verification threads and queued verifications.
pub const MAX_VERIFY_THREADS: usize = 256;
pub const MAX_QUEUED_VERIFICATIONS: usize = 1 << 20;
/// Beyond a million refused signatures a second nothing is left to protect.
pub const MAX_ISOLATE_AFTER_REFUSALS: u32 = 1_000_000;

impl LimitsConfig {
    /// The verification threads to run: `verify_threads`, or one per CPU available.
    pub fn verify_threads(&self) -> usize {
        self.verify_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCacheConfig {
    /// 0 turns the cache off.
    #[serde(default = "default_cache_entries")]
    pub max_entries: u64,
    #[serde(default = "default_cache_bytes")]
    pub max_bytes: u64,
    /// An entry lives at most this long, and never past the token's `exp`.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: default_cache_entries(),
            max_bytes: default_cache_bytes(),
            ttl: default_cache_ttl(),
        }
    }
}

/// Why a configuration was rejected. The message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a YAML document: {0}")]
    Yaml(#[from] serde_norway::Error),
    #[error("{path}: {message}")]
    Shape { path: String, message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl From<Invalid> for ConfigError {
    fn from(Invalid { field, message }: Invalid) -> Self {
        ConfigError::Invalid { field, message }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

impl Config {
    /// The providers' names in configuration order (rules name providers by them; the
    /// decision knows a provider by its index in this list).
    pub fn provider_names(&self) -> Vec<&str> {
        self.providers.iter().map(|p| p.name.as_str()).collect()
    }

    /// The decision's part of this configuration, as the in-proxy filter reads the same
    /// file: what [`DecisionConfig::digest`] is computed over on both ends.
    pub fn decision(&self) -> DecisionConfig {
        DecisionConfig {
            mode: self.mode,
            realm: self.realm.clone(),
            max_token_bytes: self.max_token_bytes,
            paths: self.paths.clone(),
            identity: self.identity.clone(),
            rules: self.rules.clone(),
            providers: self
                .providers
                .iter()
                .map(|p| DecisionProvider {
                    name: p.name.clone(),
                    issuer: p.issuer.clone(),
                    audiences: p.audiences.clone(),
                    token_sources: p.token_sources.clone(),
                    mode: p.mode,
                })
                .collect(),
            in_proxy: self.in_proxy.clone(),
        }
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Parses and validates a configuration document.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        // Through a JSON value: YAML's own enum form is tags (`!uri`), while a JSON value takes
        // the `{uri: ...}` maps and plain strings the documented format uses.
        let value: serde_json::Value = serde_norway::from_str(text)?;
        let config: Config =
            serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Shape {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // The decision's part (realm, sizes, identity headers, rules): the checks the
        // in-proxy filter runs on the same document.
        let provider_names = self.provider_names();
        jwt_authz_core::config::validate_decision(&jwt_authz_core::config::Decision {
            realm: &self.realm,
            max_token_bytes: self.max_token_bytes,
            paths: &self.paths,
            identity: &self.identity,
            rules: &self.rules,
            provider_names: &provider_names,
        })?;
        if let Some(in_proxy) = &self.in_proxy {
            in_proxy.validate()?;
            self.http.apart_from(&in_proxy.prefix)?;
        }
        for (field, zero) in [
            ("limits.check_timeout", self.limits.check_timeout.is_zero()),
            (
                "limits.max_concurrent_checks",
                self.limits.max_concurrent_checks == 0,
            ),
            (
                "limits.max_key_fetch_waiters",
                self.limits.max_key_fetch_waiters == 0,
            ),
            (
                "limits.max_queued_verifications",
                self.limits.max_queued_verifications == 0,
            ),
        ] {
            if zero {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        if self.limits.verify_threads() > MAX_VERIFY_THREADS {
            return Err(invalid(
                "limits.verify_threads",
                format!("must be at most {MAX_VERIFY_THREADS}"),
            ));
        }
        if self.limits.max_queued_verifications > MAX_QUEUED_VERIFICATIONS {
            return Err(invalid(
                "limits.max_queued_verifications",
                format!("must be at most {MAX_QUEUED_VERIFICATIONS}"),
            ));
        }
        if !(0..=19).contains(&self.limits.verify_nice) {
            return Err(invalid("limits.verify_nice", "must be between 0 and 19"));
        }
        if self.limits.isolate_after_refusals > MAX_ISOLATE_AFTER_REFUSALS {
            return Err(invalid(
                "limits.isolate_after_refusals",
                format!("must be at most {MAX_ISOLATE_AFTER_REFUSALS} (0: always isolated)"),
            ));
        }
        if self.providers.is_empty() {
            return Err(invalid("providers", "at least one provider is required"));
        }
        let mut names = HashSet::new();
        let mut issuers = HashSet::new();
        for (i, provider) in self.providers.iter().enumerate() {
            let field = format!("providers[{i}]");
            provider.validate(&field)?;
            if !names.insert(provider.name.as_str()) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("duplicate provider name {:?}", provider.name),
                ));
            }
            if !issuers.insert(provider.issuer.as_str()) {
                return Err(invalid(
                    format!("{field}.issuer"),
                    format!("duplicate issuer {:?}", provider.issuer),
                ));
            }
        }
        if self.max_snapshot_age.is_zero() {
            return Err(invalid("max_snapshot_age", "must be greater than 0"));
        }
        if self
            .state_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(invalid("state_dir", "must not be empty"));
        }
        self.token_cache.validate()?;
        self.tracing.validate()?;
        self.http.validate()?;
        self.dpop.validate()?;
        Ok(())
    }
}

impl ProviderConfig {
    fn validate(&self, field: &str) -> Result<(), ConfigError> {
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
        self.jwks_cache.validate(&format!("{field}.jwks_cache"))
    }

    /// Keys come over https, from loopback, or with `allow_insecure_http` said explicitly.
    fn check_transport(&self, field: &str, url: &str) -> Result<(), ConfigError> {
        if self.allows_url(url) {
            return Ok(());
        }
        Err(invalid(
            field,
            format!(
                "{url:?}: keys must come over https (plain http is allowed to loopback, or \
                 with allow_insecure_http: true)"
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
        if self.token_types.is_empty() {
            return true;
        }
        let Some(typ) = typ.and_then(media_type) else {
            return false;
        };
        self.token_types
            .iter()
            .filter_map(|t| media_type(t))
            .any(|accepted| accepted.eq_ignore_ascii_case(typ))
    }
}

/// A JOSE `typ` value without its optional `application/` prefix (RFC 7515 §4.1.9: a value
/// without `/` means `application/<value>`; RFC 8725 §3.11). `None` for a value that is empty,
/// names another top-level type, or holds spaces or control characters.
pub fn media_type(typ: &str) -> Option<&str> {
    let subtype = match typ.split_once('/') {
        Some((top, sub)) if top.eq_ignore_ascii_case("application") => sub,
        Some(_) => return None,
        None => typ,
    };
    (!subtype.is_empty()
        && subtype
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'"' | b'\\')))
    .then_some(subtype)
}

impl JwksHttpConfig {
    /// The CA file must hold certificates and the token file must be readable now, so a typo
    /// fails at start-up; the token is re-read at every fetch.
    fn validate(&self, field: &str, provider: &ProviderConfig) -> Result<(), ConfigError> {
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
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_BEARER_TOKEN_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_BEARER_TOKEN_BYTES {
        return Err(format!(
            "{} is larger than {MAX_BEARER_TOKEN_BYTES} bytes",
            path.display()
        ));
    }
    let token = text.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{} must hold one token of printable characters",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

impl JwksCacheConfig {
    fn validate(&self, field: &str) -> Result<(), ConfigError> {
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

impl TokenCacheConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_entries > 0 && self.max_bytes == 0 {
            return Err(invalid(
                "token_cache.max_bytes",
                "must be greater than 0 when the cache is on",
            ));
        }
        if self.max_entries > 0 && self.ttl.is_zero() {
            return Err(invalid(
                "token_cache.ttl",
                "must be greater than 0 when the cache is on",
            ));
        }
        Ok(())
    }
}

/// A loopback IP address or `localhost` (RFC 6761 §6.3: never resolved off the host).
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

fn validate_http_url(field: &str, url: &str) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| invalid(field, format!("invalid URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(invalid(
            field,
            format!("{url:?} must be an http or https URL"),
        ));
    }
    Ok(())
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn default_grpc_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9001))
}

/// Loopback: metrics and readiness say which providers and rules exist; expose them on
/// purpose (the Kubernetes manifests set 0.0.0.0 for the kubelet and Prometheus).
fn default_admin_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9002))
}

fn default_ext_authz_prefix() -> Option<String> {
    Some("/ext-authz".to_owned())
}

fn default_forward_auth() -> Vec<ForwardAuthEndpoint> {
    vec![
        ForwardAuthEndpoint {
            path: "/forward-auth".to_owned(),
            headers: ForwardedHeaders::XForwarded,
        },
        ForwardAuthEndpoint {
            path: "/auth-request".to_owned(),
            headers: ForwardedHeaders::XOriginal,
        },
    ]
}

fn default_check_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_max_queued_verifications() -> usize {
    1024
}

fn default_verify_nice() -> i32 {
    19
}

fn default_isolate_after_refusals() -> u32 {
    32
}

fn default_max_concurrent_checks() -> usize {
    4096
}

fn default_max_key_fetch_waiters() -> usize {
    64
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

fn default_cache_entries() -> u64 {
    100_000
}

fn default_cache_bytes() -> u64 {
    16 * 1024 * 1024
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(5 * 60)
}
