//! `resources[]`: OAuth 2.0 protected resources (RFC 9728) that jwt-authz stands in front
//! of, such as MCP servers. A resource has a URI (its identifier, §1.2), publishes metadata
//! at a well-known path derived from that URI (§3.1), is named in every 401's
//! `WWW-Authenticate` as `resource_metadata` (§5.1), and takes only tokens whose `aud`
//! holds its URI (RFC 8707 §2; MCP forbids token passthrough) unless
//! `audience_binding: false`. Rules join a resource with `rules[].resource`; one resource
//! may be the `default` for rules that name none and for requests no rule matches.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Invalid, PathConfig, TokenSource, invalid};

/// RFC 9728 §3: the well-known URI suffix.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// A URI in a resource's configuration longer than this is refused.
pub const MAX_URI_BYTES: usize = 2048;

/// One protected resource.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// What rules call it (`rules[].resource`).
    pub name: String,
    /// The resource identifier (RFC 9728 §1.2): an `https` URL (`http` only on a loopback
    /// host), no query, no fragment; the value tokens must carry in `aud`.
    pub resource: String,
    /// The resource of rules that name none and of requests no rule matches.
    #[serde(default)]
    pub default: bool,
    /// §2 `authorization_servers`: issuers of configured providers; default: every
    /// provider's issuer that is an `https` (or loopback `http`) URL.
    #[serde(default)]
    pub authorization_servers: Option<Vec<String>>,
    /// §2 `scopes_supported`; default: the `scope` / `scp` values its rules ask for.
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
    /// §2 `resource_name`: for people.
    #[serde(default)]
    pub resource_name: Option<String>,
    /// §2 `resource_documentation`, `resource_policy_uri`, `resource_tos_uri`: URLs for people.
    #[serde(default)]
    pub resource_documentation: Option<String>,
    #[serde(default)]
    pub resource_policy_uri: Option<String>,
    #[serde(default)]
    pub resource_tos_uri: Option<String>,
    /// §2 `dpop_bound_access_tokens_required` (the sidecar checks that every provider the
    /// resource accepts then requires DPoP).
    #[serde(default)]
    pub dpop_bound_access_tokens_required: bool,
    /// §2 `tls_client_certificate_bound_access_tokens` (RFC 8705 §3.4; checked like DPoP).
    #[serde(default)]
    pub tls_client_certificate_bound_access_tokens: bool,
    /// Tokens on its rules must carry its URI in `aud` (default on). Off: the rules' or the
    /// providers' audiences apply, as without a resource.
    #[serde(default = "yes")]
    pub audience_binding: bool,
    /// How long clients and caches may keep the metadata (`Cache-Control: max-age`).
    #[serde(default = "default_max_age")]
    pub max_age_seconds: u32,
}

fn yes() -> bool {
    true
}

fn default_max_age() -> u32 {
    3600
}

/// A resource identifier read (RFC 9728 §1.2, §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceUri<'a> {
    /// `https://host[:port]`.
    pub origin: &'a str,
    /// The path, `""` for none.
    pub path: &'a str,
}

impl<'a> ResourceUri<'a> {
    /// Reads `uri` as a resource identifier: `https` (or `http` on a loopback host, for
    /// local development: RFC 9728 has no such exception), a host in canonical form (lowercase, no trailing
    /// dot: the value is compared byte for byte with `aud`), no userinfo, no query (§1.2:
    /// "SHOULD NOT"; it would also be lost from the well-known URL), no fragment (§1.2:
    /// "MUST NOT"), a canonical path without a trailing `/` (one spelling: the value is
    /// compared byte for byte with tokens' `aud`), a port only where it is not the
    /// scheme's default.
    pub fn parse(uri: &'a str, paths: &PathConfig) -> Result<Self, String> {
        if uri.len() > MAX_URI_BYTES {
            return Err(format!("longer than {MAX_URI_BYTES} bytes"));
        }
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or("not an absolute URL (https://host/path)")?;
        if uri.contains('#') {
            return Err("a resource identifier has no fragment (RFC 9728 §1.2)".into());
        }
        if uri.contains('?') {
            return Err("a resource identifier has no query (RFC 9728 §1.2)".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err("no userinfo in a resource identifier".into());
        }
        let host = crate::request::canonical_host(authority).map_err(|e| format!("host: {e}"))?;
        let digits = authority.trim_end_matches(|c: char| c.is_ascii_digit());
        let (bare, port) = match digits.strip_suffix(':') {
            Some(bare) => (bare, Some(&authority[digits.len()..])),
            None => (authority, None),
        };
        // One spelling of the port, as clients and authorization servers write the URI
        // (RFC 3986 §6.2.3: no empty port, no default port, no leading zero).
        if let Some(port) = port {
            let default = if scheme == "https" { "443" } else { "80" };
            if port.is_empty() || port.starts_with('0') || port == default {
                return Err(format!(
                    "write the port as clients do: none for {default}, no empty port, no leading zero"
                ));
            }
        }
        if bare != host {
            return Err(format!(
                "write the host as {host:?} (lowercase, no trailing dot): tokens' aud is compared byte for byte"
            ));
        }
        match scheme {
            "https" => {}
            "http" if is_loopback(&host) => {}
            "http" => {
                return Err("https is required (http only on a loopback host)".into());
            }
            _ => return Err(format!("scheme {scheme:?}: https is required")),
        }
        if path == "/" {
            return Err(format!(
                "write {:?} without the trailing '/'",
                &uri[..uri.len() - 1]
            ));
        }
        if !path.is_empty() {
            if path.ends_with('/') {
                return Err(format!(
                    "write {:?} without the trailing '/' (one spelling of the identifier, compared byte for byte with aud)",
                    &uri[..uri.len() - 1]
                ));
            }
            let canonical =
                crate::request::canonical_path(path, paths).map_err(|e| format!("path: {e}"))?;
            if canonical != path {
                return Err(format!("the path is not canonical; write {canonical:?}"));
            }
        }
        Ok(ResourceUri {
            origin: &uri[..scheme.len() + 3 + authority.len()],
            path,
        })
    }

    /// RFC 9728 §3.1: the well-known suffix inserted between the host and the path.
    pub fn metadata_path(&self) -> String {
        format!("{WELL_KNOWN}{}", self.path)
    }

    /// The metadata URL, as 401s name it (§5.1).
    pub fn metadata_url(&self) -> String {
        format!("{}{}", self.origin, self.metadata_path())
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An `https` (or loopback `http`) URL for a person or a client to follow.
fn check_url(field: String, url: &str) -> Result<(), Invalid> {
    let ok = url.len() <= MAX_URI_BYTES
        && !url.chars().any(|c| c.is_control() || c == ' ' || c == '"')
        && match url.split_once("://") {
            Some(("https", rest)) => !rest.is_empty(),
            Some(("http", rest)) => {
                let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
                crate::request::canonical_host(authority).is_ok_and(|h| is_loopback(&h))
            }
            _ => false,
        };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{url:?} is not an https URL (http only on a loopback host), up to {MAX_URI_BYTES} bytes"
            ),
        ))
    }
}

/// What validating `resources` needs of the rest of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Context<'c> {
    pub paths: &'c PathConfig,
    pub issuers: &'c [&'c str],
}

/// Checks `resources` on their own: names, URIs, one metadata path each, at most one
/// default, the metadata's fields.
pub fn validate(resources: &[ResourceConfig], cx: Context<'_>) -> Result<(), Invalid> {
    let mut paths: Vec<String> = Vec::new();
    let mut default = None;
    for (i, r) in resources.iter().enumerate() {
        let field = |name: &str| format!("resources[{i}].{name}");
        if r.name.is_empty() || r.name.len() > 128 || r.name.chars().any(char::is_control) {
            return Err(invalid(
                field("name"),
                "1 to 128 characters, no control characters",
            ));
        }
        if resources[..i].iter().any(|other| other.name == r.name) {
            return Err(invalid(
                field("name"),
                format!("{:?} names two resources", r.name),
            ));
        }
        let uri = ResourceUri::parse(&r.resource, cx.paths)
            .map_err(|m| invalid(field("resource"), format!("{:?}: {m}", r.resource)))?;
        let path = uri.metadata_path();
        if let Some(j) = paths.iter().position(|p| *p == path) {
            return Err(invalid(
                field("resource"),
                format!(
                    "its metadata would be at {path}, as resources[{j}]'s is (one path per document, whatever the host)"
                ),
            ));
        }
        paths.push(path);
        if r.default {
            if let Some(j) = default {
                return Err(invalid(
                    field("default"),
                    format!("resources[{j}] is the default already"),
                ));
            }
            default = Some(i);
        }
        if let Some(servers) = &r.authorization_servers {
            if servers.is_empty() {
                return Err(invalid(
                    field("authorization_servers"),
                    "name at least one (leave it out for every provider's issuer)",
                ));
            }
            for (j, server) in servers.iter().enumerate() {
                let f = format!("resources[{i}].authorization_servers[{j}]");
                check_url(f.clone(), server)?;
                if !cx.issuers.contains(&server.as_str()) {
                    return Err(invalid(
                        f,
                        format!(
                            "{server:?} is no provider's issuer: every token it issues would be refused"
                        ),
                    ));
                }
            }
        } else if default_servers(cx.issuers).is_empty() {
            return Err(invalid(
                field("authorization_servers"),
                "no provider's issuer is an https URL; name the authorization servers",
            ));
        }
        for (j, scope) in r.scopes_supported.iter().flatten().enumerate() {
            if !crate::claims::is_scope_token(scope) || scope.len() > 256 {
                return Err(invalid(
                    format!("resources[{i}].scopes_supported[{j}]"),
                    format!("{scope:?} is not a scope token (RFC 6749 §3.3)"),
                ));
            }
        }
        for (name, url) in [
            ("resource_documentation", &r.resource_documentation),
            ("resource_policy_uri", &r.resource_policy_uri),
            ("resource_tos_uri", &r.resource_tos_uri),
        ] {
            if let Some(url) = url {
                check_url(field(name), url)?;
            }
        }
        if let Some(name) = &r.resource_name
            && (name.is_empty() || name.len() > 256 || name.chars().any(char::is_control))
        {
            return Err(invalid(
                field("resource_name"),
                "1 to 256 characters, no control characters",
            ));
        }
        if r.max_age_seconds > 86_400 {
            return Err(invalid(field("max_age_seconds"), "at most 86400 (a day)"));
        }
    }
    Ok(())
}

/// Every issuer that can be an authorization server identifier (RFC 8414 §2: an `https`
/// URL; loopback `http` for local development).
fn default_servers<'c>(issuers: &[&'c str]) -> Vec<&'c str> {
    let mut servers: Vec<&str> = Vec::new();
    for issuer in issuers {
        if check_url(String::new(), issuer).is_ok() && !servers.contains(issuer) {
            servers.push(issuer);
        }
    }
    servers
}

/// What a resource's metadata is built from besides its own configuration.
#[derive(Debug, Clone, Copy)]
pub struct Published<'c> {
    pub issuers: &'c [&'c str],
    /// Where every provider reads tokens from.
    pub token_sources: &'c [&'c [TokenSource]],
    /// The `scope` / `scp` values its rules ask for, in order, each once.
    pub rule_scopes: &'c [&'c str],
    /// The DPoP algorithms accepted, when some provider takes DPoP.
    pub dpop_algs: Option<&'c str>,
}

impl ResourceConfig {
    /// The `aud` values its tokens may carry: its identifier, and for one without a path
    /// also that identifier with a `/` (WHATWG URL serialisers, which some clients build the
    /// RFC 8707 `resource` parameter with, write `https://host/` for `https://host`).
    pub fn audiences(&self) -> Vec<String> {
        let mut audiences = vec![self.resource.clone()];
        let without_path = self
            .resource
            .split_once("://")
            .is_some_and(|(_, rest)| !rest.contains('/'));
        if without_path {
            audiences.push(format!("{}/", self.resource));
        }
        audiences
    }

    /// The metadata document (RFC 9728 §2, §3.2): a JSON object; absent values and empty
    /// lists left out (§3.2: "parameters with zero elements MUST be omitted").
    pub fn metadata(&self, p: Published<'_>) -> Value {
        let mut doc = Map::new();
        doc.insert("resource".into(), Value::from(self.resource.as_str()));
        let servers: Vec<&str> = match &self.authorization_servers {
            Some(servers) => servers.iter().map(String::as_str).collect(),
            None => default_servers(p.issuers),
        };
        insert_list(&mut doc, "authorization_servers", &servers);
        let scopes: Vec<&str> = match &self.scopes_supported {
            Some(scopes) => scopes.iter().map(String::as_str).collect(),
            None => p.rule_scopes.to_vec(),
        };
        insert_list(&mut doc, "scopes_supported", &scopes);
        // §2 `bearer_methods_supported`: RFC 6750 §2's methods that some provider takes.
        // A custom header or a cookie is none of them; the form body is never read.
        let mut methods: Vec<&str> = Vec::new();
        for source in p.token_sources.iter().flat_map(|s| s.iter()) {
            let method = match source {
                TokenSource::Bearer => "header",
                TokenSource::Query(name) if name == "access_token" => "query",
                _ => continue,
            };
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        insert_list(&mut doc, "bearer_methods_supported", &methods);
        for (name, value) in [
            ("resource_name", &self.resource_name),
            ("resource_documentation", &self.resource_documentation),
            ("resource_policy_uri", &self.resource_policy_uri),
            ("resource_tos_uri", &self.resource_tos_uri),
        ] {
            if let Some(value) = value {
                doc.insert(name.into(), Value::from(value.as_str()));
            }
        }
        if self.tls_client_certificate_bound_access_tokens {
            doc.insert(
                "tls_client_certificate_bound_access_tokens".into(),
                Value::Bool(true),
            );
        }
        if let Some(algs) = p.dpop_algs {
            let algs: Vec<&str> = algs.split(' ').filter(|a| !a.is_empty()).collect();
            insert_list(&mut doc, "dpop_signing_alg_values_supported", &algs);
        }
        if self.dpop_bound_access_tokens_required {
            doc.insert(
                "dpop_bound_access_tokens_required".into(),
                Value::Bool(true),
            );
        }
        Value::Object(doc)
    }
}

fn insert_list(doc: &mut Map<String, Value>, name: &str, values: &[&str]) {
    if !values.is_empty() {
        doc.insert(
            name.into(),
            Value::Array(values.iter().map(|v| Value::from(*v)).collect()),
        );
    }
}

#[cfg(test)]
mod tests;
