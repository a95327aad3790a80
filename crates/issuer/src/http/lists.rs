//! `GET /auth/status` and `/auth/status/{list}`: the signed Status List Tokens, with
//! conditional requests.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::Settings;
use crate::keys::unix_now;
use crate::list_heads::Heads;
use crate::revocation::{self, ListPolicy};

use super::{AppState, blocking, error, internal_error};

fn list_policy(settings: &Settings) -> ListPolicy {
    ListPolicy {
        ttl: settings.status_list_ttl.as_secs(),
        lifetime: settings.status_list_lifetime.as_secs(),
    }
}

/// The lists' heads: from memory, or read (off the async workers) when the copy there is
/// stale.
async fn list_heads(state: &AppState) -> Result<Arc<Heads>, Response> {
    if let Some(heads) = state.users.cached_list_heads() {
        return Ok(heads);
    }
    let users = state.users.clone();
    blocking("status list heads", move || users.list_heads()).await
}

/// `GET /auth/status/{list}`: the Status List Token (draft §8.1, §8.2), with an ETag
/// (`If-None-Match` gets 304) and `Cache-Control: max-age` of its ttl. Public, like the
/// JWKS: CORS allowed (§8.1).
pub(super) async fn status_list(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let not_found = || error(StatusCode::NOT_FOUND, "not_found", "no such status list");
    // One spelling per list: `01` is not list 1 (the URI is the list's name, §5.1 `sub`).
    let Some(list) = id
        .parse::<i64>()
        .ok()
        .filter(|l| *l > 0 && l.to_string() == id)
    else {
        return not_found();
    };
    let heads = match list_heads(&state).await {
        Ok(heads) => heads,
        Err(response) => return response,
    };
    let Some(version) = heads.by_list.get(&list).map(|head| head.version) else {
        return not_found();
    };
    let settings = &state.settings;
    let policy = list_policy(settings);
    let ring = state.key_ring();
    let now = unix_now();
    let signed = match state
        .lists
        .current(list, version, &ring.signer.entry.kid, policy, now)
    {
        Some(signed) => signed,
        None => {
            let users = state.users.clone();
            let list_state = match blocking("status list", move || users.status_list(list)).await {
                Ok(Some(list_state)) => list_state,
                Ok(None) => return not_found(),
                Err(response) => return response,
            };
            let uri = revocation::list_uri(settings.status_base(), list);
            let named = revocation::Named {
                id: list,
                uri: &uri,
                issuer: &settings.issuer_url,
            };
            match state
                .lists
                .sign(&ring.signer, named, &list_state, policy, now)
            {
                Ok(signed) => signed,
                Err(e) => {
                    tracing::error!(error = %e, list, "cannot sign the status list");
                    return internal_error();
                }
            }
        }
    };
    // A cache in between may keep it only for what is left of this copy's ttl.
    let left = policy
        .ttl
        .saturating_sub(now.saturating_sub(signed.signed_at()));
    let cache_control = format!("public, max-age={left}");
    // RFC 9110 §13.1.2: If-None-Match compares weakly (a W/ prefix does not matter).
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || opaque(tag) == opaque(&signed.etag));
    let mut builder = Response::builder()
        .header(header::CACHE_CONTROL, cache_control)
        .header(header::ETAG, &*signed.etag)
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
    let body = if matches {
        builder = builder.status(StatusCode::NOT_MODIFIED);
        Body::empty()
    } else {
        builder = builder.header(header::CONTENT_TYPE, revocation::MEDIA_TYPE);
        Body::from(signed.token.to_string())
    };
    builder.body(body).unwrap_or_else(|_| internal_error())
}

/// `GET /auth/status`: the Status List Aggregation (draft §9.3): every list that holds an
/// unexpired token.
pub(super) async fn status_lists(State(state): State<AppState>) -> Response {
    let lists = match list_heads(&state).await {
        Ok(heads) => heads.live(crate::users::now()),
        Err(response) => return response,
    };
    let base = state.settings.status_base();
    let uris: Vec<String> = lists
        .iter()
        .map(|l| revocation::list_uri(base, *l))
        .collect();
    (
        [
            (
                header::CACHE_CONTROL,
                format!(
                    "public, max-age={}",
                    state.settings.status_list_ttl.as_secs()
                ),
            ),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".to_owned()),
        ],
        axum::Json(json!({ "status_lists": uris })),
    )
        .into_response()
}
