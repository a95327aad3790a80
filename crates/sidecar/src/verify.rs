//! Token verification: the provider is chosen by the token's `iss`, the key by its `kid` (or,
//! without one, by its algorithm), and only keys from the provider's own JWKS are ever used.
//! Keys offered by the token itself (`jwk`, `jku`, `x5u`, `x5c`) are ignored.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, Header};
use serde_json::{Map, Value};

use crate::config::ProviderConfig;
use crate::keys::store::KeyStore;
use crate::keys::{KeySet, VerifyingKey};

pub mod pool;
pub mod token_cache;

use jwt_authz_jose::jws::{self, Record, Registered, Unverified, stage};
use pool::VerifyPool;

pub use jwt_authz_core::decision::audience_matches;
pub use jwt_authz_core::token::{VerifiedToken, VerifyError};

/// One configured provider and its keys.
#[derive(Debug)]
pub struct Provider {
    pub index: usize,
    pub store: Arc<KeyStore>,
}

impl Provider {
    pub fn config(&self) -> &ProviderConfig {
        self.store.provider()
    }

    /// What the decision reads of this provider.
    pub fn view(&self) -> jwt_authz_core::decision::Provider<'_> {
        let config = self.config();
        jwt_authz_core::decision::Provider {
            index: self.index,
            name: &config.name,
            token_sources: &config.token_sources,
            audiences: &config.audiences,
            mode: config.mode,
        }
    }
}

/// All providers of one configuration, looked up by issuer (and, for JWT-SVIDs without
/// one, by trust domain).
#[derive(Debug)]
pub struct Verifier {
    providers: Vec<Provider>,
    by_issuer: HashMap<String, usize>,
    by_trust_domain: HashMap<String, usize>,
}

impl Verifier {
    pub fn new(providers: Vec<Provider>) -> Self {
        let by_issuer = providers
            .iter()
            .map(|p| (p.config().issuer.clone(), p.index))
            .collect();
        let by_trust_domain = providers
            .iter()
            .filter_map(|p| Some((p.config().spiffe.as_ref()?.trust_domain.clone(), p.index)))
            .collect();
        Self {
            providers,
            by_issuer,
            by_trust_domain,
        }
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    pub fn provider(&self, index: usize) -> Option<&Provider> {
        self.providers.get(index)
    }

    /// The provider a token claims to come from (its `iss`, read before verification:
    /// only used to pick which keys to verify with). A JWT-SVID need not carry `iss`
    /// (JWT-SVID §3): one without it names its trust domain in `sub`, and goes to the
    /// provider of that trust domain, whose checks then hold `sub` to it.
    pub fn provider_for(&self, token: &Unverified) -> Result<&Provider, VerifyError> {
        let index = match token.claims.get("iss") {
            Some(_) => self.by_issuer.get(token.issuer()?),
            None => token
                .claims
                .get("sub")
                .and_then(Value::as_str)
                .and_then(|sub| jwt_authz_jose::spiffe::parse(sub).ok())
                .and_then(|id| self.by_trust_domain.get(id.trust_domain)),
        };
        index
            .and_then(|i| self.providers.get(*i))
            .ok_or(VerifyError::UnknownIssuer)
    }

    /// Verifies a token: decoded once, its provider chosen by `iss`, its key by `kid`
    /// (refetched, rate-limited, when the provider does not hold it), its signature checked
    /// through `pool` (on its threads while it isolates, here otherwise), its claims
    /// checked; a refusal after the signature check is reported to `pool`. Everything that
    /// can refuse a token without cryptography (shape, issuer, header, type, algorithm,
    /// unknown key) does so first. Each check is recorded in `record` when given (`explain`).
    pub async fn verify(
        &self,
        token: &str,
        pool: &VerifyPool,
        record: Record<'_>,
    ) -> Result<VerifiedToken, VerifyError> {
        let token = stage(record, "shape", Unverified::parse(token), |ok| {
            if ok {
                "compact JWS, JSON header and claims".to_owned()
            } else {
                String::new()
            }
        })?;
        let provider = stage(record, "iss", self.provider_for(&token), |_| {
            match self.provider_for(&token) {
                Ok(p) => format!("provider {}", p.config().name),
                Err(_) => "no provider has this issuer".to_owned(),
            }
        })?;
        let config = provider.config();
        let header = stage(
            record,
            "header",
            checked_header(&token.header, config),
            |_| format!("alg {:?}", token.header.alg),
        )?;
        // RFC 8725 §3.11: explicit typing keeps, say, an ID token out of where an access
        // token is meant. Checked before the signature: it costs nothing. A Status List
        // Token is signed with the same keys; it is never an access token.
        let typ = header.typ.as_deref();
        let typed = if !config.accepts_type(typ)
            || typ
                .and_then(crate::config::media_type)
                .is_some_and(|t| t.eq_ignore_ascii_case(jwt_authz_jose::status_list::TOKEN_TYPE))
        {
            Err(VerifyError::WrongTokenType)
        } else {
            Ok(())
        };
        stage(record, "typ", typed, |_| typ.unwrap_or("-").to_owned())?;
        let kid = token.header.kid.as_deref();
        let keys = key_set_for(&provider.store, kid).await;
        let keys = stage(record, "key", keys, |_| {
            format!("kid {}", kid.unwrap_or("-"))
        })?;
        // Refused before it queues: the signature check alone is left to do.
        candidates(&keys, token.header.kid.as_deref(), token.header.alg)?;
        let (token, thumbprint) = pool
            .run(move || {
                let thumbprint = signed_by(&keys, &token).map(|key| key.thumbprint.clone());
                (token, thumbprint)
            })
            .await
            .map_err(|_| VerifyError::VerifyBusy)?;
        let verified = stage(record, "signature", thumbprint, |ok| {
            if ok {
                "valid".to_owned()
            } else {
                String::new()
            }
        })
        .and_then(|thumbprint| {
            let exp = checked_claims(config, &token.claims, record)?;
            Ok(VerifiedToken {
                provider: provider.index,
                thumbprint,
                claims: token.claims,
                exp,
            })
        });
        if verified.is_err() {
            pool.refused();
        }
        verified
    }
}

/// The registered claims (RFC 7519 §4.1) and the provider's own requirements, checked on a
/// token whose signature holds; its `exp`.
fn checked_claims(
    config: &ProviderConfig,
    claims: &Map<String, Value>,
    record: Record<'_>,
) -> Result<Option<u64>, VerifyError> {
    // JWT-SVID §3: `iss` is optional (the trust domain in `sub` chose the provider).
    let required: &[&str] = if config.spiffe.is_some() {
        &["aud"]
    } else {
        &["iss", "aud"]
    };
    let now = jsonwebtoken::get_current_timestamp();
    let exp = check_registered(config, claims, required, now, record)?;
    stage(
        record,
        "required_claims",
        check_required(config, claims),
        |_| format!("{:?}", config.required_claims),
    )?;
    if let Some(spiffe) = &config.spiffe {
        stage(
            record,
            "spiffe_id",
            check_spiffe_id(&spiffe.trust_domain, claims),
            |_| format!("sub in trust domain {}", spiffe.trust_domain),
        )?;
    }
    check_issued_at(config, claims, exp, now, record)?;
    Ok(exp)
}

/// The key whose signature the token carries: of the keys that may have signed it (the one
/// its `kid` names, or every key for its algorithm), the first whose signature checks.
fn signed_by<'k>(keys: &'k KeySet, token: &Unverified) -> Result<&'k VerifyingKey, VerifyError> {
    let header = &token.header;
    candidates(keys, header.kid.as_deref(), header.alg)?
        .into_iter()
        .find(|key| key.verify_signature(header.alg, &token.signing_input, &token.signature))
        .ok_or(VerifyError::BadSignature)
}

/// The JOSE header, refused when it asks for what is never supported (`crit`, encryption,
/// compression) or names an algorithm the provider does not accept.
fn checked_header<'h>(
    header: &'h Header,
    config: &ProviderConfig,
) -> Result<&'h Header, VerifyError> {
    if header.crit.is_some() || header.enc.is_some() || header.zip.is_some() {
        return Err(VerifyError::UnsupportedHeader);
    }
    if !config.algorithms.contains(&header.alg) {
        return Err(VerifyError::AlgorithmNotAllowed);
    }
    Ok(header)
}

/// The provider's key set, refetched first (rate-limited) when it is empty or lacks `kid`.
async fn key_set_for(store: &Arc<KeyStore>, kid: Option<&str>) -> Result<Arc<KeySet>, VerifyError> {
    let keys = store.keys();
    let needs_fetch = keys.is_empty() || kid.is_some_and(|kid| keys.by_kid(kid).next().is_none());
    if !needs_fetch {
        return Ok(keys);
    }
    store
        .refetch_rate_limited()
        .await
        .map_err(|_| VerifyError::KeyFetchBusy)?;
    let keys = store.keys();
    if keys.is_empty() {
        return Err(VerifyError::KeysUnavailable);
    }
    Ok(keys)
}

/// The keys that may have signed a token with this header: the one named by `kid` (or,
/// without one, every key for the algorithm), each allowed to verify `alg`.
fn candidates<'k>(
    keys: &'k KeySet,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Vec<&'k VerifyingKey>, VerifyError> {
    let found: Vec<&VerifyingKey> = match kid {
        Some(kid) => keys.by_kid(kid).collect(),
        None => keys.for_algorithm(alg).collect(),
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

/// Verifies a Status List Token (draft-ietf-oauth-status-list §5.1, §8.3 step 3) with a key
/// of `store`'s provider, the provider of the token that references the list (§11.3: the
/// same web-based key resolution as the Referenced Token): `typ` must be `statuslist+jwt`,
/// the signature valid, `nbf` (if any) reached, `sub` present, and `iss`, if present, the
/// provider's issuer. Returns the claims; the caller checks `sub`, `iat`, `exp` and `ttl`
/// against the reference ([`jwt_authz_jose::status_list::check_token_claims`]).
pub async fn verify_status_list_token(
    store: &Arc<KeyStore>,
    token: &str,
) -> Result<Map<String, Value>, VerifyError> {
    let config = store.provider();
    let token = Unverified::parse(token)?;
    let header = checked_header(&token.header, config)?;
    // §5.1: "The JWT type MUST be statuslist+jwt" (RFC 7515 §4.1.9: with or without the
    // application/ prefix).
    let typ = header.typ.as_deref().and_then(crate::config::media_type);
    if !typ.is_some_and(|t| t.eq_ignore_ascii_case(jwt_authz_jose::status_list::TOKEN_TYPE)) {
        return Err(VerifyError::WrongTokenType);
    }
    let keys = key_set_for(store, header.kid.as_deref()).await?;
    signed_by(&keys, &token)?;
    // `exp` is checked against the list's use (status_list::check_token_claims); `aud` is
    // not a Status List Token claim; `iss`, if present, must be the provider's.
    let rules = Registered {
        required: &["sub"],
        check_exp: false,
        check_nbf: true,
        leeway: config.leeway.as_secs(),
        issuer: Some(&config.issuer),
    };
    jws::check_registered(
        &token.claims,
        &rules,
        jsonwebtoken::get_current_timestamp(),
        None,
    )?;
    Ok(token.claims)
}

/// Verifies a JWT-secured introspection answer (RFC 9701 §5) with a key of `store`'s
/// provider: `typ` `token-introspection+jwt` (§5: REQUIRED, keeping any other JWT of the
/// provider's out), an algorithm the provider accepts, the signature. Returns the claims;
/// [`crate::introspection`] checks `iss`, `aud`, `iat` and the introspection object.
pub async fn verify_signed_introspection(
    store: &Arc<KeyStore>,
    jwt: &str,
) -> Result<Map<String, Value>, VerifyError> {
    let token = Unverified::parse(jwt).map_err(|_| VerifyError::BadIntrospection)?;
    let header = checked_header(&token.header, store.provider())
        .map_err(|_| VerifyError::BadIntrospection)?;
    let typ = header.typ.as_deref().and_then(crate::config::media_type);
    if !typ.is_some_and(|t| t.eq_ignore_ascii_case("token-introspection+jwt")) {
        return Err(VerifyError::BadIntrospection);
    }
    let keys = match key_set_for(store, header.kid.as_deref()).await {
        Ok(keys) => keys,
        // The keys cannot be had: nothing is known of the answer.
        Err(VerifyError::KeysUnavailable | VerifyError::KeyFetchBusy) => {
            return Err(VerifyError::IntrospectionUnavailable);
        }
        Err(_) => return Err(VerifyError::BadIntrospection),
    };
    signed_by(&keys, &token).map_err(|_| VerifyError::BadIntrospection)?;
    Ok(token.claims)
}

/// JWT-SVID §3.1: `sub` is the workload's SPIFFE ID (SPIFFE-ID §2), and of this provider's
/// trust domain (a bundle's keys speak for their own domain only).
fn check_spiffe_id(trust_domain: &str, claims: &Map<String, Value>) -> Result<(), VerifyError> {
    let sub = claims.get("sub").and_then(Value::as_str);
    match sub.map(jwt_authz_jose::spiffe::parse) {
        Some(Ok(id)) if id.trust_domain == trust_domain => Ok(()),
        _ => Err(VerifyError::NotSpiffeId),
    }
}

/// RFC 7519 §4.1 under the provider's rules: `required` present (and `exp` too unless
/// `require_exp: false`), `exp` and `nbf` within `leeway`, `iss` (when present) the provider's
/// issuer; the token's `exp`. For a JWT's claims and an introspection answer's members alike.
pub(crate) fn check_registered(
    config: &ProviderConfig,
    claims: &Map<String, Value>,
    required: &[&str],
    now: u64,
    record: Record<'_>,
) -> Result<Option<u64>, VerifyError> {
    let mut required = required.to_vec();
    if config.require_exp {
        required.push("exp");
    }
    let rules = Registered {
        required: &required,
        check_exp: true,
        check_nbf: true,
        leeway: config.leeway.as_secs(),
        issuer: Some(&config.issuer),
    };
    jws::check_registered(claims, &rules, now, record)
}

pub(crate) fn check_required(
    config: &ProviderConfig,
    claims: &Map<String, Value>,
) -> Result<(), VerifyError> {
    for name in &config.required_claims {
        if claims.get(name).is_none_or(Value::is_null) {
            return Err(VerifyError::MissingClaim(name.clone()));
        }
    }
    Ok(())
}

/// `iat` (RFC 7519 §4.1.6) must not lie in the future beyond the leeway, and with
/// `max_lifetime` set the token must carry `iat` and `exp` no further apart than that.
pub(crate) fn check_issued_at(
    config: &ProviderConfig,
    claims: &Map<String, Value>,
    exp: Option<u64>,
    now: u64,
    record: Record<'_>,
) -> Result<(), VerifyError> {
    let iat = jws::date_claim(claims, "iat")?;
    if let Some(iat) = iat {
        let future = if iat > now.saturating_add(config.leeway.as_secs()) {
            Err(VerifyError::IssuedInFuture)
        } else {
            Ok(())
        };
        stage(record, "iat", future, |_| {
            format!("{:+} s from now", jws::from_now(iat, now))
        })?;
    }
    if let Some(max) = config.max_lifetime {
        let lifetime = match (iat, exp) {
            (None, _) => Err(VerifyError::MissingClaim("iat".to_owned())),
            (_, None) => Err(VerifyError::MissingClaim("exp".to_owned())),
            (Some(iat), Some(exp)) if exp.saturating_sub(iat) > max.as_secs() => {
                Err(VerifyError::LifetimeTooLong)
            }
            _ => Ok(()),
        };
        stage(record, "lifetime", lifetime, |_| {
            format!("at most {} s", max.as_secs())
        })?;
    }
    Ok(())
}
