//! `rules[]`: which requests a rule matches (paths, methods, hosts, context extensions)
//! and what access it gives, with each rule's validation.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Invalid, Mode, PathConfig, invalid};

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

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// No token needed; a token that is present is still verified.
    Public,
    /// Any valid token.
    Authenticated,
    /// Always denied (403).
    Deny,
    /// A valid token whose claims meet every requirement.
    Claims(Vec<ClaimRequirement>),
}

/// Exactly one of `any_of`, `all_of` and `equals`.
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
    ) -> Result<(), Invalid> {
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
        if let Access::Claims(requirements) = &self.access {
            if requirements.is_empty() {
                return Err(invalid(
                    format!("{field}.access.claims"),
                    "at least one requirement is required",
                ));
            }
            for (i, req) in requirements.iter().enumerate() {
                let f = format!("{field}.access.claims[{i}]");
                if req.claim.is_empty() {
                    return Err(invalid(format!("{f}.claim"), "must not be empty"));
                }
                let set = [
                    req.any_of.is_some(),
                    req.all_of.is_some(),
                    req.equals.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if set != 1 {
                    return Err(invalid(
                        f,
                        "exactly one of any_of, all_of and equals is required",
                    ));
                }
                if req.any_of.as_ref().is_some_and(Vec::is_empty)
                    || req.all_of.as_ref().is_some_and(Vec::is_empty)
                {
                    return Err(invalid(f, "the list of values must not be empty"));
                }
            }
        }
        Ok(())
    }
}
