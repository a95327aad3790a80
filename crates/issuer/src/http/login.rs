//! `POST /auth/login`: throttled, hashed, bound (DPoP or certificate) when asked, a token
//! minted and entered in a status list, or (`"token_format": "opaque"`) an opaque token
//! recorded for introspection.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::binding::{self, BindingError};
use crate::opaque::{self, OpaqueRecord};
use crate::revocation::{self};
use crate::throttle::{Network, Subject};
use crate::token;
use crate::users::User;

use super::{
    AppState, MAX_LOGIN_BODY, blocking, client_address, error, internal_error, with_retry_after,
};

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
    #[serde(default)]
    token_format: TokenFormat,
}

/// The kind of access token a login asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TokenFormat {
    /// A signed JWT any verifier with the JWKS checks by itself.
    #[default]
    Jwt,
    /// An opaque reference only this issuer's introspection endpoint answers for.
    Opaque,
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

pub(super) async fn login(State(state): State<AppState>, request: Request) -> Response {
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
            "body must be JSON with username, password and an optional token_format of \"jwt\" or \"opaque\"",
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
    let minted = match credentials.token_format {
        TokenFormat::Jwt => issue(&state, &user, &cnf).await,
        TokenFormat::Opaque => issue_opaque(&state, &user, &cnf).await,
    };
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

/// Creates an opaque token for `user` and records its hash with what introspection answers
/// (RFC 7662 §2.2); no status list entry: introspection is its source of truth.
async fn issue_opaque(
    state: &AppState,
    user: &User,
    cnf: &token::Confirmation,
) -> Result<String, String> {
    let settings = &state.settings;
    let minting = token::Minting::new(settings.token_ttl).map_err(|e| e.to_string())?;
    let token = opaque::new_token().ok_or_else(|| "no randomness for a token".to_owned())?;
    let record = OpaqueRecord {
        jti: minting.jti.clone(),
        subject: user.id.clone(),
        username: user.username.clone(),
        role: user.role.clone(),
        audience: settings.audience.clone(),
        issued_at: minting.iat as i64,
        expires_at: minting.exp as i64,
        cnf: cnf.clone(),
        revoked_at: None,
    };
    let hash = opaque::token_hash(&token);
    let users = state.users.clone();
    blocking("record opaque token", move || {
        users.record_opaque(&hash, &record)
    })
    .await
    .map_err(|_| "cannot record the token".to_owned())?;
    tracing::info!(
        sub = %user.id,
        username = %user.username,
        jti = %minting.jti,
        token = %opaque::fingerprint(&token),
        dpop = cnf.jkt.is_some(),
        certificate = cnf.x5t_s256.is_some(),
        "opaque token issued"
    );
    Ok(token)
}
