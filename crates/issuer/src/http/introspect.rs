//! `POST /auth/introspect` (RFC 7662 §2): an authenticated client asks whether a token is
//! active, for this issuer's opaque tokens and its JWTs alike; the answer is JSON, or a
//! signed JWT when asked for (RFC 9701).
//!
//! Authenticated calls are not rate limited (a sidecar introspects for all its clients);
//! every refused call spends one request of its address's public allowance, and once that
//! is spent no call from the address is evaluated until it refills (brute force).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::client_auth::{self, AuthError, Expected, Presented};
use crate::form::{Form, FormError};
use crate::introspection;
use crate::keys::unix_now;
use crate::opaque;
use crate::throttle::Network;

use super::logout::own_token_claims;
use super::{AppState, blocking, client_address, error, internal_error, with_retry_after};

/// The largest request body read.
pub const MAX_INTROSPECTION_BODY: usize = 16 * 1024;
/// The longest `token` parameter accepted.
pub const MAX_TOKEN: usize = 8 * 1024;
/// The longest `token_type_hint` accepted (the registered hints are a dozen characters).
const MAX_HINT: usize = 64;

/// Why an introspection request was refused.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("content-type is not application/x-www-form-urlencoded")]
    ContentType,
    #[error("body larger than {MAX_INTROSPECTION_BODY} bytes")]
    TooLarge,
    #[error(transparent)]
    Form(#[from] FormError),
    #[error("more than one Authorization header, or one that is not text")]
    Authorization,
    #[error(transparent)]
    Client(#[from] AuthError),
    #[error("no token parameter")]
    NoToken,
    #[error("token longer than {MAX_TOKEN} bytes")]
    TokenTooLong,
    #[error("token_type_hint longer than {MAX_HINT} bytes")]
    HintTooLong,
}

/// What a refused client sees: the one table of statuses and errors (RFC 6749 §5.2 for
/// the client's authentication, RFC 7662 §2.3 for the rest). `basic`: the client tried
/// `Authorization: Basic`, so a 401 names that scheme.
fn refusal(refused: &Refusal, basic: bool) -> Response {
    let bad_request = |description| error(StatusCode::BAD_REQUEST, "invalid_request", description);
    match refused {
        Refusal::ContentType => error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "content-type must be application/x-www-form-urlencoded",
        ),
        Refusal::TooLarge => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "request body too large",
        ),
        Refusal::Form(FormError::Repeated(_)) => bad_request("a parameter is repeated"),
        Refusal::Form(_) => bad_request("malformed form body"),
        Refusal::Authorization => bad_request("one Authorization header at most"),
        Refusal::Client(AuthError::SeveralMethods) => {
            bad_request("more than one client authentication method")
        }
        Refusal::Client(AuthError::Busy) => with_retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "too many client assertions in flight, retry later",
            ),
            std::time::Duration::from_secs(1),
        ),
        Refusal::Client(_) => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
            if basic {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"issuer\""),
                );
            }
            response
        }
        Refusal::NoToken => bad_request("the token parameter is required"),
        Refusal::TokenTooLong => bad_request("token too long"),
        Refusal::HintTooLong => bad_request("token_type_hint too long"),
    }
}

/// Whether the request's body is `application/x-www-form-urlencoded`.
pub(super) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The one `Authorization` value, if any.
fn authorization(headers: &HeaderMap) -> Result<Option<&str>, Refusal> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => value.to_str().map(Some).map_err(|_| Refusal::Authorization),
        (Some(_), Some(_)) => Err(Refusal::Authorization),
    }
}

pub(super) async fn introspect(State(state): State<AppState>, request: Request) -> Response {
    let network = client_address(&state.settings, &request).map(Network::from);
    if let Err(wait) = state.public_limit.peek(network) {
        tracing::debug!(?network, "introspection refused: too many failures");
        return with_retry_after(
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "too many failed requests, retry later",
            ),
            wait,
        );
    }
    let (parts, body) = request.into_parts();
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(introspection::wants_jwt);
    let (outcome, basic) = authorized(&state, &parts.headers, body).await;
    let (client_id, token) = match outcome {
        Ok(found) => found,
        Err(refused) => {
            // Spent, and not checked: the peek above already let this request in.
            let _ = state.public_limit.check(network);
            tracing::info!(?network, error = %refused, "introspection refused");
            return refusal(&refused, basic);
        }
    };
    let answer = match answer(&state, &token).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    tracing::debug!(
        client = %client_id,
        token = %opaque::fingerprint(&token),
        active = answer["active"] == true,
        "token introspected"
    );
    if accept {
        respond_jwt(&state, &client_id, &answer)
    } else {
        ([(header::CACHE_CONTROL, "no-store")], axum::Json(answer)).into_response()
    }
}

/// The request read and its client authenticated: the client's id and the token; and
/// whether the client used Basic, for the refusal.
async fn authorized(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> (Result<(String, String), Refusal>, bool) {
    if !is_form(headers) {
        return (Err(Refusal::ContentType), false);
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_INTROSPECTION_BODY).await else {
        return (Err(Refusal::TooLarge), false);
    };
    let form = match Form::parse(&body) {
        Ok(form) => form,
        Err(e) => return (Err(e.into()), false),
    };
    let authorization = match authorization(headers) {
        Ok(value) => value,
        Err(e) => return (Err(e), false),
    };
    let presented = Presented::new(authorization, &form);
    let basic = presented.uses_basic();
    (check(state, &presented, &form), basic)
}

fn check(
    state: &AppState,
    presented: &Presented<'_>,
    form: &Form,
) -> Result<(String, String), Refusal> {
    let settings = &state.settings;
    let endpoint = settings.introspection_endpoint();
    let issuer = settings.issuer_url.trim_end_matches('/');
    // RFC 7523 §3 item 3: the assertion's audience is this server, by its introspection
    // endpoint's URL or its issuer identifier.
    let audiences = [endpoint.as_str(), settings.issuer_url.as_str(), issuer];
    let expected = Expected {
        audiences: &audiences,
        now: unix_now(),
    };
    let (client_id, _method) =
        client_auth::authenticate(&state.clients, &state.assertions, presented, &expected)?;
    let token = form.get("token").ok_or(Refusal::NoToken)?;
    if token.len() > MAX_TOKEN {
        return Err(Refusal::TokenTooLong);
    }
    // RFC 7662 §2.1: the hint is advisory; every kind of token is looked for anyway.
    if form
        .get("token_type_hint")
        .is_some_and(|h| h.len() > MAX_HINT)
    {
        return Err(Refusal::HintTooLong);
    }
    Ok((client_id, token.to_owned()))
}

/// RFC 7662 §2.2 for `token`: an opaque token's record, or one of this issuer's JWTs
/// verified and looked up; anything else is not active.
async fn answer(state: &AppState, token: &str) -> Result<Value, Response> {
    let now = unix_now();
    let settings = &state.settings;
    let users = state.users.clone();
    if opaque::looks_opaque(token) {
        let hash = opaque::token_hash(token);
        let record = blocking("find opaque token", move || users.find_opaque(&hash)).await?;
        return Ok(record.map_or_else(introspection::inactive, |record| {
            introspection::for_opaque(&record, &settings.issuer_url, now)
        }));
    }
    let Some(claims) = own_token_claims(state, token) else {
        return Ok(introspection::inactive());
    };
    let Some(jti) = claims.get("jti").and_then(Value::as_str).map(str::to_owned) else {
        return Ok(introspection::inactive());
    };
    let revoked = blocking("read token state", move || users.jti_revoked(&jti)).await?;
    Ok(introspection::for_jwt(&claims, revoked, now))
}

/// RFC 9701 §5: the answer signed for the client that asked.
fn respond_jwt(state: &AppState, client_id: &str, answer: &Value) -> Response {
    let ring = state.key_ring();
    match introspection::signed(
        &ring.signer,
        &state.settings.issuer_url,
        client_id,
        unix_now(),
        answer,
    ) {
        Ok(jwt) => (
            [
                (header::CONTENT_TYPE, introspection::JWT_MEDIA_TYPE),
                (header::CACHE_CONTROL, "no-store"),
            ],
            jwt,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot sign an introspection response");
            internal_error()
        }
    }
}
