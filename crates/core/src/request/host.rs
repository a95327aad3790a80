//! The canonical host: what `hosts:` rules are compared with, whichever spelling of the host
//! the client sent and whichever proxy passed it on.
//!
//! A host is read as RFC 3986 §3.2.2 defines it, an IP literal in brackets or a reg-name,
//! with an optional `:port` (§3.2.3). Its canonical form:
//!
//! - is lowercase (§6.2.2.1: the host is case-insensitive; an IPv6 literal is written in its
//!   RFC 5952 form, so `[0:0::1]` and `[::1]` are one host);
//! - has no port, whichever port it was: rules name hosts, and the listener a request came in
//!   on is the proxy's business (a proxy that serves two sites on two ports of one name must
//!   tell them apart with `context_extensions` or its own routing, not with `hosts:`);
//! - has no trailing dot: `admin.example.com.` is the fully qualified spelling of
//!   `admin.example.com`, which DNS resolves, and nginx, Caddy and Traefik route, alike.
//!
//! Refused ([`HostError`]), so that no proxy and no rule can read it another way: no host at
//! all, userinfo (`user@host`), two hosts joined (`a,b`: what a proxy makes of two `Host`
//! headers), a character outside a reg-name (§3.2.2: unreserved and sub-delims), a
//! percent-encoded byte (proxies do not decode hosts; rules never see one), an empty label
//! (`a..b`, a leading dot, two trailing dots), a port that is not a number up to 65535, and
//! an IP literal that is not an IPv6 address (IPvFuture included: nothing routes it).

use std::borrow::Cow;
use std::net::Ipv6Addr;

/// A host longer than this is refused: a DNS name is at most 253 bytes, plus a dot and a
/// port.
pub const MAX_HOST_BYTES: usize = 262;

/// Why a host cannot be read as one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("no host")]
    Missing,
    #[error("host longer than the limit")]
    TooLong,
    #[error("two hosts in one")]
    Several,
    #[error("userinfo in the host")]
    Userinfo,
    #[error("character not allowed in a host")]
    BadCharacter,
    #[error("percent-encoded host")]
    Escaped,
    #[error("empty label in the host")]
    EmptyLabel,
    #[error("invalid port")]
    BadPort,
    #[error("invalid IP literal")]
    BadIpLiteral,
}

/// The canonical form of `raw`, a `Host` header or `:authority` (port allowed). A host
/// without uppercase letters is borrowed (its port and trailing dot sliced off); an IP
/// literal is always rewritten (RFC 5952).
pub fn canonical_host(raw: &str) -> Result<Cow<'_, str>, HostError> {
    if raw.is_empty() {
        return Err(HostError::Missing);
    }
    if raw.len() > MAX_HOST_BYTES {
        return Err(HostError::TooLong);
    }
    // What is refused whatever else the host holds (in this order), and where its port
    // starts, in one pass: every front end reads a host for every request.
    let (mut several, mut userinfo, mut escaped, mut colon) = (false, false, false, None);
    for (i, b) in raw.bytes().enumerate() {
        match b {
            b',' => several = true,
            b'@' => userinfo = true,
            b'%' => escaped = true,
            b':' if colon.is_none() => colon = Some(i),
            _ => {}
        }
    }
    if several {
        return Err(HostError::Several);
    }
    if userinfo {
        return Err(HostError::Userinfo);
    }
    if escaped {
        return Err(HostError::Escaped);
    }
    if let Some(literal) = raw.strip_prefix('[') {
        let (address, after) = literal.split_once(']').ok_or(HostError::BadIpLiteral)?;
        check_port(after)?;
        let address: Ipv6Addr = address.parse().map_err(|_| HostError::BadIpLiteral)?;
        return Ok(Cow::Owned(format!("[{address}]")));
    }
    let (name, port) = match colon {
        Some(at) => (&raw[..at], Some(&raw[at + 1..])),
        None => (raw, None),
    };
    if let Some(port) = port {
        check_port_number(port)?;
    }
    if name.is_empty() {
        return Err(HostError::Missing);
    }
    // One trailing dot is the root label; any other empty label is not a name. Characters,
    // labels and case in one pass (a character outside a reg-name is refused first).
    let unrooted = name.strip_suffix('.').unwrap_or(name);
    let (mut empty_label, mut label_start, mut upper) = (false, true, false);
    for b in unrooted.bytes() {
        if !is_reg_name_byte(b) {
            return Err(HostError::BadCharacter);
        }
        if b == b'.' {
            empty_label |= label_start;
            label_start = true;
        } else {
            label_start = false;
            upper |= b.is_ascii_uppercase();
        }
    }
    if empty_label || label_start {
        return Err(HostError::EmptyLabel);
    }
    if !upper {
        return Ok(Cow::Borrowed(unrooted));
    }
    Ok(Cow::Owned(unrooted.to_ascii_lowercase()))
}

/// `after` is what follows the host: nothing, `:`, or `:` and a port number (§3.2.3 allows an
/// empty port, which means the scheme's default).
fn check_port(after: &str) -> Result<(), HostError> {
    match after.strip_prefix(':') {
        None if after.is_empty() => Ok(()),
        None => Err(HostError::BadCharacter),
        Some(port) => check_port_number(port),
    }
}

/// What follows the `:`: empty, or a port number of at most 5 digits that fits in 16 bits.
fn check_port_number(port: &str) -> Result<(), HostError> {
    match port {
        "" => Ok(()),
        _ if port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()) => port
            .parse::<u16>()
            .map(drop)
            .map_err(|_| HostError::BadPort),
        _ => Err(HostError::BadPort),
    }
}

/// RFC 3986 §3.2.2 reg-name: unreserved and sub-delims (`%` and `,` are refused before).
fn is_reg_name_byte(b: u8) -> bool {
    super::path::is_unreserved(b) || super::path::is_sub_delim(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host(raw: &str) -> Result<String, HostError> {
        canonical_host(raw).map(Cow::into_owned)
    }

    #[test]
    fn spellings_of_one_host_are_one_host() {
        for raw in [
            "admin.example.com",
            "Admin.Example.COM",
            "admin.example.com.",
            "ADMIN.EXAMPLE.COM.:8443",
            "admin.example.com:80",
            "admin.example.com:",
            "admin.example.com.:",
        ] {
            assert_eq!(host(raw).as_deref(), Ok("admin.example.com"), "{raw}");
        }
        for raw in ["[::1]", "[::1]:8080", "[0:0:0:0:0:0:0:1]", "[0::1]:"] {
            assert_eq!(host(raw).as_deref(), Ok("[::1]"), "{raw}");
        }
        assert_eq!(
            host("[2001:DB8::A]:443").as_deref(),
            Ok("[2001:db8::a]"),
            "RFC 5952 §4.3: lowercase"
        );
        assert_eq!(host("127.0.0.1:8000").as_deref(), Ok("127.0.0.1"));
    }

    #[test]
    fn a_canonical_host_is_borrowed() {
        assert!(matches!(
            canonical_host("api.test"),
            Ok(Cow::Borrowed("api.test"))
        ));
    }

    #[test]
    fn hosts_that_are_not_one_host_are_refused() {
        let cases = [
            ("", HostError::Missing),
            (":8080", HostError::Missing),
            ("a.test,b.test", HostError::Several),
            ("a.test, b.test", HostError::Several),
            ("user@a.test", HostError::Userinfo),
            ("a.test@b.test", HostError::Userinfo),
            ("a%2Etest", HostError::Escaped),
            ("a test", HostError::BadCharacter),
            ("a/test", HostError::BadCharacter),
            ("a\\test", HostError::BadCharacter),
            ("a.test\t", HostError::BadCharacter),
            ("é.test", HostError::BadCharacter),
            ("a..test", HostError::EmptyLabel),
            (".a.test", HostError::EmptyLabel),
            ("a.test..", HostError::EmptyLabel),
            (".", HostError::EmptyLabel),
            ("a.test:http", HostError::BadPort),
            ("a.test:65536", HostError::BadPort),
            ("a.test:123456", HostError::BadPort),
            ("a.test:80:80", HostError::BadPort),
            ("a.test:-1", HostError::BadPort),
            ("[::1", HostError::BadIpLiteral),
            ("[v1.fe80::a]", HostError::BadIpLiteral),
            ("[127.0.0.1]", HostError::BadIpLiteral),
            ("[::1]x", HostError::BadCharacter),
            ("::1", HostError::BadPort),
        ];
        for (raw, error) in cases {
            assert_eq!(host(raw), Err(error), "{raw:?}");
        }
        assert_eq!(
            host(&"a".repeat(MAX_HOST_BYTES + 1)),
            Err(HostError::TooLong)
        );
    }

    /// The rules of this module's header, one check at a time, as [`canonical_host`] read
    /// them before it made them one pass: the two must always agree.
    fn one_check_at_a_time(raw: &str) -> Result<String, HostError> {
        if raw.is_empty() {
            return Err(HostError::Missing);
        }
        if raw.len() > MAX_HOST_BYTES {
            return Err(HostError::TooLong);
        }
        if raw.contains(',') {
            return Err(HostError::Several);
        }
        if raw.contains('@') {
            return Err(HostError::Userinfo);
        }
        if raw.contains('%') {
            return Err(HostError::Escaped);
        }
        if let Some(literal) = raw.strip_prefix('[') {
            let (address, after) = literal.split_once(']').ok_or(HostError::BadIpLiteral)?;
            check_port(after)?;
            let address: Ipv6Addr = address.parse().map_err(|_| HostError::BadIpLiteral)?;
            return Ok(format!("[{address}]"));
        }
        let (name, port) = match raw.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (raw, None),
        };
        if let Some(port) = port {
            check_port_number(port)?;
        }
        if name.is_empty() {
            return Err(HostError::Missing);
        }
        if !name.bytes().all(is_reg_name_byte) {
            return Err(HostError::BadCharacter);
        }
        let unrooted = name.strip_suffix('.').unwrap_or(name);
        if unrooted.is_empty() || unrooted.split('.').any(str::is_empty) {
            return Err(HostError::EmptyLabel);
        }
        Ok(unrooted.to_ascii_lowercase())
    }

    proptest! {
        /// The one-pass reading refuses what the rules refuse, with the same error, and
        /// accepts the rest with the same canonical form.
        #[test]
        fn one_pass_agrees_with_the_rules(
            raw in prop_oneof![
                // Few characters, often the ones that matter: dots, case, each refusal.
                "[aB9.]{0,10}(:[0-9]{0,6})?",
                "[aB.,@%:_ /é-]{0,10}",
                "\\[[0-9a-f:.v]{0,10}\\][:0-9x]{0,4}",
                "[a-zA-Z0-9._~!$&'()*+;=%,@ :/\\\\é-]{0,24}",
            ],
        ) {
            prop_assert_eq!(host(&raw), one_check_at_a_time(&raw));
        }

        /// Idempotent, and every accepted host's canonical form is accepted and unchanged.
        #[test]
        fn canonical_hosts_are_fixed_points(
            raw in "(\\[[0-9a-fA-F:.]{0,12}\\]|[a-zA-Z0-9._~!$&'()*+;=%,@ -]{0,20})(:[0-9]{0,6})?",
        ) {
            if let Ok(canonical) = canonical_host(&raw) {
                let again = canonical_host(&canonical);
                prop_assert_eq!(again.as_deref(), Ok(canonical.as_ref()));
                prop_assert!(!canonical.ends_with('.'));
                prop_assert_eq!(canonical.to_ascii_lowercase(), canonical.to_string());
            }
        }

        /// A host, its uppercase, trailing-dot and ported spellings are one host.
        #[test]
        fn spellings_agree(
            labels in proptest::collection::vec("[a-z0-9-]{1,10}", 1..4),
            port in proptest::option::of(0u16..),
            dot in any::<bool>(),
            upper in any::<bool>(),
        ) {
            let name = labels.join(".");
            let mut raw = if upper { name.to_ascii_uppercase() } else { name.clone() };
            if dot { raw.push('.'); }
            if let Some(port) = port { raw.push_str(&format!(":{port}")); }
            prop_assert_eq!(host(&raw), Ok(name));
        }
    }
}
