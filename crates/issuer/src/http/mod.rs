//! The HTTP API: the router, JWKS, health, the client address and the rate limit on the
//! public endpoints; login ([`login`]) and the token endpoint ([`token`]) over the one
//! sequence that issues tokens ([`issue`]), logout ([`logout`]), introspection
//! ([`introspect`]), the status lists ([`lists`]) and the published metadata (OIDC
//! discovery, RFC 8414: [`metadata`]) each in their own file.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::binding::Proofs;
use crate::client_auth::Assertions;
use crate::clients::Clients;
use crate::config::Settings;
use crate::grants::Grants;
use crate::hashing::HashGate;
use crate::keys::KeyRing;
use crate::ratelimit::RateLimit;
use crate::revocation::SignedLists;
use crate::throttle::{Network, Throttle};
use crate::users::{UserError, UserStore};

/// The largest login body accepted.
pub const MAX_LOGIN_BODY: usize = 8 * 1024;

#[derive(Debug, Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub users: UserStore,
    pub keys: Arc<RwLock<Arc<KeyRing>>>,
    pub throttle: Arc<Throttle>,
    /// Requests per client address on the public endpoints.
    pub public_limit: Arc<RateLimit>,
    pub hashing: Arc<HashGate>,
    pub proofs: Proofs,
    /// Signed copies of status lists.
    pub lists: SignedLists,
    /// The clients allowed to introspect.
    pub clients: Arc<Clients>,
    /// Client assertions accepted and not yet expired (RFC 7523 §3 item 7).
    pub assertions: Assertions,
    /// The resources and scopes tokens may be asked for.
    pub grants: Arc<Grants>,
}

impl AppState {
    pub fn key_ring(&self) -> Arc<KeyRing> {
        Arc::clone(&self.keys.read().unwrap_or_else(|p| p.into_inner()))
    }
}

mod introspect;
mod issue;
mod lists;
mod login;
mod logout;
mod metadata;
mod token;

use introspect::introspect;
use lists::{status_list, status_lists};
use login::login;
use logout::logout;
use metadata::{authorization_server, authorization_server_at_path, discovery};
use token::token;

pub fn router(state: AppState) -> Router {
    // Limited per client address: what anyone may call without credentials and that reads
    // the database or signs (logout only verifies a token, but a revoked one may be sent
    // again and again). Login has its own limits (the throttle and the bound on password
    // verifications); the health check touches nothing.
    let public = Router::new()
        .route("/auth/logout", post(logout))
        .route("/auth/status", get(status_lists))
        .route("/auth/status/{list}", get(status_list))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .route(metadata::AUTHORIZATION_SERVER, get(authorization_server))
        // RFC 8414 §3.1: an issuer with a path has its metadata under the path as well;
        // the handler compares the path itself, so no issuer URL makes a bad route.
        .route(
            &format!("{}/{{*issuer_path}}", metadata::AUTHORIZATION_SERVER),
            get(authorization_server_at_path),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), limit_public));
    // Introspection limits itself: only its failed client authentications count against
    // the address (see [`introspect`]).
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/token", post(token))
        .route("/auth/introspect", post(introspect))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(public)
        .with_state(state)
}

/// The client address: the socket peer, or (when trusted) the last `X-Forwarded-For` entry,
/// the one the proxy in front appended.
fn client_address(settings: &Settings, request: &Request) -> Option<IpAddr> {
    if settings.trust_forwarded_for
        && let Some(ip) = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|s| s.trim().parse().ok())
    {
        return Some(ip);
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn with_retry_after(mut response: Response, wait: Duration) -> Response {
    // Rounded up: a client that waits this long finds room.
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        .max(1)
        .to_string();
    if let Ok(value) = HeaderValue::from_str(&secs) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// 429 with Retry-After for a client address past its share of the public endpoints.
async fn limit_public(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let network = client_address(&state.settings, &request).map(Network::from);
    match state.public_limit.check(network) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            tracing::debug!(?network, path = request.uri().path(), "rate limited");
            with_retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    "too many requests, retry later",
                ),
                wait,
            )
        }
    }
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

fn internal_error() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "internal error",
    )
}

/// Runs a blocking database call off the async workers; a failure is logged and becomes
/// a 500 (its detail never reaches the client).
async fn blocking<T: Send + 'static>(
    what: &'static str,
    call: impl FnOnce() -> Result<T, UserError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::error!(error = %e, what, "database call failed");
            Err(internal_error())
        }
        Err(e) => {
            tracing::error!(error = %e, what, "database task failed");
            Err(internal_error())
        }
    }
}

async fn jwks(State(state): State<AppState>) -> Response {
    let ring = state.key_ring();
    let body = json!({ "keys": ring.published }).to_string();
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::CACHE_CONTROL,
            format!("public, max-age={}", state.settings.jwks_max_age),
        )
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests;
