//! The part of the configuration the decision reads: route rules, path handling, where
//! tokens are found, identity headers, and the enforcement mode. These are the same YAML
//! shapes in the sidecar's file and in the in-proxy filter's plugin configuration; the
//! sidecar's `config` module re-exports them and adds everything that does I/O.

use std::collections::HashSet;

use serde::Deserialize;

mod in_proxy;
pub mod resource;
mod rules;
#[cfg(test)]
mod tests;

pub use in_proxy::InProxyConfig;
pub use resource::{ResourceConfig, ResourceUri};
pub use rules::{Access, ClaimRequirement, MatchConfig, OnInvalid, PathMatch, RuleConfig};
// The `paths` section is defined with the code that reads paths, and identity headers'
// mapping with the code that sets them: neither reads this module.
pub use crate::identity::ClaimHeader;
pub use crate::request::path::{EscapedSlashes, PathConfig, PathParameters};

/// A field of the configuration that holds a value it may not: the field's path
/// (`rules[2].match.path`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

/// Why a configuration document could not be read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("not a YAML document: {0}")]
    Yaml(String),
    #[error("{path}: {message}")]
    Shape { path: String, message: String },
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

/// The decision's view of jwt-authz's configuration file: the same YAML document the
/// sidecar reads (the in-proxy filter is given it whole), of which only what decides a
/// request is read here. Fields this view does not read are ignored: the sidecar reads the
/// same document strictly, and a misspelt field fails there.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DecisionConfig {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "default_realm")]
    pub realm: String,
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    #[serde(default)]
    pub paths: PathConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Protected resources (RFC 9728) the rules belong to.
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
    pub providers: Vec<DecisionProvider>,
    /// The in-proxy mode's settings; the filter reads the defaults when this is absent.
    #[serde(default)]
    pub in_proxy: Option<InProxyConfig>,
}

/// What the decision reads of one provider.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DecisionProvider {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    #[serde(default = "default_token_sources")]
    pub token_sources: Vec<TokenSource>,
    #[serde(default)]
    pub mode: Option<Mode>,
}

impl DecisionConfig {
    /// Parses a configuration document and validates what the decision reads, with the
    /// checks and messages the sidecar gives.
    pub fn from_yaml(text: &str) -> Result<Self, LoadError> {
        // Through a JSON value, as the sidecar reads it (the documented `{uri: ...}` maps,
        // not YAML tags).
        let value: serde_json::Value =
            serde_norway::from_str(text).map_err(|e| LoadError::Yaml(e.to_string()))?;
        let config: DecisionConfig =
            serde_path_to_error::deserialize(value).map_err(|e| LoadError::Shape {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
        let sources: Vec<&[TokenSource]> = config
            .providers
            .iter()
            .map(|p| p.token_sources.as_slice())
            .collect();
        let issuers: Vec<&str> = config.providers.iter().map(|p| p.issuer.as_str()).collect();
        validate_decision(&Decision {
            realm: &config.realm,
            max_token_bytes: config.max_token_bytes,
            paths: &config.paths,
            identity: &config.identity,
            rules: &config.rules,
            resources: &config.resources,
            provider_names: &names,
            provider_issuers: &issuers,
            token_sources: &sources,
        })?;
        if let Some(in_proxy) = &config.in_proxy {
            in_proxy.validate()?;
        }
        Ok(config)
    }
}

impl DecisionConfig {
    /// A digest of everything here that decides a request (all but `in_proxy`, which only
    /// says how the filter holds and asks): the sidecar publishes its own with every in-proxy
    /// answer, and a filter whose configuration gives another decides nothing itself
    /// (`jwt_authz_core::in_proxy`). Both ends compute it from this struct's `Debug` text,
    /// built by this one crate (JSON values in `equals` are `BTreeMap`s: sorted), so the same
    /// configuration gives the same digest in the sidecar and in the Wasm filter. FNV-1a (64
    /// bits), written here because the decision core takes no hashing crate and this needs no
    /// resistance to a chosen collision: the operator writes both configurations.
    pub fn digest(&self) -> String {
        let text = format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.mode,
            self.realm,
            self.max_token_bytes,
            self.paths,
            self.identity,
            self.rules,
            self.providers,
            self.resources,
        );
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}

/// The parts of a configuration the decision reads, borrowed from whichever struct holds
/// them (the sidecar's `Config` or [`DecisionConfig`]), for [`validate_decision`].
#[derive(Debug, Clone, Copy)]
pub struct Decision<'c> {
    pub realm: &'c str,
    pub max_token_bytes: usize,
    pub paths: &'c PathConfig,
    pub identity: &'c IdentityConfig,
    pub rules: &'c [RuleConfig],
    pub resources: &'c [ResourceConfig],
    pub provider_names: &'c [&'c str],
    /// Each provider's `issuer`, in the same order.
    pub provider_issuers: &'c [&'c str],
    /// Where each provider (in the order of `provider_names`) reads tokens from.
    pub token_sources: &'c [&'c [TokenSource]],
}

/// Validates the decision's part of a configuration: one definition of the checks, run by
/// the sidecar and by the in-proxy filter alike.
pub fn validate_decision(d: &Decision<'_>) -> Result<(), Invalid> {
    if d.realm.is_empty() || d.realm.contains(['"', '\\']) || d.realm.chars().any(char::is_control)
    {
        return Err(invalid(
            "realm",
            "must be non-empty, without quotes, backslashes or control characters",
        ));
    }
    if d.max_token_bytes == 0 {
        return Err(invalid("max_token_bytes", "must be greater than 0"));
    }
    if d.paths.max_bytes == 0 {
        return Err(invalid("paths.max_bytes", "must be greater than 0"));
    }
    d.identity.validate()?;
    resource::validate(
        d.resources,
        resource::Context {
            paths: d.paths,
            issuers: d.provider_issuers,
        },
    )?;
    for (i, rule) in d.rules.iter().enumerate() {
        rule.validate(
            &format!("rules[{i}]"),
            d.paths,
            d.provider_names,
            d.token_sources,
        )?;
        if let Some(name) = &rule.resource
            && !d.resources.iter().any(|r| r.name == *name)
        {
            return Err(invalid(
                format!("rules[{i}].resource"),
                format!("no resource is named {name:?}"),
            ));
        }
        // A rule of a resource that binds its tokens takes none issued for another service
        // (RFC 8707; MCP forbids passing tokens through): its own audiences must name the
        // resource.
        let resource = match &rule.resource {
            Some(name) => d.resources.iter().find(|r| r.name == *name),
            None => d.resources.iter().find(|r| r.default),
        };
        if let (Some(resource), Some(audiences)) = (resource, &rule.audiences)
            && resource.audience_binding
            && !audiences.contains(&resource.resource)
        {
            return Err(invalid(
                format!("rules[{i}].audiences"),
                format!(
                    "the rule belongs to resource {:?}, whose tokens carry {:?}: name it here, or set audience_binding: false on the resource",
                    resource.name, resource.resource
                ),
            ));
        }
    }
    Ok(())
}

/// `realm`'s default.
pub fn default_realm() -> String {
    "jwt-authz".to_owned()
}

/// `max_token_bytes`' default.
pub fn default_max_token_bytes() -> usize {
    8 * 1024
}

/// `providers[].token_sources`' default: the `Authorization: Bearer` header.
pub fn default_token_sources() -> Vec<TokenSource> {
    vec![TokenSource::Bearer]
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Whether denials are enforced or only observed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    /// A request that would be denied is allowed (identity headers still set only from a
    /// valid token, and removed otherwise), and the would-be denial is counted and logged.
    Shadow,
}

/// Where in a request a token may be carried.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`, scheme matched case-insensitively.
    Bearer,
    /// A custom header, optionally with a prefix before the token.
    Header {
        name: String,
        #[serde(default)]
        prefix: Option<String>,
    },
    /// A cookie with this name.
    Cookie(String),
    /// A query parameter with this name.
    Query(String),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Claims copied into request headers for upstream. Every header named here is removed
    /// from requests whose token does not supply it.
    #[serde(default = "default_claim_headers")]
    pub headers: Vec<ClaimHeader>,
    /// Remove the header that carried the token before the request goes upstream (default
    /// on: the app gets identity headers, not a token it could replay to its neighbours).
    #[serde(default = "default_true")]
    pub strip_authorization: bool,
    /// Emit the verified claims as ext_authz dynamic metadata for later Envoy filters.
    #[serde(default)]
    pub dynamic_metadata: bool,
    /// The header that tells the upstream a request goes on without a verified identity
    /// (`true`; a public or `optional` route without a token, or an `optional` route's
    /// refused token with `on_invalid: anonymous`). Set on every such allow and removed from
    /// every other, so a client's own copy never arrives; `null` leaves it out (the absence
    /// of identity headers then says it). Default `x-user-anonymous`.
    #[serde(default = "default_anonymous_header")]
    pub anonymous_header: Option<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            headers: default_claim_headers(),
            strip_authorization: true,
            dynamic_metadata: false,
            anonymous_header: default_anonymous_header(),
        }
    }
}

/// `identity.anonymous_header`'s default.
pub fn default_anonymous_header() -> Option<String> {
    Some("x-user-anonymous".to_owned())
}

impl IdentityConfig {
    /// Every header the decision sets or removes on an allow: the identity headers, then the
    /// anonymous marker. A proxy copying jwt-authz's answer lists exactly these.
    pub fn upstream_headers(&self) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .map(|m| m.header.as_str())
            .chain(self.anonymous_header.as_deref())
    }

    /// Checks `identity`: every mapping names a claim and a distinct, valid header that may
    /// carry identity, and the anonymous marker is another such header.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.validate_mappings()?;
        if let Some(marker) = &self.anonymous_header {
            let field = "identity.anonymous_header";
            validate_header_name(field, marker)?;
            if matches!(
                marker.as_str(),
                "authorization" | "host" | "content-length" | "transfer-encoding" | "connection"
            ) {
                return Err(invalid(field, format!("{marker:?} cannot carry identity")));
            }
            if let Some(other) = self
                .headers
                .iter()
                .find(|m| crate::identity::same_folded(&m.header, marker))
            {
                return Err(invalid(
                    field,
                    format!(
                        "{marker:?} is also the identity header for claim {:?} (or one header with it to CGI, WSGI and Rack apps)",
                        other.claim
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_mappings(&self) -> Result<(), Invalid> {
        let mut seen = HashSet::new();
        for (i, mapping) in self.headers.iter().enumerate() {
            let field = format!("identity.headers[{i}]");
            if mapping.claim.is_empty() {
                return Err(invalid(format!("{field}.claim"), "must not be empty"));
            }
            validate_header_name(&format!("{field}.header"), &mapping.header)?;
            if matches!(
                mapping.header.as_str(),
                "authorization" | "host" | "content-length" | "transfer-encoding" | "connection"
            ) {
                return Err(invalid(
                    format!("{field}.header"),
                    format!("{:?} cannot carry identity", mapping.header),
                ));
            }
            if !seen.insert(mapping.header.as_str()) {
                return Err(invalid(
                    format!("{field}.header"),
                    format!("duplicate header {:?}", mapping.header),
                ));
            }
            // Requests carrying another spelling of an identity header are refused
            // (`crate::identity::lookalike`): two spellings of one would refuse every request.
            if let Some(other) = self.headers[..i]
                .iter()
                .find(|m| crate::identity::same_folded(&m.header, &mapping.header))
            {
                return Err(invalid(
                    format!("{field}.header"),
                    format!(
                        "{:?} and {:?} are one header to CGI, WSGI and Rack apps",
                        other.header, mapping.header
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A header name a configuration may name: lowercase (as Envoy and HTTP/2 carry them), not
/// a pseudo-header, and a valid field name (RFC 9110 §5.1).
pub fn validate_header_name(field: &str, name: &str) -> Result<(), Invalid> {
    if name.is_empty()
        || name.starts_with(':')
        || name != name.to_ascii_lowercase()
        || http::HeaderName::from_bytes(name.as_bytes()).is_err()
    {
        return Err(invalid(
            field,
            format!("{name:?} is not a valid lowercase header name"),
        ));
    }
    Ok(())
}

fn default_claim_headers() -> Vec<ClaimHeader> {
    [
        ("sub", "x-user-id"),
        ("username", "x-user-name"),
        ("role", "x-user-role"),
    ]
    .into_iter()
    .map(|(claim, header)| ClaimHeader {
        claim: claim.to_owned(),
        header: header.to_owned(),
    })
    .collect()
}

fn default_true() -> bool {
    true
}
