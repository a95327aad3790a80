//! `rules[]`: which requests a rule matches (paths, methods, hosts, context extensions)
//! and what access it gives, with each rule's validation.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::{Invalid, Mode, PathConfig, TokenSource, invalid};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// Only tokens from these providers (by name) are accepted on this route.
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// The token's `aud` must hold one of these, instead of its provider's `audiences`.
    #[serde(default)]
    pub audiences: Option<Vec<String>>,
    /// Overrides the provider's and the top-level `mode` on this route.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Overrides `paths.case_sensitive` for this rule's path.
    #[serde(default)]
    pub case_sensitive: Option<bool>,
    pub access: Access,
    /// On an `optional` rule, what a token that does not pass becomes: a denial (the
    /// default), or an anonymous request with the token removed.
    #[serde(default)]
    pub on_invalid: Option<OnInvalid>,
    /// The protected resource (`resources[].name`, RFC 9728) this rule's routes belong to;
    /// default: the resource marked `default`, if any.
    #[serde(default)]
    pub resource: Option<String>,
}

/// What an `optional` rule does with a token that does not pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// The denial the token earns (401, 403), as on any other rule.
    #[default]
    Deny,
    /// The request goes on as one without a token: the token (and its DPoP proof) removed,
    /// no identity header, the anonymous marker set. Envoy `jwt_authn`'s
    /// `allow_missing_or_failed`. Never for the sidecar's own failures (503): a signed-in
    /// user is not silently made anonymous by an outage.
    Anonymous,
}

/// All present conditions must hold; an empty match matches every request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    #[serde(default)]
    pub path: Option<PathMatch>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub context_extensions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    /// Matched against the whole path (without the query string).
    Regex(String),
}

/// What a rule asks of a request. Written as a name (`public`, `authenticated`, `deny`,
/// `optional`) or as a map with one key (`{claims: [...]}`, `{optional: [...]}`).
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// No token needed; a token that is present is still verified.
    Public,
    /// Any valid token.
    Authenticated,
    /// Always denied (403).
    Deny,
    /// A valid token whose claims meet every requirement.
    Claims(Vec<ClaimRequirement>),
    /// A token is welcome, not required: without one the request goes on anonymously (the
    /// anonymous marker set, every identity header removed); with one, the token must pass
    /// as on an `authenticated` rule and meet these requirements (none for `optional`
    /// written as a name). `on_invalid` says what a token that does not pass becomes.
    Optional(Vec<ClaimRequirement>),
}

const ACCESS_NAMES: &[&str] = &["public", "authenticated", "deny", "optional"];
const ACCESS_KEYS: &[&str] = &["claims", "optional"];

impl<'de> Deserialize<'de> for Access {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AccessVisitor)
    }
}

/// Reads both spellings of `access`; a visitor (not an untagged enum) so that a mistake
/// inside a requirement is reported at its own path (`rules[0].access.claims[1].claim`).
struct AccessVisitor;

impl<'de> Visitor<'de> for AccessVisitor {
    type Value = Access;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "one of public, authenticated, deny, optional, or a map {claims: [...]} or {optional: [...]}",
        )
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Access, E> {
        match name {
            "public" => Ok(Access::Public),
            "authenticated" => Ok(Access::Authenticated),
            "deny" => Ok(Access::Deny),
            "optional" => Ok(Access::Optional(Vec::new())),
            "claims" => Err(E::custom(
                "claims needs its requirements: {claims: [{claim: ..., any_of: [...]}]}",
            )),
            other => Err(E::unknown_variant(other, ACCESS_NAMES)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Access, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        let access = match key.as_str() {
            "claims" => Access::Claims(map.next_value()?),
            "optional" => Access::Optional(map.next_value()?),
            other => return Err(de::Error::unknown_variant(other, ACCESS_KEYS)),
        };
        if map.next_key::<String>()?.is_some() {
            return Err(de::Error::custom(
                "access is one map key: claims or optional, not both",
            ));
        }
        Ok(access)
    }
}

/// Exactly one of `any_of`, `all_of`, `equals` and `path_prefix`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequirement {
    pub claim: String,
    /// The claim (a string, a space-separated string, or an array) holds at least one of these.
    #[serde(default)]
    pub any_of: Option<Vec<String>>,
    /// The claim holds every one of these (e.g. `scope`).
    #[serde(default)]
    pub all_of: Option<Vec<String>>,
    /// The claim equals this JSON value exactly.
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// The claim (a string) is one of these or lies under one by whole `/` segments:
    /// `spiffe://prod.example/ns/payments` holds for `.../ns/payments` and
    /// `.../ns/payments/sa/api`, never for `.../ns/payments-old` (a SPIFFE ID's path, a
    /// URL). Compared byte for byte.
    #[serde(default)]
    pub path_prefix: Option<Vec<String>>,
    /// Read a string claim as space-separated values for `any_of` / `all_of`. Default: only
    /// for `scope` and `scp`; every other string is one value.
    #[serde(default)]
    pub space_separated: Option<bool>,
}

impl ClaimRequirement {
    pub fn splits_on_spaces(&self) -> bool {
        self.space_separated
            .unwrap_or_else(|| crate::claims::is_space_separated(&self.claim))
    }
}

impl RuleConfig {
    /// Checks the rule `field` names (`rules[3]`): the providers it names exist (by
    /// `provider_names`), its paths are canonical (under `paths`) and its regexes compile,
    /// its methods and claim requirements are well formed.
    pub fn validate(
        &self,
        field: &str,
        paths: &PathConfig,
        provider_names: &[&str],
        token_sources: &[&[TokenSource]],
    ) -> Result<(), Invalid> {
        self.validate_optional(field, provider_names, token_sources)?;
        if let Some(names) = &self.providers {
            if names.is_empty() {
                return Err(invalid(
                    format!("{field}.providers"),
                    "must name at least one provider (leave it out to accept every provider)",
                ));
            }
            for (i, name) in names.iter().enumerate() {
                if !provider_names.contains(&name.as_str()) {
                    return Err(invalid(
                        format!("{field}.providers[{i}]"),
                        format!("no provider is named {name:?}"),
                    ));
                }
            }
        }
        if let Some(audiences) = &self.audiences
            && (audiences.is_empty() || audiences.iter().any(String::is_empty))
        {
            return Err(invalid(
                format!("{field}.audiences"),
                "at least one non-empty audience is required (leave it out to use the provider's)",
            ));
        }
        if self.access == Access::Deny && (self.providers.is_some() || self.audiences.is_some()) {
            return Err(invalid(
                format!("{field}.access"),
                "a deny rule accepts no token, so providers and audiences mean nothing here",
            ));
        }
        if let Some(PathMatch::Regex(re)) = &self.matcher.path {
            regex::Regex::new(re).map_err(|e| {
                invalid(
                    format!("{field}.match.path.regex"),
                    format!("invalid regex: {e}"),
                )
            })?;
        }
        if let Some(PathMatch::Exact(p) | PathMatch::Prefix(p)) = &self.matcher.path {
            // Rules see canonical paths only; a rule written another way could never match.
            let canonical = crate::request::canonical_path(p, paths)
                .map_err(|e| invalid(format!("{field}.match.path"), format!("{p:?}: {e}")))?;
            if canonical != *p {
                return Err(invalid(
                    format!("{field}.match.path"),
                    format!(
                        "{p:?} is not a canonical path and would never match; write {canonical:?}"
                    ),
                ));
            }
        }
        for (i, host) in self.matcher.hosts.iter().enumerate() {
            // Rules compare canonical hosts (`crate::request::host`): a name, without port.
            let canonical = crate::request::canonical_host(host).map_err(|e| {
                invalid(
                    format!("{field}.match.hosts[{i}]"),
                    format!("{host:?}: {e} (IPv6 addresses go in brackets)"),
                )
            })?;
            let has_port = match host.strip_prefix('[') {
                Some(_) => !host.ends_with(']'),
                None => host.contains(':'),
            };
            if has_port {
                return Err(invalid(
                    format!("{field}.match.hosts[{i}]"),
                    format!("{host:?}: rules match hosts whatever the port; write {canonical:?}"),
                ));
            }
        }
        for (i, method) in self.matcher.methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(invalid(
                    format!("{field}.match.methods[{i}]"),
                    format!("invalid method {method:?}"),
                ));
            }
        }
        if let Access::Claims(requirements) | Access::Optional(requirements) = &self.access {
            let key = match self.access {
                Access::Optional(_) => "optional",
                _ => "claims",
            };
            // `optional` written as a name has none; `{optional: []}` is the same rule.
            if requirements.is_empty() && key == "claims" {
                return Err(invalid(
                    format!("{field}.access.claims"),
                    "at least one requirement is required",
                ));
            }
            for (i, req) in requirements.iter().enumerate() {
                let f = format!("{field}.access.{key}[{i}]");
                if req.claim.is_empty() {
                    return Err(invalid(format!("{f}.claim"), "must not be empty"));
                }
                let set = [
                    req.any_of.is_some(),
                    req.all_of.is_some(),
                    req.equals.is_some(),
                    req.path_prefix.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if set != 1 {
                    return Err(invalid(
                        f,
                        "exactly one of any_of, all_of, equals and path_prefix is required",
                    ));
                }
                if req.any_of.as_ref().is_some_and(Vec::is_empty)
                    || req.all_of.as_ref().is_some_and(Vec::is_empty)
                    || req.path_prefix.as_ref().is_some_and(Vec::is_empty)
                {
                    return Err(invalid(f, "the list of values must not be empty"));
                }
                if req
                    .path_prefix
                    .iter()
                    .flatten()
                    .any(|p| p.is_empty() || p.ends_with('/'))
                {
                    return Err(invalid(
                        format!("{f}.path_prefix"),
                        "each prefix must be non-empty and end without '/' (segments are matched whole)",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl RuleConfig {
    /// `on_invalid` only on an `optional` rule, and `anonymous` only where an invalid token
    /// can be taken off the request: in a header. A token in a cookie or the query string
    /// would reach the app with the request it was refused for (the decision can remove a
    /// header, not one cookie or one parameter), so `anonymous` is refused while any provider
    /// reads tokens there (tokens are looked for in every provider's places, whichever the
    /// rule accepts).
    fn validate_optional(
        &self,
        field: &str,
        provider_names: &[&str],
        token_sources: &[&[TokenSource]],
    ) -> Result<(), Invalid> {
        let Some(on_invalid) = self.on_invalid else {
            return Ok(());
        };
        if !matches!(self.access, Access::Optional(_)) {
            return Err(invalid(
                format!("{field}.on_invalid"),
                "only an optional rule (access: optional) lets a request through without a token",
            ));
        }
        if on_invalid == OnInvalid::Anonymous {
            let unremovable =
                provider_names
                    .iter()
                    .zip(token_sources)
                    .find_map(|(name, sources)| {
                        sources
                            .iter()
                            .find(|s| matches!(s, TokenSource::Cookie(_) | TokenSource::Query(_)))
                            .map(|s| (name, s))
                    });
            if let Some((name, source)) = unremovable {
                let place = match source {
                    TokenSource::Cookie(c) => format!("cookie {c:?}"),
                    TokenSource::Query(q) => format!("query parameter {q:?}"),
                    _ => String::new(),
                };
                return Err(invalid(
                    format!("{field}.on_invalid"),
                    format!(
                        "provider {name:?} reads tokens from the {place}, which cannot be removed \
                         from a request passed on anonymously: an invalid token would reach the \
                         app; use on_invalid: deny"
                    ),
                ));
            }
        }
        Ok(())
    }
}
