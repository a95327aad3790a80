//! The HTTP API: the router, JWKS, OIDC discovery, health; login ([`login`]), logout
//! ([`logout`]) and the status lists ([`lists`]) each in their own file.

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::binding::{self, Proofs};
use crate::config::Settings;
use crate::hashing::HashGate;
use crate::keys::KeyRing;
use crate::revocation::SignedLists;
use crate::throttle::Throttle;
use crate::users::{UserError, UserStore};

/// The largest login body accepted.
pub const MAX_LOGIN_BODY: usize = 8 * 1024;

#[derive(Debug, Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub users: UserStore,
    pub keys: Arc<RwLock<Arc<KeyRing>>>,
    pub throttle: Arc<Throttle>,
    pub hashing: Arc<HashGate>,
    pub proofs: Proofs,
    /// Signed copies of status lists.
    pub lists: SignedLists,
}

impl AppState {
    pub fn key_ring(&self) -> Arc<KeyRing> {
        Arc::clone(&self.keys.read().unwrap_or_else(|p| p.into_inner()))
    }
}

mod lists;
mod login;
mod logout;

use lists::{status_list, status_lists};
use login::login;
use logout::logout;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/status", get(status_lists))
        .route("/auth/status/{list}", get(status_list))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
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

async fn discovery(State(state): State<AppState>) -> Response {
    let s = &state.settings;
    (
        [(header::CACHE_CONTROL, "public, max-age=3600")],
        axum::Json(json!({
            "issuer": s.issuer_url,
            "jwks_uri": s.jwks_uri(),
            "token_endpoint": s.token_endpoint(),
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "grant_types_supported": ["password"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "dpop_signing_alg_values_supported": binding::PROOF_ALGORITHMS
                .iter()
                .map(|alg| format!("{alg:?}"))
                .collect::<Vec<_>>(),
            // RFC 8705 §3.3.
            "tls_client_certificate_bound_access_tokens": s.trust_client_cert_header,
            // draft-ietf-oauth-status-list §9.1.
            "status_list_aggregation_endpoint": format!("{}/auth/status", s.status_base()),
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
