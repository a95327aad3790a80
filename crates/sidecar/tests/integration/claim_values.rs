//! How claim values are read: only `scope`/`scp` strings are space-separated lists, and an
//! array claim that cannot be carried in one header unambiguously is refused.

use crate::support::*;
use serde_json::json;

const RULES: &str = r#"
identity:
  headers:
    - {claim: sub, header: x-user-id}
    - {claim: groups, header: x-user-groups}
rules:
  - name: admin-role
    match: {path: {prefix: /admin/}}
    access:
      claims:
        - {claim: role, any_of: [admin]}
  - name: admin-scope
    match: {path: {prefix: /scoped/}}
    access:
      claims:
        - {claim: scope, any_of: [admin]}
  - name: listed-roles
    match: {path: {prefix: /listed/}}
    access:
      claims:
        - {claim: roles, any_of: [admin], space_separated: true}
"#;

#[tokio::test]
async fn only_scope_strings_are_lists() {
    let (_jwks, key, server) = start_with_key(RULES).await;
    let with = |name: &str, value: &str| {
        let mut c = claims("u1");
        c[name] = json!(value);
        key.token(&c)
    };
    // A role named "sales admin" is not the admin role.
    let response = server
        .check_token("/admin/x", &with("role", "sales admin"))
        .await;
    assert_eq!(denied_status(&response), Some(403), "{response:?}");
    allowed(&server.check_token("/admin/x", &with("role", "admin")).await);
    // A scope string is a list of scopes (RFC 8693 §4.2).
    allowed(
        &server
            .check_token("/scoped/x", &with("scope", "read admin"))
            .await,
    );
    let response = server
        .check_token("/scoped/x", &with("scope", "read admins"))
        .await;
    assert_eq!(denied_status(&response), Some(403), "{response:?}");
    // A rule may ask for a list where a provider encodes one as a string.
    allowed(
        &server
            .check_token("/listed/x", &with("roles", "sales admin"))
            .await,
    );
}

#[tokio::test]
async fn a_comma_inside_an_array_element_is_refused() {
    let (_jwks, key, server) = start_with_key(RULES).await;
    let mut c = claims("u1");
    c["groups"] = json!(["eng,admin"]);
    assert_invalid_token(
        &server.check_token("/api", &key.token(&c)).await,
        "token claims not usable",
    );
    c["groups"] = json!(["eng", "ops"]);
    let (set, _) = allowed(&server.check_token("/api", &key.token(&c)).await);
    assert_eq!(set["x-user-groups"], "eng,ops");
}
