//! Client authentication at the introspection endpoint (RFC 7662 §2.1 requires one): a
//! secret in `Authorization: Basic` (`client_secret_basic`, RFC 6749 §2.3.1) or in the form
//! (`client_secret_post`), or a JWT signed with a registered key (`private_key_jwt`,
//! RFC 7523 §2.2 and §3, OIDC Core §9). Exactly one method per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::clients::{Clients, MAX_SECRET_LEN};
use crate::config::MAX_CLIENT_ID;
use crate::form::{self, Form};

/// RFC 7523 §2.2: the `client_assertion_type` of a JWT assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Assertion algorithms accepted, advertised as
/// `introspection_endpoint_auth_signing_alg_values_supported`.
pub const ASSERTION_ALGORITHMS: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256];
/// The longest assertion read.
pub const MAX_ASSERTION: usize = 8 * 1024;
/// The longest `Authorization: Basic` value read.
const MAX_BASIC: usize = 2 * 1024;
/// The longest `jti` remembered.
const MAX_JTI: usize = 256;
/// How far ahead of now (or of its `iat`) an assertion's `exp` may be.
pub const MAX_ASSERTION_LIFETIME: u64 = 300;
/// Clock skew allowed on an assertion's times, each way.
const LEEWAY: u64 = 30;
/// Assertions remembered at once (RFC 7523 §3 item 7); beyond, answered 503 until some
/// expire, rather than forgetting one that could then be replayed.
const MAX_REMEMBERED: usize = 100_000;

/// Why a client was not authenticated. Every variant but [`AuthError::SeveralMethods`]
/// and [`AuthError::Busy`] is `invalid_client` to the client; the detail is for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no client authentication")]
    Missing,
    #[error("more than one client authentication method")]
    SeveralMethods,
    #[error("authorization scheme other than Basic")]
    UnsupportedScheme,
    #[error("malformed basic credentials")]
    MalformedBasic,
    #[error("unknown client or wrong secret")]
    WrongSecret,
    #[error("client_id parameter differs from the authenticated client")]
    ClientIdMismatch,
    #[error("client_assertion_type is not jwt-bearer or the assertion is missing")]
    AssertionType,
    #[error("client assertion refused: {0}")]
    BadAssertion(&'static str),
    #[error("client assertion replayed")]
    Replayed,
    #[error("too many client assertions remembered")]
    Busy,
}

/// How the client authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    SecretBasic,
    SecretPost,
    PrivateKeyJwt,
}

/// The credentials a request presents.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// The `Authorization` header's value.
    pub authorization: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub client_secret: Option<&'a str>,
    pub client_assertion_type: Option<&'a str>,
    pub client_assertion: Option<&'a str>,
}

impl<'a> Presented<'a> {
    pub fn new(authorization: Option<&'a str>, form: &'a Form) -> Self {
        Self {
            authorization,
            client_id: form.get("client_id"),
            client_secret: form.get("client_secret"),
            client_assertion_type: form.get("client_assertion_type"),
            client_assertion: form.get("client_assertion"),
        }
    }

    /// Whether the request used `Authorization: Basic` (its refusal then carries
    /// `WWW-Authenticate: Basic`, RFC 6749 §5.2).
    pub fn uses_basic(&self) -> bool {
        self.authorization
            .and_then(|v| v.split_once(' '))
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
    }
}

/// What an assertion must name: the audiences this server answers to, and the time.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub audiences: &'a [&'a str],
    pub now: u64,
}

/// The `jti`s of accepted assertions, per client, until they expire.
#[derive(Debug, Clone, Default)]
pub struct Assertions {
    seen: Arc<Mutex<HashMap<(String, String), u64>>>,
}

impl Assertions {
    /// Remembers `(client, jti)` until `until`; false if it is already remembered.
    fn first_use(&self, client: &str, jti: &str, until: u64, now: u64) -> Result<bool, AuthError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = (client.to_owned(), jti.to_owned());
        if seen.get(&key).is_some_and(|&end| end >= now) {
            return Ok(false);
        }
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, end| *end >= now);
            if seen.len() >= MAX_REMEMBERED {
                return Err(AuthError::Busy);
            }
        }
        seen.insert(key, until);
        Ok(true)
    }
}

/// Authenticates the client of a request: its id and how.
pub fn authenticate(
    clients: &Clients,
    assertions: &Assertions,
    presented: &Presented<'_>,
    expected: &Expected<'_>,
) -> Result<(String, Method), AuthError> {
    let methods = [
        presented.authorization.is_some(),
        presented.client_secret.is_some(),
        presented.client_assertion.is_some() || presented.client_assertion_type.is_some(),
    ];
    let (id, method) = match methods {
        [false, false, false] => return Err(AuthError::Missing),
        [true, false, false] => {
            let value = presented.authorization.unwrap_or_default();
            let (id, secret) = basic_credentials(value)?;
            if !clients.secret_matches(&id, &secret) {
                return Err(AuthError::WrongSecret);
            }
            (id, Method::SecretBasic)
        }
        [false, true, false] => {
            let id = presented.client_id.ok_or(AuthError::WrongSecret)?;
            let secret = presented.client_secret.unwrap_or_default();
            if secret.len() > MAX_SECRET_LEN || !clients.secret_matches(id, secret) {
                return Err(AuthError::WrongSecret);
            }
            (id.to_owned(), Method::SecretPost)
        }
        [false, false, true] => {
            if presented.client_assertion_type != Some(JWT_BEARER) {
                return Err(AuthError::AssertionType);
            }
            let assertion = presented.client_assertion.ok_or(AuthError::AssertionType)?;
            let id = verify_assertion(clients, assertions, assertion, expected)?;
            (id, Method::PrivateKeyJwt)
        }
        _ => return Err(AuthError::SeveralMethods),
    };
    // A `client_id` parameter alongside another method must name the same client
    // (RFC 7523 §3 item 2 for assertions; the same for Basic).
    if presented.client_id.is_some_and(|given| given != id) {
        return Err(AuthError::ClientIdMismatch);
    }
    Ok((id, method))
}

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`.
fn basic_credentials(value: &str) -> Result<(String, String), AuthError> {
    let (scheme, encoded) = value.split_once(' ').ok_or(AuthError::UnsupportedScheme)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::UnsupportedScheme);
    }
    if encoded.len() > MAX_BASIC {
        return Err(AuthError::MalformedBasic);
    }
    let lenient = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let decoded = lenient
        .decode(encoded.trim())
        .map_err(|_| AuthError::MalformedBasic)?;
    let decoded = String::from_utf8(decoded).map_err(|_| AuthError::MalformedBasic)?;
    let (id, secret) = decoded.split_once(':').ok_or(AuthError::MalformedBasic)?;
    let id = form::decode(id).ok_or(AuthError::MalformedBasic)?;
    let secret = form::decode(secret).ok_or(AuthError::MalformedBasic)?;
    if id.is_empty() || id.len() > MAX_CLIENT_ID {
        return Err(AuthError::WrongSecret);
    }
    Ok((id, secret))
}

/// The claims of a compact JWS, unverified: only to find the client whose keys verify it.
fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn number(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or(AuthError::BadAssertion("a time claim is not a number")),
    }
}

/// RFC 7523 §3: signed by one of the client's keys, `iss` = `sub` = the client, `aud`
/// naming this server, `exp` in the near future, a `jti` not seen before.
fn verify_assertion(
    clients: &Clients,
    assertions: &Assertions,
    assertion: &str,
    expected: &Expected<'_>,
) -> Result<String, AuthError> {
    if assertion.len() > MAX_ASSERTION {
        return Err(AuthError::BadAssertion("too large"));
    }
    let header =
        jsonwebtoken::decode_header(assertion).map_err(|_| AuthError::BadAssertion("malformed"))?;
    if !ASSERTION_ALGORITHMS.contains(&header.alg) {
        return Err(AuthError::BadAssertion("algorithm not accepted"));
    }
    let unverified = unverified_claims(assertion).ok_or(AuthError::BadAssertion("malformed"))?;
    let id = unverified
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(AuthError::BadAssertion("no sub"))?;
    let client = clients
        .get(id)
        .ok_or(AuthError::BadAssertion("unknown client"))?;
    let mut validation = Validation::new(header.alg);
    // The claims are checked below, all of them, with this server's leeway.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = client
        .keys
        .iter()
        .filter(|k| k.algorithm == header.alg)
        .filter(|k| header.kid.is_none() || k.kid == header.kid)
        .find_map(|k| {
            jsonwebtoken::decode::<Map<String, Value>>(assertion, &k.key, &validation).ok()
        })
        .ok_or(AuthError::BadAssertion("no registered key verifies it"))?
        .claims;
    // Items 1 and 2: `iss` and `sub` are the client.
    let sub = claims.get("sub").and_then(Value::as_str);
    if sub != Some(id) || claims.get("iss").and_then(Value::as_str) != Some(id) {
        return Err(AuthError::BadAssertion("iss and sub must be the client_id"));
    }
    // Item 3: `aud` names this server.
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => expected.audiences.contains(&aud.as_str()),
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .any(|aud| expected.audiences.contains(&aud)),
        _ => false,
    };
    if !audience_ok {
        return Err(AuthError::BadAssertion("aud does not name this server"));
    }
    // Item 4: `exp` required and not passed; also not far ahead, so the set of `jti`s
    // to remember stays short.
    let now = expected.now;
    let exp = number(&claims, "exp")?.ok_or(AuthError::BadAssertion("no exp"))?;
    if exp + LEEWAY <= now {
        return Err(AuthError::BadAssertion("expired"));
    }
    if exp > now + MAX_ASSERTION_LIFETIME + LEEWAY {
        return Err(AuthError::BadAssertion("exp too far ahead"));
    }
    // Items 5 and 6: `nbf` and `iat`, if given, not in the future.
    if let Some(iat) = number(&claims, "iat")? {
        if iat > now + LEEWAY {
            return Err(AuthError::BadAssertion("iat in the future"));
        }
        if exp.saturating_sub(iat) > MAX_ASSERTION_LIFETIME {
            return Err(AuthError::BadAssertion("lifetime too long"));
        }
    }
    if number(&claims, "nbf")?.is_some_and(|nbf| nbf > now + LEEWAY) {
        return Err(AuthError::BadAssertion("not yet valid"));
    }
    // Item 7: a `jti` used once.
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI)
        .ok_or(AuthError::BadAssertion("no usable jti"))?;
    if !assertions.first_use(id, jti, exp + LEEWAY, now)? {
        return Err(AuthError::Replayed);
    }
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests;
