//! The decision sequence, written once: every caller (the sidecar's check, the in-proxy
//! filter's engine, `explain`) runs [`Decider::decide`], and supplies only what needs I/O
//! or state of its own through [`Checks`]: verifying a token (the sidecar: its cache, key
//! fetches and signature check; the filter: the claims it holds, or a callout), and the
//! checks on a verified token that need a store or a list (revocation, DPoP, certificate
//! binding).
//!
//! The steps, in order ([`Step`]):
//!
//! 1. **read**: the canonical path and host, no lookalike identity header
//!    ([`super::read`]); a request refused here is refused in every mode;
//! 2. **rule**: the route that applies; a `deny` rule denies before any token is looked at;
//! 3. **token**: the one token the request carries; none is allowed (anonymous) on a
//!    public or optional route and `missing_token` elsewhere;
//! 4. **verify**: the caller's verification ([`Checks::verify`]);
//! 5. **accept**: the token's place, the route's providers and audiences
//!    ([`super::accepts`]);
//! 6. **bind**: the caller's revocation and sender checks ([`Checks::bind`]);
//! 7. **claims**: the route's claim requirements ([`super::claims_hold`]);
//! 8. **identity**: the identity headers ([`super::allow`]).
//!
//! A denial at steps 3 to 8 on an `optional` rule with `on_invalid: anonymous` is waived
//! ([`Decider::waive`]): the request goes on anonymously, its token removed. Otherwise the
//! mode that applies ([`super::mode`]) decides what a denial becomes: a denial in enforce
//! mode, the shadow answer ([`super::shadow_allow`]) in shadow mode.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::config::resource::Published;
use crate::config::{Access, DecisionConfig, Mode, OnInvalid, ResourceUri, TokenSource};
use crate::extract::{self, Found, Scheme};
use crate::policy::{AccessKind, Policy, Route};
use crate::request::{Incoming, RequestInfo};
use crate::response::{ChallengeParams, Denial, Deny, HttpStatus, Verdict};
use crate::token::{VerifiedToken, VerifyError};

use super::{Identity, Provider, Readable};

/// The steps of a decision, in the order they are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Read,
    Rule,
    Token,
    Verify,
    Accept,
    Bind,
    Claims,
    Identity,
}

impl Step {
    pub const ALL: [Step; 8] = [
        Step::Read,
        Step::Rule,
        Step::Token,
        Step::Verify,
        Step::Accept,
        Step::Bind,
        Step::Claims,
        Step::Identity,
    ];

    /// The step's name, as `explain` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Step::Read => "read",
            Step::Rule => "rule",
            Step::Token => "token",
            Step::Verify => "verify",
            Step::Accept => "accept",
            Step::Bind => "bind",
            Step::Claims => "claims",
            Step::Identity => "identity",
        }
    }
}

/// Why a caller's step did not pass: a denial, or (the in-proxy filter) not decided here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Deny(Deny),
    /// The caller cannot decide this request itself (the filter asks the sidecar).
    Defer,
}

impl From<Deny> for Stop {
    fn from(deny: Deny) -> Self {
        Stop::Deny(deny)
    }
}

/// A token the caller verified, with what the caller keeps about how (the sidecar: whether
/// its cache answered).
#[derive(Debug, Clone)]
pub struct Verified<N> {
    pub token: Arc<VerifiedToken>,
    pub note: N,
}

/// What the caller of [`Decider::decide`] supplies: the steps that need I/O or state.
pub trait Checks {
    /// What the caller keeps with a verified token.
    type Note;

    /// The token's verified claims, or why not.
    fn verify(
        &mut self,
        found: &Found<'_>,
    ) -> impl Future<Output = Result<Verified<Self::Note>, Stop>>;

    /// The checks on an accepted token that need more than its claims: its status list,
    /// and the DPoP proof or certificate it is bound to.
    fn bind(
        &mut self,
        found: &Found<'_>,
        token: &Arc<VerifiedToken>,
    ) -> impl Future<Output = Result<(), Stop>>;
}

/// A resource's metadata document, ready to send (`application/json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub body: String,
    /// Seconds clients and caches may keep it (RFC 9728 §7.10: `Cache-Control: max-age`).
    pub max_age: u32,
}

/// One request decided: the verdict, and the steps that led to it.
#[derive(Debug)]
pub struct Decision<'d, 'r, N> {
    /// What the client (or the upstream) gets.
    pub verdict: Verdict,
    /// Whether the request goes on (in shadow mode, also when it would be denied).
    pub allowed: bool,
    /// Why enforce mode denies it (in shadow mode: let through all the same).
    pub deny: Option<Deny>,
    /// Why the token of a request let through anonymously did not pass (an `optional` rule
    /// with `on_invalid: anonymous`); `deny` is then `None`.
    pub waived: Option<Deny>,
    /// The mode that applied to a denial.
    pub mode: Mode,
    /// The last step taken: every one before it passed; this one failed when `deny` is set
    /// (unless the request was allowed without a token at [`Step::Token`]).
    pub reached: Step,
    /// The path and host in canonical form (`None`: refused at [`Step::Read`]).
    pub read: Option<Readable<'r>>,
    pub route: Option<Route<'d>>,
    pub found: Option<Found<'r>>,
    pub verified: Option<Verified<N>>,
    /// The provider of the verified token.
    pub provider: Option<Provider<'d>>,
}

impl<N> Decision<'_, '_, N> {
    fn new() -> Self {
        Decision {
            verdict: Verdict::Deny(Denial {
                answer: Deny::MissingToken.answer(),
                headers: Vec::new(),
                body: String::new(),
            }),
            allowed: false,
            deny: None,
            waived: None,
            mode: Mode::Enforce,
            reached: Step::Read,
            read: None,
            route: None,
            found: None,
            verified: None,
            provider: None,
        }
    }

    /// The denial the steps reached, enforced or waived (`on_invalid: anonymous`).
    pub fn refusal(&self) -> Option<&Deny> {
        self.deny.as_ref().or(self.waived.as_ref())
    }

    /// Whether a denial was let through in shadow mode.
    pub fn shadowed(&self) -> bool {
        self.allowed && self.deny.is_some()
    }

    /// The reason in the metrics and the log: the denial's; for a request allowed, `public`
    /// without a token on a public route, `anonymous` without one on an optional route,
    /// `anonymous_invalid` when an optional route's `on_invalid: anonymous` let it through
    /// without the token it carried, `verified` with a token.
    pub fn reason(&self) -> &'static str {
        match (&self.deny, &self.waived, &self.verified) {
            (Some(deny), _, _) => deny.answer().reason,
            (None, Some(_), _) => "anonymous_invalid",
            (None, None, Some(_)) => "verified",
            (None, None, None) => match self.route.map(|r| r.kind) {
                Some(AccessKind::Optional) => "anonymous",
                _ => "public",
            },
        }
    }
}

/// What the steps record as they go (the rest of a [`Decision`] is known before them).
struct Trace<'r, N> {
    reached: Step,
    found: Option<Found<'r>>,
    verified: Option<Verified<N>>,
    /// The verified token's provider, by index.
    provider: Option<usize>,
}

/// The decision's configuration, compiled: the sidecar builds one per configuration it
/// loads, the filter one per plugin configuration.
#[derive(Debug)]
pub struct Decider {
    config: DecisionConfig,
    policy: Policy,
    /// Every place any provider accepts tokens from, each listed once.
    sources: Vec<TokenSource>,
    /// Each resource's metadata URL (RFC 9728 §3.1), by index in `resources`.
    metadata_urls: Vec<String>,
    /// The names of plain spelling (lowercase letters, digits, `-`) that
    /// [`Decider::reads_header`] takes, worked out once: it is asked of every header of
    /// every request an in-proxy filter decides.
    plain_reads: Vec<String>,
}

/// Whether `name` has no character other than a lowercase letter, digit or `-`: the names
/// most requests' headers have.
fn plain(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Decider {
    /// Compiles `config`'s rules (validated already: a regex error is unexpected, but
    /// reported).
    pub fn new(config: DecisionConfig) -> Result<Self, regex::Error> {
        let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
        let policy =
            Policy::with_resources(&config.rules, &config.paths, &names, &config.resources)?;
        // Validated: every resource URI reads (one that did not would name no metadata).
        let metadata_urls = config
            .resources
            .iter()
            .map(|r| {
                ResourceUri::parse(&r.resource, &config.paths)
                    .map(|uri| uri.metadata_url())
                    .unwrap_or_default()
            })
            .collect();
        let mut sources: Vec<TokenSource> = Vec::new();
        for source in config.providers.iter().flat_map(|p| &p.token_sources) {
            if !sources.contains(source) {
                sources.push(source.clone());
            }
        }
        let mut decider = Self {
            config,
            policy,
            sources,
            metadata_urls,
            plain_reads: Vec::new(),
        };
        decider.plain_reads = decider.plain_reads();
        Ok(decider)
    }

    /// What [`Decider::reads_header`]'s rules take of the names with no character other than
    /// a lowercase letter, digit or `-`: a token source's header (lowercase: `eq_ignore_ascii_case`
    /// matches no other such name), each identity header folded (for such a name,
    /// `same_folded(header, name)` is `folded(header) == name`), and the fixed ones (none of
    /// which starts with `x-envoy-`, so that rule takes nothing away).
    fn plain_reads(&self) -> Vec<String> {
        let sources = self.sources.iter().filter_map(|s| match s {
            TokenSource::Bearer => Some("authorization".to_owned()),
            TokenSource::Header { name, .. } => Some(name.to_ascii_lowercase()),
            TokenSource::Cookie(_) => Some("cookie".to_owned()),
            TokenSource::Query(_) => None,
        });
        let identity = self
            .config
            .identity
            .upstream_headers()
            .map(crate::identity::folded);
        let fixed = ["authorization", "dpop", "traceparent", "tracestate"].map(str::to_owned);
        let mut names: Vec<String> = Vec::new();
        for name in sources.chain(identity).chain(fixed) {
            if plain(&name) && !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// The metadata document (RFC 9728 §3.2) published at `path`, if a resource's metadata
    /// is there (§3.1): the path compared exactly, as a client forms it from the resource's
    /// identifier. `dpop_algs`: the DPoP algorithms accepted, when some provider takes DPoP.
    pub fn resource_document(&self, path: &str, dpop_algs: Option<&str>) -> Option<Document> {
        let config = &self.config;
        let index = config.resources.iter().position(|r| {
            ResourceUri::parse(&r.resource, &config.paths)
                .is_ok_and(|uri| uri.metadata_path() == path)
        })?;
        let resource = &config.resources[index];
        let default = resource.default;
        let mut rule_scopes: Vec<&str> = Vec::new();
        let rules: Vec<&crate::config::RuleConfig> = config
            .rules
            .iter()
            .filter(|rule| match &rule.resource {
                Some(name) => *name == resource.name,
                None => default,
            })
            .collect();
        // The providers whose tokens its routes take (every one when a route names none, or
        // for the default resource, whose unmatched requests take any provider's): what its
        // default authorization servers and bearer methods are read from.
        let every = default || rules.is_empty() || rules.iter().any(|r| r.providers.is_none());
        let accepted: Vec<&crate::config::DecisionProvider> = config
            .providers
            .iter()
            .filter(|p| {
                every
                    || rules
                        .iter()
                        .any(|r| r.providers.iter().flatten().any(|name| *name == p.name))
            })
            .collect();
        for rule in rules {
            let (Access::Claims(reqs) | Access::Optional(reqs)) = &rule.access else {
                continue;
            };
            let values = reqs
                .iter()
                .filter(|r| crate::claims::is_space_separated(&r.claim))
                .flat_map(|r| r.any_of.iter().chain(&r.all_of).flatten());
            for value in values {
                if crate::claims::is_scope_token(value) && !rule_scopes.contains(&value.as_str()) {
                    rule_scopes.push(value);
                }
            }
        }
        let issuers: Vec<&str> = accepted.iter().map(|p| p.issuer.as_str()).collect();
        let sources: Vec<&[TokenSource]> = accepted
            .iter()
            .map(|p| p.token_sources.as_slice())
            .collect();
        let doc = resource.metadata(Published {
            issuers: &issuers,
            token_sources: &sources,
            rule_scopes: &rule_scopes,
            dpop_algs,
        });
        Some(Document {
            body: doc.to_string(),
            max_age: resource.max_age_seconds,
        })
    }

    /// The metadata URL of the resource at `index` (RFC 9728 §3.1).
    pub fn metadata_url(&self, index: usize) -> Option<&str> {
        self.metadata_urls
            .get(index)
            .map(String::as_str)
            .filter(|u| !u.is_empty())
    }

    pub fn config(&self) -> &DecisionConfig {
        &self.config
    }

    /// What the decision reads of the provider at `index`.
    pub fn provider(&self, index: usize) -> Option<Provider<'_>> {
        let p = self.config.providers.get(index)?;
        Some(Provider {
            index,
            name: &p.name,
            token_sources: &p.token_sources,
            audiences: &p.audiences,
            mode: p.mode,
        })
    }

    /// Whether the decision reads the request header `name` (lowercase), so that a
    /// request decided elsewhere (the in-proxy filter's callout) must carry it: every
    /// header a token may come in (`authorization`, configured headers, `cookie` when a
    /// cookie is a source), the DPoP proof, the trace context (W3C `traceparent` and
    /// `tracestate`), and every header that is a configured identity header (or the
    /// anonymous marker) in any spelling
    /// (the lookalike check refuses the others; the identity headers themselves are removed
    /// or replaced whatever the request had). Also any name with a character other than a
    /// lowercase letter, digit or `-`, which only a lookalike of some header would have (the
    /// sidecar refuses the lookalikes of its identity headers). Never a pseudo-header, nor
    /// the proxy's own `x-envoy-*` (unless the configuration names it as a token source or
    /// identity header, or it looks like one), nor any other header a client adds. (For a request
    /// decided elsewhere by *this* configuration: the in-proxy filter forwards more while it
    /// does not know the sidecar's configuration to be its own.)
    pub fn reads_header(&self, name: &str) -> bool {
        if plain(name) {
            return self.plain_reads.iter().any(|read| read == name);
        }
        self.reads_header_by_rules(name)
    }

    /// [`Decider::reads_header`] as its rules say, for any name.
    fn reads_header_by_rules(&self, name: &str) -> bool {
        if name.starts_with(':') {
            return false;
        }
        // A token source or identity header the configuration names (and its lookalikes)
        // whatever its name, `x-envoy-*` included: the decision reads them.
        let source = |s: &TokenSource| match s {
            TokenSource::Bearer => name == "authorization",
            TokenSource::Header { name: header, .. } => header.eq_ignore_ascii_case(name),
            TokenSource::Cookie(_) => name == "cookie",
            TokenSource::Query(_) => false,
        };
        if self.sources.iter().any(source)
            || self
                .config
                .identity
                .upstream_headers()
                .any(|header| crate::identity::same_folded(header, name))
        {
            return true;
        }
        if name.starts_with("x-envoy-") {
            return false;
        }
        !plain(name)
            || matches!(
                name,
                "authorization" | "dpop" | "traceparent" | "tracestate"
            )
    }

    /// Every header of `http` a token may come in (and the DPoP proof), whether or not it
    /// holds one: what goes when no single token can be found.
    fn token_headers<'d>(&'d self, http: &Incoming<'_>) -> Vec<&'d str> {
        let mut names: Vec<&'d str> = Vec::new();
        for source in &self.sources {
            let name = match source {
                TokenSource::Bearer => "authorization",
                TokenSource::Header { name, .. } => name.as_str(),
                TokenSource::Cookie(_) | TokenSource::Query(_) => continue,
            };
            if http.headers.contains(name) && !names.contains(&name) {
                names.push(name);
            }
        }
        if http.headers.contains("dpop") {
            names.push("dpop");
        }
        names
    }

    /// The one token `http` carries, if it can be found unambiguously.
    pub fn token<'r>(&'r self, http: &Incoming<'r>) -> Option<Found<'r>> {
        self.extract(http).ok().flatten()
    }

    fn extract<'r>(
        &'r self,
        http: &Incoming<'r>,
    ) -> Result<Option<Found<'r>>, extract::ExtractError> {
        extract::extract(
            http.headers,
            http.target,
            &self.sources,
            self.config.max_token_bytes,
        )
    }

    /// The first two steps alone: the request read and the route that applies (for a
    /// caller that sheds load before deciding: the route's mode still decides what the
    /// denial becomes).
    pub fn route<'d, 'r>(&'d self, http: &Incoming<'r>) -> Result<(Readable<'r>, Route<'d>), Deny> {
        let read = super::read(http, &self.config.paths, &self.config.identity)?;
        let request =
            RequestInfo::new(http.method, &read.path, &read.host, http.context_extensions);
        let route = self.policy.route(&request);
        Ok((read, route))
    }

    /// A denial as the client sees it; `dpop_algs` names DPoP's algorithms in the
    /// challenge (RFC 9449 §7.1) when some provider takes DPoP.
    pub fn denial(&self, deny: &Deny, dpop_algs: Option<&str>) -> Denial {
        self.denial_on(deny, None, None, dpop_algs)
    }

    /// [`Decider::denial`] on `route` (its resource's metadata named, RFC 9728 §5.1; the
    /// scopes it needs named on `insufficient_scope`, RFC 6750 §3, counting those the
    /// token's `claims` hold). A request no route was found for names the default
    /// resource's metadata, if any.
    pub fn denial_on(
        &self,
        deny: &Deny,
        route: Option<&Route<'_>>,
        claims: Option<&serde_json::Map<String, serde_json::Value>>,
        dpop_algs: Option<&str>,
    ) -> Denial {
        let resource = match route {
            Some(route) => route.resource,
            None => self.config.resources.iter().position(|r| r.default),
        };
        let scope = route.and_then(|r| r.needed_scopes(claims));
        deny.denial_for(&ChallengeParams {
            realm: &self.config.realm,
            dpop_algs,
            resource_metadata: resource.and_then(|i| self.metadata_url(i)),
            scope: scope.as_deref(),
        })
    }

    /// Decides `http` (see the module's doc); `None` when a caller's step deferred.
    pub async fn decide<'d: 'r, 'r, C: Checks>(
        &'d self,
        http: &Incoming<'r>,
        checks: &mut C,
        dpop_algs: Option<&str>,
    ) -> Option<Decision<'d, 'r, C::Note>> {
        let (read, route) = match self.route(http) {
            Ok(read) => read,
            Err(deny) => return Some(self.conclude(http, Decision::new(), deny, dpop_algs)),
        };
        // Only what the steps record lives across their awaits (the decision is assembled
        // after them): a check's future stays small, and a cached token's check fast.
        let mut trace = Trace {
            reached: Step::Rule,
            found: None,
            verified: None,
            provider: None,
        };
        let result = self.steps(http, &route, checks, &mut trace).await;
        let mut d = Decision::new();
        d.read = Some(read);
        d.route = Some(route);
        d.reached = trace.reached;
        d.found = trace.found;
        d.verified = trace.verified;
        d.provider = trace.provider.and_then(|index| self.provider(index));
        match result {
            Ok(verdict) => {
                d.verdict = verdict;
                d.allowed = true;
                Some(d)
            }
            Err(Stop::Defer) => None,
            Err(Stop::Deny(deny)) => match self.waive(http, &route, d.found.as_ref(), &deny) {
                Some(verdict) => {
                    d.verdict = verdict;
                    d.allowed = true;
                    d.waived = Some(deny);
                    Some(d)
                }
                None => Some(self.conclude(http, d, deny, dpop_algs)),
            },
        }
    }

    /// An `optional` rule's `on_invalid: anonymous`: the anonymous answer for a request whose
    /// token did not pass, with the token taken off whatever `identity.strip_authorization`
    /// says (a refused token never reaches the app), and its DPoP proof. `None` where the
    /// denial stands: another rule; the sidecar's own failure (503: a signed-in user is not
    /// made anonymous by an outage) or an introspection answer it could not read; a DPoP
    /// nonce challenge (RFC 9449 §8: the client is to retry with the nonce, not to be served
    /// as someone else); a token that is not in a
    /// header of its own (configuration validation refuses such sources with `anonymous`;
    /// checked again here, failing closed).
    fn waive(
        &self,
        http: &Incoming<'_>,
        route: &Route<'_>,
        found: Option<&Found<'_>>,
        deny: &Deny,
    ) -> Option<Verdict> {
        // An introspection answer that cannot be read says nothing about the token either
        // (a misbehaving endpoint, an HTML page in its place): not a reason to serve a
        // signed-in user anonymously.
        if route.kind != AccessKind::Optional
            || route.on_invalid != OnInvalid::Anonymous
            || deny.answer().http == HttpStatus::ServiceUnavailable
            || matches!(
                deny,
                Deny::DpopUseNonce(_) | Deny::Invalid(VerifyError::BadIntrospection)
            )
        {
            return None;
        }
        let mut strip: Vec<&str> = match found {
            Some(found) => vec![found.header()?],
            // No one token could be told apart (two, or one too large): every header a token
            // may come in goes.
            None => {
                let unremovable =
                    |s: &TokenSource| matches!(s, TokenSource::Cookie(_) | TokenSource::Query(_));
                if self.sources.iter().any(unremovable) {
                    return None;
                }
                self.token_headers(http)
            }
        };
        if http.headers.contains("dpop") && !strip.contains(&"dpop") {
            strip.push("dpop");
        }
        self.allow(None, &strip).ok()
    }

    /// A request denied before its steps (the sidecar sheds load): the route is still read,
    /// since its mode decides what the denial becomes (a `mode: enforce` route stays closed
    /// under a top-level `mode: shadow`); a request that cannot be read is never let
    /// through.
    pub fn shed<'d: 'r, 'r, N>(
        &'d self,
        http: &Incoming<'r>,
        deny: Deny,
        dpop_algs: Option<&str>,
    ) -> Decision<'d, 'r, N> {
        let mut d = Decision::new();
        if let Ok((read, route)) = self.route(http) {
            d.read = Some(read);
            d.route = Some(route);
            d.reached = Step::Rule;
        }
        self.conclude(http, d, deny, dpop_algs)
    }

    /// What a denial becomes in the mode that applies.
    fn conclude<'d: 'r, 'r, N>(
        &'d self,
        http: &Incoming<'r>,
        mut d: Decision<'d, 'r, N>,
        deny: Deny,
        dpop_algs: Option<&str>,
    ) -> Decision<'d, 'r, N> {
        // The most specific mode applies: the rule's, the provider's of a verified token,
        // the top level's. A request that cannot be read has no rule and is refused in
        // every mode (`super::read`).
        d.mode = match d.read {
            None => Mode::Enforce,
            Some(_) => super::mode(
                d.route.and_then(|r| r.mode),
                d.provider.and_then(|p| p.mode),
                self.config.mode,
            ),
        };
        if d.mode == Mode::Shadow {
            // The token is stripped as on an allow, found again if the denial came before
            // it was looked for (a `deny` rule); its proof with it.
            let strip_all = self.config.identity.strip_authorization;
            let strip: Vec<&str> = match d.found.or_else(|| self.token(http)) {
                Some(found) => super::stripped(&self.config.identity, Some(&found))
                    .into_iter()
                    .chain((found.scheme == Scheme::Dpop && strip_all).then_some("dpop"))
                    .collect(),
                // No one token could be told apart (two, or one too large): every header a
                // token may come in goes, as none of them would pass in enforce mode.
                None if strip_all => self.token_headers(http),
                None => Vec::new(),
            };
            let identity = d
                .provider
                .zip(d.verified.as_ref())
                .map(|(provider, v)| Identity {
                    provider,
                    token: &v.token,
                });
            d.verdict = match super::shadow_allow(
                &self.config.identity,
                &deny,
                identity.as_ref(),
                &strip,
            ) {
                Ok(verdict) => {
                    d.allowed = true;
                    verdict
                }
                // Unreachable (no claims, nothing unsafe), but never an allow by accident.
                Err(_) => Verdict::Deny(self.denial(&Deny::UnsafeClaim, dpop_algs)),
            };
        } else {
            let claims = d.verified.as_ref().map(|v| &v.token.claims);
            d.verdict = Verdict::Deny(self.denial_on(&deny, d.route.as_ref(), claims, dpop_algs));
        }
        d.deny = Some(deny);
        d
    }

    /// Steps 2 to 8; `t` records how far they went and what they found.
    async fn steps<'d: 'r, 'r, C: Checks>(
        &'d self,
        http: &Incoming<'r>,
        route: &Route<'d>,
        checks: &mut C,
        t: &mut Trace<'r, C::Note>,
    ) -> Result<Verdict, Stop> {
        t.reached = Step::Rule;
        if route.kind == AccessKind::Deny {
            return Err(Deny::DeniedByRule.into());
        }
        t.reached = Step::Token;
        if route.metadata {
            // A resource's metadata: public whatever credential comes with it, which goes
            // no further (jwt-authz's own document needs none).
            return Ok(self.allow(None, &self.token_headers(http))?);
        }
        let Some(found) = self.extract(http).map_err(Deny::from)? else {
            if !matches!(route.kind, AccessKind::Public | AccessKind::Optional) {
                return Err(Deny::MissingToken.into());
            }
            return Ok(self.allow(None, &[])?);
        };
        t.found = Some(found);
        t.reached = Step::Verify;
        let verified = checks.verify(&found).await?;
        let result = self
            .verified_steps(route, &found, &verified.token, checks, t)
            .await;
        t.verified = Some(verified);
        result
    }

    /// Steps 5 to 8, on a verified token (kept by the caller: no reference count is taken).
    async fn verified_steps<'d: 'r, 'r, C: Checks>(
        &'d self,
        route: &Route<'d>,
        found: &Found<'r>,
        token: &Arc<VerifiedToken>,
        checks: &mut C,
        t: &mut Trace<'r, C::Note>,
    ) -> Result<Verdict, Stop> {
        let provider = self
            .provider(token.provider)
            .ok_or(Deny::Invalid(VerifyError::UnknownIssuer))?;
        t.provider = Some(provider.index);
        t.reached = Step::Accept;
        super::accepts(route, found, &provider, &token.claims)?;
        // After any cache, on every request: a revoked token is refused from the moment its
        // list says so, and a proof (or certificate) proves this request, not the token.
        // Before the claims: shadow mode never passes identity headers along with a
        // replayed proof.
        t.reached = Step::Bind;
        checks.bind(found, token).await?;
        t.reached = Step::Claims;
        super::claims_hold(route, &token.claims)?;
        t.reached = Step::Identity;
        let strip = super::stripped(&self.config.identity, Some(found));
        let identity = Identity { provider, token };
        let mut verdict = self.allow(Some(&identity), strip.as_slice())?;
        // The proof is a credential too: it stays here with the token.
        if let Verdict::Allow { mutation, .. } = &mut verdict
            && found.scheme == Scheme::Dpop
            && self.config.identity.strip_authorization
        {
            mutation.remove.push("dpop".to_owned());
        }
        Ok(verdict)
    }

    /// The OK answer ([`super::allow`]); a claim that cannot be a header denies.
    fn allow(&self, identity: Option<&Identity<'_>>, strip: &[&str]) -> Result<Verdict, Deny> {
        super::allow(&self.config.identity, identity, strip).map_err(|_| Deny::UnsafeClaim)
    }
}

/// Runs a future whose every step is ready at once (a caller whose [`Checks`] do no I/O,
/// as the in-proxy filter's): `None` if it would wait, which such a caller treats as
/// undecided. No executor is needed, and none is in a Wasm VM.
pub fn now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests;
