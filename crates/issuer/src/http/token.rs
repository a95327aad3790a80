//! `POST /auth/token`: the OAuth token endpoint (RFC 6749 §3.2), form-encoded, for the
//! resource owner password credentials grant (§4.3) with a resource indicator (RFC 8707
//! §2.2). The credentials, throttles, binding and minting are the JSON login's
//! ([`super::issue`]); only the request's encoding and the answers' shapes (§5.1, §5.2)
//! are this file's.
//!
//! Clients are public here (`token_endpoint_auth_methods_supported: ["none"]`): a
//! `client_id` alone is accepted and ignored, and a request that tries to authenticate a
//! client is refused `invalid_client` rather than have credentials silently unchecked.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::form::{Form, FormError};
use crate::grants::{GrantError, Requested};

use super::introspect::is_form;
use super::issue::{self, Endpoint, PasswordRequest, TokenFormat};
use super::{AppState, client_address, error};

/// The largest token request body read.
pub const MAX_TOKEN_BODY: usize = 8 * 1024;

/// Why a token request was refused before its grant was looked at.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("content-type is not application/x-www-form-urlencoded")]
    ContentType,
    #[error("body larger than {MAX_TOKEN_BODY} bytes")]
    TooLarge,
    #[error(transparent)]
    Form(#[from] FormError),
    #[error("client authentication attempted")]
    ClientAuthentication { basic: bool },
    #[error("no grant_type")]
    NoGrantType,
    #[error("unsupported grant_type")]
    UnsupportedGrantType,
    #[error("username and password are required")]
    NoCredentials,
}

/// What a refused client sees (RFC 6749 §5.2).
fn refusal(refused: &Refusal) -> Response {
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
        // RFC 8707 §2 allows several `resource` parameters; this issuer mints one audience
        // per token, so it refuses them as a target it cannot serve.
        Refusal::Form(FormError::Repeated(name)) if name == "resource" => error(
            StatusCode::BAD_REQUEST,
            GrantError::SeveralResources.code(),
            "more than one resource",
        ),
        // §3.2: parameters MUST NOT be included more than once.
        Refusal::Form(FormError::Repeated(_)) => bad_request("a parameter is repeated"),
        Refusal::Form(_) => bad_request("malformed form body"),
        Refusal::ClientAuthentication { basic } => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication is not supported here; public clients send client_id only",
            );
            if *basic {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"issuer\""),
                );
            }
            response
        }
        Refusal::NoGrantType => bad_request("grant_type is required"),
        Refusal::UnsupportedGrantType => error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only the password grant is supported",
        ),
        Refusal::NoCredentials => bad_request("username and password are required"),
    }
}

/// The password grant's parameters (§4.3.2), or why the request is refused.
fn read(request_headers: &axum::http::HeaderMap, body: &[u8]) -> Result<PasswordRequest, Refusal> {
    let form = Form::parse(body)?;
    let authorization = request_headers.get(header::AUTHORIZATION);
    if authorization.is_some()
        || form.get("client_secret").is_some()
        || form.get("client_assertion").is_some()
        || form.get("client_assertion_type").is_some()
    {
        let basic = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
        return Err(Refusal::ClientAuthentication { basic });
    }
    match form.get("grant_type") {
        None => return Err(Refusal::NoGrantType),
        Some("password") => {}
        Some(_) => return Err(Refusal::UnsupportedGrantType),
    }
    let (Some(username), Some(password)) = (form.get("username"), form.get("password")) else {
        return Err(Refusal::NoCredentials);
    };
    Ok(PasswordRequest {
        username: username.to_owned(),
        password: password.to_owned(),
        requested: Requested {
            resources: form
                .get("resource")
                .map(str::to_owned)
                .into_iter()
                .collect(),
            scope: form.get("scope").map(str::to_owned),
        },
        format: TokenFormat::Jwt,
    })
}

pub(super) async fn token(State(state): State<AppState>, request: Request) -> Response {
    if !is_form(request.headers()) {
        return refusal(&Refusal::ContentType);
    }
    let address = client_address(&state.settings, &request);
    let endpoint = state.settings.token_endpoint();
    let cnf = match issue::bind(&state, request.headers(), &endpoint).await {
        Ok(cnf) => cnf,
        Err(denied) => return denied.response(Endpoint::Token),
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_TOKEN_BODY).await else {
        return refusal(&Refusal::TooLarge);
    };
    let grant = match read(&parts.headers, &body) {
        Ok(grant) => grant,
        Err(refused) => {
            tracing::info!(address = ?address, error = %refused, "token request refused");
            return refusal(&refused);
        }
    };
    match issue::password_grant(&state, grant, address, cnf).await {
        // RFC 6749 §5.1.
        Ok(issued) => {
            let mut body = json!({
                "access_token": issued.token,
                "token_type": issued.token_type,
                "expires_in": issued.expires_in,
            });
            if let Some(scope) = issued.scope {
                body["scope"] = json!(scope);
            }
            (
                [
                    (header::CACHE_CONTROL, "no-store"),
                    (header::PRAGMA, "no-cache"),
                ],
                axum::Json(body),
            )
                .into_response()
        }
        Err(denied) => denied.response(Endpoint::Token),
    }
}
