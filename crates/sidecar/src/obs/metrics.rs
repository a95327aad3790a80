//! Prometheus metrics. They outlive configuration reloads, so they live beside the runtime,
//! not in it.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    front_end: &'static str,
    result: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontEndLabels {
    front_end: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    reason: &'static str,
    rule: String,
    provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    provider: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProofLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListLabels {
    provider: String,
    list: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevokedLabels {
    provider: String,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
    error: &'static str,
}

/// Every metric jwt-authz exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    checks: Family<CheckLabels, Counter>,
    check_duration: Family<FrontEndLabels, Histogram>,
    jwks_fetches: Family<FetchLabels, Counter>,
    jwks_keys: Family<ProviderLabels, Gauge>,
    jwks_age: Family<ProviderLabels, Gauge<f64, AtomicU64>>,
    jwks_from_snapshot: Family<ProviderLabels, Gauge>,
    token_cache: Family<CacheLabels, Counter>,
    shadow_denials: Family<ShadowLabels, Counter>,
    dpop_proofs: Family<ProofLabels, Counter>,
    replay_store_errors: Family<StoreLabels, Counter>,
    status_list_fetches: Family<FetchLabels, Counter>,
    introspections: Family<FetchLabels, Counter>,
    introspection_cache: Family<FetchLabels, Counter>,
    status_list_age: Family<ListLabels, Gauge>,
    revoked_tokens: Family<RevokedLabels, Counter>,
    trace_spans: Family<CacheLabels, Counter>,
    verifications_queued: Gauge,
    verifications_shed: Counter,
    verification_isolations: Counter,
}

fn check_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

/// What one provider's key store looks like at scrape time.
pub struct KeySetStatus {
    pub provider: String,
    pub keys: usize,
    pub fetched_at: Option<SystemTime>,
    /// The keys came from the snapshot in `state_dir`.
    pub from_snapshot: bool,
    /// Each status list held for the provider, with seconds since its last good fetch.
    pub status_lists: Vec<(String, u64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("jwt_authz");
        let checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "checks",
            "Authorization checks answered, by front end (grpc, http, forward_auth, in_proxy), result (allow, deny, shadow_allow: a would-be denial let through in shadow mode) and reason",
            checks.clone(),
        );
        let check_duration =
            Family::<FrontEndLabels, Histogram>::new_with_constructor(check_duration_histogram);
        registry.register(
            "check_duration_seconds",
            "Time spent answering one authorization check, by front end",
            check_duration.clone(),
        );
        let jwks_fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "jwks_fetches",
            "JWKS fetches by provider and outcome (ok, error)",
            jwks_fetches.clone(),
        );
        let jwks_keys = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "jwks_keys",
            "Usable keys currently held per provider",
            jwks_keys.clone(),
        );
        let jwks_age = Family::<ProviderLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "jwks_key_set_age_seconds",
            "Seconds since the held key set was fetched, per provider",
            jwks_age.clone(),
        );
        let jwks_from_snapshot = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "jwks_from_snapshot",
            "1 while a provider's keys are those of its snapshot in state_dir (the JWKS has been unreachable since start), else 0",
            jwks_from_snapshot.clone(),
        );
        let token_cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "token_cache_lookups",
            "Verified-token cache lookups by result (hit, miss)",
            token_cache.clone(),
        );
        let shadow_denials = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "shadow_denials",
            "Requests allowed in shadow mode that enforce mode would deny, by reason, rule and provider",
            shadow_denials.clone(),
        );
        let dpop_proofs = Family::<ProofLabels, Counter>::default();
        registry.register(
            "dpop_proofs",
            "DPoP proofs checked, by result (accepted, replayed, invalid)",
            dpop_proofs.clone(),
        );
        let replay_store_errors = Family::<StoreLabels, Counter>::default();
        registry.register(
            "dpop_replay_store_errors",
            "DPoP replay-store calls that failed (each answered 503), by store (memory, redis) and error (full, unavailable)",
            replay_store_errors.clone(),
        );
        let status_list_fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "status_list_fetches",
            "Status list fetches by provider and outcome (ok, not_modified, error: unreachable or HTTP error, invalid: refused by verification)",
            status_list_fetches.clone(),
        );
        let introspections = Family::<FetchLabels, Counter>::default();
        registry.register(
            "introspections",
            "Calls to introspection endpoints by provider and outcome (active, inactive, bad_answer, auth_refused: the endpoint refused this client, error: an HTTP error, unreachable, timeout), and checks that did not call by outcome (rate_limited, busy, no_endpoint, credentials)",
            introspections.clone(),
        );
        let introspection_cache = Family::<FetchLabels, Counter>::default();
        registry.register(
            "introspection_cache_lookups",
            "Introspection answers looked up by provider and outcome (hit, miss: a call made or joined)",
            introspection_cache.clone(),
        );
        let status_list_age = Family::<ListLabels, Gauge>::default();
        registry.register(
            "status_list_age_seconds",
            "Seconds since each held status list was last fetched (or confirmed unchanged), per provider and list URI",
            status_list_age.clone(),
        );
        let revoked_tokens = Family::<RevokedLabels, Counter>::default();
        registry.register(
            "revoked_tokens",
            "Requests denied because the token's status list marks it, by provider and status (invalid, suspended, other)",
            revoked_tokens.clone(),
        );
        let trace_spans = Family::<CacheLabels, Counter>::default();
        registry.register(
            "trace_spans_exported",
            "Spans sent to the OTLP collector, by result (ok, error: the batch was lost); spans dropped because the export queue was full are logged",
            trace_spans.clone(),
        );
        let verifications_queued = Gauge::default();
        registry.register(
            "verifications_queued",
            "Tokens not in the cache waiting for or in a signature check on the verification threads",
            verifications_queued.clone(),
        );
        let verifications_shed = Counter::default();
        registry.register(
            "verifications_shed",
            "Tokens answered 503 (verify_busy) without a signature check because limits.max_queued_verifications were already waiting",
            verifications_shed.clone(),
        );
        let verification_isolations = Counter::default();
        registry.register(
            "verification_isolations",
            "Times signature checks moved to the verification threads because limits.isolate_after_refusals signatures were refused in one second",
            verification_isolations.clone(),
        );
        Self {
            verification_isolations,
            verifications_queued,
            verifications_shed,
            trace_spans,
            jwks_from_snapshot,
            status_list_fetches,
            introspections,
            introspection_cache,
            status_list_age,
            revoked_tokens,
            dpop_proofs,
            replay_store_errors,
            shadow_denials,
            registry,
            checks,
            check_duration,
            jwks_fetches,
            jwks_keys,
            jwks_age,
            token_cache,
        }
    }

    /// `result` is `allow`, `deny` or `shadow_allow`.
    pub fn record_check(
        &self,
        front_end: &'static str,
        result: &'static str,
        reason: &'static str,
        elapsed: Duration,
    ) {
        self.checks
            .get_or_create(&CheckLabels {
                front_end,
                result,
                reason,
            })
            .inc();
        self.check_duration
            .get_or_create(&FrontEndLabels { front_end })
            .observe(elapsed.as_secs_f64());
    }

    pub fn record_shadow_denial(&self, reason: &'static str, rule: &str, provider: &str) {
        self.shadow_denials
            .get_or_create(&ShadowLabels {
                reason,
                rule: rule.to_owned(),
                provider: provider.to_owned(),
            })
            .inc();
    }

    /// `result` is `accepted`, `replayed` or `invalid`.
    pub fn record_dpop_proof(&self, result: &'static str) {
        self.dpop_proofs
            .get_or_create(&ProofLabels { result })
            .inc();
    }

    pub fn record_replay_store_error(&self, store: &'static str, error: &'static str) {
        self.replay_store_errors
            .get_or_create(&StoreLabels { store, error })
            .inc();
    }

    /// An introspection call (or a check that could not make one), by its outcome.
    pub fn record_introspection(&self, provider: &str, outcome: &'static str) {
        self.introspections
            .get_or_create(&FetchLabels {
                provider: provider.to_owned(),
                outcome,
            })
            .inc();
    }

    /// An introspection-cache lookup: `hit` answered without a call.
    pub fn record_introspection_cache(&self, provider: &str, hit: bool) {
        self.introspection_cache
            .get_or_create(&FetchLabels {
                provider: provider.to_owned(),
                outcome: if hit { "hit" } else { "miss" },
            })
            .inc();
    }

    /// `outcome` is `ok`, `not_modified`, `error` or `invalid`.
    pub fn record_status_list_fetch(&self, provider: &str, outcome: &'static str) {
        self.status_list_fetches
            .get_or_create(&FetchLabels {
                provider: provider.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn record_trace_export(&self, ok: bool, spans: usize) {
        self.trace_spans
            .get_or_create(&CacheLabels {
                result: if ok { "ok" } else { "error" },
            })
            .inc_by(spans as u64);
    }

    pub fn record_revoked_token(&self, provider: &str, status: &'static str) {
        self.revoked_tokens
            .get_or_create(&RevokedLabels {
                provider: provider.to_owned(),
                status,
            })
            .inc();
    }

    pub fn record_fetch(&self, provider: &str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.jwks_fetches
            .get_or_create(&FetchLabels {
                provider: provider.to_owned(),
                outcome,
            })
            .inc();
    }

    /// A verification entered (`1`) or left (`-1`) the verification threads' queue.
    pub fn record_verification_queued(&self, change: i64) {
        self.verifications_queued.inc_by(change);
    }

    pub fn record_verification_shed(&self) {
        self.verifications_shed.inc();
    }

    pub fn record_verification_isolation(&self) {
        self.verification_isolations.inc();
    }

    pub fn record_token_cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.token_cache
            .get_or_create(&CacheLabels { result })
            .inc();
    }

    /// Renders the registry in the Prometheus text format, with the per-provider key gauges
    /// taken from `key_sets` (the providers of the configuration in force).
    pub fn encode(&self, key_sets: impl IntoIterator<Item = KeySetStatus>) -> String {
        self.jwks_keys.clear();
        self.jwks_age.clear();
        self.jwks_from_snapshot.clear();
        self.status_list_age.clear();
        let now = SystemTime::now();
        for status in key_sets {
            for (list, age) in &status.status_lists {
                self.status_list_age
                    .get_or_create(&ListLabels {
                        provider: status.provider.clone(),
                        list: list.clone(),
                    })
                    .set(i64::try_from(*age).unwrap_or(i64::MAX));
            }
            let labels = ProviderLabels {
                provider: status.provider,
            };
            self.jwks_keys
                .get_or_create(&labels)
                .set(i64::try_from(status.keys).unwrap_or(i64::MAX));
            self.jwks_from_snapshot
                .get_or_create(&labels)
                .set(i64::from(status.from_snapshot));
            if let Some(at) = status.fetched_at {
                let age = now.duration_since(at).unwrap_or_default();
                self.jwks_age.get_or_create(&labels).set(age.as_secs_f64());
            }
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}
