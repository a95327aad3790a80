//! Front ends: the ways proxies ask jwt-authz about a request. Each turns what its proxy
//! sends into an [`Incoming`] request, asks the same runtime, and encodes the same verdict
//! its own way; metrics and the decision log line are shared and labelled with the front end.
//!
//! - [`grpc`]: Envoy / Istio gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`).
//! - [`http`]: Envoy / Istio HTTP ext_authz (`http_service`, `envoyExtAuthzHttp`), and
//!   forward-auth for nginx `auth_request`, Traefik `ForwardAuth` and Caddy `forward_auth`.

use std::time::Instant;

use opentelemetry::trace::FutureExt as _;

use crate::authz::{Outcome, Runtime};
use crate::metrics::Metrics;
use crate::request::{self, Incoming};
use crate::telemetry::{self, Carrier, CheckRecord, CheckSpan, Telemetry};
use crate::token_cache;

pub mod grpc;
pub mod http;

/// Which front end answered: the `front_end` metric label and log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    Grpc,
    Http,
    ForwardAuth,
}

impl FrontEnd {
    pub fn label(self) -> &'static str {
        match self {
            FrontEnd::Grpc => "grpc",
            FrontEnd::Http => "http",
            FrontEnd::ForwardAuth => "forward_auth",
        }
    }
}

/// Starts a check's span (when traced), continuing the trace of the first carrier that
/// holds a trace context.
fn check_span(
    telemetry: &Telemetry,
    front_end: FrontEnd,
    carriers: &[Carrier<'_>],
) -> Option<CheckSpan> {
    telemetry.check_span(front_end.label(), carriers)
}

/// Runs the check, inside its span when traced (so key and status-list fetches it starts
/// are its children).
async fn check<'r>(
    runtime: &'r Runtime,
    incoming: &Incoming<'_>,
    span: Option<&CheckSpan>,
) -> Outcome<'r> {
    match span {
        Some(span) => runtime.check(incoming).with_context(span.context()).await,
        None => runtime.check(incoming).await,
    }
}

/// One answered check: counts it, writes its decision log line (debug level), and ends its
/// span. The token appears only as its fingerprint; the log names the trace the request
/// belongs to, from its span or, when jwt-authz does not trace, from the carriers.
fn record(
    metrics: &Metrics,
    front_end: FrontEnd,
    incoming: &Incoming<'_>,
    outcome: &Outcome<'_>,
    started: Instant,
    traced: Traced<'_, '_>,
) {
    let elapsed = started.elapsed();
    metrics.record_check(front_end.label(), outcome.result(), outcome.reason, elapsed);
    tracing::debug!(
        front_end = front_end.label(),
        decision = outcome.result(),
        reason = outcome.reason,
        would_deny = outcome.would_deny.unwrap_or("-"),
        rule = outcome.rule,
        token = outcome
            .token
            .as_ref()
            .map_or_else(|| "-".to_owned(), token_cache::fingerprint),
        sub = outcome.subject().unwrap_or("-"),
        // Debug-quoted: a refused method or path may hold anything the client sent.
        method = ?incoming.method,
        path = ?request::split_target(incoming.target).0,
        micros = elapsed.as_micros() as u64,
        trace_id = traced
            .span
            .as_ref()
            .and_then(CheckSpan::trace_id)
            .or_else(|| telemetry::trace_id(traced.carriers))
            .as_deref()
            .unwrap_or("-"),
        "check"
    );
    if let Some(span) = traced.span {
        span.finish(CheckRecord {
            decision: outcome.result(),
            reason: outcome.reason,
            would_deny: outcome.would_deny,
            rule: outcome.rule,
            provider: outcome
                .identity
                .as_ref()
                .and_then(|v| traced.runtime.provider_name(v.provider)),
            cache_hit: outcome.cache_hit,
            fingerprint: outcome.token.as_ref().map(token_cache::fingerprint),
            method: incoming.method,
            path: request::split_target(incoming.target).0,
            status: outcome.verdict.http_status(),
        });
    }
}

/// What [`record`] needs of a check's trace.
struct Traced<'a, 'c> {
    runtime: &'a Runtime,
    span: Option<CheckSpan>,
    carriers: &'a [Carrier<'c>],
}
