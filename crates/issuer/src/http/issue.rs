//! The one sequence a password token request runs, whether it came as a JSON login
//! (`/auth/login`) or as an OAuth token request (`/auth/token`, RFC 6749 §4.3): the
//! request's shape, the throttle, the bounded password check, the resource and scopes,
//! and the token minted (a JWT entered in a status list, or an opaque token recorded). The
//! binding proof, read from the headers before the body, is [`bind`]. Refusals for both
//! endpoints are answered by [`Denied::response`].

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use crate::binding::{self, BindingError};
use crate::grants::{GrantError, Granted, Requested};
use crate::opaque::{self, OpaqueRecord};
use crate::revocation;
use crate::throttle::{Network, Subject};
use crate::token;
use crate::users::User;

use super::{AppState, blocking, error, internal_error, with_retry_after};

/// The kind of access token a request asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum TokenFormat {
    /// A signed JWT any verifier with the JWKS checks by itself.
    #[default]
    Jwt,
    /// An opaque reference only this issuer's introspection endpoint answers for.
    Opaque,
}

/// A resource owner's credentials and what they ask a token for.
pub(super) struct PasswordRequest {
    pub username: String,
    pub password: String,
    pub requested: Requested,
    pub format: TokenFormat,
}

/// A token issued, with what the response says about it.
pub(super) struct Issued {
    pub token: String,
    /// RFC 9449 §5: `DPoP` for a DPoP-bound token, else `Bearer`.
    pub token_type: &'static str,
    pub expires_in: u64,
    /// The granted scopes (RFC 6749 §5.1), when any were asked for.
    pub scope: Option<String>,
}

/// Why no token was issued.
#[derive(Debug, thiserror::Error)]
pub(super) enum Denied {
    #[error("DPoP proof refused: {0}")]
    InvalidProof(&'static str),
    #[error("client certificate header malformed")]
    BadCertificate,
    #[error("too many logins in progress")]
    Busy,
    #[error("too many failed logins")]
    Throttled(Duration),
    #[error("invalid username or password")]
    BadCredentials,
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("internal error")]
    Internal,
}

/// Which endpoint a request came to: it decides how bad credentials are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Login,
    Token,
}

impl Denied {
    /// What the client sees, for both endpoints.
    pub(super) fn response(&self, endpoint: Endpoint) -> Response {
        match self {
            // RFC 9449 §5: 400 with `invalid_dpop_proof`.
            Self::InvalidProof(description) => {
                error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", description)
            }
            Self::BadCertificate => error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client certificate header malformed",
            ),
            Self::Busy => with_retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "too many logins in progress, retry later",
                ),
                Duration::from_secs(1),
            ),
            Self::Throttled(wait) => with_retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    "too many failed logins, retry later",
                ),
                *wait,
            ),
            Self::BadCredentials if endpoint == Endpoint::Login => error(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "invalid username or password",
            ),
            // RFC 6749 §5.2: the resource owner's credentials are the grant.
            Self::BadCredentials => error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "invalid username or password",
            ),
            // RFC 8707 §2 `invalid_target`, RFC 6749 §5.2 `invalid_scope`.
            Self::Grant(e) => error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
            Self::Internal => internal_error(),
        }
    }
}

/// The `cnf` of the token a request to `endpoint` (its URL, the proof's `htu`) gets: a
/// DPoP proof or a forwarded client certificate. Checked before the body is read: cheap,
/// and a refused proof costs no password verification.
pub(super) async fn bind(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: &str,
) -> Result<token::Confirmation, Denied> {
    binding::confirmation(&state.settings, headers, &state.proofs, endpoint)
        .await
        .map_err(|e| match e {
            BindingError::InvalidProof(description) => Denied::InvalidProof(description),
            BindingError::BadCertificate => Denied::BadCertificate,
            BindingError::Busy => Denied::Busy,
        })
}

/// The resource owner password sequence: shape, throttle, password, target and scopes,
/// token. What a request asks for is judged only once its credentials are right, so no one
/// learns which resources or scopes exist without a password.
pub(super) async fn password_grant(
    state: &AppState,
    request: PasswordRequest,
    address: Option<IpAddr>,
    cnf: token::Confirmation,
) -> Result<Issued, Denied> {
    request.requested.check_shape()?;
    let settings = &state.settings;
    let name = request.username.as_str();
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
    let attempt = state.throttle.begin(&limits).map_err(Denied::Throttled)?;
    let Some(admission) = state.hashing.try_enter() else {
        state.throttle.withdraw(attempt);
        if let Some(refused) = state.hashing.refused() {
            tracing::warn!(refused, "password verifications saturated; answering 503");
        }
        return Err(Denied::Busy);
    };
    let running = admission.run().await;
    let users = state.users.clone();
    let password = request.password;
    let lookup = request.username.clone();
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
            return Err(Denied::Internal);
        }
        Err(e) => {
            state.throttle.withdraw(attempt);
            tracing::error!(error = %e, "login task failed");
            return Err(Denied::Internal);
        }
    };
    let name = request.username.as_str();
    let Some(user) = user else {
        tracing::info!(username = %name, address = ?address, "login refused");
        return Err(Denied::BadCredentials);
    };
    let mut clear = vec![Subject::User(name)];
    if let Some(network) = network {
        clear.push(Subject::UserFrom(name, network));
    }
    state.throttle.succeeded(attempt, &clear);
    let granted = state
        .grants
        .grant(&request.requested, &user.role, &settings.audience)
        .inspect_err(|e| {
            tracing::info!(username = %name, role = %user.role, error = %e, "token request refused");
        })?;
    let minted = match request.format {
        TokenFormat::Jwt => issue(state, &user, &granted, &cnf).await,
        TokenFormat::Opaque => issue_opaque(state, &user, &granted, &cnf).await,
    };
    match minted {
        Ok(token) => Ok(Issued {
            token,
            token_type: if cnf.jkt.is_some() { "DPoP" } else { "Bearer" },
            expires_in: settings.token_ttl.as_secs(),
            scope: granted.scope,
        }),
        Err(e) => {
            tracing::error!(error = %e, "cannot mint token");
            Err(Denied::Internal)
        }
    }
}

/// Mints a token for `user`: its `jti` and status list entry are recorded first, so that
/// every token in circulation can be revoked.
async fn issue(
    state: &AppState,
    user: &User,
    granted: &Granted,
    cnf: &token::Confirmation,
) -> Result<String, String> {
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
        granted,
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
        aud = %granted.audience,
        scope = granted.scope.as_deref().unwrap_or_default(),
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
    granted: &Granted,
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
        audience: granted.audience.clone(),
        scope: granted.scope.clone(),
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
        aud = %granted.audience,
        scope = granted.scope.as_deref().unwrap_or_default(),
        dpop = cnf.jkt.is_some(),
        certificate = cnf.x5t_s256.is_some(),
        "opaque token issued"
    );
    Ok(token)
}
