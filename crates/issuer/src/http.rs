//! The HTTP API: login, JWKS, OIDC discovery, health.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::binding::{self, BindingError, Proofs};
use crate::config::Settings;
use crate::hashing::HashGate;
use crate::keys::{KeyRing, unix_now};
use crate::revocation::{self, ListPolicy, SignedLists};
use crate::throttle::{Network, Subject, Throttle};
use crate::token;
use crate::users::{User, UserError, UserStore};

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

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
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
    let secs = wait.as_secs().max(1).to_string();
    if let Ok(value) = HeaderValue::from_str(&secs) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// 503: more logins than the issuer takes on at once; retry in a second.
fn logins_busy() -> Response {
    with_retry_after(
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "too many logins in progress, retry later",
        ),
        Duration::from_secs(1),
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

async fn login(State(state): State<AppState>, request: Request) -> Response {
    if !is_json(request.headers()) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "content-type must be application/json",
        );
    }
    let address = client_address(&state.settings, &request);
    // The proof is checked before the password: cheap, and a refused proof costs no
    // password verification.
    let cnf = match binding::confirmation(&state.settings, request.headers(), &state.proofs).await {
        Ok(cnf) => cnf,
        Err(BindingError::InvalidProof(description)) => {
            // RFC 9449 §5: 400 with `invalid_dpop_proof`.
            return error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", description);
        }
        Err(BindingError::BadCertificate) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client certificate header malformed",
            );
        }
        Err(BindingError::Busy) => {
            return logins_busy();
        }
    };
    let body = match axum::body::to_bytes(request.into_body(), MAX_LOGIN_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "request body too large",
            );
        }
    };
    let Ok(credentials) = serde_json::from_slice::<LoginRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body must be JSON with username and password",
        );
    };
    let settings = &state.settings;
    let name = credentials.username.as_str();
    let network = address.map(Network::from);
    let mut limits = vec![(Subject::User(name), settings.login_max_failures_per_user)];
    if let Some(network) = network {
        limits.push((
            Subject::UserFrom(name, network),
            settings.login_max_failures,
        ));
        limits.push((
            Subject::Address(network),
            settings.login_max_failures_per_address,
        ));
    }
    // Counted now, before the password is checked: parallel guesses cannot all pass.
    let attempt = match state.throttle.begin(&limits) {
        Ok(attempt) => attempt,
        Err(wait) => {
            return with_retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    "too many failed logins, retry later",
                ),
                wait,
            );
        }
    };
    let Some(admission) = state.hashing.try_enter() else {
        state.throttle.withdraw(attempt);
        if let Some(refused) = state.hashing.refused() {
            tracing::warn!(refused, "password verifications saturated; answering 503");
        }
        return logins_busy();
    };
    let running = admission.run().await;
    let users = state.users.clone();
    let password = credentials.password;
    let lookup = credentials.username.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let _slot = (admission, running);
        users.authenticate(&lookup, &password)
    })
    .await;
    let user = match outcome {
        Ok(Ok(user)) => user,
        Ok(Err(e)) => {
            state.throttle.withdraw(attempt);
            tracing::error!(error = %e, "login failed internally");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error",
            );
        }
        Err(e) => {
            state.throttle.withdraw(attempt);
            tracing::error!(error = %e, "login task failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error",
            );
        }
    };
    let name = credentials.username.as_str();
    let Some(user) = user else {
        tracing::info!(username = %name, address = ?address, "login refused");
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "invalid username or password",
        );
    };
    let mut clear = vec![Subject::User(name)];
    if let Some(network) = network {
        clear.push(Subject::UserFrom(name, network));
    }
    state.throttle.succeeded(attempt, &clear);
    let minted = issue(&state, &user, &cnf).await;
    match minted {
        Ok(token) => {
            // RFC 9449 §5: a DPoP-bound token's type is DPoP.
            let token_type = if cnf.jkt.is_some() { "DPoP" } else { "Bearer" };
            (
                [(header::CACHE_CONTROL, "no-store")],
                axum::Json(json!({
                    "accessToken": token,
                    "tokenType": token_type,
                    "expiresIn": settings.token_ttl.as_secs(),
                })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot mint token");
            internal_error()
        }
    }
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

/// Mints a token for `user`: its `jti` and status list entry are recorded first, so that
/// every token in circulation can be revoked.
async fn issue(state: &AppState, user: &User, cnf: &token::Confirmation) -> Result<String, String> {
    let settings = &state.settings;
    let minting = token::Minting::new(settings.token_ttl).map_err(|e| e.to_string())?;
    let users = state.users.clone();
    let (jti, subject, size) = (
        minting.jti.clone(),
        user.id.clone(),
        settings.status_list_size,
    );
    let (iat, exp) = (minting.iat as i64, minting.exp as i64);
    let slot = blocking("record token", move || {
        users.record_token(&jti, &subject, iat, exp, size)
    })
    .await
    .map_err(|_| "cannot record the token".to_owned())?;
    let uri = revocation::list_uri(settings.status_base(), slot.list);
    let ring = state.key_ring();
    let status = token::Status {
        status_list: token::StatusReference {
            idx: slot.idx,
            uri: &uri,
        },
    };
    let token = token::mint(
        &ring.signer,
        user,
        &settings.issuer_url,
        &settings.audience,
        &minting,
        cnf,
        status,
    )
    .map_err(|e| e.to_string())?;
    tracing::info!(
        sub = %user.id,
        username = %user.username,
        kid = %ring.signer.entry.kid,
        jti = %minting.jti,
        status_list = slot.list,
        idx = slot.idx,
        dpop = cnf.jkt.is_some(),
        certificate = cnf.x5t_s256.is_some(),
        "token issued"
    );
    Ok(token)
}

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

/// The claims of a token this issuer signed (with a key it still publishes), for this
/// audience; expired tokens included (revoking one is harmless).
fn own_token_claims(
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
    validation.set_audience(&[&state.settings.audience]);
    validation.set_required_spec_claims(&["iss", "aud"]);
    jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation)
        .ok()
        .map(|data| data.claims)
}

/// `POST /auth/logout`: revokes the token presented. Its status list says so within the
/// list's ttl, at every verifier.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
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

fn list_policy(settings: &Settings) -> ListPolicy {
    ListPolicy {
        ttl: settings.status_list_ttl.as_secs(),
        lifetime: settings.status_list_lifetime.as_secs(),
    }
}

/// `GET /auth/status/{list}`: the Status List Token (draft §8.1, §8.2), with an ETag
/// (`If-None-Match` gets 304) and `Cache-Control: max-age` of its ttl. Public, like the
/// JWKS: CORS allowed (§8.1).
async fn status_list(
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
    let users = state.users.clone();
    let version = match blocking("status list version", move || {
        users.status_list_version(list)
    })
    .await
    {
        Ok(Some(version)) => version,
        Ok(None) => return not_found(),
        Err(response) => return response,
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
async fn status_lists(State(state): State<AppState>) -> Response {
    let users = state.users.clone();
    let lists = match blocking("status lists", move || users.live_status_lists()).await {
        Ok(lists) => lists,
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
