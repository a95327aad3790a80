//! SPIFFE IDs (the SPIFFE ID specification, "SPIFFE-ID.md"): the `sub` of a JWT-SVID
//! ("JWT-SVID.md" §3.1) names a workload as `spiffe://<trust domain>/<path>`. Read strictly,
//! as the specification's character rules intend: two spellings of one workload must not
//! both pass, since rules compare IDs as strings.

/// §2.3: implementations must support IDs up to 2048 bytes, and none longer is generated.
pub const MAX_ID_BYTES: usize = 2048;

/// §2.3: the host component of a URI is at most 255 bytes (RFC 3986), so is a trust domain.
pub const MAX_TRUST_DOMAIN_BYTES: usize = 255;

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("longer than 2048 bytes")]
    TooLong,
    #[error("scheme is not spiffe://")]
    WrongScheme,
    #[error("trust domain missing")]
    MissingTrustDomain,
    #[error("trust domain with a character other than a-z, 0-9, '.', '-', '_'")]
    BadTrustDomain,
    #[error("trust domain longer than 255 bytes")]
    TrustDomainTooLong,
    #[error("path segment empty, '.' or '..'")]
    BadSegment,
    #[error("path with a character other than a-z, A-Z, 0-9, '.', '-', '_'")]
    BadPathCharacter,
    #[error("path ends with '/'")]
    TrailingSlash,
}

/// A SPIFFE ID, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpiffeId<'a> {
    pub trust_domain: &'a str,
    /// Empty, or `/` followed by segments.
    pub path: &'a str,
}

/// Reads `id` as a SPIFFE ID: the `spiffe` scheme in lowercase (§2: "MUST use the spiffe
/// scheme"; an uppercase scheme is another spelling, refused), a trust domain of lowercase
/// letters, digits, `.`, `-` and `_` (§2.1: the host part alone, so no userinfo `@`, no port
/// `:`), a path of non-empty segments of letters, digits, `.`, `-` and `_` other than `.` and
/// `..`, no trailing `/` (§2.2), no query or fragment (§2: `?` and `#` are no path
/// characters), at most 2048 bytes (§2.3). Percent-encoding is no path character either: an
/// ID has one spelling.
pub fn parse(id: &str) -> Result<SpiffeId<'_>, SpiffeIdError> {
    if id.len() > MAX_ID_BYTES {
        return Err(SpiffeIdError::TooLong);
    }
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or(SpiffeIdError::WrongScheme)?;
    let (trust_domain, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if trust_domain.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    check_trust_domain(trust_domain)?;
    if !path.is_empty() {
        if path.ends_with('/') {
            return Err(SpiffeIdError::TrailingSlash);
        }
        for segment in path[1..].split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(SpiffeIdError::BadSegment);
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            {
                return Err(SpiffeIdError::BadPathCharacter);
            }
        }
    }
    Ok(SpiffeId { trust_domain, path })
}

/// §2.1 (and the character rules of §2.1 in the specification's current text): a trust
/// domain name as it may appear in an ID.
pub fn check_trust_domain(name: &str) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_BYTES {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(SpiffeIdError::BadTrustDomain);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_examples_are_ids() {
        // SPIFFE-ID.md §2 and §2.2.
        for (id, domain, path) in [
            (
                "spiffe://trust-domain-name/path",
                "trust-domain-name",
                "/path",
            ),
            (
                "spiffe://staging.example.com/payments/mysql",
                "staging.example.com",
                "/payments/mysql",
            ),
            (
                "spiffe://staging.example.com/payments/web-fe",
                "staging.example.com",
                "/payments/web-fe",
            ),
            (
                "spiffe://k8s-west.example.com/ns/staging/sa/default",
                "k8s-west.example.com",
                "/ns/staging/sa/default",
            ),
            (
                "spiffe://example.com/9eebccd2-12bf-40a6-b262-65fe0487d453",
                "example.com",
                "/9eebccd2-12bf-40a6-b262-65fe0487d453",
            ),
            // §3.1: an authority's ID has no path.
            ("spiffe://example.com", "example.com", ""),
            (
                "spiffe://under_score.example/Mixed.Case-path_1",
                "under_score.example",
                "/Mixed.Case-path_1",
            ),
        ] {
            assert_eq!(
                parse(id),
                Ok(SpiffeId {
                    trust_domain: domain,
                    path
                }),
                "{id}"
            );
        }
    }

    #[test]
    fn every_other_spelling_is_refused() {
        use SpiffeIdError::*;
        let long_path = format!("spiffe://example.org/{}", "a".repeat(2030));
        let long_domain = format!("spiffe://{}/x", "a".repeat(256));
        for (id, error) in [
            ("", WrongScheme),
            ("http://example.org/x", WrongScheme),
            ("SPIFFE://example.org/x", WrongScheme),
            ("spiffe:/example.org/x", WrongScheme),
            ("spiffe://", MissingTrustDomain),
            ("spiffe:///path", MissingTrustDomain),
            ("spiffe://Example.org/x", BadTrustDomain),
            ("spiffe://user@example.org/x", BadTrustDomain),
            ("spiffe://example.org:8443/x", BadTrustDomain),
            ("spiffe://exa mple.org/x", BadTrustDomain),
            ("spiffe://example.org?q=1", BadTrustDomain),
            ("spiffe://example.org/", TrailingSlash),
            ("spiffe://example.org/a/", TrailingSlash),
            ("spiffe://example.org//a", BadSegment),
            ("spiffe://example.org/a//b", BadSegment),
            ("spiffe://example.org/./a", BadSegment),
            ("spiffe://example.org/a/../b", BadSegment),
            ("spiffe://example.org/a?b", BadPathCharacter),
            ("spiffe://example.org/a#b", BadPathCharacter),
            ("spiffe://example.org/a%2Fb", BadPathCharacter),
            ("spiffe://example.org/caf\u{e9}", BadPathCharacter),
            ("spiffe://example.org/a b", BadPathCharacter),
            (long_path.as_str(), TooLong),
            (long_domain.as_str(), TrustDomainTooLong),
        ] {
            assert_eq!(parse(id), Err(error), "{id:?}");
        }
        // 2048 bytes exactly is an ID (§2.3: MUST be supported).
        let max = format!("spiffe://example.org/{}", "a".repeat(MAX_ID_BYTES - 21));
        assert_eq!(max.len(), MAX_ID_BYTES);
        assert!(parse(&max).is_ok());
    }
}
