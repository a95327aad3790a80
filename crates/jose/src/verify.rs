//! Verifying a JWT access token under its provider's rules, written once: the sidecar takes
//! these steps on every token it verifies (interleaving its key fetches, verification
//! threads and `explain` records), and the Envoy dynamic module takes the same steps, in the
//! same order, on a token it verifies in Envoy ([`verify`]).
//!
//! - keys: a JWK read into a [`VerifyingKey`] pinned to the algorithms its type, its own
//!   `alg` and the provider allow ([`VerifyingKey::from_jwk_value`]);
//! - the header ([`checked_header`]) and its `typ` ([`checked_type`], RFC 8725 §3.11);
//! - the key that may have signed it ([`candidates`]) and whose signature holds
//!   ([`signed_by`]);
//! - the claims ([`checked_claims`]): RFC 7519 §4.1 under the provider's leeway, issuer,
//!   `require_exp`, `required_claims`, SPIFFE subject, `iat` and `max_lifetime`.

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
    ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::crypto::PreparedKey;
use crate::jws::{self, Record, Registered, Unverified, stage};
use jwt_authz_core::token::VerifyError;

#[cfg(test)]
mod tests;

/// A provider's verification rules (borrowed from wherever they are kept: the sidecar's
/// provider configuration, or what the sidecar published to the dynamic module).
#[derive(Debug, Clone, Copy)]
pub struct Profile<'a> {
    pub issuer: &'a str,
    pub algorithms: &'a [Algorithm],
    /// Seconds of clock skew allowed either way.
    pub leeway: u64,
    pub require_exp: bool,
    pub required_claims: &'a [String],
    /// `exp - iat` at most this many seconds (and both required) when set.
    pub max_lifetime: Option<u64>,
    /// Accepted `typ` values (media types); empty: any or none.
    pub token_types: &'a [String],
    /// The provider issues JWT-SVIDs of this trust domain.
    pub spiffe_trust_domain: Option<&'a str>,
}

/// A [`Profile`] as the sidecar publishes it to the dynamic module (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedProfile {
    pub issuer: String,
    pub algorithms: Vec<Algorithm>,
    pub leeway: u64,
    pub require_exp: bool,
    pub required_claims: Vec<String>,
    pub max_lifetime: Option<u64>,
    pub token_types: Vec<String>,
    pub spiffe_trust_domain: Option<String>,
}

impl OwnedProfile {
    pub fn of(profile: &Profile<'_>) -> Self {
        Self {
            issuer: profile.issuer.to_owned(),
            algorithms: profile.algorithms.to_vec(),
            leeway: profile.leeway,
            require_exp: profile.require_exp,
            required_claims: profile.required_claims.to_vec(),
            max_lifetime: profile.max_lifetime,
            token_types: profile.token_types.to_vec(),
            spiffe_trust_domain: profile.spiffe_trust_domain.map(str::to_owned),
        }
    }

    pub fn view(&self) -> Profile<'_> {
        Profile {
            issuer: &self.issuer,
            algorithms: &self.algorithms,
            leeway: self.leeway,
            require_exp: self.require_exp,
            required_claims: &self.required_claims,
            max_lifetime: self.max_lifetime,
            token_types: &self.token_types,
            spiffe_trust_domain: self.spiffe_trust_domain.as_deref(),
        }
    }
}

/// One public key, ready to verify tokens.
pub struct VerifyingKey {
    pub kid: Option<String>,
    /// RFC 7638 thumbprint: identifies the key material whatever its `kid`.
    pub thumbprint: String,
    /// The algorithms this key may verify: its type's, narrowed by its `alg` and the provider.
    pub algorithms: Vec<Algorithm>,
    /// The JWK it was read from (public members only: one with private ones is refused).
    pub jwk: Value,
    /// The key parsed by aws-lc once for each of `algorithms`.
    prepared: Vec<PreparedKey>,
}

impl VerifyingKey {
    /// Whether `signature` over `message` was made with this key under `alg`; never for an
    /// algorithm the key is not pinned to.
    pub fn verify_signature(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.prepared
            .iter()
            .find(|p| p.alg == alg)
            .is_some_and(|p| p.verify(message, signature))
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("thumbprint", &self.thumbprint)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Shorter RSA keys are refused at parse time (aws-lc would refuse them at every verify).
pub const MIN_RSA_BITS: usize = 2048;

impl VerifyingKey {
    /// Reads one JWKS member for a provider that accepts `provider_algorithms`; `Err` says
    /// why the key cannot be used (never a symmetric key, private material, a key not for
    /// signatures, an RSA key under [`MIN_RSA_BITS`], a curve or `alg` not supported).
    pub fn from_jwk_value(value: Value, provider_algorithms: &[Algorithm]) -> Result<Self, String> {
        if value.get("kty").and_then(|v| v.as_str()) == Some("oct") {
            return Err("symmetric (oct) keys are never accepted".into());
        }
        let kid_hint = value
            .get("kid")
            .and_then(|v| v.as_str())
            .unwrap_or("<none>")
            .to_owned();
        if value.get("d").is_some() {
            return Err(format!("key {kid_hint} carries private material"));
        }
        let jwk: Jwk = serde_json::from_value(value.clone())
            .map_err(|e| format!("key {kid_hint}: invalid JWK: {e}"))?;
        // A SPIFFE trust bundle marks its JWT authorities `jwt-svid` (SPIFFE Trust Domain and
        // Bundle §4.2.1), its X.509 ones `x509-svid`: only the former sign JWTs.
        let signs_jwts = |key_use: &PublicKeyUse| match key_use {
            PublicKeyUse::Signature => true,
            PublicKeyUse::Other(other) => other == "jwt-svid",
            PublicKeyUse::Encryption => false,
        };
        if let Some(key_use) = &jwk.common.public_key_use
            && !signs_jwts(key_use)
        {
            return Err(format!("key {kid_hint}: not a signing key"));
        }
        if let Some(ops) = &jwk.common.key_operations
            && !ops.contains(&KeyOperations::Verify)
        {
            return Err(format!("key {kid_hint}: key_ops does not allow verify"));
        }
        let by_type: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => return Err(format!("key {kid_hint}: unsupported curve")),
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
                _ => return Err(format!("key {kid_hint}: unsupported curve")),
            },
            AlgorithmParameters::OctetKey(_) => {
                return Err("symmetric (oct) keys are never accepted".into());
            }
            _ => return Err(format!("key {kid_hint}: unsupported key type")),
        };
        if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
            let bits = rsa_modulus_bits(&rsa.n)
                .ok_or_else(|| format!("key {kid_hint}: invalid RSA modulus"))?;
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "key {kid_hint}: RSA key of {bits} bits is shorter than {MIN_RSA_BITS}"
                ));
            }
        }
        let mut algorithms: Vec<Algorithm> = by_type
            .iter()
            .copied()
            .filter(|a| provider_algorithms.contains(a))
            .collect();
        if let Some(declared) = &jwk.common.key_algorithm {
            let declared = declared_algorithm(declared)
                .ok_or_else(|| format!("key {kid_hint}: unsupported alg {declared:?}"))?;
            if !by_type.contains(&declared) {
                return Err(format!(
                    "key {kid_hint}: alg {declared:?} does not match the key type"
                ));
            }
            algorithms.retain(|a| *a == declared);
        }
        if algorithms.is_empty() {
            return Err(format!(
                "key {kid_hint}: none of the provider's algorithms fits this key"
            ));
        }
        let decoding_key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| format!("key {kid_hint}: unusable key material: {e}"))?;
        let thumbprint = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| format!("key {kid_hint}: cannot compute thumbprint: {e}"))?;
        let prepared = crate::crypto::prepare(&decoding_key, &algorithms);
        // An algorithm aws-lc could not parse the key for is one this key never verifies.
        algorithms.retain(|alg| prepared.iter().any(|p| p.alg == *alg));
        if algorithms.is_empty() {
            return Err(format!("key {kid_hint}: unusable key material"));
        }
        Ok(Self {
            kid: jwk.common.key_id.clone(),
            thumbprint,
            algorithms,
            jwk: value,
            prepared,
        })
    }
}

fn rsa_modulus_bits(n: &str) -> Option<usize> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .ok()?;
    let first = bytes.iter().position(|b| *b != 0)?;
    let significant = &bytes[first..];
    Some(significant.len() * 8 - significant[0].leading_zeros() as usize)
}

fn declared_algorithm(alg: &KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// A JOSE `typ` value without its optional `application/` prefix (RFC 7515 §4.1.9: a value
/// without `/` means `application/<value>`; RFC 8725 §3.11). `None` for a value that is empty,
/// names another top-level type, or holds spaces or control characters.
pub fn media_type(typ: &str) -> Option<&str> {
    let subtype = match typ.split_once('/') {
        Some((top, sub)) if top.eq_ignore_ascii_case("application") => sub,
        Some(_) => return None,
        None => typ,
    };
    (!subtype.is_empty()
        && subtype
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'"' | b'\\')))
    .then_some(subtype)
}

/// Whether `typ` is one of `token_types` as media types (any, or none, when the list is
/// empty).
pub fn accepts_type(token_types: &[String], typ: Option<&str>) -> bool {
    if token_types.is_empty() {
        return true;
    }
    let Some(typ) = typ.and_then(media_type) else {
        return false;
    };
    token_types
        .iter()
        .filter_map(|t| media_type(t))
        .any(|accepted| accepted.eq_ignore_ascii_case(typ))
}

/// The JOSE header, refused when it asks for what is never supported (`crit`, encryption,
/// compression) or names an algorithm the provider does not accept.
pub fn checked_header<'h>(
    header: &'h Header,
    profile: &Profile<'_>,
) -> Result<&'h Header, VerifyError> {
    if header.crit.is_some() || header.enc.is_some() || header.zip.is_some() {
        return Err(VerifyError::UnsupportedHeader);
    }
    if !profile.algorithms.contains(&header.alg) {
        return Err(VerifyError::AlgorithmNotAllowed);
    }
    Ok(header)
}

/// RFC 8725 §3.11: explicit typing keeps, say, an ID token out of where an access token is
/// meant; a Status List Token, signed with the same keys, is never an access token.
pub fn checked_type(profile: &Profile<'_>, typ: Option<&str>) -> Result<(), VerifyError> {
    let status_list = typ
        .and_then(media_type)
        .is_some_and(|t| t.eq_ignore_ascii_case(crate::status_list::TOKEN_TYPE));
    if !accepts_type(profile.token_types, typ) || status_list {
        return Err(VerifyError::WrongTokenType);
    }
    Ok(())
}

/// The keys that may have signed a token with this header: the one named by `kid` (or,
/// without one, every key for the algorithm), each allowed to verify `alg`.
pub fn candidates<'k>(
    keys: &'k [VerifyingKey],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Vec<&'k VerifyingKey>, VerifyError> {
    let found: Vec<&VerifyingKey> = match kid {
        Some(kid) => keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid))
            .collect(),
        None => keys
            .iter()
            .filter(|k| k.algorithms.contains(&alg))
            .collect(),
    };
    if found.is_empty() {
        return Err(if kid.is_some() {
            VerifyError::UnknownKey
        } else {
            VerifyError::AlgorithmNotAllowed
        });
    }
    let usable: Vec<&VerifyingKey> = found
        .into_iter()
        .filter(|k| k.algorithms.contains(&alg))
        .collect();
    if usable.is_empty() {
        return Err(VerifyError::AlgorithmNotAllowed);
    }
    Ok(usable)
}

/// The key whose signature the token carries: of the keys that may have signed it (the one
/// its `kid` names, or every key for its algorithm), the first whose signature checks.
pub fn signed_by<'k>(
    keys: &'k [VerifyingKey],
    token: &Unverified,
) -> Result<&'k VerifyingKey, VerifyError> {
    let header = &token.header;
    candidates(keys, header.kid.as_deref(), header.alg)?
        .into_iter()
        .find(|key| key.verify_signature(header.alg, &token.signing_input, &token.signature))
        .ok_or(VerifyError::BadSignature)
}

/// The registered claims (RFC 7519 §4.1) and the provider's own requirements, checked on a
/// token whose signature holds; its `exp`.
pub fn checked_claims(
    profile: &Profile<'_>,
    claims: &Map<String, Value>,
    now: u64,
    record: Record<'_>,
) -> Result<Option<u64>, VerifyError> {
    // JWT-SVID §3: `iss` is optional (the trust domain in `sub` chose the provider).
    let required: &[&str] = if profile.spiffe_trust_domain.is_some() {
        &["aud"]
    } else {
        &["iss", "aud"]
    };
    let exp = check_registered(profile, claims, required, now, record)?;
    stage(
        record,
        "required_claims",
        check_required(profile, claims),
        |_| format!("{:?}", profile.required_claims),
    )?;
    if let Some(trust_domain) = profile.spiffe_trust_domain {
        stage(
            record,
            "spiffe_id",
            check_spiffe_id(trust_domain, claims),
            |_| format!("sub in trust domain {trust_domain}"),
        )?;
    }
    check_issued_at(profile, claims, exp, now, record)?;
    Ok(exp)
}

/// `sub` must be a SPIFFE ID of the provider's trust domain (SPIFFE JWT-SVID §3).
fn check_spiffe_id(trust_domain: &str, claims: &Map<String, Value>) -> Result<(), VerifyError> {
    match claims
        .get("sub")
        .and_then(Value::as_str)
        .map(crate::spiffe::parse)
    {
        Some(Ok(id)) if id.trust_domain == trust_domain => Ok(()),
        _ => Err(VerifyError::NotSpiffeId),
    }
}

/// RFC 7519 §4.1 under the provider's rules: `required` present (and `exp` too unless
/// `require_exp: false`), `exp` and `nbf` within `leeway`, `iss` (when present) the provider's
/// issuer; the token's `exp`. For a JWT's claims and an introspection answer's members alike.
pub fn check_registered(
    profile: &Profile<'_>,
    claims: &Map<String, Value>,
    required: &[&str],
    now: u64,
    record: Record<'_>,
) -> Result<Option<u64>, VerifyError> {
    let mut required = required.to_vec();
    if profile.require_exp {
        required.push("exp");
    }
    let rules = Registered {
        required: &required,
        check_exp: true,
        check_nbf: true,
        leeway: profile.leeway,
        issuer: Some(profile.issuer),
    };
    jws::check_registered(claims, &rules, now, record)
}

/// Every claim of `required_claims` present and not null.
pub fn check_required(
    profile: &Profile<'_>,
    claims: &Map<String, Value>,
) -> Result<(), VerifyError> {
    for name in profile.required_claims {
        if claims.get(name).is_none_or(Value::is_null) {
            return Err(VerifyError::MissingClaim(name.clone()));
        }
    }
    Ok(())
}

/// `iat` (RFC 7519 §4.1.6) must not lie in the future beyond the leeway, and with
/// `max_lifetime` set the token must carry `iat` and `exp` no further apart than that.
pub fn check_issued_at(
    profile: &Profile<'_>,
    claims: &Map<String, Value>,
    exp: Option<u64>,
    now: u64,
    record: Record<'_>,
) -> Result<(), VerifyError> {
    let iat = jws::date_claim(claims, "iat")?;
    if let Some(iat) = iat {
        let future = if iat > now.saturating_add(profile.leeway) {
            Err(VerifyError::IssuedInFuture)
        } else {
            Ok(())
        };
        stage(record, "iat", future, |_| {
            format!("{:+} s from now", jws::from_now(iat, now))
        })?;
    }
    if let Some(max) = profile.max_lifetime {
        let lifetime = match (iat, exp) {
            (None, _) => Err(VerifyError::MissingClaim("iat".to_owned())),
            (_, None) => Err(VerifyError::MissingClaim("exp".to_owned())),
            (Some(iat), Some(exp)) if exp.saturating_sub(iat) > max => {
                Err(VerifyError::LifetimeTooLong)
            }
            _ => Ok(()),
        };
        stage(record, "lifetime", lifetime, |_| format!("at most {max} s"))?;
    }
    Ok(())
}

/// A token verified: its claims, `exp`, and the thumbprint of the key that signed it.
#[derive(Debug)]
pub struct Verified {
    pub claims: Map<String, Value>,
    pub exp: Option<u64>,
    pub thumbprint: String,
}

/// Every step on a token already taken apart, in the sidecar's order: the header, its
/// type, the key, the signature, the claims. `now`: Unix seconds.
pub fn verify(
    profile: &Profile<'_>,
    keys: &[VerifyingKey],
    token: Unverified,
    now: u64,
) -> Result<Verified, VerifyError> {
    checked_header(&token.header, profile)?;
    checked_type(profile, token.header.typ.as_deref())?;
    let thumbprint = signed_by(keys, &token)?.thumbprint.clone();
    let exp = checked_claims(profile, &token.claims, now, None)?;
    Ok(Verified {
        claims: token.claims,
        exp,
        thumbprint,
    })
}

/// What the sidecar publishes to the Envoy dynamic module (`<in_proxy.prefix>/keys`) so that
/// a token it does not hold can be verified in Envoy: for each provider whose tokens need
/// nothing but their claims on later requests (no DPoP, certificate binding or status list),
/// its rules and the keys it holds, as of `generation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedKeys {
    /// The sidecar's in-proxy generation these keys belong to.
    pub generation: String,
    pub providers: Vec<PublishedProvider>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedProvider {
    pub name: String,
    pub profile: OwnedProfile,
    /// How long a token verified in Envoy may be held (the sidecar's `token_cache.ttl`).
    pub cache_for: u64,
    /// The JWKs it verifies with (public members only), as it read them.
    pub keys: Vec<Value>,
}

/// The most a published key answer may take (a JWKS of a few hundred keys).
pub const MAX_PUBLISHED_KEYS_BYTES: usize = 1024 * 1024;
