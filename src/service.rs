//! The `envoy.service.auth.v3.Authorization` gRPC service: unpacks Envoy's request, asks the
//! runtime in force, records the decision.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use crate::authz::Runtime;
use crate::metrics::Metrics;
use crate::request;
use crate::token_cache;

#[derive(Debug, Clone)]
pub struct AuthorizationService {
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
}

impl AuthorizationService {
    pub fn new(runtime: Arc<ArcSwap<Runtime>>, metrics: Arc<Metrics>) -> Self {
        Self { runtime, metrics }
    }
}

#[tonic::async_trait]
impl Authorization for AuthorizationService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let attributes = request.into_inner().attributes.unwrap_or_default();
        let Some(http) = attributes.request.and_then(|r| r.http) else {
            return Err(Status::invalid_argument("no HTTP request attributes"));
        };
        let runtime = self.runtime.load_full();
        let outcome = runtime.check(&http, &attributes.context_extensions).await;
        let elapsed = started.elapsed();
        self.metrics
            .record_check(outcome.result(), outcome.reason, elapsed);
        tracing::debug!(
            decision = outcome.result(),
            reason = outcome.reason,
            would_deny = outcome.would_deny.unwrap_or("-"),
            rule = outcome.rule,
            token = outcome
                .token
                .as_ref()
                .map_or_else(|| "-".to_owned(), token_cache::fingerprint),
            sub = outcome.subject().unwrap_or("-"),
            method = %http.method,
            // Debug-quoted: a refused path may hold anything the client sent.
            path = ?request::split_target(&http.path).0,
            micros = elapsed.as_micros() as u64,
            "check"
        );
        Ok(Response::new(outcome.response))
    }
}
