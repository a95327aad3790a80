//! `listen`, `http` (the HTTP front ends) and `log`: where jwt-authz serves and how it logs.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::Deserialize;

use super::{ConfigError, invalid};

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
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
    pub(super) fn apart_from(&self, in_proxy: &str) -> Result<(), ConfigError> {
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
    /// How the decision log line (debug level) names the token's `sub`, which is personal
    /// data: a keyed fingerprint (default), the raw value, or not at all.
    #[serde(default)]
    pub subject: SubjectLog,
    /// At least 32 random bytes keying the `sub` fingerprints: the same file on every
    /// replica makes one user's fingerprint the same everywhere. Unset: a random key per
    /// process (fingerprints then match only within one run).
    #[serde(default)]
    pub subject_key_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectLog {
    /// `hmac:` and 16 base64url characters of HMAC-SHA256(key, sub).
    #[default]
    Fingerprint,
    Raw,
    Off,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
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
