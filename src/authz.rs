//! The decision for one request, and the runtime that one configuration builds: providers and
//! their key stores, route policy, token cache. A reload builds a new runtime and swaps it in.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use tokio::task::JoinHandle;

use crate::config::{Config, TokenSource};
use crate::extract::{self, ExtractError};
use crate::identity;
use crate::jwks::KeyStore;
use crate::metrics::{KeySetStatus, Metrics};
use crate::policy::{AccessKind, Policy, RequestInfo};
use crate::response::{self, Deny};
use crate::token_cache::{self, TokenCache};
use crate::verify::{Provider, VerifiedToken, Verifier, VerifyError};

/// Everything built from one configuration.
#[derive(Debug)]
pub struct Runtime {
    config: Arc<Config>,
    verifier: Verifier,
    /// Every place any provider accepts tokens from, each listed once.
    sources: Vec<TokenSource>,
    policy: Policy,
    cache: TokenCache,
    metrics: Arc<Metrics>,
    refreshers: Vec<JoinHandle<()>>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for task in &self.refreshers {
            task.abort();
        }
    }
}

/// The result of one check, with what the decision log line and metrics need.
#[derive(Debug)]
pub struct Outcome {
    pub response: CheckResponse,
    pub allowed: bool,
    pub reason: &'static str,
    pub rule: String,
    /// Short hash of the token, never the token.
    pub token: Option<String>,
    pub subject: Option<String>,
}

impl Runtime {
    /// Builds the runtime for `config` and starts its key refreshers. Key sets of providers
    /// whose configuration is unchanged from `previous` are carried over, so a reload never
    /// leaves a provider without keys while its first fetch runs.
    pub fn start(
        config: Config,
        previous: Option<&Runtime>,
        client: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Result<Self, regex::Error> {
        let policy = Policy::new(&config.rules)?;
        let mut sources: Vec<TokenSource> = Vec::new();
        let mut providers = Vec::with_capacity(config.providers.len());
        for (index, provider) in config.providers.iter().enumerate() {
            for source in &provider.token_sources {
                if !sources.contains(source) {
                    sources.push(source.clone());
                }
            }
            let carried = previous.and_then(|prev| {
                prev.verifier
                    .providers()
                    .iter()
                    .find(|p| p.config() == provider)
                    .map(|p| p.store.keys())
            });
            let store = KeyStore::new(
                Arc::new(provider.clone()),
                carried,
                client.clone(),
                Arc::clone(&metrics),
            );
            providers.push(Provider { index, store });
        }
        let refreshers = providers
            .iter()
            .map(|p| p.store.spawn_refresher())
            .collect();
        Ok(Self {
            cache: TokenCache::new(&config.token_cache),
            config: Arc::new(config),
            verifier: Verifier::new(providers),
            sources,
            policy,
            metrics,
            refreshers,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Ready once every provider holds keys.
    pub fn ready(&self) -> bool {
        self.verifier
            .providers()
            .iter()
            .all(|p| !p.store.keys().is_empty())
    }

    /// Providers that hold no keys yet.
    pub fn providers_without_keys(&self) -> Vec<String> {
        self.verifier
            .providers()
            .iter()
            .filter(|p| p.store.keys().is_empty())
            .map(|p| p.config().name.clone())
            .collect()
    }

    pub fn key_set_status(&self) -> Vec<KeySetStatus> {
        self.verifier
            .providers()
            .iter()
            .map(|p| {
                let keys = p.store.keys();
                KeySetStatus {
                    provider: p.config().name.clone(),
                    keys: keys.keys.len(),
                    fetched_at: keys.fetched_at,
                }
            })
            .collect()
    }

    pub fn token_cache(&self) -> &TokenCache {
        &self.cache
    }

    /// Decides one request.
    pub async fn check(
        &self,
        http: &HttpRequest,
        context_extensions: &HashMap<String, String>,
    ) -> Outcome {
        let request = RequestInfo::new(&http.method, &http.path, &http.host, context_extensions);
        let route = self.policy.route(&request);
        let rule = route.name.to_owned();
        let deny = |deny: Deny, token: Option<String>, subject: Option<String>| Outcome {
            response: deny.to_response(&self.config.realm),
            allowed: false,
            reason: deny.answer().reason,
            rule: rule.clone(),
            token,
            subject,
        };
        if route.kind == AccessKind::Deny {
            return deny(Deny::DeniedByRule, None, None);
        }
        let found = match extract::extract(
            &http.headers,
            &http.path,
            &self.sources,
            self.config.max_token_bytes,
        ) {
            Ok(found) => found,
            Err(ExtractError::Multiple) => return deny(Deny::MultipleTokens, None, None),
            Err(ExtractError::TooLarge) => return deny(Deny::TokenTooLarge, None, None),
        };
        let Some(found) = found else {
            if route.kind != AccessKind::Public {
                return deny(Deny::MissingToken, None, None);
            }
            return self.allow(None, None, "public", rule);
        };
        let hash = token_cache::token_hash(found.token);
        let fingerprint = Some(token_cache::fingerprint(&hash));
        let (verified, cached) = match self.verified(&hash, found.token).await {
            Ok(v) => v,
            Err(d) => return deny(d, fingerprint, None),
        };
        let subject = verified
            .claims
            .get("sub")
            .and_then(|s| s.as_str())
            .map(str::to_owned);
        let Some(provider) = self.verifier.provider(verified.provider) else {
            return deny(
                Deny::Invalid(VerifyError::UnknownIssuer),
                fingerprint,
                subject,
            );
        };
        if !provider.config().token_sources.contains(found.source) {
            return deny(Deny::WrongSource, fingerprint, subject);
        }
        if route.kind == AccessKind::Claims && route.check_claims(&verified.claims).is_err() {
            return deny(Deny::InsufficientClaims, fingerprint, subject);
        }
        let strip = if self.config.identity.strip_authorization {
            found.header().map(str::to_owned)
        } else {
            None
        };
        let reason = if cached { "cached" } else { "verified" };
        let mut outcome = self.allow(Some((provider, &verified)), strip, reason, rule);
        outcome.token = fingerprint;
        outcome.subject = subject;
        outcome
    }

    /// Verifies a token against its provider, without the cache or route rules.
    pub async fn verify_token(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        let provider = self.verifier.provider_for(token)?;
        self.verifier.verify(provider, token).await
    }

    /// The verified claims for a token, from the cache when its key is still published.
    async fn verified(
        &self,
        hash: &token_cache::TokenHash,
        token: &str,
    ) -> Result<(Arc<VerifiedToken>, bool), Deny> {
        if let Some(hit) = self.cache.get(hash).await {
            let key_live = self
                .verifier
                .provider(hit.provider)
                .is_some_and(|p| p.store.keys().contains(&hit.thumbprint));
            if key_live {
                self.metrics.record_token_cache(true);
                return Ok((hit, true));
            }
            self.cache.invalidate(hash).await;
        }
        if self.cache.enabled() {
            self.metrics.record_token_cache(false);
        }
        let verified = Arc::new(self.verify_token(token).await.map_err(Deny::Invalid)?);
        self.cache.insert(*hash, Arc::clone(&verified)).await;
        Ok((verified, false))
    }

    fn allow(
        &self,
        identity: Option<(&Provider, &VerifiedToken)>,
        strip: Option<String>,
        reason: &'static str,
        rule: String,
    ) -> Outcome {
        let identity_config = &self.config.identity;
        let claims = identity.map(|(_, v)| &v.claims);
        let mut mutation = match identity::mutation(&identity_config.headers, claims) {
            Ok(m) => m,
            Err(unsafe_claim) => {
                tracing::warn!(%unsafe_claim, "denying token whose claim cannot be a header");
                let deny = Deny::UnsafeClaim;
                return Outcome {
                    response: deny.to_response(&self.config.realm),
                    allowed: false,
                    reason: deny.answer().reason,
                    rule,
                    token: None,
                    subject: None,
                };
            }
        };
        mutation.remove.extend(strip);
        let metadata = identity
            .filter(|_| identity_config.dynamic_metadata)
            .map(|(p, v)| (p.config().name.as_str(), &v.claims));
        Outcome {
            response: response::allow(mutation, metadata),
            allowed: true,
            reason,
            rule,
            token: None,
            subject: None,
        }
    }
}
