//! What the issuer publishes about itself: the OpenID Connect discovery document and the
//! OAuth authorization server metadata (RFC 8414), both public and cacheable for an hour.

use axum::extract::{OriginalUri, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::binding;
use crate::client_auth;

use super::AppState;

/// RFC 8414 §3: the well-known path of the metadata.
pub(super) const AUTHORIZATION_SERVER: &str = "/.well-known/oauth-authorization-server";

/// The client authentication methods at the introspection endpoint.
const INTROSPECTION_AUTH_METHODS: &[&str] = &[
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
];

fn algorithms(algs: &[jsonwebtoken::Algorithm]) -> Vec<String> {
    algs.iter().map(|alg| format!("{alg:?}")).collect()
}

fn published(doc: Value) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=3600")],
        axum::Json(doc),
    )
        .into_response()
}

pub(super) async fn discovery(State(state): State<AppState>) -> Response {
    let s = &state.settings;
    let mut doc = json!({
        "issuer": s.issuer_url,
        "jwks_uri": s.jwks_uri(),
        "token_endpoint": s.token_endpoint(),
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "grant_types_supported": ["password"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "dpop_signing_alg_values_supported": algorithms(binding::PROOF_ALGORITHMS),
        // RFC 8705 §3.3.
        "tls_client_certificate_bound_access_tokens": s.trust_client_cert_header,
        // draft-ietf-oauth-status-list §9.1.
        "status_list_aggregation_endpoint": format!("{}/auth/status", s.status_base()),
        // RFC 8414 §2 (RFC 7662 metadata), listed even with no client configured.
        "introspection_endpoint": s.introspection_endpoint(),
        "introspection_endpoint_auth_methods_supported": INTROSPECTION_AUTH_METHODS,
        "introspection_endpoint_auth_signing_alg_values_supported":
            algorithms(client_auth::ASSERTION_ALGORITHMS),
        // RFC 9701 §7.
        "introspection_signing_alg_values_supported": ["RS256"],
    });
    let scopes = state.grants.scope_names();
    if !scopes.is_empty() {
        doc["scopes_supported"] = json!(scopes);
    }
    published(doc)
}

/// RFC 8414 §2: the members that say something true of this server, and none for what it
/// does not have (no authorization, revocation or registration endpoint).
fn authorization_server_metadata(state: &AppState) -> Value {
    let s = &state.settings;
    let mut doc = json!({
        // §3.3: exactly the issuer identifier, as the tokens' `iss` is.
        "issuer": s.issuer_url,
        "token_endpoint": s.token_endpoint(),
        "jwks_uri": s.jwks_uri(),
        "grant_types_supported": ["password"],
        // §2 makes this member REQUIRED, and it lists the `response_type` values of the
        // authorization endpoint, which this server does not have (§2:
        // `authorization_endpoint` is required unless no grant type uses it): so no value
        // is supported. §3.2 says to omit empty members, which would drop a required one
        // (RFC 8414 erratum 7793); the member is published, empty, so that clients that
        // require it parse the document and none is told of a flow that does not exist.
        "response_types_supported": [],
        // Public clients: the password grant takes no client authentication here.
        "token_endpoint_auth_methods_supported": ["none"],
        // RFC 9449 §5.1.
        "dpop_signing_alg_values_supported": algorithms(binding::PROOF_ALGORITHMS),
        // RFC 8705 §3.3.
        "tls_client_certificate_bound_access_tokens": s.trust_client_cert_header,
        // draft-ietf-oauth-status-list §9.1.
        "status_list_aggregation_endpoint": format!("{}/auth/status", s.status_base()),
    });
    let scopes = state.grants.scope_names();
    if !scopes.is_empty() {
        doc["scopes_supported"] = json!(scopes);
    }
    // RFC 8414 §2: the introspection endpoint (RFC 7662), once someone may call it.
    if !state.clients.is_empty() {
        doc["introspection_endpoint"] = json!(s.introspection_endpoint());
        doc["introspection_endpoint_auth_methods_supported"] = json!(INTROSPECTION_AUTH_METHODS);
        doc["introspection_endpoint_auth_signing_alg_values_supported"] =
            json!(algorithms(client_auth::ASSERTION_ALGORITHMS));
        // RFC 9701 §7.
        doc["introspection_signing_alg_values_supported"] = json!(["RS256"]);
    }
    doc
}

/// `GET /.well-known/oauth-authorization-server`.
pub(super) async fn authorization_server(State(state): State<AppState>) -> Response {
    published(authorization_server_metadata(&state))
}

/// `GET /.well-known/oauth-authorization-server/<path>`: served only when `/<path>` is the
/// issuer URL's path (RFC 8414 §3.1), compared as sent, not decoded.
pub(super) async fn authorization_server_at_path(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let issuer_path = state
        .settings
        .issuer_url
        .parse::<axum::http::Uri>()
        .ok()
        .map(|u| u.path().to_owned())
        .filter(|p| p != "/");
    let asked = uri.path().strip_prefix(AUTHORIZATION_SERVER);
    match (issuer_path, asked) {
        (Some(path), Some(asked)) if path == asked => {
            published(authorization_server_metadata(&state))
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
