//! Resource indicators (RFC 8707) and scopes (RFC 6749 §3.3): the `--resource` and
//! `--scope` values, checked at start, and what one token request is granted.
//!
//! A token names one resource (its `aud`), so a request naming several is refused rather
//! than answered with a token every one of them would accept. Scopes are granted per role:
//! of the scopes a request names, the user gets those its role is allowed (RFC 6749 §3.3
//! lets the server issue fewer than asked; the response then says which, §5.1); a scope not
//! issued here at all, or a request of which nothing can be granted, is `invalid_scope`.

use crate::users::valid_role;

/// The longest resource indicator, configured or requested.
pub const MAX_RESOURCE: usize = 2048;
/// The longest scope name configured.
pub const MAX_SCOPE_NAME: usize = 128;
/// The longest `scope` a request may carry.
pub const MAX_SCOPE_PARAM: usize = 1024;
/// Resources, and scopes, one issuer may be configured with.
pub const MAX_CONFIGURED: usize = 64;
/// Roles one scope may name.
const MAX_ROLES: usize = 32;

/// A scope this issuer issues, and to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRule {
    pub name: String,
    /// The roles it is granted to; `None`: every user.
    pub roles: Option<Vec<String>>,
}

impl ScopeRule {
    fn allows(&self, role: &str) -> bool {
        self.roles
            .as_ref()
            .is_none_or(|roles| roles.iter().any(|r| r == role))
    }
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_char(b: u8) -> bool {
    b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)
}

/// Whether `host` (as written in a URI's authority) is a loopback host.
fn is_loopback(host: &str) -> bool {
    host == "127.0.0.1" || host == "[::1]" || host.eq_ignore_ascii_case("localhost")
}

/// A `--resource` value: an absolute `https` URI (RFC 8707 §2), or `http` on a loopback
/// host, without a fragment (§2: MUST NOT), a query (§2: SHOULD NOT) or userinfo.
pub fn parse_resource(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > MAX_RESOURCE {
        return Err(format!("a resource is 1-{MAX_RESOURCE} bytes"));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{s:?}: spaces, control or non-ASCII characters in a resource"
        ));
    }
    if s.contains('#') {
        return Err(format!(
            "{s:?}: a resource indicator has no fragment (RFC 8707 §2)"
        ));
    }
    if s.contains('?') {
        return Err(format!(
            "{s:?}: a resource indicator with a query is refused (RFC 8707 §2)"
        ));
    }
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| format!("{s:?}: not an absolute http(s) URI"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!("{s:?}: userinfo in a resource is refused"));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let end = v6
                .find(']')
                .ok_or_else(|| format!("{s:?}: unterminated IPv6 address"))?;
            (&authority[..end + 2], &v6[end + 1..])
        }
        None => {
            let end = authority.find(':').unwrap_or(authority.len());
            (&authority[..end], &authority[end..])
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{s:?}: no host"));
    }
    if !port.is_empty() {
        let digits = port
            .strip_prefix(':')
            .ok_or_else(|| format!("{s:?}: malformed host"))?;
        if !matches!(digits.parse::<u16>(), Ok(1..)) || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!("{s:?}: malformed port"));
        }
    }
    match scheme {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(format!(
                "{s:?}: http only on a loopback host (127.0.0.1, [::1], localhost); use https"
            ));
        }
        _ => {
            return Err(format!(
                "{s:?}: the scheme must be https (or http on loopback)"
            ));
        }
    }
    s.parse::<axum::http::Uri>()
        .map_err(|e| format!("{s:?}: not a valid URI: {e}"))?;
    Ok(s.to_owned())
}

/// A `--scope` value: `NAME` (granted to every user) or `NAME=ROLE[,ROLE...]`. The name is
/// an RFC 6749 §3.3 scope token of at most 128 bytes without `=`, `,` or `;` (the
/// separators of this syntax and of `ISSUER_SCOPES`).
pub fn parse_scope_rule(s: &str) -> Result<ScopeRule, String> {
    let (name, roles) = match s.split_once('=') {
        Some((name, roles)) => (name, Some(roles)),
        None => (s, None),
    };
    if name.is_empty()
        || name.len() > MAX_SCOPE_NAME
        || !name
            .bytes()
            .all(|b| is_scope_char(b) && b != b',' && b != b';')
    {
        return Err(format!(
            "{name:?}: a scope is 1-{MAX_SCOPE_NAME} characters of RFC 6749 §3.3 \
             (visible ASCII but '\"', '\\\\'; here also not '=', ',' or ';')"
        ));
    }
    let roles = match roles {
        None => None,
        Some(list) => {
            let roles: Vec<String> = list.split(',').map(str::to_owned).collect();
            if let Some(bad) = roles.iter().find(|r| !valid_role(r)) {
                return Err(format!(
                    "scope {name:?}: invalid role {bad:?} (1-64 letters, digits, '.', '_', '-' \
                     or ':'; leave out '=' to grant the scope to every user)"
                ));
            }
            if roles.len() > MAX_ROLES {
                return Err(format!("scope {name:?}: more than {MAX_ROLES} roles"));
            }
            Some(roles)
        }
    };
    Ok(ScopeRule {
        name: name.to_owned(),
        roles,
    })
}

/// Why a request's resource or scope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("more than one resource")]
    SeveralResources,
    #[error("resource longer than {MAX_RESOURCE} bytes")]
    ResourceTooLong,
    #[error("resource not served by this issuer")]
    UnknownResource,
    #[error("scope longer than {MAX_SCOPE_PARAM} bytes")]
    ScopeTooLong,
    #[error("malformed scope")]
    MalformedScope,
    #[error("scope not issued by this issuer")]
    UnknownScope,
    #[error("none of the requested scopes may be granted to this user")]
    ScopeNotGranted,
}

impl GrantError {
    /// The OAuth error code: `invalid_target` (RFC 8707 §2) or `invalid_scope` (RFC 6749
    /// §5.2).
    pub fn code(&self) -> &'static str {
        match self {
            Self::SeveralResources | Self::ResourceTooLong | Self::UnknownResource => {
                "invalid_target"
            }
            Self::ScopeTooLong
            | Self::MalformedScope
            | Self::UnknownScope
            | Self::ScopeNotGranted => "invalid_scope",
        }
    }
}

/// What a token request asks for: its resources (one at most is accepted) and its scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requested {
    pub resources: Vec<String>,
    /// The space-separated `scope`; `None` when absent or empty.
    pub scope: Option<String>,
}

impl Requested {
    /// The checks that need no user and tell nothing about what is configured: how many
    /// resources, sizes, the scope's syntax. Run before the credentials are.
    pub fn check_shape(&self) -> Result<(), GrantError> {
        if self.resources.len() > 1 {
            return Err(GrantError::SeveralResources);
        }
        if self.resources.iter().any(|r| r.len() > MAX_RESOURCE) {
            return Err(GrantError::ResourceTooLong);
        }
        if let Some(scope) = &self.scope {
            if scope.len() > MAX_SCOPE_PARAM {
                return Err(GrantError::ScopeTooLong);
            }
            // RFC 6749 §3.3: scope-token *( SP scope-token ).
            if scope
                .split(' ')
                .any(|t| t.is_empty() || !t.bytes().all(is_scope_char))
            {
                return Err(GrantError::MalformedScope);
            }
        }
        Ok(())
    }
}

/// What a token was granted: its audience (a resource, or the default audience) and its
/// scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub audience: String,
    /// Space-separated, in the order asked; `None` when no scope was asked for.
    pub scope: Option<String>,
}

/// The resources and scopes configured.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    resources: Vec<String>,
    scopes: Vec<ScopeRule>,
}

impl Grants {
    /// The configured values, each given once, at most [`MAX_CONFIGURED`] of each kind.
    pub fn new(resources: &[String], scopes: &[ScopeRule]) -> Result<Self, String> {
        if resources.len() > MAX_CONFIGURED {
            return Err(format!("more than {MAX_CONFIGURED} --resource values"));
        }
        if scopes.len() > MAX_CONFIGURED {
            return Err(format!("more than {MAX_CONFIGURED} --scope values"));
        }
        for (i, resource) in resources.iter().enumerate() {
            if resources[..i].contains(resource) {
                return Err(format!("--resource {resource:?} is given twice"));
            }
        }
        for (i, rule) in scopes.iter().enumerate() {
            if scopes[..i].iter().any(|r| r.name == rule.name) {
                return Err(format!("--scope {:?} is given twice", rule.name));
            }
        }
        Ok(Self {
            resources: resources.to_vec(),
            scopes: scopes.to_vec(),
        })
    }

    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    /// The names of the scopes issued, as `scopes_supported` lists them.
    pub fn scope_names(&self) -> Vec<&str> {
        self.scopes.iter().map(|r| r.name.as_str()).collect()
    }

    /// What a user of `role` is granted for `requested`, its shape already checked: the
    /// resource asked for, exactly as configured (RFC 8707 §2), or `default_audience`; and
    /// the scopes asked for that the role may have. No scope asked: none granted.
    pub fn grant(
        &self,
        requested: &Requested,
        role: &str,
        default_audience: &str,
    ) -> Result<Granted, GrantError> {
        let audience = match requested.resources.as_slice() {
            [] => default_audience.to_owned(),
            [resource] if self.resources.contains(resource) => resource.clone(),
            [_] => return Err(GrantError::UnknownResource),
            _ => return Err(GrantError::SeveralResources),
        };
        let Some(asked) = &requested.scope else {
            return Ok(Granted {
                audience,
                scope: None,
            });
        };
        let mut granted: Vec<&str> = Vec::new();
        for token in asked.split(' ') {
            let rule = self
                .scopes
                .iter()
                .find(|r| r.name == token)
                .ok_or(GrantError::UnknownScope)?;
            if rule.allows(role) && !granted.contains(&token) {
                granted.push(token);
            }
        }
        if granted.is_empty() {
            return Err(GrantError::ScopeNotGranted);
        }
        Ok(Granted {
            audience,
            scope: Some(granted.join(" ")),
        })
    }
}

#[cfg(test)]
mod tests;
