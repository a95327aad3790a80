//! The runtime one configuration builds: providers and their key stores, the compiled
//! decision, the token cache, the replay store, the verification threads. A reload builds a
//! new runtime (carrying over what its settings keep) and swaps it in.
//!
//! - here: building it from a configuration ([`Runtime::start`]);
//! - [`check`]: one request decided: the core's pipeline with this runtime's I/O;
//! - [`in_proxy`]: what the in-proxy filter is told (generation, digest, held claims);
//! - [`ready`]: readiness and key-set status for `/readyz` and the metrics;
//! - [`replay`]: the DPoP replay store kept across reloads.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use tokio::task::JoinHandle;

use jwt_authz_core::decision::Decider;
use jwt_authz_jose::dpop::nonce::Nonces;

use crate::config::{Config, DpopMode, JwksHttpConfig, JwksSource, TokenSource};
use crate::introspection::Introspector;
use crate::keys::fetch;
use crate::keys::snapshot::{SnapshotFile, StateDir, StateDirError};
use crate::keys::store::KeyStore;
use crate::obs::metrics::Metrics;
use crate::obs::subject::Subjects;
use crate::obs::telemetry::Telemetry;
use crate::revocation::StatusLists;
use crate::sender::replay::StoreError;
use crate::verify::pool::{PoolSettings, VerifyPool};
use crate::verify::token_cache::TokenCache;
use crate::verify::{Provider, VerifiedToken, Verifier, VerifyError};

mod check;
mod in_proxy;
mod ready;
mod replay;

pub use check::Outcome;
use replay::Replay;

/// How long signature checks stay on the verification threads after the last second in
/// which `limits.isolate_after_refusals` tokens were refused.
const ISOLATION: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a configuration could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid route rule: {0}")]
    Rule(#[from] regex::Error),
    #[error("providers[{index}].jwks_http: {message}")]
    Client { index: usize, message: String },
    #[error("providers[{index}].introspection: {message}")]
    Introspection { index: usize, message: String },
    #[error("dpop.replay_store: {0}")]
    ReplayStore(StoreError),
    #[error("dpop.nonce.secret_file {path}: {message}")]
    NonceSecret { path: String, message: String },
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error("{0}")]
    Subjects(String),
    #[error("cannot start the verification threads: {0}")]
    VerifyThreads(std::io::Error),
}

/// Everything built from one configuration.
#[derive(Debug)]
pub struct Runtime {
    config: Arc<Config>,
    verifier: Verifier,
    /// Each provider's status lists (by its index), when its `status_list.mode` is not off.
    status_lists: Vec<Option<Arc<StatusLists>>>,
    /// Each provider's introspection (by its index), when it has `introspection`.
    introspectors: Vec<Option<Arc<Introspector>>>,
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
    /// How the decision log names a token's `sub` (`log.subject`).
    subjects: Subjects,
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
        let state = match &config.state_dir {
            Some(dir) => Some(StateDir::open(
                dir,
                config.max_snapshot_age,
                config.state_key_file.as_deref(),
            )?),
            None => None,
        };
        let mut providers = Vec::with_capacity(config.providers.len());
        let mut status_lists = Vec::with_capacity(config.providers.len());
        let mut introspectors = Vec::with_capacity(config.providers.len());
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
                fetch::http_client(&provider.jwks_http)
                    .map_err(|message| StartError::Client { index, message })?
            };
            let store = KeyStore::new(
                Arc::new(provider.clone()),
                carried,
                client.clone(),
                Arc::clone(&metrics),
                config.limits.max_key_fetch_waiters,
                // A key file on disk is its own snapshot.
                state
                    .as_ref()
                    .filter(|_| !matches!(provider.jwks, JwksSource::File(_)))
                    .map(|state| SnapshotFile::new(state, provider)),
                telemetry.clone(),
            );
            let status = StatusLists::new(
                Arc::clone(&store),
                client,
                Arc::clone(&metrics),
                unchanged.and_then(|p| previous?.status_lists.get(p.index)?.as_deref()),
                state.clone(),
                telemetry.clone(),
            );
            // Built with each configuration, keeping the previous one's answers when the
            // provider is unchanged (a reload must not send every token in use to the
            // endpoint at once).
            let introspector = Introspector::new(
                index,
                Arc::clone(&store),
                Arc::clone(&metrics),
                previous.and_then(|p| p.introspectors.get(index)?.as_deref()),
            )
            .map_err(|message| StartError::Introspection { index, message })?
            .map(Arc::new);
            providers.push(Provider { index, store });
            status_lists.push(status);
            introspectors.push(introspector);
        }
        let replay = Replay::start(
            &config,
            previous.and_then(|p| p.replay.as_ref()),
            crate::clock::unix_now(),
        )?;
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
            .chain(status_lists.iter().flatten().map(|s| s.spawn_refresher()))
            .collect();
        let subjects = Subjects::start(&config, previous.map(|p| &p.subjects))
            .map_err(StartError::Subjects)?;
        Ok(Self {
            subjects,
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
            status_lists,
            introspectors,
            metrics,
            refreshers,
            telemetry,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the decision log line says for a token's `sub` (`log.subject`).
    pub fn logged_subject(&self, sub: Option<&str>) -> String {
        self.subjects.logged(sub)
    }

    /// The protected-resource metadata document published at `path` (RFC 9728 §3), if any.
    pub fn resource_document(&self, path: &str) -> Option<jwt_authz_core::decision::Document> {
        self.decider
            .resource_document(path, self.dpop_algs.as_deref())
    }

    /// A provider's name by its index (a verified token's `provider`).
    pub fn provider_name(&self, index: usize) -> Option<&str> {
        self.verifier
            .provider(index)
            .map(|p| p.config().name.as_str())
    }

    /// The provider that introspects opaque tokens found in `source` (configuration allows
    /// one per place).
    pub(crate) fn introspector_for(&self, source: &TokenSource) -> Option<&Introspector> {
        self.introspectors
            .iter()
            .flatten()
            .find(|i| i.provider_config().token_sources.contains(source))
            .map(Arc::as_ref)
    }

    /// Verifies a token against its provider, without the cache or route rules (so without
    /// the audience check, which depends on the route).
    pub async fn verify_token(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        self.verifier.verify(token, &self.pool, None).await
    }
}
