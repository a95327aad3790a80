//! Reading claims the way rules and identity headers need them: by name or dotted path, and
//! as a set of string values.

use serde_json::{Map, Value};

/// The claim called `name`; a name that is not a top-level claim is read as a dotted path
/// into nested objects (`realm_access.roles`).
pub fn lookup<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    // A key may hold dots itself (a Kubernetes token's `kubernetes.io`): the longest key
    // that the claims have is tried first, then shorter ones.
    name.match_indices('.')
        .rev()
        .find_map(|(at, _)| match claims.get(&name[..at]) {
            Some(Value::Object(inner)) => lookup(inner, &name[at + 1..]),
            _ => None,
        })
}

/// The values a claim holds: an array's elements, numbers and booleans as their JSON text,
/// and a string as one value, or as its space-separated words when `space_separated` (the
/// `scope` convention of RFC 8693 §4.2 and RFC 9068 §2.2.3). A role of `"sales admin"` is
/// one role, not two.
pub fn values(value: &Value, space_separated: bool) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().filter_map(scalar).collect(),
        Value::String(s) if space_separated => s
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect(),
        other => scalar(other).into_iter().collect(),
    }
}

/// Claims whose string form is a space-separated list: `scope` (RFC 8693 §4.2) and `scp`
/// (the form many providers use for the same).
pub fn is_space_separated(claim: &str) -> bool {
    matches!(claim, "scope" | "scp")
}

/// RFC 6749 §3.3 `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`: no space, quote or
/// backslash, so a scope can be named in a `WWW-Authenticate` parameter as it is.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn lookup_top_level_dotted_and_url_names() {
        let c = claims(json!({
            "sub": "u1",
            "realm_access": {"roles": ["a", "b"]},
            "https://example.com/role": "admin"
        }));
        assert_eq!(lookup(&c, "sub"), Some(&json!("u1")));
        assert_eq!(lookup(&c, "realm_access.roles"), Some(&json!(["a", "b"])));
        assert_eq!(
            lookup(&c, "https://example.com/role"),
            Some(&json!("admin"))
        );
        assert_eq!(lookup(&c, "realm_access.missing"), None);
        assert_eq!(lookup(&c, "sub.x"), None);
    }

    #[test]
    fn values_of_each_shape() {
        assert_eq!(values(&json!("read  write"), true), vec!["read", "write"]);
        assert_eq!(values(&json!("sales admin"), false), vec!["sales admin"]);
        assert_eq!(
            values(&json!(["a", 1, true, {"x": 1}]), true),
            vec!["a", "1", "true"]
        );
        assert_eq!(values(&json!(7), false), vec!["7"]);
        assert!(values(&json!(null), false).is_empty());
        assert!(is_space_separated("scope") && is_space_separated("scp"));
        assert!(!is_space_separated("role") && !is_space_separated("roles"));
    }
}

#[cfg(test)]
mod lookup_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_names_reach_nested_claims_and_keys_holding_dots() {
        // A Kubernetes service-account token's claims.
        let claims = json!({
            "sub": "system:serviceaccount:payments:api",
            "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "api"}},
            "a": {"b": {"c": 1}},
        });
        let claims = claims.as_object().expect("object");
        assert_eq!(
            lookup(claims, "kubernetes.io.namespace"),
            Some(&json!("payments"))
        );
        assert_eq!(
            lookup(claims, "kubernetes.io.serviceaccount.name"),
            Some(&json!("api"))
        );
        assert_eq!(lookup(claims, "a.b.c"), Some(&json!(1)));
        assert_eq!(lookup(claims, "kubernetes.io"), claims.get("kubernetes.io"));
        for absent in [
            "kubernetes",
            "kubernetes.io.pod",
            "a.c",
            "a.b.c.d",
            ".",
            "a.",
        ] {
            assert_eq!(lookup(claims, absent), None, "{absent}");
        }
    }
}
