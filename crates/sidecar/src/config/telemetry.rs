//! Configuration of OpenTelemetry tracing: the top-level `tracing` block.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, has_control, invalid};

/// `tracing`: spans for checks and fetches, exported over OTLP/gRPC. Off unless
/// `otlp_endpoint` is set; changes take effect on restart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/gRPC address, `http://host:port` (a collector or agent next to
    /// jwt-authz). Unset: no spans are made and no trace context is read for them.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
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
            service_name: default_service_name(),
            root_sample_ratio: default_root_sample_ratio(),
            export_interval: default_export_interval(),
            export_timeout: default_export_timeout(),
            max_queue_size: default_max_queue_size(),
            max_export_batch_size: default_max_export_batch_size(),
        }
    }
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
            validate_endpoint(endpoint)?;
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

/// `http://host[:port]`, nothing else: spans go to a collector the operator runs, and a
/// path, credentials or a query would be silently dropped by the exporter.
fn validate_endpoint(endpoint: &str) -> Result<(), ConfigError> {
    let field = "tracing.otlp_endpoint";
    let parsed = reqwest::Url::parse(endpoint)
        .map_err(|e| invalid(field, format!("invalid URL {endpoint:?}: {e}")))?;
    if parsed.scheme() == "https" {
        return Err(invalid(
            field,
            "TLS to the collector is not supported: export over plain gRPC to a collector or \
             agent next to jwt-authz (http://host:port), and let it forward over TLS",
        ));
    }
    if parsed.scheme() != "http"
        || parsed.host().is_none()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.path() != "/"
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(invalid(
            field,
            format!("{endpoint:?} must be http://host:port (no path, credentials or query)"),
        ));
    }
    Ok(())
}
