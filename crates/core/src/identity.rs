//! Identity headers for upstream: set from the verified claims with overwrite semantics, and
//! every configured identity header the token does not supply is removed, so a client's own
//! `x-user-*` never reaches a service.

use serde_json::{Map, Value};

use crate::claims;
use crate::request::Headers;
use serde::Deserialize;

/// One identity header: which claim it carries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimHeader {
    /// A claim name; `a.b` reaches into nested objects.
    pub claim: String,
    pub header: String,
}

/// Header changes for an allowed request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HeaderMutation {
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// A claim value that cannot travel in a header (it holds control characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("claim {claim} cannot be carried in header {header}")]
pub struct UnsafeClaim {
    pub claim: String,
    pub header: String,
}

/// The headers to set and remove for a request with these verified claims (`None` for an
/// anonymous request on a public route).
pub fn mutation(
    mappings: &[ClaimHeader],
    claims: Option<&Map<String, Value>>,
) -> Result<HeaderMutation, UnsafeClaim> {
    let mut out = HeaderMutation::default();
    for mapping in mappings {
        let unsafe_claim = || UnsafeClaim {
            claim: mapping.claim.clone(),
            header: mapping.header.clone(),
        };
        let value = claims.and_then(|c| claims::lookup(c, &mapping.claim));
        match value
            .map(render)
            .transpose()
            .map_err(|()| unsafe_claim())?
            .flatten()
        {
            Some(value) => {
                if value.chars().any(|c| c.is_control() && c != '\t') {
                    return Err(unsafe_claim());
                }
                out.set.push((mapping.header.clone(), value));
            }
            None => out.remove.push(mapping.header.clone()),
        }
    }
    Ok(out)
}

/// The first request header that is a configured identity header (or the anonymous marker,
/// `marker`) in another spelling: the same name once ASCII case is ignored and every
/// character other than a letter or digit is taken as `-` (`x-user_id`, `x_user-id`,
/// `x.user.id` for `x-user-id`), but not the header itself. CGI, FastCGI, WSGI and Rack
/// turn such spellings into one variable (`HTTP_X_USER_ID`), so the app may read the
/// client's copy where the rules removed only the configured spelling. `headers` has
/// lowercase names.
pub fn lookalike<'h>(
    headers: impl Into<Headers<'h>>,
    mappings: &[ClaimHeader],
    marker: Option<&str>,
) -> Option<&'h str> {
    // Only a name with a separator other than `-` (or an identity header with one) can be
    // another spelling of a header it is not equal to: most requests have none and stop here.
    let odd = |name: &str| name.bytes().any(|b| ODD[usize::from(b)]);
    let configured = || mappings.iter().map(|m| m.header.as_str()).chain(marker);
    let any_odd = configured().any(odd);
    headers
        .into()
        .names()
        .filter(|name| any_odd || odd(name))
        .find(|name| {
            configured()
                .any(|header| !header.eq_ignore_ascii_case(name) && same_folded(header, name))
        })
}

/// The bytes other than an ASCII letter, digit or `-`, as a table: every request's header
/// names are looked at byte by byte.
const ODD: [bool; 256] = {
    let mut odd = [true; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        odd[b] = !(c == b'-' || c.is_ascii_alphanumeric());
        b += 1;
    }
    odd
};

/// A byte of a name as [`same_folded`] compares it: a letter lowercase, a digit as it is,
/// anything else `-`.
fn fold(c: u8) -> u8 {
    if c.is_ascii_alphanumeric() {
        c.to_ascii_lowercase()
    } else {
        b'-'
    }
}

/// Whether `a` and `b` are one name once ASCII case is ignored and every character other than
/// a letter or digit is taken as `-`.
pub fn same_folded(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// `name` folded as [`same_folded`] compares names: `same_folded(a, b)` is
/// `folded(a) == folded(b)`.
pub fn folded(name: &str) -> String {
    name.bytes().map(|b| char::from(fold(b))).collect()
}

/// Strings as they are, arrays joined with `,`, objects as JSON; `null` and empty values
/// give no header. An array with an element that holds a `,` (or an object or array, whose
/// JSON does) cannot be joined unambiguously: `["eng,admin"]` would read as two groups to
/// the app and is one to the rules, so such a claim is refused (`Err`).
fn render(value: &Value) -> Result<Option<String>, ()> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                let part = match item {
                    Value::String(s) => s.clone(),
                    Value::Array(_) | Value::Object(_) => return Err(()),
                    other => other.to_string(),
                };
                if part.contains(',') {
                    return Err(());
                }
                parts.push(part);
            }
            parts.join(",")
        }
        other => other.to_string(),
    };
    Ok((!text.is_empty()).then_some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn mappings() -> Vec<ClaimHeader> {
        [
            ("sub", "x-user-id"),
            ("username", "x-user-name"),
            ("role", "x-user-role"),
            ("groups", "x-user-groups"),
            ("org", "x-user-org"),
        ]
        .into_iter()
        .map(|(c, h)| ClaimHeader {
            claim: c.into(),
            header: h.into(),
        })
        .collect()
    }

    #[test]
    fn sets_present_claims_and_removes_the_rest() {
        let claims = json!({
            "sub": "u-1",
            "role": "admin",
            "groups": ["a", "b", 3],
            "org": {"id": 7}
        });
        let m = mutation(&mappings(), claims.as_object()).unwrap();
        assert_eq!(
            m.set,
            vec![
                ("x-user-id".into(), "u-1".into()),
                ("x-user-role".into(), "admin".into()),
                ("x-user-groups".into(), "a,b,3".into()),
                ("x-user-org".into(), r#"{"id":7}"#.into()),
            ]
        );
        assert_eq!(m.remove, vec!["x-user-name".to_string()]);
    }

    #[test]
    fn anonymous_requests_lose_every_identity_header() {
        let m = mutation(&mappings(), None).unwrap();
        assert!(m.set.is_empty());
        assert_eq!(m.remove.len(), 5);
    }

    #[test]
    fn control_characters_are_refused() {
        let claims = json!({"sub": "u-1\r\nx-user-role: admin"});
        let err = mutation(&mappings(), claims.as_object()).unwrap_err();
        assert_eq!(err.header, "x-user-id");
    }

    #[test]
    fn array_elements_that_would_split_are_refused() {
        for groups in [
            json!(["eng,admin"]),
            json!(["eng", {"a": 1}]),
            json!([["x"]]),
        ] {
            let claims = json!({"sub": "u-1", "groups": groups});
            let err = mutation(&mappings(), claims.as_object()).unwrap_err();
            assert_eq!(err.header, "x-user-groups", "{groups}");
        }
        // A comma inside a plain string claim is one value either way.
        let claims = json!({"sub": "u-1", "role": "a,b"});
        assert!(mutation(&mappings(), claims.as_object()).is_ok());
    }

    #[test]
    fn null_and_empty_claims_remove_the_header() {
        let claims = json!({"sub": "", "role": null});
        let m = mutation(&mappings(), claims.as_object()).unwrap();
        assert!(m.set.is_empty());
        assert!(m.remove.contains(&"x-user-id".to_string()));
        assert!(m.remove.contains(&"x-user-role".to_string()));
    }

    #[test]
    fn folded_names_are_equal_exactly_when_same_folded_says_so() {
        let names = [
            "x-user-id",
            "X_User.Id",
            "x_user_id",
            "x-user-ids",
            "x-user-1d",
            "xuserid",
            "",
        ];
        for a in names {
            for b in names {
                assert_eq!(folded(a) == folded(b), same_folded(a, b), "{a} {b}");
            }
        }
        assert_eq!(folded("X_User.Id"), "x-user-id");
    }

    #[test]
    fn every_other_spelling_of_an_identity_header_is_a_lookalike() {
        let mappings = mappings();
        let with = |name: &str| HashMap::from([(name.to_owned(), "admin".to_owned())]);
        for name in [
            "x_user_id",
            "x-user_id",
            "x_user-id",
            "x-user_role",
            "x_user_org",
            "X_User-Name",
            "x.user.id",
            "x~user+role",
        ] {
            assert_eq!(
                lookalike(&with(name), &mappings, None),
                Some(name),
                "{name}"
            );
        }
        // The header itself, in any case, is not: it is overwritten or removed.
        for name in [
            "x-user-id",
            "X-User-Id",
            "x-user-idx",
            "x_user",
            "x_other_id",
        ] {
            assert_eq!(lookalike(&with(name), &mappings, None), None, "{name}");
        }
        // An identity header spelt with `_` has its `-` spellings as lookalikes.
        let underscored = [ClaimHeader {
            claim: "sub".into(),
            header: "x_user_id".into(),
        }];
        assert_eq!(
            lookalike(&with("x-user-id"), &underscored, None),
            Some("x-user-id")
        );
        assert_eq!(lookalike(&with("x_user_id"), &underscored, None), None);
    }
}
