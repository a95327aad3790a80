//! Configuration of revocation by Token Status List (draft-ietf-oauth-status-list):
//! `providers[].status_list`.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, JwksSource, ProviderConfig, invalid};

/// Whether a provider's tokens are checked against their status list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusListMode {
    /// `status` claims are ignored.
    #[default]
    Off,
    /// A token with a `status.status_list` reference is checked; one without passes.
    Optional,
    /// Every token must carry a reference, and is checked.
    Required,
}

/// `providers[].status_list`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusListConfig {
    #[serde(default)]
    pub mode: StatusListMode,
    /// Origins (`https://host[:port]`) status lists may be fetched from. Empty (the
    /// default): the origins of the provider's `issuer` and of its `jwks.uri`. A token
    /// naming a list elsewhere is refused: its `uri` would make every replica fetch from
    /// wherever the token says.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// How long a held list is used after its last successful fetch while fetches fail;
    /// past it, requests that need the list are answered 503 (never let through unchecked).
    #[serde(default = "default_max_stale", with = "humantime_serde")]
    pub max_stale: Duration,
    /// Refresh interval for a list without `ttl`, and the bounds a list's `ttl` is held to
    /// (draft §11.5: clients bound `ttl` so that an issuer cannot make them hammer a URL).
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub default_ttl: Duration,
    #[serde(default = "default_min_ttl", with = "humantime_serde")]
    pub min_ttl: Duration,
    #[serde(default = "default_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Largest response accepted, and largest list once decompressed (a small `lst` can
    /// inflate to gigabytes).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Distinct lists held at once; a token naming one more is answered 503.
    #[serde(default = "default_max_lists")]
    pub max_lists: usize,
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

impl Default for StatusListConfig {
    fn default() -> Self {
        Self {
            mode: StatusListMode::Off,
            allowed_origins: Vec::new(),
            max_stale: default_max_stale(),
            default_ttl: default_ttl(),
            min_ttl: default_min_ttl(),
            max_ttl: default_max_ttl(),
            max_bytes: default_max_bytes(),
            max_lists: default_max_lists(),
            fetch_timeout: default_fetch_timeout(),
        }
    }
}

impl StatusListConfig {
    pub(super) fn validate(
        &self,
        field: &str,
        provider: &ProviderConfig,
    ) -> Result<(), ConfigError> {
        if self.mode == StatusListMode::Off {
            return Ok(());
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            let f = format!("{field}.allowed_origins[{i}]");
            let parsed = reqwest::Url::parse(origin)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .filter(|u| u.path() == "/" && u.query().is_none() && u.fragment().is_none())
                .filter(|u| u.username().is_empty() && u.password().is_none())
                .ok_or_else(|| {
                    invalid(
                        &f,
                        format!("{origin:?} is not an origin such as https://issuer.example"),
                    )
                })?;
            if !provider.allows_url(parsed.as_str()) {
                return Err(invalid(
                    f,
                    format!(
                        "{origin:?}: lists must come over https (plain http is allowed to \
                         loopback, or with allow_insecure_http: true)"
                    ),
                ));
            }
        }
        if self.allowed_origins.is_empty() && self.origins(provider).is_empty() {
            return Err(invalid(
                format!("{field}.allowed_origins"),
                "the issuer is not an http(s) URL: name the origins lists come from",
            ));
        }
        for (name, value) in [
            ("max_stale", self.max_stale),
            ("default_ttl", self.default_ttl),
            ("min_ttl", self.min_ttl),
            ("max_ttl", self.max_ttl),
            ("fetch_timeout", self.fetch_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(format!("{field}.{name}"), "must be greater than 0"));
            }
        }
        if self.min_ttl > self.max_ttl {
            return Err(invalid(
                format!("{field}.min_ttl"),
                "must not be greater than max_ttl",
            ));
        }
        if self.max_stale < self.min_ttl * 2 {
            return Err(invalid(
                format!("{field}.max_stale"),
                "must be at least twice min_ttl (lists are refreshed before half of max_stale)",
            ));
        }
        if self.min_ttl < Duration::from_secs(1) {
            return Err(invalid(format!("{field}.min_ttl"), "must be at least 1s"));
        }
        if self.max_bytes < 16 || self.max_bytes > 256 * 1024 * 1024 {
            return Err(invalid(
                format!("{field}.max_bytes"),
                "must be between 16 bytes and 256 MiB",
            ));
        }
        if self.max_lists == 0 {
            return Err(invalid(
                format!("{field}.max_lists"),
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    /// The origins lists may come from, as `scheme://host:port` strings (`Url::origin`'s
    /// ASCII serialization, default ports left out).
    pub fn origins(&self, provider: &ProviderConfig) -> Vec<String> {
        let named: Vec<&str> = if self.allowed_origins.is_empty() {
            let mut own = vec![provider.issuer.as_str()];
            if let JwksSource::Uri(uri) = &provider.jwks {
                own.push(uri);
            }
            own
        } else {
            self.allowed_origins.iter().map(String::as_str).collect()
        };
        let mut origins: Vec<String> = Vec::new();
        for url in named {
            let Ok(parsed) = reqwest::Url::parse(url) else {
                continue;
            };
            if !matches!(parsed.scheme(), "http" | "https") {
                continue;
            }
            let origin = parsed.origin().ascii_serialization();
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        origins
    }
}

fn default_max_stale() -> Duration {
    Duration::from_secs(600)
}

fn default_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_min_ttl() -> Duration {
    Duration::from_secs(1)
}

fn default_max_ttl() -> Duration {
    Duration::from_secs(3600)
}

fn default_max_bytes() -> usize {
    4 * 1024 * 1024
}

fn default_max_lists() -> usize {
    1000
}

fn default_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}
