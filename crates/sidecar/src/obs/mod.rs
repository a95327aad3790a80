//! What jwt-authz tells operators: Prometheus metrics and OpenTelemetry spans.

pub mod metrics;
pub mod subject;
pub mod telemetry;
