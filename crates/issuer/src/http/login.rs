//! `POST /auth/login`: the JSON login. Its body is read here; the sequence that issues the
//! token (throttle, password, resource and scopes, a JWT or an opaque token) is
//! [`super::issue`]'s, shared with the token endpoint.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::grants::Requested;

use super::issue::{self, Endpoint, PasswordRequest, TokenFormat};
use super::{AppState, MAX_LOGIN_BODY, client_address, error};

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
    #[serde(default)]
    token_format: TokenFormat,
    /// RFC 8707 §2: one resource indicator (an array is taken, to refuse more than one as
    /// `invalid_target` rather than as malformed).
    #[serde(default)]
    resource: Option<Resources>,
    /// RFC 6749 §3.3: space-separated scopes.
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Resources {
    One(String),
    Many(Vec<String>),
}

impl LoginRequest {
    fn requested(&mut self) -> Requested {
        let resources = match self.resource.take() {
            None => Vec::new(),
            Some(Resources::One(one)) => vec![one],
            Some(Resources::Many(many)) => many,
        };
        Requested {
            resources,
            scope: self.scope.take().filter(|s| !s.is_empty()),
        }
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

pub(super) async fn login(State(state): State<AppState>, request: Request) -> Response {
    if !is_json(request.headers()) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "content-type must be application/json",
        );
    }
    let address = client_address(&state.settings, &request);
    let endpoint = state.settings.login_endpoint();
    let cnf = match issue::bind(&state, request.headers(), &endpoint).await {
        Ok(cnf) => cnf,
        Err(denied) => return denied.response(Endpoint::Login),
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
    let Ok(mut credentials) = serde_json::from_slice::<LoginRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body must be JSON with username, password, and optionally token_format (\"jwt\" or \"opaque\"), resource (a string) and scope (a string)",
        );
    };
    let requested = credentials.requested();
    let request = PasswordRequest {
        username: credentials.username,
        password: credentials.password,
        requested,
        format: credentials.token_format,
    };
    match issue::password_grant(&state, request, address, cnf).await {
        Ok(issued) => {
            let mut body = json!({
                "accessToken": issued.token,
                "tokenType": issued.token_type,
                "expiresIn": issued.expires_in,
            });
            if let Some(scope) = issued.scope {
                body["scope"] = json!(scope);
            }
            ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
        }
        Err(denied) => denied.response(Endpoint::Login),
    }
}
