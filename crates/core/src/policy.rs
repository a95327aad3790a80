//! Route rules: which requests need a token, from which providers and for which audiences,
//! and which claims that token must carry. Rules match the canonical path and host and are
//! tried in order; the first match decides, and no match means "any valid token".
//!
//! A rule's path holds for every spelling common app routers send to the same handler:
//! letter case, unless the rule (or `paths.case_sensitive`) says otherwise; one trailing
//! slash on an exact path (`/api/users/` is `/api/users` to Spring before 6, Express and
//! ASP.NET); and a prefix ending in `/` holds for the path without it (`/admin/` also
//! protects `/admin`, which those routers send to the same controller). Regexes are matched
//! as written (case aside), against the canonical path.

use regex::Regex;
use serde_json::{Map, Value};

use crate::claims;
use crate::config::{
    Access, ClaimRequirement, Mode, OnInvalid, PathConfig, PathMatch, ResourceConfig, ResourceUri,
    RuleConfig,
};
use crate::request::{RequestInfo, canonical_host};

mod index;
#[cfg(test)]
mod tests;

use index::PathIndex;

/// A rule's path condition. Exact paths are kept without their trailing slash and, like
/// prefixes, lowercased when the rule ignores case (the path is then lowercased to compare).
#[derive(Debug)]
enum PathMatcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

/// `path` without one trailing slash (the root stays `/`).
fn trim_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => path,
    }
}

/// What a matching rule asks of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    Public,
    Authenticated,
    Deny,
    Claims,
    /// A token is not required; one that is present must pass (and meet the requirements).
    Optional,
}

#[derive(Debug)]
struct Rule {
    name: String,
    path: Option<PathMatcher>,
    case_sensitive: bool,
    methods: Vec<String>,
    hosts: Vec<String>,
    context_extensions: Vec<(String, String)>,
    kind: AccessKind,
    requirements: Vec<ClaimRequirement>,
    providers: Option<Vec<usize>>,
    audiences: Option<Vec<String>>,
    mode: Option<Mode>,
    on_invalid: OnInvalid,
    /// The protected resource (RFC 9728) it belongs to, by index in `resources`.
    resource: Option<usize>,
    /// A resource's metadata document: public, and no credential is looked at.
    metadata: bool,
}

/// The rule that applies to a request.
#[derive(Debug, Clone, Copy)]
pub struct Route<'p> {
    pub name: &'p str,
    pub kind: AccessKind,
    requirements: &'p [ClaimRequirement],
    /// Indices of the providers whose tokens this route accepts; `None` accepts all.
    pub providers: Option<&'p [usize]>,
    /// Audiences that replace the provider's on this route.
    pub audiences: Option<&'p [String]>,
    /// The rule's own `mode`, if it sets one.
    pub mode: Option<Mode>,
    /// What an `optional` rule does with a token that does not pass (`Deny` elsewhere).
    pub on_invalid: OnInvalid,
    /// The protected resource (RFC 9728) the route belongs to, by index in `resources`:
    /// its denials name the resource's metadata.
    pub resource: Option<usize>,
    /// The route of a resource's metadata document (RFC 9728 §3): allowed without looking
    /// at any token the request carries (a client may send one it holds for this or another
    /// resource; verifying it could only refuse the document that tells it what to send).
    pub metadata: bool,
}

#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    /// The resource of requests no rule matches, and its URI as their audience when it
    /// binds its tokens.
    default_resource: Option<usize>,
    default_audiences: Option<Vec<String>>,
    /// Which rules a path can match, so that a check does not try every rule; `None` for
    /// fewer than [`INDEX_FROM`] rules, where trying them in order is as fast.
    index: Option<PathIndex>,
}

/// From this many rules on, the index is faster than trying rules in order (`cargo bench
/// --bench rules`, exact/prefix/regex mix: the index 63 ns against 51 ns in order at 10
/// rules, 90 ns against 674 ns at 100).
const INDEX_FROM: usize = 16;

const DEFAULT_ROUTE: Route<'static> = Route {
    name: "default",
    kind: AccessKind::Authenticated,
    requirements: &[],
    providers: None,
    audiences: None,
    mode: None,
    on_invalid: OnInvalid::Deny,
    resource: None,
    metadata: false,
};

impl Policy {
    /// Compiles the rules; the configuration has already been validated, so a regex error
    /// here is unexpected but still reported rather than unwrapped (and a provider name that
    /// names no provider accepts no token). `providers` are the providers' names in
    /// configuration order: a route keeps the indices of those it accepts.
    pub fn new(
        rules: &[RuleConfig],
        paths: &PathConfig,
        providers: &[&str],
    ) -> Result<Self, regex::Error> {
        Self::with_resources(rules, paths, providers, &[])
    }

    /// [`Policy::new`] with protected resources (validated already): each resource's
    /// metadata path (RFC 9728 §3.1) is a public route ahead of every rule, for `GET` and
    /// `HEAD`; a rule's resource is the one it names, or the default one; a resource with
    /// `audience_binding` gives its rules its URI as their audience, unless a rule names
    /// audiences of its own.
    pub fn with_resources(
        rules: &[RuleConfig],
        paths: &PathConfig,
        providers: &[&str],
        resources: &[ResourceConfig],
    ) -> Result<Self, regex::Error> {
        let default_resource = resources.iter().position(|r| r.default);
        let resource_of = |rule: &RuleConfig| match &rule.resource {
            Some(name) => resources.iter().position(|r| r.name == *name),
            None => default_resource,
        };
        // The path exactly as the document is served (`crate::decision::pipeline`'s
        // `resource_document`): letter case and a trailing slash count here, unlike in
        // an `exact` rule, so that nothing but the document is public.
        let mut metadata = Vec::new();
        for (i, r) in resources.iter().enumerate() {
            let Ok(uri) = ResourceUri::parse(&r.resource, paths) else {
                continue;
            };
            let exact = Regex::new(&format!("^{}$", regex::escape(&uri.metadata_path())))?;
            metadata.push(Rule {
                name: format!("resource-metadata:{}", r.name),
                path: Some(PathMatcher::Regex(exact)),
                case_sensitive: true,
                methods: vec!["GET".to_owned(), "HEAD".to_owned()],
                hosts: Vec::new(),
                context_extensions: Vec::new(),
                kind: AccessKind::Public,
                requirements: Vec::new(),
                providers: None,
                audiences: None,
                mode: None,
                on_invalid: OnInvalid::Deny,
                resource: Some(i),
                metadata: true,
            });
        }
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let case_sensitive = rule.case_sensitive.unwrap_or(paths.case_sensitive);
                let fold = |p: &str| {
                    if case_sensitive {
                        p.to_owned()
                    } else {
                        p.to_ascii_lowercase()
                    }
                };
                let path = match &rule.matcher.path {
                    None => None,
                    Some(PathMatch::Exact(p)) => Some(PathMatcher::Exact(fold(trim_slash(p)))),
                    Some(PathMatch::Prefix(p)) => Some(PathMatcher::Prefix(fold(p))),
                    Some(PathMatch::Regex(re)) => {
                        let flags = if case_sensitive { "" } else { "(?i)" };
                        Some(PathMatcher::Regex(Regex::new(&format!(
                            "{flags}^(?:{re})$"
                        ))?))
                    }
                };
                let (kind, requirements) = match &rule.access {
                    Access::Public => (AccessKind::Public, Vec::new()),
                    Access::Authenticated => (AccessKind::Authenticated, Vec::new()),
                    Access::Deny => (AccessKind::Deny, Vec::new()),
                    Access::Claims(reqs) => (AccessKind::Claims, reqs.clone()),
                    Access::Optional(reqs) => (AccessKind::Optional, reqs.clone()),
                };
                Ok(Rule {
                    name: rule.name.clone().unwrap_or_else(|| format!("rules[{i}]")),
                    path,
                    case_sensitive,
                    methods: rule
                        .matcher
                        .methods
                        .iter()
                        .map(|m| m.to_ascii_uppercase())
                        .collect(),
                    // Validated: every host has a canonical form (one that had none could
                    // match no request, which is what leaving it out does).
                    hosts: rule
                        .matcher
                        .hosts
                        .iter()
                        .filter_map(|h| canonical_host(h).ok().map(|h| h.into_owned()))
                        .collect(),
                    context_extensions: rule
                        .matcher
                        .context_extensions
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    kind,
                    requirements,
                    providers: rule.providers.as_ref().map(|names| {
                        names
                            .iter()
                            .filter_map(|name| providers.iter().position(|p| *p == name.as_str()))
                            .collect()
                    }),
                    audiences: rule.audiences.clone().or_else(|| {
                        let r = &resources[resource_of(rule)?];
                        r.audience_binding.then(|| r.audiences())
                    }),
                    mode: rule.mode,
                    on_invalid: rule.on_invalid.unwrap_or_default(),
                    resource: resource_of(rule),
                    metadata: false,
                })
            })
            .collect::<Result<Vec<Rule>, regex::Error>>()?;
        let rules: Vec<Rule> = metadata.into_iter().chain(rules).collect();
        let index = (rules.len() >= INDEX_FROM).then(|| PathIndex::new(&rules));
        let default_audiences = default_resource
            .map(|i| &resources[i])
            .filter(|r| r.audience_binding)
            .map(ResourceConfig::audiences);
        Ok(Self {
            rules,
            default_resource,
            default_audiences,
            index,
        })
    }

    /// The route of a request no rule matches: any valid token, the default resource's.
    fn default_route(&self) -> Route<'_> {
        Route {
            resource: self.default_resource,
            audiences: self.default_audiences.as_deref(),
            ..DEFAULT_ROUTE
        }
    }

    /// The first rule matching `request`, or the default (authenticated). The index finds
    /// the rules whose path matches; the others are never tried.
    pub fn route(&self, request: &RequestInfo<'_>) -> Route<'_> {
        match &self.index {
            Some(index) => index
                .first(&self.rules, request.path, |i| {
                    self.rules[i].matches_rest(request)
                })
                .map_or_else(|| self.default_route(), |i| self.rules[i].route()),
            None => self.route_linear(request),
        }
    }

    /// [`Policy::route`] the simple way, every rule in order: the reference the index is
    /// property-tested against, and the baseline of `cargo bench --bench rules`.
    pub fn route_linear(&self, request: &RequestInfo<'_>) -> Route<'_> {
        self.rules
            .iter()
            .find(|rule| rule.path_matches(request.path) && rule.matches_rest(request))
            .map_or_else(|| self.default_route(), Rule::route)
    }
}

impl Rule {
    fn route(&self) -> Route<'_> {
        Route {
            name: &self.name,
            kind: self.kind,
            requirements: &self.requirements,
            providers: self.providers.as_deref(),
            audiences: self.audiences.as_deref(),
            mode: self.mode,
            on_invalid: self.on_invalid,
            resource: self.resource,
            metadata: self.metadata,
        }
    }

    fn path_matches(&self, path: &str) -> bool {
        let same = |a: &str, b: &str| {
            if self.case_sensitive {
                a == b
            } else {
                a.eq_ignore_ascii_case(b)
            }
        };
        match &self.path {
            None => true,
            Some(PathMatcher::Exact(p)) => same(trim_slash(path), p),
            Some(PathMatcher::Prefix(p)) => {
                path.get(..p.len()).is_some_and(|head| same(head, p))
                    || (p.len() > 1 && p.ends_with('/') && same(path, &p[..p.len() - 1]))
            }
            Some(PathMatcher::Regex(re)) => re.is_match(path),
        }
    }

    /// Everything but the path.
    fn matches_rest(&self, request: &RequestInfo<'_>) -> bool {
        (self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(request.method)))
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h == request.host))
            && self
                .context_extensions
                .iter()
                .all(|(k, v)| request.context_extensions.get(k) == Some(v))
    }
}

impl Route<'_> {
    /// Checks the rule's claim requirements; on failure, names the claim that fell short.
    pub fn check_claims<'a>(&'a self, claims: &Map<String, Value>) -> Result<(), &'a str> {
        match self
            .requirements
            .iter()
            .find(|req| !requirement_met(req, claims))
        {
            Some(req) => Err(&req.claim),
            None => Ok(()),
        }
    }

    /// The scopes to name in an `insufficient_scope` challenge (RFC 6750 §3; MCP's "Scope
    /// Challenge Handling": the scopes that satisfy this request, the token's own among
    /// them where they count): every `all_of` value of a requirement on `scope` or `scp`,
    /// and for an `any_of` the value the token holds, else the first (list the least
    /// privileged first). Values that are not RFC 6749 §3.3 scope tokens (a quote, a
    /// backslash, a space) are never named. `None` when the route asks for no scope.
    pub fn needed_scopes(&self, claims: Option<&Map<String, Value>>) -> Option<String> {
        // With a token: only when what it lacks is scopes (a missing role is not something a
        // client can step up to by asking for scopes).
        if let Some(claims) = claims {
            let failing = self
                .requirements
                .iter()
                .filter(|req| !requirement_met(req, claims));
            let mut any = false;
            for req in failing {
                if !claims::is_space_separated(&req.claim) {
                    return None;
                }
                any = true;
            }
            if !any {
                return None;
            }
        }
        let mut scopes: Vec<&str> = Vec::new();
        for req in self.requirements {
            if !claims::is_space_separated(&req.claim) {
                continue;
            }
            let held = |value: &str| {
                claims.is_some_and(|c| {
                    let one = ClaimRequirement {
                        any_of: Some(vec![value.to_owned()]),
                        all_of: None,
                        ..req.clone()
                    };
                    requirement_met(&one, c)
                })
            };
            let wanted: Vec<&str> = match (&req.all_of, &req.any_of) {
                (Some(all), _) => all.iter().map(String::as_str).collect(),
                (None, Some(any)) => any
                    .iter()
                    .map(String::as_str)
                    .find(|v| held(v))
                    .or_else(|| any.first().map(String::as_str))
                    .into_iter()
                    .collect(),
                (None, None) => Vec::new(),
            };
            for scope in wanted {
                if claims::is_scope_token(scope) && !scopes.contains(&scope) {
                    scopes.push(scope);
                }
            }
        }
        (!scopes.is_empty()).then(|| scopes.join(" "))
    }

    /// The claim requirements of the rule.
    pub fn requirements(&self) -> &[ClaimRequirement] {
        self.requirements
    }

    /// The rule's `access`, as the configuration spells it.
    pub fn access_name(&self) -> &'static str {
        match self.kind {
            AccessKind::Public => "public",
            AccessKind::Authenticated => "authenticated",
            AccessKind::Deny => "deny",
            AccessKind::Claims => "claims",
            AccessKind::Optional => "optional",
        }
    }
}

/// Whether `value` is `prefix` or lies under it by whole `/` segments.
fn under_path(value: &str, prefix: &str) -> bool {
    value
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether `claims` meet one requirement.
pub fn requirement_met(req: &ClaimRequirement, claims: &Map<String, Value>) -> bool {
    let value = claims::lookup(claims, &req.claim);
    if let Some(prefixes) = &req.path_prefix {
        return value
            .and_then(Value::as_str)
            .is_some_and(|v| prefixes.iter().any(|p| under_path(v, p)));
    }
    match (value, &req.any_of, &req.all_of, &req.equals) {
        (None, ..) => false,
        (Some(v), Some(any), _, _) => {
            let held = claims::values(v, req.splits_on_spaces());
            any.iter().any(|want| held.contains(want))
        }
        (Some(v), _, Some(all), _) => {
            let held = claims::values(v, req.splits_on_spaces());
            all.iter().all(|want| held.contains(want))
        }
        (Some(v), _, _, Some(expected)) => v == expected,
        _ => false,
    }
}
