//! Sender-constrained tokens: whether the request proves possession of the key or
//! certificate its token is bound to. Certificate-bound tokens (RFC 8705 §3) are checked
//! against the client certificate the proxy saw; DPoP-bound tokens (RFC 9449) against the
//! proof sent with this very request (never cached: every request needs its own proof).
//!
//! Pure computation on the request and the verified claims; the one step that needs a
//! store, remembering the proof's `jti`, is handed back to the caller as a [`ReplayCheck`].

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::config::{CertificateBinding, DpopMode, ProviderConfig};
use jwt_authz_core::extract::{Found, Scheme};
use jwt_authz_core::request::Incoming;
use jwt_authz_core::response::Deny;
use jwt_authz_jose::dpop::{self, DpopError, Expected, NonceCheck, replay::ProofKey};
use jwt_authz_jose::mtls::{self, CertificateError};

pub mod replay;
#[cfg(test)]
mod tests;

/// The replay check still owed for an accepted proof (RFC 9449 §11.1): `key` must not have
/// been seen within `ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayCheck {
    pub key: ProofKey,
    /// The proof's `iat`.
    pub iat: u64,
    /// How long to remember it: as long as the provider's window can accept it.
    pub ttl: Duration,
}

/// What a sender-constraint check needs beyond the request and the token.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// `dpop.scheme`: the scheme clients address, overriding the front end's.
    pub public_scheme: Option<&'a str>,
    /// Unix time now.
    pub now: u64,
    /// When server nonces are required (RFC 9449 §9): which nonces are current.
    pub nonce: Option<NonceCheck<'a>>,
}

/// Checks the token's bindings against the request. `Ok(Some(_))` when a DPoP proof was
/// accepted and its `jti` remains to be checked for reuse.
pub fn check(
    http: &Incoming<'_>,
    found: &Found<'_>,
    provider: &ProviderConfig,
    claims: &Map<String, Value>,
    context: Context<'_>,
) -> Result<Option<ReplayCheck>, Deny> {
    check_certificate(http, provider, claims)?;
    check_dpop(http, found, provider, claims, context)
}

/// RFC 8705 §3: a bound token only over a connection with the very certificate it names.
fn check_certificate(
    http: &Incoming<'_>,
    provider: &ProviderConfig,
    claims: &Map<String, Value>,
) -> Result<(), Deny> {
    let Some(bound) = mtls::bound_thumbprint(claims) else {
        return match provider.certificate_binding {
            CertificateBinding::Required => Err(Deny::CertificateRequired),
            CertificateBinding::Optional => Ok(()),
        };
    };
    let presented = http
        .certificate
        .ok_or(CertificateError::Missing)
        .and_then(mtls::certificate_thumbprint);
    match presented {
        Ok(thumbprint) if thumbprint == bound => Ok(()),
        Ok(_) => Err(Deny::CertificateMismatch),
        Err(CertificateError::Missing) => Err(Deny::CertificateMissing),
        Err(error) => {
            tracing::debug!(%error, "client certificate unreadable");
            Err(Deny::CertificateMismatch)
        }
    }
}

/// RFC 9449: a DPoP-bound token (`cnf.jkt`, §6.1) only as `Authorization: DPoP` with a
/// valid proof by the key it names; the provider's mode decides what else passes.
fn check_dpop(
    http: &Incoming<'_>,
    found: &Found<'_>,
    provider: &ProviderConfig,
    claims: &Map<String, Value>,
    context: Context<'_>,
) -> Result<Option<ReplayCheck>, Deny> {
    let bound = claims.get("cnf").and_then(|cnf| cnf.get("jkt"));
    let config = &provider.dpop;
    if found.scheme == Scheme::Bearer {
        // §7.2: a bound token presented as a bearer token is refused, whatever the mode
        // (with DPoP off its binding cannot be checked at all).
        if bound.is_some() {
            return Err(Deny::DpopBoundAsBearer);
        }
        if config.mode == DpopMode::Required {
            return Err(Deny::DpopRequired);
        }
        return Ok(None);
    }
    if config.mode == DpopMode::Off {
        return Err(Deny::DpopNotAccepted);
    }
    // §7.1: the DPoP scheme is for DPoP-bound tokens only.
    let bound = bound.and_then(Value::as_str).ok_or(Deny::DpopUnbound)?;
    // §4.3 check 1: exactly one `DPoP` header. Front ends join repeated headers with `,`,
    // which a JWS never contains.
    let proof = http.headers.get("dpop").ok_or(Deny::DpopMissingProof)?;
    if proof.contains(',') {
        return Err(Deny::DpopMultipleProofs);
    }
    let Some(scheme) = context.public_scheme.or(http.scheme) else {
        tracing::warn!(
            "a DPoP proof cannot be checked: the front end does not report the request's scheme; set dpop.scheme"
        );
        return Err(Deny::DpopInvalidProof(dpop::DpopError::WrongUri));
    };
    let uri = format!("{scheme}://{}{}", http.host, http.target);
    let algorithms: &[Algorithm] = &config.algorithms;
    let proof = dpop::verify_proof(
        proof.trim(),
        &Expected {
            method: http.method,
            uri: &uri,
            access_token: Some(found.token),
            nonce: context.nonce,
            algorithms,
            now: context.now,
            max_age: config.max_age.as_secs(),
            leeway: config.leeway.as_secs(),
        },
    )
    .map_err(|error| match error {
        // §9: answered with a fresh nonce (the caller issues it) for the client to retry.
        DpopError::NonceRequired | DpopError::WrongNonce => Deny::DpopUseNonce(String::new()),
        error => {
            tracing::debug!(%error, "DPoP proof refused");
            Deny::DpopInvalidProof(error)
        }
    })?;
    // §6.1: the token's jkt is the proof key's thumbprint, compared as strings.
    if proof.jkt != bound {
        return Err(Deny::DpopKeyMismatch);
    }
    Ok(Some(ReplayCheck {
        // By issuer, not by name: renaming a provider in a reload keeps what was seen.
        key: dpop::replay::proof_key(&provider.issuer, &proof.jkt, &proof.jti),
        iat: proof.iat,
        ttl: config.replay_window(),
    }))
}
