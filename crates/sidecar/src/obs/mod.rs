//! What jwt-authz tells operators: Prometheus metrics and OpenTelemetry spans.

pub mod metrics;
pub mod telemetry;
