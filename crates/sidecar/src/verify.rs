//! Token verification: the provider is chosen by the token's `iss`, the key by its `kid` (or,
//! without one, by its algorithm), and only keys from the provider's own JWKS are ever used.
//! Keys offered by the token itself (`jwk`, `jku`, `x5u`, `x5c`) are ignored.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::ProviderConfig;
use crate::keys::KeySet;
use crate::keys::store::KeyStore;

pub mod pool;
pub mod token_cache;

use jwt_authz_jose::jws::{self, Record, Registered, Unverified, stage};
use jwt_authz_jose::verify as shared;
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
        let profile = config.profile();
        let header = stage(
            record,
            "header",
            shared::checked_header(&token.header, &profile),
            |_| format!("alg {:?}", token.header.alg),
        )?;
        // RFC 8725 §3.11: explicit typing. Checked before the signature: it costs nothing.
        let typ = header.typ.as_deref();
        let typed = shared::checked_type(&profile, typ);
        stage(record, "typ", typed, |_| typ.unwrap_or("-").to_owned())?;
        let kid = token.header.kid.as_deref();
        let keys = key_set_for(&provider.store, kid).await;
        let keys = stage(record, "key", keys, |_| {
            format!("kid {}", kid.unwrap_or("-"))
        })?;
        // Refused before it queues: the signature check alone is left to do.
        shared::candidates(&keys.keys, token.header.kid.as_deref(), token.header.alg)?;
        let (token, thumbprint) = pool
            .run(move || {
                let thumbprint =
                    shared::signed_by(&keys.keys, &token).map(|key| key.thumbprint.clone());
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
            let now = jsonwebtoken::get_current_timestamp();
            let exp = shared::checked_claims(&config.profile(), &token.claims, now, record)?;
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
    let header = shared::checked_header(&token.header, &config.profile())?;
    // §5.1: "The JWT type MUST be statuslist+jwt" (RFC 7515 §4.1.9: with or without the
    // application/ prefix).
    let typ = header.typ.as_deref().and_then(crate::config::media_type);
    if !typ.is_some_and(|t| t.eq_ignore_ascii_case(jwt_authz_jose::status_list::TOKEN_TYPE)) {
        return Err(VerifyError::WrongTokenType);
    }
    let keys = key_set_for(store, header.kid.as_deref()).await?;
    shared::signed_by(&keys.keys, &token)?;
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
    let header = shared::checked_header(&token.header, &store.provider().profile())
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
    shared::signed_by(&keys.keys, &token).map_err(|_| VerifyError::BadIntrospection)?;
    Ok(token.claims)
}
