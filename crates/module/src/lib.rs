//! jwt-authz as an Envoy dynamic module (`envoy.filters.http.dynamic_modules`): the in-proxy
//! mode at native speed. This crate is the filter's logic; `crates/module-ffi` binds it to
//! Envoy's ABI (the only place with `unsafe`) and hands it a [`Stream`] per request.
//!
//! The decision is the in-proxy engine's (`jwt_authz_filter::engine`, the core's pipeline):
//! a request is decided here when what it needs is known without the sidecar (no token, a
//! token whose verified claims this worker holds, a refusal before verification), and is
//! otherwise asked of the sidecar with an HTTP callout on the cluster `in_proxy.cluster`,
//! paused until the answer, which the engine applies and may hold claims from. Every way of
//! not getting an answer is a 503 (fail closed), as in the Wasm filter.
//!
//! Unlike a Wasm VM, one module instance serves every worker: the configuration is shared
//! ([`Config`] is `Sync`), with one engine per worker (a lock no other worker takes), and the
//! sidecar's generation is polled by the configuration itself on Envoy's main thread (the
//! FFI crate's timer thread wakes it every `in_proxy.poll_interval`), its answer applied to
//! every worker's engine.
//!
//! A token it does not hold is verified here, in Envoy, when the sidecar has published its
//! provider's keys and rules (`<in_proxy.prefix>/keys`, fetched from the main thread whenever
//! the polled generation is not the keys'): the same verification steps as the sidecar's
//! (`jwt_authz_jose::verify`), then the same decision; the token is then held. Refused or not
//! verifiable here (another provider, a DPoP proof, a `cnf`, keys of another generation): a
//! callout, and the sidecar decides (and says why).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jwt_authz_core::config::InProxyConfig;
pub use jwt_authz_core::in_proxy::MAX_ANSWER_BYTES;
use jwt_authz_core::in_proxy::{
    CheckAnswer, GenerationAnswer, IdentityMetadata, METHOD_HEADER, WireVerdict,
};
use jwt_authz_core::response::{Deny, Verdict};
use jwt_authz_core::token::VerifiedToken;
use jwt_authz_filter::engine::{
    Counter, Engine, LocalVerify, LocallyVerified, RequestHeaders, Step,
};
use jwt_authz_jose::jws::Unverified;
use jwt_authz_jose::verify::{MAX_PUBLISHED_KEYS_BYTES, OwnedProfile, PublishedKeys, VerifyingKey};
use prost::Message;
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value as ProtoValue};

#[cfg(test)]
mod tests;

/// The mark (filter-state key, value) set on every request this filter lets through. An
/// Envoy filter chain can lose a filter without failing (a route that disables it, a chain
/// edited by hand); the shipped configurations put this library's guard ([`GUARD_FILTER`])
/// after this filter, which lets through only requests carrying the mark. No client can set
/// Envoy's filter state; Envoy keeps it read-only once set, for this request only.
pub const DECIDED: (&str, &str) = ("jwt_authz.decided", "1");

/// The `filter_name` that makes this library the guard ([`guard`]) rather than the filter.
pub const GUARD_FILTER: &str = "jwt_authz_guard";

/// Where the verified identity goes as dynamic metadata when `identity.dynamic_metadata`
/// asks for it: `{provider, claims}` under this namespace, as the sidecar's ext_authz answer
/// carries it.
pub const METADATA_NAMESPACE: &str = "jwt_authz";

/// Engines are kept per worker, by `worker index % WORKERS` (a worker beyond shares a
/// slot, and its lock, with another: correct, only slower).
const WORKERS: usize = 64;

/// What the module counts, as Envoy counters (`<metrics_namespace>.<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    DecidedCached,
    /// A token not held, verified in Envoy.
    DecidedVerified,
    DecidedNoToken,
    Callouts,
    CalloutFailures,
    PollFailures,
    ConfigMismatch,
    /// A hook of the module panicked: the request got a 503.
    Panics,
    /// The guard refused a request the filter had not marked (counted on the guard's own
    /// configuration, the only counter it defines).
    GuardRefused,
}

impl Metric {
    pub const ALL: [Metric; 9] = [
        Metric::DecidedCached,
        Metric::DecidedVerified,
        Metric::DecidedNoToken,
        Metric::Callouts,
        Metric::CalloutFailures,
        Metric::PollFailures,
        Metric::ConfigMismatch,
        Metric::Panics,
        Metric::GuardRefused,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::DecidedCached => "jwt_authz_module_decided_cached",
            Metric::DecidedVerified => "jwt_authz_module_decided_verified",
            Metric::DecidedNoToken => "jwt_authz_module_decided_no_token",
            Metric::Callouts => "jwt_authz_module_callouts",
            Metric::CalloutFailures => "jwt_authz_module_callout_failures",
            Metric::PollFailures => "jwt_authz_module_poll_failures",
            Metric::ConfigMismatch => "jwt_authz_module_config_mismatch_callouts",
            Metric::Panics => "jwt_authz_module_panics",
            Metric::GuardRefused => "jwt_authz_module_guard_refused",
        }
    }

    /// Whether the guard counts it (each configuration defines only its own counters).
    pub fn guards(self) -> bool {
        self == Metric::GuardRefused
    }
}

/// What a request's hooks may do with it: the safe API the FFI crate implements over
/// Envoy's callbacks, valid during one hook.
pub trait Stream {
    /// The request's headers, pseudo-headers included, in order, as the proxy's bytes
    /// (a value need not be UTF-8), borrowed while the request is not changed.
    fn request_headers(&self) -> Vec<(&[u8], &[u8])>;
    /// Bytes of the request as text: borrowed when UTF-8, U+FFFD in place of what is not
    /// (no token is, so it cannot pass for one). Envoy's bindings check ASCII, what headers
    /// are, the faster way.
    fn text<'b>(&self, bytes: &'b [u8]) -> Cow<'b, str> {
        jwt_authz_filter::engine::text(bytes)
    }
    /// Replaces every value of `name` with `value` (a non-empty value: Envoy removes a
    /// header set to `""`).
    fn set_request_header(&mut self, name: &str, value: &str);
    fn remove_request_header(&mut self, name: &str);
    /// Adds `name: value` to a request known not to carry `name` (cheaper than a set).
    fn add_request_header(&mut self, name: &str, value: &str);
    /// Sets [`DECIDED`]; `false` if it could not be set.
    fn mark_decided(&mut self) -> bool;
    /// Whether the request carries [`DECIDED`] (set by a filter before this one).
    fn decided(&self) -> bool;
    /// Merges `fields`, a serialized `google.protobuf.Struct`, into the request's dynamic
    /// metadata under `namespace`; `false` if it could not be set (Envoy's ABI reports
    /// nothing back: the module sends only what Envoy parses, see [`MAX_METADATA_DEPTH`]).
    fn set_metadata(&mut self, namespace: &str, fields: &[u8]) -> bool;
    /// Answers the client (Envoy's local reply); the request goes no further.
    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &str);
    /// Starts an HTTP call to `cluster`; its answer comes to [`Filter::on_callout_done`]
    /// with the returned id. `None` when it cannot be made.
    fn callout(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Option<u64>;
    /// Resumes a request paused by [`Flow::Stop`].
    fn continue_request(&mut self);
    /// Envoy's index of the worker running this request.
    fn worker(&self) -> u32;
    fn count(&mut self, metric: Metric);
}

/// What a request-headers hook tells Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Paused: answered (a local reply), or waiting for a callout.
    Stop,
}

/// Unix time in ms; 0 when the clock is before 1970, which confirms nothing (the engine
/// takes a clock behind its last confirmation as unconfirmed).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The poll of the sidecar's generation: at most one in flight for the whole module, timed
/// on the monotonic clock (a wall clock stepped back must not stop the polls).
#[derive(Debug, Default)]
struct Poll {
    last_started: Option<Instant>,
    /// When the poll in flight started (one whose answer never comes is given up after
    /// twice the callout timeout).
    in_flight_since: Option<Instant>,
    /// The last answer and when it came (Unix ms): an engine built later starts from it.
    last_answer: Option<(GenerationAnswer, u64)>,
}

/// One filter configuration (the sidecar's YAML, as for the Wasm filter), shared by every
/// worker.
#[derive(Debug)]
pub struct Config {
    text: String,
    in_proxy: InProxyConfig,
    /// The decision's providers' names, in its order (a verified token names its provider
    /// by index).
    providers: Vec<String>,
    engines: [OnceLock<Mutex<Engine>>; WORKERS],
    poll: Mutex<Poll>,
    /// The sidecar's published keys, and whether a fetch of them is in flight.
    keys: RwLock<Option<Arc<LocalKeys>>>,
    keys_in_flight: Mutex<Option<std::time::Instant>>,
}

/// Locks `mutex` even if a panic poisoned it: for the module's own bookkeeping (the poll,
/// the keys in flight), whose worst state is a poll or fetch made again. An engine is
/// locked with [`Config::lock_engine`] instead.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Config {
    /// Reads and checks the configuration (the same checks as the sidecar's); `Err` names
    /// what is wrong, and Envoy refuses the filter.
    pub fn new(text: &str) -> Result<Self, String> {
        let engine = Engine::from_config(text).map_err(|e| e.to_string())?;
        let in_proxy = engine.in_proxy().clone();
        let providers = jwt_authz_core::config::DecisionConfig::from_yaml(text)
            .map_err(|e| e.to_string())?
            .providers
            .into_iter()
            .map(|p| p.name)
            .collect();
        let engines: [OnceLock<Mutex<Engine>>; WORKERS] = std::array::from_fn(|_| OnceLock::new());
        let _ = engines[0].set(Mutex::new(engine));
        Ok(Self {
            text: text.to_owned(),
            in_proxy,
            providers,
            engines,
            poll: Mutex::new(Poll::default()),
            keys: RwLock::new(None),
            keys_in_flight: Mutex::new(None),
        })
    }

    /// An engine as a new worker's starts: from the text `new` checked (`None` only if it
    /// somehow no longer reads), at the last poll's generation, as of that poll.
    fn fresh_engine(&self) -> Option<Engine> {
        let mut engine = Engine::from_config(&self.text).ok()?;
        if let Some((answer, at)) = lock(&self.poll).last_answer.clone() {
            engine.polled(answer, at);
        }
        Some(engine)
    }

    /// The engine of `worker`'s slot, built on its first request (`None`, which the caller
    /// answers 503, only if it cannot be built).
    fn engine(&self, worker: u32) -> Option<&Mutex<Engine>> {
        let slot = &self.engines[worker as usize % WORKERS];
        if slot.get().is_none() {
            // Another request of this slot may have set it first: either engine will do.
            let _ = slot.set(Mutex::new(self.fresh_engine()?));
        }
        slot.get()
    }

    /// Locks an engine. One a panic left poisoned (the panic was counted and its request
    /// answered 503) may be half-way through a change to what it holds: it is replaced by a
    /// fresh one, which holds nothing, rather than trusted.
    fn lock_engine<'e>(&self, engine: &'e Mutex<Engine>) -> MutexGuard<'e, Engine> {
        match engine.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                let mut guard = poisoned.into_inner();
                engine.clear_poison();
                match self.fresh_engine() {
                    Some(fresh) => *guard = fresh,
                    // Never expected (the text read before); what is held is dropped at least.
                    None => guard.forget_held(),
                }
                guard
            }
        }
    }

    /// Whether a poll is due now; if so it is marked in flight. The timer asks every
    /// `poll_interval`; a poll is due when none is in flight (or the one in flight is
    /// lost) and none started in the last half interval (two wake-ups close together).
    fn poll_due(&self) -> bool {
        let mut poll = lock(&self.poll);
        let now = Instant::now();
        if let Some(since) = poll.in_flight_since
            && now.duration_since(since) < self.in_proxy.timeout.saturating_mul(2)
        {
            return false;
        }
        if let Some(started) = poll.last_started
            && now.duration_since(started) < self.in_proxy.poll_interval / 2
        {
            return false;
        }
        poll.in_flight_since = Some(now);
        poll.last_started = Some(now);
        true
    }

    /// The poll is over: answered (`Some`) or failed. `now`: Unix ms.
    fn polled(&self, answer: Option<GenerationAnswer>, now: u64) {
        {
            let mut poll = lock(&self.poll);
            poll.in_flight_since = None;
            if let Some(answer) = &answer {
                poll.last_answer = Some((answer.clone(), now));
            }
        }
        if let Some(answer) = answer {
            for engine in self.engines.iter().filter_map(OnceLock::get) {
                self.lock_engine(engine).polled(answer.clone(), now);
            }
        }
    }

    /// The 503 a request gets when this module cannot decide it at all (a panic).
    pub fn unavailable() -> WireVerdict {
        Verdict::Deny(Deny::SidecarUnavailable.denial("jwt-authz")).into()
    }
}

/// The poll to make: a GET of `path` on `cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollCall<'c> {
    pub cluster: &'c str,
    pub path: String,
    pub timeout: Duration,
}

impl Config {
    /// How often the sidecar's generation is polled.
    pub fn poll_interval(&self) -> Duration {
        self.in_proxy.poll_interval
    }

    /// The poll to make now, if one is due and none is in flight (it is then marked in
    /// flight until [`Config::poll_done`]).
    pub fn poll_call(&self) -> Option<PollCall<'_>> {
        self.poll_due().then(|| PollCall {
            cluster: &self.in_proxy.cluster,
            path: self.in_proxy.generation_path(),
            timeout: self.in_proxy.timeout,
        })
    }

    /// The poll's answer (`None`: no answer, or the call could not be made); `false` when
    /// it gave no generation.
    pub fn poll_done(&self, answer: Option<(u16, &[u8])>, now: u64) -> bool {
        let answer = read::<GenerationAnswer>(answer);
        let ok = answer.is_some();
        self.polled(answer, now);
        ok
    }
}

impl Config {
    /// The keys the sidecar last published, if any.
    fn local_keys(&self) -> Option<Arc<LocalKeys>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The fetch of the sidecar's keys to make now: when the last poll's generation is not
    /// the keys' (or there are none) and no fetch is in flight (one lost is given up after
    /// twice the callout timeout).
    pub fn keys_call(&self) -> Option<PollCall<'_>> {
        let polled = lock(&self.poll)
            .last_answer
            .as_ref()
            .map(|(answer, _)| answer.generation.clone())?;
        if self
            .local_keys()
            .is_some_and(|keys| keys.generation == polled)
        {
            return None;
        }
        let mut in_flight = lock(&self.keys_in_flight);
        let now = Instant::now();
        if in_flight.is_some_and(|since| now.duration_since(since) < self.in_proxy.timeout * 2) {
            return None;
        }
        *in_flight = Some(now);
        Some(PollCall {
            cluster: &self.in_proxy.cluster,
            path: format!("{}/keys", self.in_proxy.prefix),
            timeout: self.in_proxy.timeout,
        })
    }

    /// The sidecar's published keys (`None`: no answer); `false` when none could be read.
    /// Keys that do not read (never expected: the sidecar read them so) are left out.
    pub fn keys_done(&self, answer: Option<(u16, &[u8])>) -> bool {
        *lock(&self.keys_in_flight) = None;
        let published = match answer {
            Some((200, body)) if !body.is_empty() && body.len() <= MAX_PUBLISHED_KEYS_BYTES => {
                serde_json::from_slice::<PublishedKeys>(body).ok()
            }
            _ => None,
        };
        let Some(published) = published else {
            return false;
        };
        let keys = LocalKeys::new(published, &self.providers);
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(keys));
        true
    }
}

/// The sidecar's published keys, ready to verify with.
#[derive(Debug)]
struct LocalKeys {
    generation: String,
    /// By issuer: the provider's index in the decision, its rules, keys and hold time.
    by_issuer: HashMap<String, LocalProvider>,
}

#[derive(Debug)]
struct LocalProvider {
    index: usize,
    profile: OwnedProfile,
    keys: Vec<VerifyingKey>,
    cache_for: u64,
}

impl LocalKeys {
    fn new(published: PublishedKeys, providers: &[String]) -> Self {
        let mut by_issuer = HashMap::new();
        for p in published.providers {
            // A provider this configuration does not have is the sidecar's alone.
            let Some(index) = providers.iter().position(|name| *name == p.name) else {
                continue;
            };
            let keys = p
                .keys
                .into_iter()
                .filter_map(|jwk| VerifyingKey::from_jwk_value(jwk, &p.profile.algorithms).ok())
                .collect();
            by_issuer.insert(
                p.profile.issuer.clone(),
                LocalProvider {
                    index,
                    profile: p.profile,
                    keys,
                    cache_for: p.cache_for,
                },
            );
        }
        Self {
            generation: published.generation,
            by_issuer,
        }
    }
}

impl LocalVerify for LocalKeys {
    fn verify(&self, token: &str, generation: &str, now_ms: u64) -> Option<LocallyVerified> {
        // Keys of another generation than the one the sidecar confirmed are not trusted.
        if generation != self.generation {
            return None;
        }
        let token = Unverified::parse(token).ok()?;
        let provider = self.by_issuer.get(token.issuer().ok()?)?;
        let verified = jwt_authz_jose::verify::verify(
            &provider.profile.view(),
            &provider.keys,
            token,
            now_ms / 1000,
        )
        .ok()?;
        Some(LocallyVerified {
            token: VerifiedToken {
                provider: provider.index,
                thumbprint: verified.thumbprint,
                claims: verified.claims,
                exp: verified.exp,
            },
            cache_for: provider.cache_for,
        })
    }
}

/// One request's state.
#[derive(Debug, Default)]
pub struct Filter {
    /// The callout in flight for this request: its id and the request's token (never logged).
    pending: Option<(u64, Option<String>)>,
}

impl Filter {
    /// Whether the request is paused for a callout (its body and trailers wait too).
    pub fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Decides the request, or pauses it for a callout.
    pub fn on_request_headers(&mut self, config: &Config, stream: &mut impl Stream) -> Flow {
        let now = now_ms();
        let Some(engine) = config.engine(stream.worker()) else {
            return apply(stream, Config::unavailable());
        };
        let keys = config.local_keys();
        let mut engine = config.lock_engine(engine);
        // Envoy's own bytes, borrowed until the request's headers are changed: the decision
        // is told only of the headers it reads, as the sidecar would be in a callout.
        let pairs = stream.request_headers();
        let read = RequestHeaders::read_with(&pairs, engine.forwarding(), |b| stream.text(b));
        let incoming = read.incoming();
        let local = keys.as_deref().map(|k| k as &dyn LocalVerify);
        let (step, counter) = engine.decide_with(&incoming, now, local);
        let counter = match counter {
            Some(Counter::CacheHit) => Some(Metric::DecidedCached),
            Some(Counter::Verified) => Some(Metric::DecidedVerified),
            Some(Counter::NoToken) => Some(Metric::DecidedNoToken),
            Some(Counter::ConfigMismatch) => Some(Metric::ConfigMismatch),
            None => None,
        };
        match step {
            Step::Decided(mut verdict) => {
                drop(engine);
                // A header the request does not carry needs no removing, and one it is given
                // is added rather than replaced (each is a call into Envoy, and a
                // replacement looks for the old values first).
                let has = |name: &str| {
                    pairs
                        .iter()
                        .any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                };
                let mut present = Present::All;
                if let WireVerdict::Allow { remove, set, .. } = &mut verdict {
                    remove.retain(|name| has(name));
                    present = Present::of(set.iter().map(|(name, _)| has(name)));
                }
                drop(read);
                drop(pairs);
                if let Some(metric) = counter {
                    stream.count(metric);
                }
                apply_with(stream, verdict, present)
            }
            Step::Callout => {
                let path = config.in_proxy.check_path(incoming.target);
                // Owned: the request's headers are Envoy's, and the call is made through it.
                let mut call: Vec<(String, String)> = Vec::with_capacity(pairs.len() + 4);
                call.push((":method".into(), "GET".into()));
                call.push((":path".into(), path));
                call.push((":authority".into(), incoming.host.into()));
                call.push((METHOD_HEADER.into(), incoming.method.into()));
                // Only what the decision reads (never the proxy's `x-envoy-*`, nor a copy of
                // the method header, which is the filter's own).
                let forwards = engine.forwarding();
                for (name, value) in &pairs {
                    let name = stream.text(name);
                    let lower = name.to_ascii_lowercase();
                    if forwards(&lower) && lower != METHOD_HEADER {
                        call.push((name.into_owned(), stream.text(value).into_owned()));
                    }
                }
                drop(forwards);
                let token = engine.token_of(&incoming);
                let unavailable = engine.unavailable();
                drop(engine);
                drop(read);
                drop(pairs);
                if let Some(metric) = counter {
                    stream.count(metric);
                }
                stream.count(Metric::Callouts);
                let call: Vec<(&str, &str)> =
                    call.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                match stream.callout(&config.in_proxy.cluster, &call, config.in_proxy.timeout) {
                    Some(id) => {
                        self.pending = Some((id, token));
                        Flow::Stop
                    }
                    None => {
                        stream.count(Metric::CalloutFailures);
                        apply(stream, unavailable)
                    }
                }
            }
        }
    }

    /// A callout's answer: `status` and `body` when one came (`None`: reset, timed out,
    /// too large). The sidecar's answer to this request is applied (and the request resumed
    /// when it goes on).
    pub fn on_callout_done(
        &mut self,
        config: &Config,
        stream: &mut impl Stream,
        id: u64,
        answer: Option<(u16, &[u8])>,
    ) {
        let now = now_ms();
        let Some((pending, token)) = self.pending.take() else {
            return;
        };
        if pending != id {
            self.pending = Some((pending, token));
            return;
        }
        let Some(engine) = config.engine(stream.worker()) else {
            apply(stream, Config::unavailable());
            return;
        };
        let mut engine = config.lock_engine(engine);
        let verdict = match read::<CheckAnswer>(answer) {
            Some(answer) => engine.answered(token.as_deref(), answer, now),
            None => {
                stream.count(Metric::CalloutFailures);
                engine.unavailable()
            }
        };
        drop(engine);
        if apply(stream, verdict) == Flow::Continue {
            stream.continue_request();
        }
    }
}

/// The guard's request-headers hook: a request the filter marked goes on; any other (the
/// filter never saw it: a route or chain that leaves it out) is refused with the 403 of a
/// route that denies everything, counted.
pub fn guard(stream: &mut impl Stream) -> Flow {
    if stream.decided() {
        return Flow::Continue;
    }
    stream.count(Metric::GuardRefused);
    apply(
        stream,
        Verdict::Deny(Deny::DeniedByRule.denial("jwt-authz")).into(),
    )
}

/// Reads a callout's JSON answer: a 200 with a body of at most [`MAX_ANSWER_BYTES`].
fn read<T: serde::de::DeserializeOwned>(answer: Option<(u16, &[u8])>) -> Option<T> {
    match answer {
        Some((200, body)) if !body.is_empty() && body.len() <= MAX_ANSWER_BYTES => {
            serde_json::from_slice(body).ok()
        }
        _ => None,
    }
}

/// Applies a verdict: header changes and the mark, then the request goes on; or the denial
/// sent to the client.
pub fn apply(stream: &mut impl Stream, verdict: WireVerdict) -> Flow {
    apply_with(stream, verdict, Present::All)
}

/// Which of a verdict's headers to set the request already carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Present {
    /// Not known: each may be there.
    All,
    /// The `i`th is there when bit `i` is set; past the 64th, each may be.
    Mask(u64),
}

impl Present {
    fn of(present: impl Iterator<Item = bool>) -> Self {
        let mut mask = u64::MAX;
        for (i, present) in present.enumerate().take(64) {
            if !present {
                mask &= !(1 << i);
            }
        }
        Present::Mask(mask)
    }

    fn may_have(self, i: usize) -> bool {
        match self {
            Present::All => true,
            Present::Mask(mask) => i >= 64 || mask & (1 << i) != 0,
        }
    }
}

/// [`apply`], knowing which headers to set are there already.
fn apply_with(stream: &mut impl Stream, verdict: WireVerdict, present: Present) -> Flow {
    match verdict {
        WireVerdict::Allow {
            set,
            remove,
            metadata,
        } => {
            // Asked for and not set: the request does not go on without it (what reads it
            // after this filter may decide on it).
            if let Some(metadata) = metadata {
                let set = metadata_struct(&metadata)
                    .is_some_and(|fields| stream.set_metadata(METADATA_NAMESPACE, &fields));
                if !set {
                    return apply(stream, Config::unavailable());
                }
            }
            for name in &remove {
                stream.remove_request_header(name);
            }
            for (i, (name, value)) in set.iter().enumerate() {
                if value.is_empty() {
                    // Envoy cannot hold an empty header value: none is what the upstream
                    // gets (as behind Caddy and Traefik).
                    if present.may_have(i) {
                        stream.remove_request_header(name);
                    }
                } else if present.may_have(i) {
                    stream.set_request_header(name, value);
                } else {
                    stream.add_request_header(name, value);
                }
            }
            // The mark the guard after this filter lets through; a request that cannot
            // carry it is refused here rather than there.
            if !stream.mark_decided() {
                return apply(stream, Config::unavailable());
            }
            Flow::Continue
        }
        WireVerdict::Deny {
            status,
            headers,
            body,
        } => {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            stream.send_response(status, &headers, &body);
            Flow::Stop
        }
    }
}

/// How deeply claims may nest (objects and arrays) to be set as dynamic metadata. Envoy
/// parses the `Struct` with protobuf's default recursion limit (100 messages deep), and each
/// level of a claim takes up to three (a `Value`, a `Struct` and its map entry): deeper ones
/// would be refused by Envoy without a word, so they are refused here (503), before.
pub const MAX_METADATA_DEPTH: usize = 24;

/// How deeply `value` nests: 0 for a scalar, 1 for a flat object or array.
fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// `{provider, claims}` as a serialized `google.protobuf.Struct`, the form Envoy's dynamic
/// metadata takes: JSON numbers become doubles, as in the sidecar's ext_authz answer. `None`
/// for claims nested deeper than [`MAX_METADATA_DEPTH`].
pub fn metadata_struct(metadata: &IdentityMetadata) -> Option<Vec<u8>> {
    if metadata.claims.values().map(depth).max().unwrap_or(0) >= MAX_METADATA_DEPTH {
        return None;
    }
    let fields = Struct {
        fields: [
            ("provider".to_owned(), string_value(&metadata.provider)),
            (
                "claims".to_owned(),
                ProtoValue {
                    kind: Some(Kind::StructValue(to_struct(&metadata.claims))),
                },
            ),
        ]
        .into_iter()
        .collect(),
    };
    Some(fields.encode_to_vec())
}

fn string_value(text: &str) -> ProtoValue {
    ProtoValue {
        kind: Some(Kind::StringValue(text.to_owned())),
    }
}

fn to_struct(map: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

fn to_value(value: &serde_json::Value) -> ProtoValue {
    use serde_json::Value;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    ProtoValue { kind: Some(kind) }
}
