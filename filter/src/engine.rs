//! The filter's decisions, free of Envoy's host calls so they run (and are tested)
//! natively: one [`Engine`] per Envoy worker (each worker has its own Wasm VM).
//!
//! A request is decided here when what it needs is known without the sidecar: no token
//! (a public route, or a denial whose challenge is known), a path or token the decision
//! refuses before verification, a route that denies, or a token whose verified claims this
//! worker holds. Everything else, first of all a token not held, any DPoP request, and
//! every token while the sidecar has not confirmed its key sets recently, is a callout:
//! the sidecar decides, and hands over the token's claims when claims are all its later
//! requests need (`jwt_authz_core::in_proxy`).
//!
//! Nothing at all is decided here unless the sidecar has said that its decision
//! configuration is this filter's own (the digest in its answers, `jwt_authz_core::in_proxy`):
//! a filter left with rules the sidecar no longer has (a reload not yet rolled out to the
//! plugin configuration, a typo) asks the sidecar about every request instead, counted as
//! [`Counter::ConfigMismatch`].
//!
//! The steps and their order are the sidecar's (`Runtime::check` in the sidecar): path,
//! route, `deny` rules, token extraction, then provider, audience, claims and identity
//! headers on the verified claims, the most specific `mode` deciding what a denial becomes.
//! Each step is the decision core's own function; only the sequence is written here.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use jwt_authz_core::config::{DecisionConfig, InProxyConfig, LoadError, Mode, TokenSource};
use jwt_authz_core::decision::{self, Identity, Provider};
use jwt_authz_core::extract::{self, Found, Scheme};
use jwt_authz_core::in_proxy::{CheckAnswer, GenerationAnswer, WireVerdict};
use jwt_authz_core::policy::{AccessKind, Policy, Route};
use jwt_authz_core::request::{Incoming, RequestInfo};
use jwt_authz_core::response::{Deny, Verdict};
use jwt_authz_core::token::VerifiedToken;
use lru::LruCache;

/// Why a plugin configuration cannot be used; Envoy then refuses the filter (fail closed).
#[derive(Debug)]
pub enum ConfigError {
    Load(LoadError),
    Rule(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Load(e) => write!(f, "{e}"),
            ConfigError::Rule(e) => write!(f, "invalid route rule: {e}"),
        }
    }
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Decided here: apply it.
    Decided(WireVerdict),
    /// Ask the sidecar, then apply its answer ([`Engine::answered`]).
    Callout,
}

/// Where a decision was made, for the filter's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A held token's claims decided it.
    CacheHit,
    /// Decided without a token (public routes, refused paths, denials without a token).
    NoToken,
    /// Not decided here (a callout) because the sidecar's decision configuration differs
    /// from this filter's.
    ConfigMismatch,
}

/// One held token: its claims as the sidecar verified them, until `expires_ms`.
#[derive(Debug)]
struct Held {
    token: Arc<VerifiedToken>,
    expires_ms: u64,
}

#[derive(Debug)]
pub struct Engine {
    config: DecisionConfig,
    in_proxy: InProxyConfig,
    policy: Policy,
    /// Every place any provider accepts tokens from.
    sources: Vec<TokenSource>,
    /// Tokens by their full text: the map hashes it, and a hit compares it whole.
    held: Option<LruCache<Box<str>, Held>>,
    /// The sidecar's generation the held tokens were verified under. Held claims are used
    /// only while it was confirmed within `in_proxy.max_unconfirmed`.
    generation: Option<String>,
    /// When (ms) the sidecar last confirmed `generation`.
    confirmed_ms: Option<u64>,
    /// The sidecar's DPoP `algs`, as last polled (`None` until a poll answered).
    dpop_algs: Option<Option<String>>,
    /// The digest of this filter's decision configuration.
    digest: String,
    /// The digest the sidecar last published (`None` until it answered, or when it named
    /// none). Nothing is decided here unless it is this filter's own (`digest`).
    sidecar_digest: Option<String>,
    /// Whether the sidecar has answered at all.
    heard_once: bool,
    /// The sidecar's digest has just become one that is not this filter's: to be said once
    /// ([`Engine::newly_disagreeing`]).
    news: bool,
}

impl Engine {
    /// The engine for a plugin configuration: the sidecar's YAML (or the same as JSON).
    pub fn from_config(text: &str) -> Result<Self, ConfigError> {
        let config = DecisionConfig::from_yaml(text).map_err(ConfigError::Load)?;
        let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
        let policy = Policy::new(&config.rules, &config.paths, &names)
            .map_err(|e| ConfigError::Rule(e.to_string()))?;
        let mut sources: Vec<TokenSource> = Vec::new();
        for source in config.providers.iter().flat_map(|p| &p.token_sources) {
            if !sources.contains(source) {
                sources.push(source.clone());
            }
        }
        let in_proxy = config.in_proxy.clone().unwrap_or_default();
        let held = NonZeroUsize::new(in_proxy.max_cached_tokens).map(LruCache::new);
        let digest = config.digest();
        Ok(Self {
            digest,
            sidecar_digest: None,
            heard_once: false,
            news: false,
            config,
            in_proxy,
            policy,
            sources,
            held,
            generation: None,
            confirmed_ms: None,
            dpop_algs: None,
        })
    }

    pub fn in_proxy(&self) -> &InProxyConfig {
        &self.in_proxy
    }

    /// Whether `identity.dynamic_metadata` is asked for, which the filter cannot provide.
    pub fn wants_metadata(&self) -> bool {
        self.config.identity.dynamic_metadata
    }

    /// The one token `http` carries, if it can be found unambiguously.
    pub fn token_of(&self, http: &Incoming<'_>) -> Option<String> {
        extract::extract(
            http.headers,
            http.target,
            &self.sources,
            self.config.max_token_bytes,
        )
        .ok()
        .flatten()
        .map(|found| found.token.to_owned())
    }

    /// Whether the sidecar has said its decision configuration is this filter's: only then
    /// is anything decided here.
    pub fn config_agrees(&self) -> bool {
        self.sidecar_digest.as_deref() == Some(self.digest.as_str())
    }

    /// The digest of this filter's decision configuration, and the sidecar's (for the log
    /// line that says why nothing is decided here).
    pub fn digests(&self) -> (&str, Option<&str>) {
        (&self.digest, self.sidecar_digest.as_deref())
    }

    /// Takes the sidecar's published digest; another than this filter's drops what is held
    /// (its claims would be decided on by rules the sidecar no longer has).
    fn heard(&mut self, digest: Option<String>) {
        let agreed = self.config_agrees();
        let changed = !self.heard_once || self.sidecar_digest != digest;
        self.heard_once = true;
        self.sidecar_digest = digest;
        if !self.config_agrees() {
            self.news |= agreed || changed;
            if let Some(held) = self.held.as_mut() {
                held.clear();
            }
        }
    }

    /// Whether the sidecar's digest has become one that is not this filter's since this was
    /// last asked: once per digest, for one log line.
    pub fn newly_disagreeing(&mut self) -> bool {
        std::mem::take(&mut self.news)
    }

    /// How many tokens are held now.
    pub fn held(&self) -> usize {
        self.held.as_ref().map_or(0, LruCache::len)
    }

    /// Decides `http` here if it can (see the module's doc); `now_ms`: Unix time in ms.
    pub fn decide(&mut self, http: &Incoming<'_>, now_ms: u64) -> (Step, Option<Counter>) {
        if !self.config_agrees() {
            // Not yet heard from the sidecar (no counter: every filter starts so), or told
            // another configuration: the sidecar decides everything.
            let counter = self.heard_once.then_some(Counter::ConfigMismatch);
            return (Step::Callout, counter);
        }
        let read = match decision::read(http, &self.config.paths, &self.config.identity) {
            Ok(read) => read,
            // A request that cannot be read is refused in every mode, as the sidecar
            // refuses it.
            Err(deny) => {
                let denial = self.denial(&deny);
                return (
                    Step::Decided(Verdict::Deny(denial).into()),
                    Some(Counter::NoToken),
                );
            }
        };
        let empty = HashMap::new();
        let request = RequestInfo::new(http.method, &read.path, &read.host, &empty);
        let route = self.policy.route(&request);
        if route.kind == AccessKind::Deny {
            return self.local(
                Err(Deny::DeniedByRule),
                Some(&route),
                None,
                http,
                Counter::NoToken,
            );
        }
        let found = match extract::extract(
            http.headers,
            http.target,
            &self.sources,
            self.config.max_token_bytes,
        ) {
            Ok(found) => found,
            Err(error) => {
                return self.local(
                    Err(error.into()),
                    Some(&route),
                    None,
                    http,
                    Counter::NoToken,
                );
            }
        };
        let Some(found) = found else {
            if route.kind == AccessKind::Public {
                let allowed = decision::allow(&self.config.identity, None, None)
                    .map_err(|_| Deny::UnsafeClaim);
                return self.local(allowed, Some(&route), None, http, Counter::NoToken);
            }
            // The challenge names DPoP's algorithms when a provider takes DPoP: known only
            // from the sidecar.
            if self.dpop_algs.is_none() {
                return (Step::Callout, None);
            }
            return self.local(
                Err(Deny::MissingToken),
                Some(&route),
                None,
                http,
                Counter::NoToken,
            );
        };
        // A proof proves one request: checked by the sidecar every time.
        if found.scheme == Scheme::Dpop || http.headers.contains_key("dpop") {
            return (Step::Callout, None);
        }
        // A clock behind the last confirmation (stepped back, or unreadable: 0) confirms
        // nothing: held claims must not outlive their bound because time went backwards.
        let confirmed = self.confirmed_ms.is_some_and(|at| {
            now_ms >= at && now_ms - at <= self.in_proxy.max_unconfirmed.as_millis() as u64
        });
        let held = match self.held.as_mut() {
            Some(held) if confirmed => lookup(held, found.token, now_ms),
            _ => None,
        };
        let Some(held) = held else {
            return (Step::Callout, None);
        };
        let Some(provider) = self.provider(held.provider) else {
            return (Step::Callout, None);
        };
        let identity = Identity {
            provider,
            token: &held,
        };
        let result = self.on_claims(&route, &found, &identity);
        self.local(
            result,
            Some(&route),
            Some(&identity),
            http,
            Counter::CacheHit,
        )
    }

    /// The steps after verification, on held claims: the token's place, the route's
    /// providers and audience, its claim requirements, then the identity headers.
    fn on_claims(
        &self,
        route: &Route<'_>,
        found: &Found<'_>,
        identity: &Identity<'_>,
    ) -> Result<Verdict, Deny> {
        decision::accepts(route, found, &identity.provider, &identity.token.claims)?;
        decision::claims_hold(route, &identity.token.claims)?;
        let strip = decision::stripped(&self.config.identity, Some(found));
        decision::allow(&self.config.identity, Some(identity), strip).map_err(|_| Deny::UnsafeClaim)
    }

    /// A decision made here, a denial given in the mode that applies (shadow mode lets it
    /// through as the sidecar would).
    fn local(
        &self,
        result: Result<Verdict, Deny>,
        route: Option<&Route<'_>>,
        identity: Option<&Identity<'_>>,
        http: &Incoming<'_>,
        counter: Counter,
    ) -> (Step, Option<Counter>) {
        let verdict = match result {
            Ok(verdict) => verdict,
            Err(deny) => {
                let mode = decision::mode(
                    route.and_then(|r| r.mode),
                    identity.and_then(|i| i.provider.mode),
                    self.config.mode,
                );
                if mode == Mode::Shadow {
                    let found = extract::extract(
                        http.headers,
                        http.target,
                        &self.sources,
                        self.config.max_token_bytes,
                    )
                    .ok()
                    .flatten();
                    let strip = decision::stripped(&self.config.identity, found.as_ref());
                    decision::shadow_allow(&self.config.identity, &deny, identity, strip)
                        .unwrap_or_else(|_| Verdict::Deny(self.denial(&Deny::UnsafeClaim)))
                } else {
                    Verdict::Deny(self.denial(&deny))
                }
            }
        };
        (Step::Decided(verdict.into()), Some(counter))
    }

    fn denial(&self, deny: &Deny) -> jwt_authz_core::response::Denial {
        let algs = self.dpop_algs.as_ref().and_then(Option::as_deref);
        deny.denial_with(&self.config.realm, algs)
    }

    /// What the decision reads of the provider at `index`.
    fn provider(&self, index: usize) -> Option<Provider<'_>> {
        let p = self.config.providers.get(index)?;
        Some(Provider {
            index,
            name: &p.name,
            token_sources: &p.token_sources,
            audiences: &p.audiences,
            mode: p.mode,
        })
    }

    /// Applies the sidecar's answer about a request whose token (if any) was `token`: holds
    /// the claims it hands over, and returns the verdict to apply.
    pub fn answered(
        &mut self,
        token: Option<&str>,
        answer: CheckAnswer,
        now_ms: u64,
    ) -> WireVerdict {
        // Only the poll sets the generation. An answer under another one than the last poll's
        // comes from a sidecar whose keys changed since (held claims may be stale: dropped)
        // or was sent before that poll's answer (its claims may be from a removed key): it
        // holds nothing, and what is held is dropped until the next poll says which is current.
        self.heard(answer.config);
        if self.generation.as_deref() != Some(answer.generation.as_str()) || !self.config_agrees() {
            if let Some(held) = self.held.as_mut() {
                held.clear();
            }
            return answer.verdict;
        }
        self.confirmed_ms = Some(now_ms);
        if let (Some(token), Some(cached), Some(held)) = (token, answer.token, self.held.as_mut())
            && let Some(provider) = self
                .config
                .providers
                .iter()
                .position(|p| p.name == cached.provider)
            && cached.cache_for > 0
        {
            let exp = cached.claims.get("exp").and_then(serde_json::Value::as_u64);
            let mut expires_ms = now_ms.saturating_add(cached.cache_for.saturating_mul(1000));
            if let Some(exp) = exp {
                expires_ms = expires_ms.min(exp.saturating_mul(1000));
            }
            held.put(
                token.into(),
                Held {
                    token: Arc::new(VerifiedToken {
                        provider,
                        thumbprint: String::new(),
                        claims: cached.claims,
                        exp,
                    }),
                    expires_ms,
                },
            );
        }
        answer.verdict
    }

    /// Applies the sidecar's answer to the poll: its generation as of `now_ms`. Another one
    /// than before empties the held tokens (a key was removed or added, or the sidecar's
    /// configuration changed).
    pub fn polled(&mut self, answer: GenerationAnswer, now_ms: u64) {
        self.heard(answer.config);
        if self.generation.as_deref() != Some(answer.generation.as_str()) {
            if let Some(held) = self.held.as_mut() {
                held.clear();
            }
            self.generation = Some(answer.generation);
        }
        self.confirmed_ms = Some(now_ms);
        self.dpop_algs = Some(answer.dpop_algs);
    }

    /// The answer when the sidecar could not be asked or did not answer: 503, fail closed.
    pub fn unavailable(&self) -> WireVerdict {
        Verdict::Deny(self.denial(&Deny::SidecarUnavailable)).into()
    }
}

/// The held claims for `token` unless they expired (then they are dropped).
fn lookup(
    held: &mut LruCache<Box<str>, Held>,
    token: &str,
    now_ms: u64,
) -> Option<Arc<VerifiedToken>> {
    if held.peek(token)?.expires_ms <= now_ms {
        held.pop(token);
        return None;
    }
    held.get(token).map(|h| Arc::clone(&h.token))
}

#[cfg(test)]
mod tests;
