//! The decision for one request, and the runtime that one configuration builds: providers and
//! their key stores, route policy, token cache. A reload builds a new runtime and swaps it in.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::FutureExt as _;
use tokio::task::JoinHandle;

use crate::config::{
    CertificateBinding, Config, DpopMode, JwksHttpConfig, JwksSource, ReplayStoreConfig,
    StatusListMode,
};
use crate::decision::{Checks, Decider, Decision, Stop, Verified};
use crate::extract::Found;
use crate::in_proxy::{CachedToken, CheckAnswer, WireVerdict};
use crate::sender::replay::{MemoryStore, RedisStore, ReplayStore, StoreError};
use jwt_authz_jose::dpop::NonceCheck;
use jwt_authz_jose::dpop::nonce::Nonces;

use crate::jwks::snapshot::SnapshotFile;
use crate::jwks::{self, KeyStore};
use crate::metrics::{KeySetStatus, Metrics};
use crate::request::Incoming;
use crate::response::{Denial, Deny, Verdict};
use crate::revocation::StatusLists;
use crate::sender::{self, ReplayCheck};
use crate::telemetry::{self, Telemetry};
use crate::token_cache::{self, TokenCache};
use crate::verify::pool::{PoolSettings, VerifyPool};
use crate::verify::{Provider, VerifiedToken, Verifier, VerifyError};
use jwt_authz_jose::jws::Record;

/// How long signature checks stay on the verification threads after the last second in
/// which `limits.isolate_after_refusals` tokens were refused.
const ISOLATION: std::time::Duration = std::time::Duration::from_secs(10);

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// One check counted in flight until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize, max: usize) -> Option<Self> {
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(count))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a configuration could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid route rule: {0}")]
    Rule(#[from] regex::Error),
    #[error("providers[{index}].jwks_http: {message}")]
    Client { index: usize, message: String },
    #[error("dpop.replay_store: {0}")]
    ReplayStore(StoreError),
    #[error("dpop.nonce.secret_file {path}: {message}")]
    NonceSecret { path: String, message: String },
    #[error("state_dir {path}: {message}")]
    StateDir { path: String, message: String },
    #[error("cannot start the verification threads: {0}")]
    VerifyThreads(std::io::Error),
}

/// Creates `state_dir` (owner only) if it does not exist yet.
fn open_state_dir(dir: &std::path::Path) -> Result<(), StartError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StartError::StateDir {
            path: dir.display().to_string(),
            message: e.to_string(),
        })
}

/// The DPoP replay store in force, with what it was built from: a reload that changes
/// neither keeps it (and every `jti` it remembers).
#[derive(Debug, Clone)]
struct Replay {
    store: ReplayStore,
    config: ReplayStoreConfig,
    window: std::time::Duration,
    /// Unix seconds of the last store-failure warning: one a minute at most, so an outage
    /// does not flood the log (every failure is counted in the metrics).
    warned_at: Arc<std::sync::atomic::AtomicU64>,
}

impl Replay {
    /// The store for `config`'s DPoP providers, if any; carried over from `previous` when
    /// its settings are unchanged.
    fn start(config: &Config, previous: Option<&Replay>) -> Result<Option<Self>, StartError> {
        let Some(window) = config
            .providers
            .iter()
            .filter(|p| p.dpop.mode != DpopMode::Off)
            .map(|p| p.dpop.replay_window())
            .max()
        else {
            return Ok(None);
        };
        let wanted = &config.dpop.replay_store;
        if let Some(previous) = previous.filter(|p| &p.config == wanted && p.window == window) {
            return Ok(Some(previous.clone()));
        }
        let store = match wanted {
            ReplayStoreConfig::Memory { max_entries } => {
                ReplayStore::Memory(MemoryStore::new(window, *max_entries))
            }
            ReplayStoreConfig::Redis {
                url,
                key_prefix,
                timeout,
            } => ReplayStore::Redis(
                RedisStore::new(url, key_prefix, *timeout).map_err(StartError::ReplayStore)?,
            ),
        };
        Ok(Some(Self {
            store,
            config: wanted.clone(),
            window,
            warned_at: Arc::default(),
        }))
    }

    fn kind(&self) -> &'static str {
        match self.store {
            ReplayStore::Memory(_) => "memory",
            ReplayStore::Redis(_) => "redis",
        }
    }

    /// Whether a store failure at `now` is to be logged as a warning.
    fn should_warn(&self, now: u64) -> bool {
        let last = self.warned_at.load(Ordering::Relaxed);
        now >= last.saturating_add(60)
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Everything built from one configuration.
#[derive(Debug)]
pub struct Runtime {
    config: Arc<Config>,
    verifier: Verifier,
    /// The decision's configuration compiled: rules, token sources, the pipeline.
    decider: Decider,
    cache: TokenCache,
    metrics: Arc<Metrics>,
    refreshers: Vec<JoinHandle<()>>,
    /// Checks in flight, held under `limits.max_concurrent_checks` (a counter: no permit
    /// queue is needed, since the excess is answered at once).
    in_flight: AtomicUsize,
    /// Where DPoP proofs' `jti`s are remembered; `None` when no provider takes DPoP.
    replay: Option<Replay>,
    /// The DPoP challenge's `algs` (RFC 9449 §7.1), when some provider takes DPoP.
    dpop_algs: Option<String>,
    /// Server nonces (`dpop.nonce`), when required.
    nonces: Option<Nonces>,
    /// Spans for the steps of a check that can take long (off unless `tracing` is set).
    telemetry: Telemetry,
    /// The threads that check signatures (kept across reloads that keep its settings).
    pool: VerifyPool,
    /// A digest of what the in-proxy filter's decisions and the claims it is handed depend
    /// on (see [`config_digest`]): part of [`Runtime::generation`], so a reload that changes
    /// rules or providers empties every filter's cache, while replicas with the same file and
    /// keys answer the same generation (a random serial here made each replica's answers
    /// empty the caches the other's had filled).
    config_digest: u64,
    /// The digest of the decision's part of the configuration
    /// ([`crate::config::DecisionConfig::digest`]), which in-proxy answers carry: a filter
    /// whose own configuration gives another decides nothing itself.
    decision_digest: String,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for task in &self.refreshers {
            task.abort();
        }
    }
}

/// A digest of the configuration the in-proxy generation depends on: the decision (mode,
/// realm, token size, paths, identity, rules), the providers (whose settings decide what a
/// filter is handed: DPoP, status lists, binding), the token cache (how long claims may be
/// held) and `in_proxy`. Deterministic across processes of one build (the `Debug` text of
/// fields without hash maps, under `DefaultHasher::new`'s fixed keys); listen addresses, logs,
/// limits and the stores' connection settings stay out of it.
fn config_digest(config: &Config) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        config.mode,
        config.realm,
        config.max_token_bytes,
        config.paths,
        config.identity,
        config.rules,
        config.providers,
        config.token_cache,
        config.in_proxy,
    )
    .hash(&mut hasher);
    hasher.finish()
}

/// The result of one check, with what the decision log line and metrics need. Nothing is
/// formatted here: the log line formats the fingerprint and subject only when it is enabled.
#[derive(Debug)]
pub struct Outcome<'r> {
    pub verdict: Verdict,
    pub allowed: bool,
    pub reason: &'static str,
    pub rule: &'r str,
    /// SHA-256 of the token (log its [`token_cache::fingerprint`], never the token).
    pub token: Option<token_cache::TokenHash>,
    pub identity: Option<Arc<VerifiedToken>>,
    /// In shadow mode, the reason enforce mode would have denied this allowed request.
    pub would_deny: Option<&'static str>,
    /// Whether the verified-token cache answered (`None`: no token verified, or no cache).
    pub cache_hit: Option<bool>,
}

impl Outcome<'_> {
    /// Before the decision: [`Runtime::conclude`] always sets the verdict and `allowed`.
    fn pending() -> Self {
        Outcome {
            // A denial with nothing to send (and nothing allocated) until then.
            verdict: Verdict::Deny(Denial {
                answer: Deny::MissingToken.answer(),
                headers: Vec::new(),
                body: String::new(),
            }),
            allowed: false,
            reason: "",
            rule: "-",
            token: None,
            identity: None,
            would_deny: None,
            cache_hit: None,
        }
    }

    /// The metric and log label: `allow`, `deny`, or `shadow_allow` (a would-be denial let
    /// through in shadow mode).
    pub fn result(&self) -> &'static str {
        match (self.allowed, self.would_deny) {
            (true, Some(_)) => "shadow_allow",
            (true, None) => "allow",
            (false, _) => "deny",
        }
    }

    /// The token's subject, for the decision log.
    pub fn subject(&self) -> Option<&str> {
        self.identity.as_ref()?.claims.get("sub")?.as_str()
    }
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
        telemetry: Telemetry,
    ) -> Result<Self, StartError> {
        let decider = Decider::new(config.decision())?;
        if let Some(dir) = &config.state_dir {
            open_state_dir(dir)?;
        }
        let mut providers = Vec::with_capacity(config.providers.len());
        for (index, provider) in config.providers.iter().enumerate() {
            let unchanged = previous.and_then(|prev| {
                prev.verifier
                    .providers()
                    .iter()
                    .find(|p| p.config() == provider)
            });
            let carried = unchanged.map(|p| p.store.keys());
            if provider.allow_insecure_http {
                tracing::warn!(
                    provider = %provider.name,
                    "allow_insecure_http: keys may be fetched over plain http, where anyone on the path can replace them"
                );
            }
            // A private endpoint gets a client of its own, built from the CA file as it is
            // now (a reload picks up a renewed CA).
            let client = if provider.jwks_http == JwksHttpConfig::default() {
                client.clone()
            } else {
                jwks::http_client(&provider.jwks_http)
                    .map_err(|message| StartError::Client { index, message })?
            };
            let store = KeyStore::new(
                Arc::new(provider.clone()),
                carried,
                client.clone(),
                Arc::clone(&metrics),
                config.limits.max_key_fetch_waiters,
                // A key file on disk is its own snapshot.
                config
                    .state_dir
                    .as_deref()
                    .filter(|_| !matches!(provider.jwks, JwksSource::File(_)))
                    .map(|dir| SnapshotFile::new(dir, provider, config.max_snapshot_age)),
                telemetry.clone(),
            );
            let status = StatusLists::new(
                Arc::clone(&store),
                client,
                Arc::clone(&metrics),
                unchanged.and_then(|p| p.status.as_deref()),
                config
                    .state_dir
                    .clone()
                    .map(|dir| (dir, config.max_snapshot_age)),
                telemetry.clone(),
            );
            providers.push(Provider {
                index,
                store,
                status,
            });
        }
        let replay = Replay::start(&config, previous.and_then(|p| p.replay.as_ref()))?;
        let mut algs: Vec<String> = Vec::new();
        for provider in config
            .providers
            .iter()
            .filter(|p| p.dpop.mode != DpopMode::Off)
        {
            for alg in &provider.dpop.algorithms {
                let name = format!("{alg:?}");
                if !algs.contains(&name) {
                    algs.push(name);
                }
            }
        }
        let dpop_algs = (!algs.is_empty()).then(|| algs.join(" "));
        let nonces = match &config.dpop.nonce {
            None => None,
            Some(nonce) => {
                let failed = |message: String| StartError::NonceSecret {
                    path: nonce.secret_file.display().to_string(),
                    message,
                };
                let secret =
                    std::fs::read(&nonce.secret_file).map_err(|e| failed(e.to_string()))?;
                let secret = secret.trim_ascii_end();
                Some(Nonces::new(secret, nonce.lifetime).map_err(|e| failed(e.to_string()))?)
            }
        };
        let settings = PoolSettings {
            threads: config.limits.verify_threads(),
            queue: config.limits.max_queued_verifications,
            nice: config.limits.verify_nice,
            isolate_after: config.limits.isolate_after_refusals,
            isolation: ISOLATION,
        };
        let pool = match previous.filter(|p| p.pool.settings() == settings) {
            Some(previous) => previous.pool.clone(),
            None => VerifyPool::start(settings, Arc::clone(&metrics))
                .map_err(StartError::VerifyThreads)?,
        };
        let refreshers = providers
            .iter()
            .map(|p| p.store.spawn_refresher())
            .chain(
                providers
                    .iter()
                    .filter_map(|p| p.status.as_ref().map(|s| s.spawn_refresher())),
            )
            .collect();
        Ok(Self {
            config_digest: config_digest(&config),
            decision_digest: decider.config().digest(),
            pool,
            replay,
            dpop_algs,
            nonces,
            in_flight: AtomicUsize::new(0),
            cache: TokenCache::new(&config.token_cache),
            config: Arc::new(config),
            verifier: Verifier::new(providers),
            decider,
            metrics,
            refreshers,
            telemetry,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A provider's name by its index (a verified token's `provider`).
    pub fn provider_name(&self, index: usize) -> Option<&str> {
        self.verifier
            .provider(index)
            .map(|p| p.config().name.as_str())
    }

    /// Ready once every provider holds keys.
    pub fn ready(&self) -> bool {
        self.verifier.providers().iter().all(|p| p.store.has_keys())
    }

    /// Providers that hold no keys, each with why: not fetched yet, or dropped because no
    /// fetch succeeded within `max_stale`.
    pub fn providers_without_keys(&self) -> Vec<String> {
        self.verifier
            .providers()
            .iter()
            .filter(|p| !p.store.has_keys())
            .map(|p| {
                let keys = p.store.keys();
                let name = &p.config().name;
                match keys.fetched_at.filter(|_| keys.expired) {
                    Some(at) => format!(
                        "{name} (keys dropped: last good fetch {}s ago, max_stale {}s)",
                        at.elapsed().unwrap_or_default().as_secs(),
                        p.config().jwks_cache.max_stale.as_secs()
                    ),
                    None => format!("{name} (no keys fetched yet)"),
                }
            })
            .collect()
    }

    /// Providers whose keys came from a snapshot (their first fetch failed), each with the
    /// snapshot's age: ready, but worth saying.
    pub fn providers_on_snapshot(&self) -> Vec<String> {
        self.verifier
            .providers()
            .iter()
            .filter_map(|p| {
                let keys = p.store.keys();
                (keys.from_snapshot && !keys.is_empty()).then(|| {
                    let age = keys
                        .fetched_at
                        .and_then(|at| at.elapsed().ok())
                        .unwrap_or_default()
                        .as_secs();
                    format!("{} ({age}s old)", p.config().name)
                })
            })
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
                    from_snapshot: keys.from_snapshot,
                    status_lists: p.status.as_ref().map(|s| s.ages()).unwrap_or_default(),
                }
            })
            .collect()
    }

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

    /// The verified claims the in-proxy filter may keep for the token of a decided request,
    /// and for how long; `None` when a later request with it needs more than its claims
    /// (a DPoP proof, a certificate, a status list: the sidecar checks those on every
    /// request) or when the token cache is off. Every denial of a token kept in-proxy comes
    /// from the decision's own steps (provider, audience, claims, identity), which the
    /// filter runs the same way.
    pub fn in_proxy_token(&self, outcome: &Outcome<'_>) -> Option<CachedToken> {
        let token = outcome.identity.as_ref()?;
        let provider = self.verifier.provider(token.provider)?.config();
        let claims_suffice = provider.dpop.mode == DpopMode::Off
            && provider.certificate_binding == CertificateBinding::Optional
            && provider.status_list.mode == StatusListMode::Off
            && !token.claims.contains_key("cnf");
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

    /// Decides one request, whichever front end it came through.
    pub async fn check(&self, http: &Incoming<'_>) -> Outcome<'_> {
        self.run(http, None).await.0
    }

    /// Decides one request with the core's pipeline ([`Decider::decide`]), this runtime
    /// supplying verification ([`Io`]); `record` (for `explain`) receives the verifier's
    /// checks. Returns the outcome and the pipeline's steps.
    pub(crate) async fn run<'s, 'r>(
        &'s self,
        http: &Incoming<'r>,
        record: Record<'_>,
    ) -> (Outcome<'s>, Decision<'s, 'r, bool>)
    where
        's: 'r,
    {
        let algs = self.dpop_algs.as_deref();
        let io = Io {
            runtime: self,
            http,
            hash: OnceLock::new(),
            record,
        };
        let decision =
            match InFlight::enter(&self.in_flight, self.config.limits.max_concurrent_checks) {
                // Shedding load is a denial like any other: the route's own mode decides what
                // it becomes, and a request that cannot be read is never let through.
                None => self.decider.shed(http, Deny::Overloaded, algs),
                Some(_in_flight) => match self.decider.decide(http, &io, algs).await {
                    Some(decision) => decision,
                    // Unreachable: this runtime's steps never defer; fail closed all the same.
                    None => self.decider.shed(http, Deny::SidecarUnavailable, algs),
                },
            };
        let mut decision = decision;
        let outcome = self.outcome(&mut decision, io.hash.get().copied());
        (outcome, decision)
    }

    /// What the log line and the metrics record of a decision.
    fn outcome<'s>(
        &'s self,
        d: &mut Decision<'s, '_, bool>,
        token: Option<token_cache::TokenHash>,
    ) -> Outcome<'s> {
        let cached = d.verified.as_ref().map(|v| v.note);
        let reason = match (&d.deny, cached) {
            (Some(deny), _) => deny.answer().reason,
            (None, Some(true)) => "cached",
            (None, Some(false)) => "verified",
            (None, None) => "public",
        };
        let rule = d.route.map_or("-", |r| r.name);
        match &d.deny {
            Some(deny) if d.read.is_none() => {
                tracing::debug!(reason, detail = ?deny, "refusing the request before any rule");
            }
            Some(Deny::UnsafeClaim) => {
                tracing::warn!("denying token whose claim cannot be a header");
            }
            _ => {}
        }
        if d.shadowed() {
            self.metrics
                .record_shadow_denial(reason, rule, d.provider.map_or("-", |p| p.name));
        }
        Outcome {
            // The verdict moves to the outcome; the decision keeps an empty denial.
            verdict: std::mem::replace(&mut d.verdict, Outcome::pending().verdict),
            allowed: d.allowed,
            reason,
            rule,
            token,
            identity: d.verified.as_ref().map(|v| Arc::clone(&v.token)),
            would_deny: d.shadowed().then_some(reason),
            cache_hit: cached.filter(|_| self.cache.enabled()),
        }
    }

    /// Answers a request that cannot be decided on: its front end could not say what the
    /// original request was. Always a denial, shadow mode or not: no rule is known, and a
    /// client able to garble the description must not reach a route that `rules[].mode:
    /// enforce` protects under a top-level `mode: shadow`.
    pub fn refuse(&self, deny: Deny) -> Outcome<'_> {
        let mut outcome = Outcome::pending();
        outcome.reason = deny.answer().reason;
        outcome.verdict = Verdict::Deny(self.decider.denial(&deny, self.dpop_algs.as_deref()));
        outcome
    }

    /// The token's bindings checked against the request (module [`sender`]).
    fn sender_constraint(
        &self,
        http: &Incoming<'_>,
        found: &Found<'_>,
        provider: &Provider,
        verified: &VerifiedToken,
    ) -> Result<Option<ReplayCheck>, Deny> {
        let now = unix_now();
        let valid = |nonce: &str| self.nonces.as_ref().is_some_and(|n| n.valid(nonce, now));
        let context = sender::Context {
            public_scheme: self.config.dpop.scheme.as_deref(),
            now,
            nonce: self.nonces.as_ref().map(|_| NonceCheck(&valid)),
        };
        let checked = sender::check(http, found, provider.config(), &verified.claims, context)
            .map_err(|deny| match (deny, &self.nonces) {
                (Deny::DpopUseNonce(_), Some(nonces)) => Deny::DpopUseNonce(nonces.issue(now)),
                (deny, _) => deny,
            });
        match &checked {
            Ok(Some(_)) => {}
            Err(
                Deny::DpopMissingProof
                | Deny::DpopMultipleProofs
                | Deny::DpopInvalidProof(_)
                | Deny::DpopKeyMismatch,
            ) => self.metrics.record_dpop_proof("invalid"),
            _ => {}
        }
        checked
    }

    /// Remembers an accepted proof's `jti`; a second use within its window is refused, and
    /// so is every proof while the store cannot answer (never accepted unchecked).
    async fn first_use(&self, check: &ReplayCheck) -> Result<(), Deny> {
        let Some(replay) = &self.replay else {
            // A provider took DPoP, so a store was built: unreachable, but fail closed.
            return Err(Deny::ReplayStoreUnavailable);
        };
        match replay.store.first_use(&check.key, check.ttl).await {
            Ok(true) => {
                self.metrics.record_dpop_proof("accepted");
                Ok(())
            }
            Ok(false) => {
                self.metrics.record_dpop_proof("replayed");
                Err(Deny::DpopReplayed)
            }
            Err(error) => {
                let kind = match error {
                    StoreError::Full(_) => "full",
                    StoreError::Unavailable(_) => "unavailable",
                };
                if replay.should_warn(unix_now()) {
                    tracing::warn!(%error, store = replay.kind(), "DPoP replay store failed; answering 503 (warned once a minute, jwt_authz_dpop_replay_store_errors_total counts each)");
                } else {
                    tracing::debug!(%error, store = replay.kind(), "DPoP replay store failed");
                }
                self.metrics.record_replay_store_error(replay.kind(), kind);
                Err(Deny::ReplayStoreUnavailable)
            }
        }
    }

    /// The decision's configuration, compiled.
    pub fn decider(&self) -> &Decider {
        &self.decider
    }

    /// Verifies a token against its provider, without the cache or route rules (so without
    /// the audience check, which depends on the route).
    pub async fn verify_token(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        self.verifier.verify(token, &self.pool, None).await
    }

    /// The verified claims for a token, from the cache when its key is still published.
    async fn verified(
        &self,
        hash: &token_cache::TokenHash,
        token: &str,
        record: Record<'_>,
    ) -> Result<(Arc<VerifiedToken>, bool), Deny> {
        if let Some(hit) = self.cache.get(hash).await {
            let key_live = self
                .verifier
                .provider(hit.provider)
                .is_some_and(|p| p.store.holds(&hit.thumbprint));
            if key_live {
                self.metrics.record_token_cache(true);
                return Ok((hit, true));
            }
            Box::pin(self.cache.invalidate(hash)).await;
        }
        if self.cache.enabled() {
            self.metrics.record_token_cache(false);
        }
        // Boxed: its future (timeout, key fetch, hand-off) is most of a check's, and a check
        // future is moved several times on its way; a cache hit should not carry it.
        Box::pin(self.verify_fresh(hash, token, record)).await
    }

    /// A token not in the cache (or whose key went away): verified, then cached.
    async fn verify_fresh(
        &self,
        hash: &token_cache::TokenHash,
        token: &str,
        record: Record<'_>,
    ) -> Result<(Arc<VerifiedToken>, bool), Deny> {
        // The one step of a check that can wait (on a key fetch); bounding it here keeps the
        // timer off the cached path. Its span (when traced) is the parent of a key fetch it
        // starts.
        let step = self.telemetry.step_span("jwt-authz verify token");
        let verifying = tokio::time::timeout(self.config.limits.check_timeout, async {
            match &step {
                Some(cx) => {
                    self.verifier
                        .verify(token, &self.pool, record)
                        .with_context(cx.clone())
                        .await
                }
                None => self.verifier.verify(token, &self.pool, record).await,
            }
        })
        .await;
        let verified = match verifying {
            Ok(Ok(verified)) => {
                telemetry::end_step(step, None);
                verified
            }
            Ok(Err(error)) => {
                telemetry::end_step(step, Some(&error));
                return Err(Deny::Invalid(error));
            }
            Err(_) => {
                telemetry::end_step(step, Some(&"timed out"));
                return Err(Deny::TimedOut);
            }
        };
        let verified = Arc::new(verified);
        self.cache.insert(*hash, Arc::clone(&verified)).await;
        Ok((verified, false))
    }
}

/// The sidecar's own steps of the pipeline: verification through the token cache, key
/// fetches and the signature check; the bind step's status lists, DPoP proofs and
/// certificates.
struct Io<'a> {
    runtime: &'a Runtime,
    http: &'a Incoming<'a>,
    /// The token's SHA-256, once found (the log line's fingerprint, also for a token
    /// refused).
    hash: OnceLock<token_cache::TokenHash>,
    record: Record<'a>,
}

impl Checks for Io<'_> {
    /// Whether the token cache answered.
    type Note = bool;

    async fn verify(&self, found: &Found<'_>) -> Result<Verified<bool>, Stop> {
        let hash = *self
            .hash
            .get_or_init(|| token_cache::token_hash(found.token));
        let (token, cached) = self
            .runtime
            .verified(&hash, found.token, self.record)
            .await?;
        Ok(Verified {
            token,
            note: cached,
        })
    }

    async fn bind(&self, found: &Found<'_>, token: &Arc<VerifiedToken>) -> Result<(), Stop> {
        let runtime = self.runtime;
        let provider = runtime
            .verifier
            .provider(token.provider)
            .ok_or(Deny::Invalid(VerifyError::UnknownIssuer))?;
        // A revoked token is refused from the moment its list says so, however long ago
        // it was verified.
        if let Some(status) = &provider.status {
            Box::pin(status.check(&token.claims, runtime.config.limits.check_timeout)).await?;
        }
        // A proof (or certificate) proves this request, not the token.
        if let Some(replay) = runtime.sender_constraint(self.http, found, provider, token)? {
            Box::pin(runtime.first_use(&replay)).await?;
        }
        Ok(())
    }
}
