//! Front ends: the ways proxies ask jwt-authz about a request. Each turns what its proxy
//! sends into an [`Incoming`] request, asks the same runtime, and encodes the same verdict
//! its own way; metrics and the decision log line are shared and labelled with the front end.
//!
//! - [`grpc`]: Envoy / Istio gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`).
//! - [`http`]: Envoy / Istio HTTP ext_authz (`http_service`, `envoyExtAuthzHttp`), and
//!   forward-auth for nginx `auth_request`, Traefik `ForwardAuth` and Caddy `forward_auth`,
//!   and the in-proxy Wasm filter's callouts.

use std::time::Instant;

use opentelemetry::trace::FutureExt as _;

use crate::obs::metrics::Metrics;
use crate::obs::telemetry::{self, Carrier, CheckRecord, CheckSpan, Telemetry};
use crate::runtime::{Outcome, Runtime};
use crate::verify::token_cache;
use jwt_authz_core::request::{self, Incoming};

pub mod grpc;
pub mod http;

/// Which front end answered: the `front_end` metric label and log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    Grpc,
    Http,
    ForwardAuth,
    /// The in-proxy filter's callouts.
    InProxy,
}

impl FrontEnd {
    pub fn label(self) -> &'static str {
        match self {
            FrontEnd::Grpc => "grpc",
            FrontEnd::Http => "http",
            FrontEnd::ForwardAuth => "forward_auth",
            FrontEnd::InProxy => "in_proxy",
        }
    }
}

/// One check as a front end answers it, from the moment its request arrived: the span
/// (when traced) is started here, the check runs inside it, and [`Checking::record`]
/// counts it, writes the decision log line and ends the span. Every front end goes through
/// this, so none can count a check without logging and tracing it the same way.
struct Checking<'a, 'c> {
    metrics: &'a Metrics,
    front_end: FrontEnd,
    runtime: &'a Runtime,
    /// Where the request's trace context may be, in order.
    carriers: &'a [Carrier<'c>],
    span: Option<CheckSpan>,
    started: Instant,
}

impl<'a, 'c> Checking<'a, 'c> {
    /// `started`: when the front end received the request.
    fn start(
        metrics: &'a Metrics,
        telemetry: &Telemetry,
        front_end: FrontEnd,
        runtime: &'a Runtime,
        carriers: &'a [Carrier<'c>],
        started: Instant,
    ) -> Self {
        Checking {
            metrics,
            front_end,
            runtime,
            carriers,
            span: telemetry.check_span(front_end.label(), carriers),
            started,
        }
    }

    /// Runs the check, inside its span when traced (so key and status-list fetches it
    /// starts are its children).
    async fn check(&self, incoming: &Incoming<'_>) -> Outcome<'a> {
        match &self.span {
            Some(span) => {
                self.runtime
                    .check(incoming)
                    .with_context(span.context())
                    .await
            }
            None => self.runtime.check(incoming).await,
        }
    }

    /// Counts the answered check, writes its decision log line (debug level), and ends its
    /// span. The token appears only as its fingerprint; the log names the trace the request
    /// belongs to, from its span or, when jwt-authz does not trace, from the carriers.
    fn record(self, incoming: &Incoming<'_>, outcome: &Outcome<'_>) {
        let front_end = self.front_end.label();
        let elapsed = self.started.elapsed();
        self.metrics
            .record_check(front_end, outcome.result(), outcome.reason, elapsed);
        tracing::debug!(
            front_end,
            decision = outcome.result(),
            reason = outcome.reason,
            would_deny = outcome.would_deny.unwrap_or("-"),
            rule = outcome.rule,
            token = outcome
                .token
                .as_ref()
                .map_or_else(|| "-".to_owned(), token_cache::fingerprint),
            // Personal data: a keyed fingerprint unless `log.subject` says otherwise.
            sub = self.runtime.logged_subject(outcome.subject()),
            // Debug-quoted: a refused method or path may hold anything the client sent.
            method = ?incoming.method,
            path = ?request::split_target(incoming.target).0,
            micros = elapsed.as_micros() as u64,
            trace_id = self
                .span
                .as_ref()
                .and_then(CheckSpan::trace_id)
                .or_else(|| telemetry::trace_id(self.carriers))
                .as_deref()
                .unwrap_or("-"),
            "check"
        );
        if let Some(span) = self.span {
            span.finish(CheckRecord {
                decision: outcome.result(),
                reason: outcome.reason,
                would_deny: outcome.would_deny,
                rule: outcome.rule,
                provider: outcome
                    .identity
                    .as_ref()
                    .and_then(|v| self.runtime.provider_name(v.provider)),
                cache_hit: outcome.cache_hit,
                fingerprint: outcome.token.as_ref().map(token_cache::fingerprint),
                method: incoming.method,
                path: request::split_target(incoming.target).0,
                status: outcome.verdict.http_status(),
            });
        }
    }
}
