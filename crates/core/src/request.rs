//! The request as rules see it: method, host in its canonical form ([`host`]), context
//! extensions, and the path in its canonical form ([`path`]). Everything here is pure computation on strings, so
//! every front end (and, later, an in-proxy filter) reads a request the same way.

use std::borrow::Cow;
use std::collections::HashMap;

mod headers;
pub mod host;
pub mod path;

pub use headers::{HeaderList, Headers, Names};
pub use host::{HostError, canonical_host};
pub use path::{PathError, canonical_path};

/// A request as a front end hands it to the decision: every front end (Envoy's gRPC
/// `CheckRequest`, an HTTP authorization request, a forward-auth request) fills this in from
/// what its proxy sent, so the decision never knows which one it was.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'r> {
    pub method: &'r str,
    /// The request target as the proxy saw it: path and query, not yet canonical.
    pub target: &'r str,
    /// The `Host`/`:authority`, port included if sent.
    pub host: &'r str,
    /// Lowercase names; repeated headers joined with `,` (as Envoy sends them).
    pub headers: Headers<'r>,
    /// Envoy's per-route context extensions (empty for other front ends).
    pub context_extensions: &'r HashMap<String, String>,
    /// The scheme the client used (`https`), when the front end knows it: the DPoP `htu`
    /// is compared with `scheme://host/path` (`dpop.scheme` overrides it).
    pub scheme: Option<&'r str>,
    /// The client's TLS certificate as Envoy reports it (URL-encoded PEM), for
    /// certificate-bound tokens; `None` when there was none or the front end cannot tell.
    pub certificate: Option<&'r str>,
}

/// The parts of a request that rules look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'r> {
    pub method: &'r str,
    /// The canonical path ([`canonical_path`]): no query, no dot-segments, no `//`.
    pub path: &'r str,
    /// The canonical host ([`canonical_host`]): lowercase, no port, no trailing dot.
    pub host: &'r str,
    pub context_extensions: &'r HashMap<String, String>,
}

impl<'r> RequestInfo<'r> {
    /// `path` and `host` must already be canonical.
    pub fn new(
        method: &'r str,
        path: &'r str,
        host: &'r str,
        context_extensions: &'r HashMap<String, String>,
    ) -> Self {
        Self {
            method,
            path,
            host,
            context_extensions,
        }
    }
}

/// Splits a request target into its path and its query (RFC 3986 §3.3, §3.4): the query
/// starts at the first `?`, and a fragment (`#`, which a client should never send) ends
/// whichever part it appears in.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    // One pass to the first `?` or `#` (every request's target is split): a `#` ends the
    // target, a `?` before it starts the query.
    let bytes = target.as_bytes();
    match memchr::memchr2(b'?', b'#', bytes) {
        None => (target, None),
        Some(i) if bytes[i] == b'#' => (&target[..i], None),
        Some(i) => {
            let rest = &target[i + 1..];
            let end = memchr::memchr(b'#', rest.as_bytes()).unwrap_or(rest.len());
            (&target[..i], Some(&rest[..end]))
        }
    }
}

/// Decodes an `application/x-www-form-urlencoded` name (`+` is a space, `%XX` a byte), the
/// way applications read query parameters. `None` when the encoding is invalid or the result
/// is not UTF-8.
pub fn decode_query_component(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains(['%', '+']) {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                out.push(path::hex_pair(bytes.get(i + 1..i + 3)?)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_splits_at_the_first_question_mark_and_drops_fragments() {
        assert_eq!(split_target("/a?b=1?c"), ("/a", Some("b=1?c")));
        assert_eq!(split_target("/a#f?access_token=x"), ("/a", None));
        assert_eq!(split_target("/a?x=1#f"), ("/a", Some("x=1")));
        assert_eq!(split_target("/a"), ("/a", None));
        assert_eq!(split_target("/a?b#c?d"), ("/a", Some("b")));
        assert_eq!(split_target("/a?#b"), ("/a", Some("")));
        assert_eq!(split_target("?"), ("", Some("")));
        assert_eq!(split_target("#?"), ("", None));
        assert_eq!(split_target(""), ("", None));
    }

    #[test]
    fn query_components_decode_like_forms() {
        assert_eq!(
            decode_query_component("access%5Ftoken").as_deref(),
            Some("access_token")
        );
        assert_eq!(decode_query_component("a+b").as_deref(), Some("a b"));
        assert_eq!(decode_query_component("plain").as_deref(), Some("plain"));
        assert_eq!(decode_query_component("bad%2"), None);
        assert_eq!(decode_query_component("bad%zz"), None);
        assert_eq!(decode_query_component("%ff"), None);
    }
}
