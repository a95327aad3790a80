//! The decision: its sequence ([`pipeline`]: [`Decider::decide`], which the sidecar, the
//! in-proxy filter and `explain` all run) and its steps (here): reading the request,
//! accepting a verified token for a route, its claims, identity headers on an allow, the
//! mode that applies, and shadow mode's answer.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::{IdentityConfig, Mode, PathConfig, TokenSource};
use crate::extract::Found;
use crate::identity::{self, UnsafeClaim};
use crate::policy::{AccessKind, Route};
use crate::request::{Incoming, canonical_host, canonical_path};
use crate::response::{Deny, Verdict};
use crate::token::{VerifiedToken, VerifyError};

pub mod pipeline;

pub use pipeline::{Checks, Decider, Decision, Document, Step, Stop, Verified};

/// A request's path and host in the canonical forms rules compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readable<'r> {
    pub path: Cow<'r, str>,
    pub host: Cow<'r, str>,
}

/// The first step of every decision: the path and host read in canonical form, and no
/// configured identity header in another spelling. A request that fails here is refused in
/// every mode, shadow included: a path or host that cannot be read has no rule, and a
/// lookalike identity header is a forged identity that the app may read, whatever the
/// route. In this order: an over-long path is 414 before anything else is looked at.
pub fn read<'r>(
    http: &Incoming<'r>,
    paths: &PathConfig,
    identity: &IdentityConfig,
) -> Result<Readable<'r>, Deny> {
    let path = canonical_path(http.target, paths).map_err(Deny::InvalidPath)?;
    let host = canonical_host(http.host).map_err(Deny::InvalidHost)?;
    if let Some(name) = identity::lookalike(
        http.headers,
        &identity.headers,
        identity.anonymous_header.as_deref(),
    ) {
        return Err(Deny::LookalikeHeader(name.to_owned()));
    }
    Ok(Readable { path, host })
}

/// What the decision reads of the provider that verified a token.
#[derive(Debug, Clone, Copy)]
pub struct Provider<'c> {
    /// Its index in the configuration (routes name providers by it).
    pub index: usize,
    pub name: &'c str,
    /// Where its tokens may be carried.
    pub token_sources: &'c [TokenSource],
    /// The `aud` values it accepts where the route names none.
    pub audiences: &'c [String],
    /// Its `mode`, when it sets one.
    pub mode: Option<Mode>,
}

/// A verified token and the provider that verified it.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub provider: Provider<'a>,
    pub token: &'a Arc<VerifiedToken>,
}

/// The mode a denial is given in: the most specific one set, the route's, then the
/// provider's of a verified token, then the top level's.
pub fn mode(route: Option<Mode>, provider: Option<Mode>, top: Mode) -> Mode {
    route.or(provider).unwrap_or(top)
}

/// Whether `route` takes a token found in `found`'s place from `provider`: the provider
/// allows that place, the route accepts the provider, and the token's `aud` holds one of
/// the route's audiences (or, where it names none, the provider's). Checked on every
/// request, since the verified-token cache is shared by all routes.
pub fn accepts(
    route: &Route<'_>,
    found: &Found<'_>,
    provider: &Provider<'_>,
    claims: &Map<String, Value>,
) -> Result<(), Deny> {
    if !provider.token_sources.contains(found.source) {
        return Err(Deny::WrongSource);
    }
    if route
        .providers
        .is_some_and(|accepted| !accepted.contains(&provider.index))
    {
        return Err(Deny::ProviderNotAccepted);
    }
    let audiences = route.audiences.unwrap_or(provider.audiences);
    if !audience_matches(claims, audiences) {
        return Err(Deny::Invalid(VerifyError::WrongAudience));
    }
    Ok(())
}

/// Whether the route's claim requirements hold (routes that require none always do; an
/// `optional` route's hold for a request that carries a token, the only one this is asked of).
pub fn claims_hold(route: &Route<'_>, claims: &Map<String, Value>) -> Result<(), Deny> {
    if matches!(route.kind, AccessKind::Claims | AccessKind::Optional)
        && route.check_claims(claims).is_err()
    {
        return Err(Deny::InsufficientClaims);
    }
    Ok(())
}

/// Whether the token's `aud` (a string or an array of strings, RFC 7519 §4.1.3) holds one of
/// `accepted`.
pub fn audience_matches(claims: &Map<String, Value>, accepted: &[String]) -> bool {
    match claims.get("aud") {
        Some(Value::String(aud)) => accepted.iter().any(|a| a == aud),
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .any(|aud| accepted.iter().any(|a| a == aud)),
        _ => false,
    }
}

/// The header that carried the token, when `identity.strip_authorization` removes it
/// before the request goes upstream.
pub fn stripped<'r>(config: &IdentityConfig, found: Option<&Found<'r>>) -> Option<&'r str> {
    found
        .and_then(Found::header)
        .filter(|_| config.strip_authorization)
}

/// The OK answer: identity headers set from the token's claims (every configured one the
/// token does not supply removed), the anonymous marker set without a token and removed
/// with one, `strip` removed, and the claims as metadata when `identity.dynamic_metadata`
/// asks for them. `Err` when a claim cannot travel in a header.
pub fn allow(
    config: &IdentityConfig,
    identity: Option<&Identity<'_>>,
    strip: &[&str],
) -> Result<Verdict, UnsafeClaim> {
    let claims = identity.map(|i| &i.token.claims);
    let mut mutation = identity::mutation(&config.headers, claims)?;
    if let Some(marker) = &config.anonymous_header {
        match identity {
            None => mutation.set.push((marker.clone(), "true".to_owned())),
            Some(_) => mutation.remove.push(marker.clone()),
        }
    }
    mutation
        .remove
        .extend(strip.iter().map(|h| (*h).to_owned()));
    let metadata = identity
        .filter(|_| config.dynamic_metadata)
        .map(|i| (i.provider.name.to_owned(), Arc::clone(i.token)));
    Ok(Verdict::Allow { mutation, metadata })
}

/// The OK answer shadow mode gives instead of `deny`. Identity headers come only from a
/// token that is valid and merely lacks what the route asks (`insufficient_claims`); for
/// every other denial all of them are removed, so shadow mode never lets a forged or
/// unverified identity through. `Err` (deny after all) only if not even the anonymous
/// answer can be built, which it always can: never an allow by accident.
pub fn shadow_allow(
    config: &IdentityConfig,
    deny: &Deny,
    identity: Option<&Identity<'_>>,
    strip: &[&str],
) -> Result<Verdict, UnsafeClaim> {
    let identity = identity.filter(|_| matches!(deny, Deny::InsufficientClaims));
    allow(config, identity, strip).or_else(|_| allow(config, None, strip))
}

#[cfg(test)]
mod tests;
