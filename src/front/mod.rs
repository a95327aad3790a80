//! Front ends: the ways proxies ask jwt-authz about a request. Each turns what its proxy
//! sends into an [`Incoming`] request, asks the same runtime, and encodes the same verdict
//! its own way; metrics and the decision log line are shared and labelled with the front end.
//!
//! - [`grpc`]: Envoy / Istio gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`).
//! - [`http`]: Envoy / Istio HTTP ext_authz (`http_service`, `envoyExtAuthzHttp`), and
//!   forward-auth for nginx `auth_request`, Traefik `ForwardAuth` and Caddy `forward_auth`.

use std::time::Instant;

use crate::authz::Outcome;
use crate::metrics::Metrics;
use crate::request::{self, Incoming};
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

/// Counts one answered check and writes its decision log line (debug level). The token
/// appears only as its fingerprint.
fn record(
    metrics: &Metrics,
    front_end: FrontEnd,
    incoming: &Incoming<'_>,
    outcome: &Outcome<'_>,
    started: Instant,
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
        "check"
    );
}
