//! What the in-proxy filter is told (module `jwt_authz_core::in_proxy`): the key-set
//! generation, the decision configuration's digest, the DPoP challenge's algorithms, and the
//! claims it may hold for a decided token.

use jwt_authz_core::in_proxy::{CachedToken, CheckAnswer, WireVerdict};

use crate::clock::unix_now;
use crate::config::{CertificateBinding, DpopMode, StatusListMode};

use super::{Outcome, Runtime};

impl Runtime {
    /// The in-proxy generation (module `jwt_authz_core::in_proxy`): a digest of this
    /// runtime and of every provider's key thumbprints. It changes when a key is published
    /// or removed (or dropped past `max_stale`) and on every reload; a filter that sees it
    /// change empties its cache, so a removed key's tokens stop working in-proxy too.
    pub fn generation(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.config_digest.hash(&mut hasher);
        for provider in self.verifier.providers() {
            let keys = provider.store.keys();
            let mut thumbprints: Vec<&str> =
                keys.keys.iter().map(|k| k.thumbprint.as_str()).collect();
            thumbprints.sort_unstable();
            thumbprints.hash(&mut hasher);
        }
        format!("{:016x}", hasher.finish())
    }

    /// The digest of the decision configuration in force, for in-proxy answers.
    pub fn decision_digest(&self) -> &str {
        &self.decision_digest
    }

    /// The DPoP challenge's `algs`, when some provider takes DPoP.
    pub fn dpop_algs(&self) -> Option<&str> {
        self.dpop_algs.as_deref()
    }

    /// Whether a later request with a token of `provider` needs nothing but the token's
    /// claims (no DPoP proof, certificate or status list to check each time): only then may
    /// the in-proxy filter hold them, or the dynamic module verify the token itself.
    fn claims_suffice(provider: &crate::config::ProviderConfig) -> bool {
        provider.dpop.mode == DpopMode::Off
            && provider.certificate_binding == CertificateBinding::Optional
            && provider.status_list.mode == StatusListMode::Off
    }

    /// The keys and rules the dynamic module verifies tokens with in Envoy
    /// (`jwt_authz_jose::verify::PublishedKeys`): every provider whose tokens need nothing
    /// but their claims, with the keys it holds now; none while the token cache is off (the
    /// module then holds nothing either).
    pub fn published_keys(&self) -> jwt_authz_jose::verify::PublishedKeys {
        use jwt_authz_jose::verify::{OwnedProfile, PublishedKeys, PublishedProvider};
        let ttl = self.config.token_cache.ttl.as_secs();
        let providers = self
            .verifier
            .providers()
            .iter()
            .filter(|p| self.cache.enabled() && Self::claims_suffice(p.config()))
            .map(|p| PublishedProvider {
                name: p.config().name.clone(),
                profile: OwnedProfile::of(&p.config().profile()),
                cache_for: ttl,
                keys: p.store.keys().keys.iter().map(|k| k.jwk.clone()).collect(),
            })
            .collect();
        PublishedKeys {
            generation: self.generation(),
            providers,
        }
    }

    /// The verified claims the in-proxy filter may keep for the token of a decided request,
    /// and for how long; `None` when a later request with it needs more than its claims
    /// (a DPoP proof, a certificate, a status list: the sidecar checks those on every
    /// request) or when the token cache is off. Every denial of a token kept in-proxy comes
    /// from the decision's own steps (provider, audience, claims, identity), which the
    /// filter runs the same way.
    pub fn in_proxy_token(&self, outcome: &Outcome<'_>) -> Option<CachedToken> {
        let token = outcome.identity.as_ref()?;
        // An introspected token's answer lives in the sidecar's introspection cache, for its
        // `cache.max_ttl`; a filter holding it as well would keep a revoked token alive for
        // longer. Every request with one asks the sidecar (whose cache answers).
        if token.thumbprint == crate::introspection::INTROSPECTED {
            return None;
        }
        let provider = self.verifier.provider(token.provider)?.config();
        let claims_suffice = Self::claims_suffice(provider) && !token.claims.contains_key("cnf");
        if !claims_suffice || !self.cache.enabled() {
            return None;
        }
        let ttl = self.config.token_cache.ttl.as_secs();
        let cache_for = match token.exp {
            Some(exp) => ttl.min(exp.saturating_sub(unix_now())),
            None => ttl,
        };
        (cache_for > 0).then(|| CachedToken {
            provider: provider.name.clone(),
            claims: token.claims.clone(),
            cache_for,
        })
    }

    /// The answer to an in-proxy callout decided as `outcome`: its verdict, the claims the
    /// filter may hold ([`Runtime::in_proxy_token`]), the generation and the decision
    /// configuration's digest.
    pub fn in_proxy_answer(&self, outcome: Outcome<'_>) -> CheckAnswer {
        CheckAnswer {
            generation: self.generation(),
            config: Some(self.decision_digest.clone()),
            token: self.in_proxy_token(&outcome),
            verdict: WireVerdict::from(outcome.verdict),
        }
    }
}
