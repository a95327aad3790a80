//! The configuration file: its YAML shape, defaults, and the validation that runs once at
//! start-up (and on every reload) so that a bad file is rejected with the offending field named.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod binding;
mod introspection;
mod limits;
mod listen;
mod provider;
mod status;
mod telemetry;
#[cfg(test)]
mod tests;

pub use binding::{
    CertificateBinding, DpopConfig, DpopMode, DpopProviderConfig, MAX_PROOF_AGE, MAX_PROOF_LEEWAY,
    NonceConfig, ReplayStoreConfig,
};
pub use introspection::{
    ClientAuth, IntrospectionCacheConfig, IntrospectionConfig, RateLimitConfig, read_secret,
    signing_key,
};
pub use limits::*;
pub use listen::*;
pub use provider::*;
pub use status::{StatusListConfig, StatusListMode};
pub use telemetry::{OtlpTls, RequestContext, TracingConfig};

// The decision's part of the file: shared with the in-proxy filter.
pub use jwt_authz_core::config::{
    Access, ClaimHeader, ClaimRequirement, DecisionConfig, DecisionProvider, EscapedSlashes,
    IdentityConfig, InProxyConfig, Invalid, MatchConfig, Mode, PathConfig, PathMatch,
    PathParameters, ResourceConfig, RuleConfig, TokenSource, validate_header_name,
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
    /// OAuth protected resources (RFC 9728): their metadata, served on `listen.http`, and
    /// named in denials; their rules take tokens for them only.
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
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
    /// At least 32 random bytes: every file in `state_dir` is then sealed with an
    /// HMAC-SHA256 under it, and only sealed files are read (for a `state_dir` jwt-authz's
    /// user cannot have to itself, such as a shared volume). Read at start and on reload.
    #[serde(default)]
    pub state_key_file: Option<PathBuf>,
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
    /// What a resource's metadata says of its tokens' binding must be true of every provider
    /// it names as an authorization server (or of every provider, when it names none), and
    /// no HTTP endpoint may lie under the metadata's well-known path.
    fn validate_resources(&self) -> Result<(), ConfigError> {
        use jwt_authz_core::config::resource::WELL_KNOWN;
        let endpoints = self
            .http
            .ext_authz_prefix
            .iter()
            .map(|p| ("http.ext_authz_prefix", p.as_str()))
            .chain(
                self.http
                    .forward_auth
                    .iter()
                    .map(|f| ("http.forward_auth[].path", f.path.as_str())),
            )
            .chain(
                self.in_proxy
                    .iter()
                    .map(|p| ("in_proxy.prefix", p.prefix.as_str())),
            );
        // Forward-auth paths are exact; the two prefixes take every path under them, so
        // one that holds the well-known path would be asked what the document answers.
        for (field, path) in endpoints {
            let prefix = field != "http.forward_auth[].path";
            let holds = prefix
                && WELL_KNOWN
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if !self.resources.is_empty() && (path.starts_with(WELL_KNOWN) || holds) {
                return Err(invalid(
                    field,
                    format!("{path:?} overlaps {WELL_KNOWN}, where resources' metadata is served"),
                ));
            }
        }
        for (i, resource) in self.resources.iter().enumerate() {
            // Every provider whose tokens its routes may take: those its rules name, every
            // one when a rule names none (and for the default resource, whose unmatched
            // requests take any).
            let rules: Vec<&RuleConfig> = self
                .rules
                .iter()
                .filter(|r| match &r.resource {
                    Some(name) => *name == resource.name,
                    None => resource.default,
                })
                .collect();
            let every =
                resource.default || rules.is_empty() || rules.iter().any(|r| r.providers.is_none());
            let accepted = |p: &&ProviderConfig| {
                every
                    || rules
                        .iter()
                        .any(|r| r.providers.iter().flatten().any(|name| *name == p.name))
            };
            for provider in self.providers.iter().filter(accepted) {
                if resource.dpop_bound_access_tokens_required
                    && provider.dpop.mode != DpopMode::Required
                {
                    return Err(invalid(
                        format!("resources[{i}].dpop_bound_access_tokens_required"),
                        format!(
                            "provider {:?} takes tokens without DPoP (set its dpop.mode: required)",
                            provider.name
                        ),
                    ));
                }
                if resource.tls_client_certificate_bound_access_tokens
                    && provider.certificate_binding != CertificateBinding::Required
                {
                    return Err(invalid(
                        format!("resources[{i}].tls_client_certificate_bound_access_tokens"),
                        format!(
                            "provider {:?} takes tokens not bound to a certificate (set its certificate_binding: required)",
                            provider.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

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
            resources: self.resources.clone(),
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
        let token_sources: Vec<&[TokenSource]> = self
            .providers
            .iter()
            .map(|p| p.token_sources.as_slice())
            .collect();
        let issuers: Vec<&str> = self.providers.iter().map(|p| p.issuer.as_str()).collect();
        jwt_authz_core::config::validate_decision(&jwt_authz_core::config::Decision {
            realm: &self.realm,
            max_token_bytes: self.max_token_bytes,
            paths: &self.paths,
            identity: &self.identity,
            rules: &self.rules,
            resources: &self.resources,
            provider_names: &provider_names,
            provider_issuers: &issuers,
            token_sources: &token_sources,
        })?;
        self.validate_resources()?;
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
        let mut trust_domains = HashSet::new();
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
            if let Some(spiffe) = &provider.spiffe
                && !trust_domains.insert(spiffe.trust_domain.as_str())
            {
                return Err(invalid(
                    format!("{field}.spiffe.trust_domain"),
                    format!("duplicate trust domain {:?}", spiffe.trust_domain),
                ));
            }
            if let Some(introspection) = &provider.introspection
                && introspection.timeout >= self.limits.check_timeout
            {
                return Err(invalid(
                    format!("{field}.introspection.timeout"),
                    "must be shorter than limits.check_timeout (the check would time out first)",
                ));
            }
            // An opaque token names no issuer: the place it came in chooses the one endpoint
            // it is sent to, so no two introspecting providers may share a place.
            if provider.introspection.is_some()
                && let Some((j, source)) = self.providers[..i]
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.introspection.is_some())
                    .find_map(|(j, p)| {
                        p.token_sources
                            .iter()
                            .find(|s| provider.token_sources.contains(s))
                            .map(|s| (j, s))
                    })
            {
                return Err(invalid(
                    format!("{field}.token_sources"),
                    format!(
                        "providers[{j}] also introspects opaque tokens from {source:?}: an opaque \
                         token names no issuer, so each place may have one introspecting provider"
                    ),
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
        if self.state_key_file.is_some() && self.state_dir.is_none() {
            return Err(invalid("state_key_file", "is set without state_dir"));
        }
        self.token_cache.validate()?;
        self.tracing.validate()?;
        self.http.validate()?;
        self.dpop.validate()?;
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
