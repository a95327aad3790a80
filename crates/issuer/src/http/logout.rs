//! `POST /auth/logout`: the caller's own token, verified with this issuer's keys (a JWT) or
//! found by its hash (an opaque token), revoked.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::opaque;

use super::{AppState, blocking, error};

/// The largest token `/auth/logout` reads.
const MAX_LOGOUT_TOKEN: usize = 8 * 1024;

/// The one token of an `Authorization: Bearer` (or `DPoP`) header.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (["bearer", "dpop"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s))
        && !token.is_empty()
        && token.len() <= MAX_LOGOUT_TOKEN
        && !token.contains(' '))
    .then_some(token)
}

/// The claims of a token this issuer signed (with a key it still publishes), for its
/// audience or one of its resources; expired tokens included (revoking one is harmless).
pub(super) fn own_token_claims(
    state: &AppState,
    token: &str,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.alg != jsonwebtoken::Algorithm::RS256 {
        return None;
    }
    let kid = header.kid?;
    let ring = state.key_ring();
    let jwk = ring
        .published
        .iter()
        .find(|k| k.get("kid").and_then(serde_json::Value::as_str) == Some(kid.as_str()))?;
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).ok()?;
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).ok()?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.set_issuer(&[&state.settings.issuer_url]);
    // Its audience: the default one, or a resource it may have been issued for.
    let mut audiences = vec![state.settings.audience.as_str()];
    audiences.extend(state.grants.resources().iter().map(String::as_str));
    validation.set_audience(&audiences);
    validation.set_required_spec_claims(&["iss", "aud"]);
    jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation)
        .ok()
        .map(|data| data.claims)
}

/// `POST /auth/logout`: revokes the token presented. Its status list says so within the
/// list's ttl, at every verifier.
pub(super) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let denied = |code: &str, description: &str| {
        let mut response = error(StatusCode::UNAUTHORIZED, code, description);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    };
    let Some(token) = presented_token(&headers) else {
        return denied("invalid_request", "one bearer token required");
    };
    if opaque::looks_opaque(token) {
        let hash = opaque::token_hash(token);
        let users = state.users.clone();
        return match blocking("revoke opaque token", move || users.revoke_opaque(&hash)).await {
            Ok(Some((record, first))) => {
                tracing::info!(
                    sub = %record.subject,
                    jti = %record.jti,
                    token = %opaque::fingerprint(token),
                    already = !first,
                    "opaque token revoked by logout"
                );
                (
                    StatusCode::NO_CONTENT,
                    [(header::CACHE_CONTROL, "no-store")],
                )
                    .into_response()
            }
            Ok(None) => denied("invalid_token", "token not issued here or invalid"),
            Err(response) => response,
        };
    }
    let Some(claims) = own_token_claims(&state, token) else {
        return denied("invalid_token", "token not issued here or invalid");
    };
    let Some(jti) = claims
        .get("jti")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token has no jti",
        );
    };
    let users = state.users.clone();
    let lookup = jti.clone();
    let revoked = match blocking("revoke token", move || users.revoke_jti(&lookup)).await {
        Ok(revoked) => revoked,
        Err(response) => return response,
    };
    match revoked {
        Some(first) => {
            let sub = claims
                .get("sub")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("-");
            tracing::info!(%sub, %jti, already = !first, "token revoked by logout");
            (
                StatusCode::NO_CONTENT,
                [(header::CACHE_CONTROL, "no-store")],
            )
                .into_response()
        }
        None => error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token was not recorded here and cannot be revoked",
        ),
    }
}
