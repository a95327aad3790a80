//! Finding the one token a request carries, in every place a provider allows, before any
//! parsing: two candidates, or one over the size limit, end the check here.

use crate::config::TokenSource;
use crate::request::{self, Headers};

#[cfg(test)]
mod tests;

/// A token found in a request, still unverified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'r> {
    pub token: &'r str,
    pub source: &'r TokenSource,
    /// How the client presented it: `Authorization: DPoP` says the client holds the key
    /// the token is bound to and sends a proof (RFC 9449 §7.1); every other place is a
    /// bearer token.
    pub scheme: Scheme,
}

/// The authentication scheme a token came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

impl<'r> Found<'r> {
    /// The request header that carried the token, if it came in a header of its own.
    pub fn header(&self) -> Option<&'r str> {
        match self.source {
            TokenSource::Bearer => Some("authorization"),
            TokenSource::Header { name, .. } => Some(name),
            TokenSource::Cookie(_) | TokenSource::Query(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("more than one token in the request")]
    Multiple,
    #[error("token larger than the limit")]
    TooLarge,
    #[error("query string with an invalid parameter name")]
    BadQuery,
}

/// Looks for a token in every source in `sources` (the union over all providers).
///
/// `headers` uses lowercase names, with repeated headers joined by `,` as Envoy sends them;
/// `path` is the request's `:path`, query string included.
pub fn extract<'r>(
    headers: impl Into<Headers<'r>>,
    path: &'r str,
    sources: &'r [TokenSource],
    max_bytes: usize,
) -> Result<Option<Found<'r>>, ExtractError> {
    let headers = headers.into();
    let mut found: Option<Found<'r>> = None;
    let mut push = |token: &'r str, source: &'r TokenSource, scheme: Scheme| {
        if found.is_some() {
            return Err(ExtractError::Multiple);
        }
        if token.len() > max_bytes {
            return Err(ExtractError::TooLarge);
        }
        found = Some(Found {
            token,
            source,
            scheme,
        });
        Ok(())
    };
    for source in sources {
        match source {
            TokenSource::Bearer => {
                if let Some(value) = headers.get("authorization") {
                    // `Authorization: DPoP` (RFC 9449 §7.1) is read here too, so a token sent
                    // both ways is two tokens; whether its provider takes DPoP is decided
                    // once the token is verified.
                    for part in list_items(value).map(str::trim) {
                        if let Some(token) = strip_scheme(part, "bearer") {
                            push(token, source, Scheme::Bearer)?;
                        } else if let Some(token) = strip_scheme(part, "dpop") {
                            push(token, source, Scheme::Dpop)?;
                        }
                    }
                }
            }
            TokenSource::Header { name, prefix } => {
                if let Some(value) = headers.get(name.as_str()) {
                    for part in list_items(value).map(str::trim).filter(|p| !p.is_empty()) {
                        let token = match prefix {
                            Some(prefix) => match strip_prefix_ignore_case(part, prefix) {
                                Some(rest) => rest.trim(),
                                None => continue,
                            },
                            None => part,
                        };
                        push(token, source, Scheme::Bearer)?;
                    }
                }
            }
            TokenSource::Cookie(name) => {
                if let Some(value) = headers.get("cookie") {
                    for pair in value.split([';', ',']) {
                        if let Some((k, v)) = pair.trim().split_once('=')
                            && k.trim() == name
                        {
                            push(v.trim().trim_matches('"'), source, Scheme::Bearer)?;
                        }
                    }
                }
            }
            TokenSource::Query(name) => {
                // Names are compared decoded, as the application will read them, so
                // `access%5Ftoken` is the same parameter as `access_token` (and a second
                // copy of it is a second token). The value is taken as sent: a token never
                // needs escaping, and an escaped one fails verification.
                if let (_, Some(query)) = request::split_target(path) {
                    for pair in query.split('&') {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        let k = request::decode_query_component(k).ok_or(ExtractError::BadQuery)?;
                        if k == name.as_str() {
                            push(v, source, Scheme::Bearer)?;
                        }
                    }
                }
            }
        }
    }
    Ok(found)
}

/// `Bearer abc` → `abc`, with the scheme matched case-insensitively. A bare scheme gives an
/// empty token, which verification rejects as malformed.
/// The items of a comma-separated header value (RFC 9110 §5.6.1), untrimmed: what
/// `value.split(',')` gives, with the commas found by `memchr`'s vectorised search. A value
/// holding a token is hundreds of bytes without a comma, read once per request.
fn list_items(value: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut commas = memchr::memchr_iter(b',', value.as_bytes());
    std::iter::from_fn(move || {
        if start > value.len() {
            return None;
        }
        // A comma is one ASCII byte: both slices start and end on character boundaries.
        let end = commas.next().unwrap_or(value.len());
        let item = &value[start..end];
        start = end + 1;
        Some(item)
    })
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let rest = strip_prefix_ignore_case(value, scheme)?;
    if rest.is_empty() {
        return Some(rest);
    }
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    Some(rest.trim())
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}
