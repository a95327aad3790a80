//! One request decided: the core's pipeline ([`Decider::decide`]) with this runtime's
//! I/O ([`Io`]: the token cache, key fetches and signature checks; status lists, DPoP
//! proofs, the replay store), and what the log line and metrics record of it ([`Outcome`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use opentelemetry::trace::FutureExt as _;

use jwt_authz_core::decision::{Checks, Decision, Stop, Verified};
use jwt_authz_core::extract::Found;
use jwt_authz_core::request::Incoming;
use jwt_authz_core::response::{Denial, Deny, Verdict};
use jwt_authz_jose::dpop::{DpopError, NonceCheck};
use jwt_authz_jose::jws::{Record, stage};

use crate::clock::unix_now;
use crate::introspection::{self, Introspector};
use crate::obs::telemetry::{self};
use crate::sender::replay::StoreError;
use crate::sender::{self, ReplayCheck};
use crate::verify::token_cache::{self};
use crate::verify::{Provider, VerifiedToken, VerifyError};

use super::Runtime;
use super::replay::Refusal;

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
        let mut io = Io {
            runtime: self,
            http,
            hash: None,
            record,
        };
        let decision =
            match InFlight::enter(&self.in_flight, self.config.limits.max_concurrent_checks) {
                // Shedding load is a denial like any other: the route's own mode decides what
                // it becomes, and a request that cannot be read is never let through.
                None => self.decider.shed(http, Deny::Overloaded, algs),
                Some(_in_flight) => match self.decider.decide(http, &mut io, algs).await {
                    Some(decision) => decision,
                    // Unreachable: this runtime's steps never defer; fail closed all the same.
                    None => self.decider.shed(http, Deny::SidecarUnavailable, algs),
                },
            };
        let mut decision = decision;
        let outcome = self.outcome(&mut decision, io.hash);
        (outcome, decision)
    }

    /// What the log line and the metrics record of a decision.
    fn outcome<'s>(
        &'s self,
        d: &mut Decision<'s, '_, bool>,
        token: Option<token_cache::TokenHash>,
    ) -> Outcome<'s> {
        let cached = d.verified.as_ref().map(|v| v.note);
        // The decision's reason, `verified` told apart by whether the cache answered.
        let reason = match (d.reason(), cached) {
            ("verified", Some(true)) => "cached",
            (reason, _) => reason,
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
        if let Some(waived) = &d.waived {
            tracing::debug!(
                rule,
                waived = waived.answer().reason,
                "token did not pass; request let through anonymously without it (on_invalid: anonymous)"
            );
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
            // Moved, not shared: the outcome holds the verified token from here on.
            identity: d.verified.take().map(|v| v.token),
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
        let now = unix_now();
        match replay
            .first_use(&check.key, check.iat, check.ttl, now)
            .await
        {
            Ok(()) => {
                self.metrics.record_dpop_proof("accepted");
                Ok(())
            }
            Err(Refusal::Replayed) => {
                self.metrics.record_dpop_proof("replayed");
                Err(Deny::DpopReplayed)
            }
            Err(Refusal::Stale) => {
                // Issued before a reload that lengthened the window, and older than the
                // window it was remembered for: it may have been used already.
                self.metrics.record_dpop_proof("invalid");
                Err(Deny::DpopInvalidProof(DpopError::StaleOrFuture))
            }
            Err(Refusal::Store(error)) => {
                let kind = match error {
                    StoreError::Full(_) => "full",
                    StoreError::Unavailable(_) => "unavailable",
                };
                if replay.should_warn(now) {
                    tracing::warn!(%error, store = replay.kind(), "DPoP replay store failed; answering 503 (warned once a minute, jwt_authz_dpop_replay_store_errors_total counts each)");
                } else {
                    tracing::debug!(%error, store = replay.kind(), "DPoP replay store failed");
                }
                self.metrics.record_replay_store_error(replay.kind(), kind);
                Err(Deny::ReplayStoreUnavailable)
            }
        }
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

    /// An opaque token's claims, from its provider's introspection (cached there, not in
    /// the verified-token cache: its answers have lifetimes of their own), within the
    /// check's time limit; whether the cache answered.
    async fn introspected(
        &self,
        introspector: &Introspector,
        hash: &token_cache::TokenHash,
        token: &str,
        record: Record<'_>,
    ) -> Result<(Arc<VerifiedToken>, bool), Deny> {
        let step = self.telemetry.step_span("jwt-authz introspect token");
        let checking = tokio::time::timeout(self.config.limits.check_timeout, async {
            match &step {
                Some(cx) => {
                    introspector
                        .check(hash, token)
                        .with_context(cx.clone())
                        .await
                }
                None => introspector.check(hash, token).await,
            }
        })
        .await;
        let result = match checking {
            Ok(result) => result,
            Err(_) => {
                telemetry::end_step(step, Some(&"timed out"));
                return Err(Deny::TimedOut);
            }
        };
        telemetry::end_step(
            step,
            result.as_ref().err().map(|e| e as &dyn std::fmt::Display),
        );
        let name = &introspector.provider_config().name;
        let result = stage(record, "introspection", result, |ok| match ok {
            true => format!("active at provider {name}"),
            false => format!("provider {name}"),
        });
        result.map_err(Deny::Invalid)
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
    hash: Option<token_cache::TokenHash>,
    record: Record<'a>,
}

impl Checks for Io<'_> {
    /// Whether the token cache answered.
    type Note = bool;

    async fn verify(&mut self, found: &Found<'_>) -> Result<Verified<bool>, Stop> {
        let hash = token_cache::token_hash(found.token);
        self.hash = Some(hash);
        // An opaque token goes to the provider that introspects tokens from where it came;
        // a JWT is verified here, whatever provider it names.
        if !introspection::is_jws_shaped(found.token)
            && let Some(introspector) = self.runtime.introspector_for(found.source)
        {
            let (token, cached) =
                Box::pin(
                    self.runtime
                        .introspected(introspector, &hash, found.token, self.record),
                )
                .await?;
            return Ok(Verified {
                token,
                note: cached,
            });
        }
        let (token, cached) = self
            .runtime
            .verified(&hash, found.token, self.record)
            .await?;
        Ok(Verified {
            token,
            note: cached,
        })
    }

    async fn bind(&mut self, found: &Found<'_>, token: &Arc<VerifiedToken>) -> Result<(), Stop> {
        let runtime = self.runtime;
        let provider = runtime
            .verifier
            .provider(token.provider)
            .ok_or(Deny::Invalid(VerifyError::UnknownIssuer))?;
        // A revoked token is refused from the moment its list says so, however long ago
        // it was verified. (An introspected token has no list: the endpoint's answer is its
        // status, held for at most `cache.max_ttl`.)
        if token.thumbprint != introspection::INTROSPECTED
            && let Some(Some(status)) = runtime.status_lists.get(token.provider)
        {
            Box::pin(status.check(&token.claims, runtime.config.limits.check_timeout)).await?;
        }
        // A proof (or certificate) proves this request, not the token.
        if let Some(replay) = runtime.sender_constraint(self.http, found, provider, token)? {
            Box::pin(runtime.first_use(&replay)).await?;
        }
        Ok(())
    }
}
