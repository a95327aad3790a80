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
//! The decision is the core's pipeline ([`Decider::decide`]), the one the sidecar runs:
//! this engine supplies only its verification step (held claims, or a callout) and its
//! bind step (nothing to check: tokens that need more than their claims are never held).

use std::borrow::Cow;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock};

use jwt_authz_core::config::{DecisionConfig, InProxyConfig, LoadError};
use jwt_authz_core::decision::pipeline::now;
use jwt_authz_core::decision::{Checks, Decider, Stop, Verified};
use jwt_authz_core::extract::{Found, Scheme};
use jwt_authz_core::in_proxy::{CheckAnswer, GenerationAnswer, WireVerdict};
use jwt_authz_core::request::{HeaderList, Headers, Incoming};
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

/// Headers that describe the client's connection, not the request (and a callout has no
/// body): never copied into one.
const HOP_BY_HOP: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "expect",
    "proxy-connection",
];

/// A request as a proxy hands over its headers (pseudo-headers included): its method, target
/// and host, and the other headers by lowercase name, a repeated one joined with `,` into
/// one list (RFC 9110 §5.3), as the sidecar's front ends read them. Read from the proxy's
/// bytes: a name or value that is not UTF-8 is read with U+FFFD in place of what is not (no
/// token is, so it cannot pass for one); the rest is borrowed.
#[derive(Debug)]
pub struct RequestHeaders<'p> {
    pub method: Cow<'p, str>,
    pub target: Cow<'p, str>,
    pub host: Cow<'p, str>,
    pub headers: HeaderList<'p>,
}

/// No context extensions: an in-proxy filter has none (they are ext_authz's).
static NO_EXTENSIONS: LazyLock<HashMap<String, String>> = LazyLock::new(HashMap::new);

/// `bytes` as text, borrowed when they are UTF-8; U+FFFD in place of what is not.
pub fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

impl<'p> RequestHeaders<'p> {
    /// Every header of `pairs`.
    pub fn read<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &'p [(N, V)]) -> Self {
        Self::read_only(pairs, |_| true)
    }

    /// The pseudo-headers of `pairs`, and the headers whose lowercase name `keep` takes:
    /// for a decision, those it reads ([`Engine::forwarding`]), which are all it would be
    /// told of in a callout. Only their values are read as text (a token is most of a
    /// request's bytes, and the decision reads it; the others are not looked at).
    pub fn read_only<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        pairs: &'p [(N, V)],
        keep: impl Fn(&str) -> bool,
    ) -> Self {
        Self::read_with(pairs, keep, text)
    }

    /// [`RequestHeaders::read_only`], reading bytes as text with `text` (which must read
    /// them as [`text`] does: a caller may have a faster way).
    pub fn read_with<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        pairs: &'p [(N, V)],
        keep: impl Fn(&str) -> bool,
        text: impl Fn(&'p [u8]) -> Cow<'p, str>,
    ) -> Self {
        let (mut method, mut target, mut host) =
            (Cow::Borrowed(""), Cow::Borrowed(""), Cow::Borrowed(""));
        // Room for what a decision usually reads (a token, a proof, an identity header or
        // two) without growing.
        let mut kept = Vec::with_capacity(4);
        for (name, value) in pairs {
            let (name, value) = (name.as_ref(), value.as_ref());
            match name {
                b":method" => method = text(value),
                b":path" => target = text(value),
                b":authority" => host = text(value),
                [b':', ..] => {}
                _ => {
                    // Proxies hand over lowercase names (HTTP/2 has no other); the rare
                    // other one is lowered here.
                    let mut name = text(name);
                    if name.bytes().any(|b| b.is_ascii_uppercase()) {
                        name = Cow::Owned(name.to_ascii_lowercase());
                    }
                    if keep(&name) {
                        kept.push((name, text(value)));
                    }
                }
            }
        }
        RequestHeaders {
            method,
            target,
            host,
            headers: HeaderList::from(kept),
        }
    }

    /// The request as the decision reads it.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming {
            method: &self.method,
            target: &self.target,
            host: &self.host,
            headers: Headers::List(&self.headers),
            context_extensions: &NO_EXTENSIONS,
            scheme: None,
            certificate: None,
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
    /// A token not held, verified here ([`LocalVerify`]) and then held.
    Verified,
}

/// A token verified where the engine runs, for a caller that can (the Envoy dynamic module,
/// with the keys and rules the sidecar published; never the Wasm filter).
#[derive(Debug)]
pub struct LocallyVerified {
    pub token: VerifiedToken,
    /// How long (seconds) it may be held, at most until its `exp`.
    pub cache_for: u64,
}

/// Verifies a token not held, under the sidecar's keys of `generation`: `None` when it
/// cannot be verified here, or is refused (the sidecar then decides it, and says why).
pub trait LocalVerify {
    fn verify(&self, token: &str, generation: &str, now_ms: u64) -> Option<LocallyVerified>;
}

/// One held token: its claims as the sidecar verified them, until `expires_ms`.
#[derive(Debug)]
struct Held {
    token: Arc<VerifiedToken>,
    expires_ms: u64,
    /// What it takes ([`entry_bytes`]).
    bytes: usize,
}

/// What one held token is counted as taking: the token twice (the key, and the claims'
/// own copy of what it says), the claims as JSON (their parsed form is of that order), and
/// a fixed part for the map entry, the `Arc` and the strings' headers.
fn entry_bytes(token: &str, claims: &serde_json::Map<String, serde_json::Value>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut json = Count(0);
    // Writing to a counter fails only if serializing does, which a `Map` never does.
    let _ = serde_json::to_writer(&mut json, claims);
    token.len() * 2 + json.0 + 256
}

/// The held tokens, bounded by count (`max_cached_tokens`) and by bytes
/// (`max_cached_bytes`): past either, the least recently used go first.
#[derive(Debug)]
struct HeldTokens {
    map: LruCache<Box<str>, Held>,
    bytes: usize,
    max_bytes: usize,
}

impl HeldTokens {
    /// The token's entry, made the most recently used (one hash of the token: a peek and
    /// a promotion were two).
    fn get(&mut self, token: &str) -> Option<&Held> {
        self.map.get(token)
    }

    fn pop(&mut self, token: &str) {
        if let Some(held) = self.map.pop(token) {
            self.bytes -= held.bytes;
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    /// Holds `held` for `token`, making room; one larger than the whole bound is not held.
    fn put(&mut self, token: &str, held: Held) {
        self.pop(token);
        if held.bytes > self.max_bytes {
            return;
        }
        while self.bytes + held.bytes > self.max_bytes {
            match self.map.pop_lru() {
                Some((_, old)) => self.bytes -= old.bytes,
                None => break,
            }
        }
        self.bytes += held.bytes;
        // At the count bound, `push` hands back the entry it evicted.
        if let Some((_, evicted)) = self.map.push(token.into(), held) {
            self.bytes -= evicted.bytes;
        }
    }
}

#[derive(Debug)]
pub struct Engine {
    decider: Decider,
    in_proxy: InProxyConfig,
    /// Tokens by their full text: the map hashes it, and a hit compares it whole.
    held: Option<HeldTokens>,
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
        let in_proxy = config.in_proxy.clone().unwrap_or_default();
        let held = NonZeroUsize::new(in_proxy.max_cached_tokens).map(|count| HeldTokens {
            map: LruCache::new(count),
            bytes: 0,
            max_bytes: in_proxy.max_cached_bytes,
        });
        let digest = config.digest();
        let decider = Decider::new(config).map_err(|e| ConfigError::Rule(e.to_string()))?;
        Ok(Self {
            digest,
            sidecar_digest: None,
            heard_once: false,
            news: false,
            decider,
            in_proxy,
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
        self.decider.config().identity.dynamic_metadata
    }

    /// Whether a callout carries the original request's header `name` (lowercase): what the
    /// decision reads ([`Decider::reads_header`]). While the sidecar's configuration is not
    /// known to be this filter's, what it reads is not known either (another token source,
    /// another identity header whose lookalikes it must see to refuse): then every header
    /// but the proxy's own (`x-envoy-*`), pseudo-headers and hop-by-hop ones.
    pub fn forwards(&self, name: &str) -> bool {
        self.forwarding()(name)
    }

    /// [`Engine::forwards`] for the headers of one request, whether the configurations
    /// agree looked at once.
    pub fn forwarding(&self) -> impl Fn(&str) -> bool + '_ {
        let agrees = self.config_agrees();
        move |name| {
            if agrees {
                return self.decider.reads_header(name);
            }
            !(name.starts_with(':') || name.starts_with("x-envoy-") || HOP_BY_HOP.contains(&name))
        }
    }

    /// The one token `http` carries, if it can be found unambiguously.
    pub fn token_of(&self, http: &Incoming<'_>) -> Option<String> {
        self.decider.token(http).map(|found| found.token.to_owned())
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

    /// Drops every held token (their claims are asked of the sidecar again).
    pub fn forget_held(&mut self) {
        if let Some(held) = self.held.as_mut() {
            held.clear();
        }
    }

    /// How many tokens are held now.
    pub fn held(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.map.len())
    }

    /// The bytes the held tokens are counted as taking.
    pub fn held_bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.bytes)
    }

    /// Decides `http` here if it can (see the module's doc); `now_ms`: Unix time in ms.
    pub fn decide(&mut self, http: &Incoming<'_>, now_ms: u64) -> (Step, Option<Counter>) {
        self.decide_with(http, now_ms, None)
    }

    /// [`Engine::decide`], verifying a token it does not hold with `local` (while the
    /// sidecar's generation is confirmed, as for held tokens); a token so verified is held
    /// for its later requests (unless nothing is held: `max_cached_tokens: 0` verifies
    /// every request's token).
    pub fn decide_with(
        &mut self,
        http: &Incoming<'_>,
        now_ms: u64,
        local: Option<&dyn LocalVerify>,
    ) -> (Step, Option<Counter>) {
        if !self.config_agrees() {
            // Not yet heard from the sidecar (no counter: every filter starts so), or told
            // another configuration: the sidecar decides everything.
            let counter = self.heard_once.then_some(Counter::ConfigMismatch);
            return (Step::Callout, counter);
        }
        // A clock behind the last confirmation (stepped back, or unreadable: 0) confirms
        // nothing: held claims must not outlive their bound because time went backwards.
        let confirmed = self.confirmed_ms.is_some_and(|at| {
            now_ms >= at && now_ms - at <= self.in_proxy.max_unconfirmed.as_millis() as u64
        });
        let mut lookup = Lookup {
            held: self.held.as_mut().filter(|_| confirmed),
            local: local.zip(self.generation.as_deref()).filter(|_| confirmed),
            providers: &self.decider.config().providers,
            http,
            now_ms,
            expired: None,
            verified: None,
        };
        let algs = self.dpop_algs.as_ref().and_then(Option::as_deref);
        let decided = now(self.decider.decide(http, &mut lookup, algs)).flatten();
        let expired = lookup.expired;
        let verified_here = lookup.verified.take();
        let step = match decided {
            // The challenge names DPoP's algorithms when a provider takes DPoP: known only
            // from the sidecar.
            Some(d) if d.deny == Some(Deny::MissingToken) && self.dpop_algs.is_none() => None,
            Some(d) => {
                let used = d.verified.as_ref().and(d.found).map(|f| f.token);
                let counter = match (&used, &verified_here) {
                    (Some(_), Some(_)) => Counter::Verified,
                    (Some(_), None) => Counter::CacheHit,
                    (None, _) => Counter::NoToken,
                };
                Some((Step::Decided(d.verdict.into()), counter))
            }
            None => None,
        };
        // What the lookup found: expired claims are dropped (a token found held became the
        // most recently used as it was found).
        if let Some(held) = self.held.as_mut() {
            if let Some(token) = expired {
                held.pop(token.as_str());
            }
            // A token verified here is held like one the sidecar handed over.
            if let Some((token, verified)) = verified_here {
                held.put(&token, verified);
            }
        }
        match step {
            Some((step, counter)) => (step, Some(counter)),
            None => (Step::Callout, None),
        }
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
                .decider
                .config()
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
            let bytes = entry_bytes(token, &cached.claims);
            held.put(
                token,
                Held {
                    token: Arc::new(VerifiedToken {
                        provider,
                        thumbprint: String::new(),
                        claims: cached.claims,
                        exp,
                    }),
                    expires_ms,
                    bytes,
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
        let algs = self.dpop_algs.as_ref().and_then(Option::as_deref);
        Verdict::Deny(self.decider.denial(&Deny::SidecarUnavailable, algs)).into()
    }
}

/// The filter's own steps of the pipeline: verification is a held token's claims (or a
/// callout), and the bind step has nothing to check (tokens whose later requests need more
/// than their claims are never held).
struct Lookup<'e> {
    /// The held tokens, while the sidecar's generation is confirmed.
    held: Option<&'e mut HeldTokens>,
    /// The caller's verification and the confirmed generation, for a token not held.
    local: Option<(&'e dyn LocalVerify, &'e str)>,
    /// The decision's providers, to find a verified token's by name.
    providers: &'e [jwt_authz_core::config::DecisionProvider],
    http: &'e Incoming<'e>,
    now_ms: u64,
    /// A held token found expired, to drop once the lookup is done.
    expired: Option<String>,
    /// A token verified here, to hold once the lookup is done.
    verified: Option<(String, Held)>,
}

impl Checks for Lookup<'_> {
    type Note = ();

    async fn verify(&mut self, found: &Found<'_>) -> Result<Verified<()>, Stop> {
        // A proof proves one request: checked by the sidecar every time.
        if found.scheme == Scheme::Dpop || self.http.headers.contains("dpop") {
            return Err(Stop::Defer);
        }
        match self.held.as_deref_mut().and_then(|h| h.get(found.token)) {
            Some(held) if held.expires_ms > self.now_ms => {
                return Ok(Verified {
                    token: Arc::clone(&held.token),
                    note: (),
                });
            }
            Some(_) => self.expired = Some(found.token.to_owned()),
            None => {}
        }
        let (local, generation) = self.local.ok_or(Stop::Defer)?;
        let verified = local
            .verify(found.token, generation, self.now_ms)
            .ok_or(Stop::Defer)?;
        // The sidecar's rule for what may be held: a token bound to a key or certificate
        // (`cnf`) never is, whatever its provider.
        if verified.token.claims.contains_key("cnf")
            || verified.token.provider >= self.providers.len()
            || verified.cache_for == 0
        {
            return Err(Stop::Defer);
        }
        let mut expires_ms = self
            .now_ms
            .saturating_add(verified.cache_for.saturating_mul(1000));
        if let Some(exp) = verified.token.exp {
            expires_ms = expires_ms.min(exp.saturating_mul(1000));
        }
        let bytes = entry_bytes(found.token, &verified.token.claims);
        let token = Arc::new(verified.token);
        self.verified = Some((
            found.token.to_owned(),
            Held {
                token: Arc::clone(&token),
                expires_ms,
                bytes,
            },
        ));
        Ok(Verified { token, note: () })
    }

    async fn bind(&mut self, _: &Found<'_>, _: &Arc<VerifiedToken>) -> Result<(), Stop> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
