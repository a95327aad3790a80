//! Configuration of OpenTelemetry tracing: the top-level `tracing` block.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, has_control, invalid};

/// `tracing`: spans for checks and fetches, exported over OTLP/gRPC. Off unless
/// `otlp_endpoint` is set; changes take effect on restart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/gRPC address: `http://host:port` (a collector or agent next to
    /// jwt-authz), or `https://host:port` with `tls`. Unset: no spans are made and no trace
    /// context is read for them.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// TLS to the collector (required by, and only with, an `https://` endpoint).
    #[serde(default)]
    pub tls: Option<OtlpTls>,
    /// A file of `name: value` lines sent as gRPC metadata with every export (a vendor's
    /// API key): read at start, never logged.
    #[serde(default)]
    pub headers_file: Option<PathBuf>,
    /// Whether the trace context of the request being decided (the client's, unless the
    /// proxy replaced it) may choose the span's parent and so its sampling: `follow`
    /// (default), or `ignore`, where only the proxy's own call counts (the gRPC front end's
    /// metadata; on the HTTP front ends the two cannot be told apart, so none is read) and
    /// everything else is sampled at `root_sample_ratio`. Set `ignore` when the proxy does not
    /// trace: a client should not choose what is sampled.
    #[serde(default)]
    pub request_context: RequestContext,
    /// The `service.name` resource attribute (`OTEL_RESOURCE_ATTRIBUTES` adds others).
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The share of requests WITHOUT a trace context (and of background fetches) that start
    /// a trace. A request that carries one always follows its parent's sampling decision.
    #[serde(default = "default_root_sample_ratio")]
    pub root_sample_ratio: f64,
    /// How often finished spans are sent.
    #[serde(default = "default_export_interval", with = "humantime_serde")]
    pub export_interval: Duration,
    /// How long one export may take before it is abandoned (its spans are lost).
    #[serde(default = "default_export_timeout", with = "humantime_serde")]
    pub export_timeout: Duration,
    /// Finished spans waiting for export; past it new spans are dropped (and logged), so a
    /// collector that is down never costs memory beyond this.
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// Spans per export request.
    #[serde(default = "default_max_export_batch_size")]
    pub max_export_batch_size: usize,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            tls: None,
            headers_file: None,
            request_context: RequestContext::default(),
            service_name: default_service_name(),
            root_sample_ratio: default_root_sample_ratio(),
            export_interval: default_export_interval(),
            export_timeout: default_export_timeout(),
            max_queue_size: default_max_queue_size(),
            max_export_batch_size: default_max_export_batch_size(),
        }
    }
}

/// `tracing.tls`: how jwt-authz checks the collector, and proves itself to it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpTls {
    /// The CA certificates (PEM) the collector's certificate must chain to (a public
    /// collector: the system's bundle, e.g. /etc/ssl/certs/ca-certificates.crt).
    pub ca_file: PathBuf,
    /// A client certificate (PEM) for collectors that ask for one, with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name the collector's certificate must carry, when not the endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// `tracing.request_context`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestContext {
    #[default]
    Follow,
    Ignore,
}

/// Bounds on what one process may hold for export.
const MAX_QUEUE_SIZE: usize = 1 << 20;
const MAX_SERVICE_NAME_BYTES: usize = 255;

fn default_service_name() -> String {
    "jwt-authz".to_owned()
}

fn default_root_sample_ratio() -> f64 {
    1.0
}

fn default_export_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_export_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_queue_size() -> usize {
    2048
}

fn default_max_export_batch_size() -> usize {
    512
}

impl TracingConfig {
    pub fn enabled(&self) -> bool {
        self.otlp_endpoint.is_some()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.otlp_endpoint {
            let https = validate_endpoint(endpoint)?;
            // An API key goes over TLS, or no further than this host.
            if self.headers_file.is_some() && !https && !loopback(endpoint) {
                return Err(invalid(
                    "tracing.headers_file",
                    "would be sent in the clear: use an https:// otlp_endpoint (or a collector on loopback)",
                ));
            }
            match (&self.tls, https) {
                (None, true) => {
                    return Err(invalid(
                        "tracing.tls",
                        "an https:// otlp_endpoint needs tls.ca_file (the CAs the collector's certificate chains to)",
                    ));
                }
                (Some(_), false) => {
                    return Err(invalid(
                        "tracing.tls",
                        "is set for a plain http:// otlp_endpoint: use https://",
                    ));
                }
                _ => {}
            }
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(invalid("tracing.tls", "cert_file and key_file go together"));
            }
            if tls
                .server_name
                .as_ref()
                .is_some_and(|n| n.is_empty() || n.len() > 253 || has_control(n))
            {
                return Err(invalid("tracing.tls.server_name", "must be a host name"));
            }
        }
        if self.service_name.is_empty()
            || self.service_name.len() > MAX_SERVICE_NAME_BYTES
            || has_control(&self.service_name)
        {
            return Err(invalid(
                "tracing.service_name",
                format!("must be 1 to {MAX_SERVICE_NAME_BYTES} bytes without control characters"),
            ));
        }
        if !(0.0..=1.0).contains(&self.root_sample_ratio) {
            return Err(invalid(
                "tracing.root_sample_ratio",
                "must be between 0 and 1",
            ));
        }
        for (field, value) in [
            ("tracing.export_interval", self.export_interval),
            ("tracing.export_timeout", self.export_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        if !(1..=MAX_QUEUE_SIZE).contains(&self.max_queue_size) {
            return Err(invalid(
                "tracing.max_queue_size",
                format!("must be between 1 and {MAX_QUEUE_SIZE}"),
            ));
        }
        if !(1..=self.max_queue_size).contains(&self.max_export_batch_size) {
            return Err(invalid(
                "tracing.max_export_batch_size",
                "must be between 1 and max_queue_size",
            ));
        }
        Ok(())
    }
}

/// Whether `endpoint` names a loopback host.
fn loopback(endpoint: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(endpoint) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `http://host[:port]` or `https://host[:port]` (`true`), nothing else: a path,
/// credentials or a query would be silently dropped by the exporter.
fn validate_endpoint(endpoint: &str) -> Result<bool, ConfigError> {
    let field = "tracing.otlp_endpoint";
    let parsed = reqwest::Url::parse(endpoint)
        .map_err(|e| invalid(field, format!("invalid URL {endpoint:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host().is_none()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.path() != "/"
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(invalid(
            field,
            format!(
                "{endpoint:?} must be http://host:port or https://host:port (no path, credentials or query)"
            ),
        ));
    }
    Ok(parsed.scheme() == "https")
}
