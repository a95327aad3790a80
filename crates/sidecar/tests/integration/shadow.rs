//! Shadow mode: would-be denials are allowed, counted and logged, and identity headers are
//! still set only from a valid token. The most specific mode (rule, provider, top level)
//! applies, and a reload switches it.

use crate::support::*;
use serde_json::json;

const RULES: &str = r#"
mode: shadow
rules:
  - name: admin
    match: {path: {prefix: /admin/}}
    access:
      claims:
        - {claim: role, any_of: [admin]}
  - name: billing
    match: {path: {prefix: /billing/}}
    mode: enforce
    access: authenticated
"#;

const SPOOF: [(&str, &str); 3] = [
    ("x-user-id", "forged"),
    ("x-user-role", "admin"),
    ("x-user-name", "root"),
];

/// Only the anonymous marker: no identity header set.
fn anonymous(set: &std::collections::HashMap<String, String>) -> bool {
    set.len() == 1 && set.get("x-user-anonymous").map(String::as_str) == Some("true")
}

fn removed_all_identity(removed: &[String]) -> bool {
    ["x-user-id", "x-user-name", "x-user-role"]
        .iter()
        .all(|h| removed.iter().any(|r| r == h))
}

fn shadow_count(metrics: &str, reason: &str, rule: &str) -> u64 {
    metric(
        metrics,
        "jwt_authz_shadow_denials_total",
        &[("reason", reason), ("rule", rule)],
    )
}

#[tokio::test]
async fn would_be_denials_pass_without_identity_and_are_counted() {
    let (_jwks, key, server) = start_with_key(RULES).await;
    // No token, with forged identity headers: allowed, and every identity header removed.
    let response = server.check(request("GET", "/api/x", &SPOOF)).await;
    let (set, removed) = allowed(&response);
    assert!(anonymous(&set), "{set:?}");
    assert!(removed_all_identity(&removed), "{removed:?}");
    // A token with a bad signature: the same, never its claims.
    let forged = TestKey::rsa("k1").token(&claims("mallory"));
    let response = server
        .check(request(
            "GET",
            "/api/x",
            &[("authorization", &format!("Bearer {forged}")), SPOOF[0]],
        ))
        .await;
    let (set, removed) = allowed(&response);
    assert!(anonymous(&set), "{set:?}");
    assert!(removed.contains(&"x-user-id".to_owned()));
    assert!(
        removed.contains(&"authorization".to_owned()),
        "the token is still stripped"
    );
    // A valid token that lacks the admin role: allowed with its own (true) identity.
    let (set, _) = allowed(
        &server
            .check_token("/admin/x", &key.token(&claims("u1")))
            .await,
    );
    assert_eq!(set["x-user-id"], "u1");
    assert_eq!(set["x-user-role"], "user");

    let (_, metrics) = server.admin_get("/metrics").await;
    assert_eq!(
        shadow_count(&metrics, "missing_token", "default"),
        1,
        "{metrics}"
    );
    assert_eq!(
        shadow_count(&metrics, "bad_signature", "default"),
        1,
        "{metrics}"
    );
    assert_eq!(
        shadow_count(&metrics, "insufficient_claims", "admin"),
        1,
        "{metrics}"
    );
    assert!(
        metrics
            .contains("jwt_authz_checks_total{front_end=\"grpc\",result=\"shadow_allow\",reason=\"missing_token\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_most_specific_mode_applies() {
    let (_jwks, _key, server) = start_with_key(RULES).await;
    // The billing rule enforces despite the top-level shadow.
    let response = server.check(request("GET", "/billing/x", &[])).await;
    assert_eq!(denied_status(&response), Some(401));

    // Top level enforce, provider shadow: a verified token of that provider is let through
    // (insufficient claims), a request without a token is not (no provider applies).
    let yaml = "    mode: shadow\nrules:\n  - name: admin\n    match: {path: {prefix: /admin/}}\n    access:\n      claims:\n        - {claim: role, any_of: [admin]}\n";
    let (_jwks2, key2, provider_shadow) = start_with_key(yaml).await;
    allowed(
        &provider_shadow
            .check_token("/admin/x", &key2.token(&claims("u1")))
            .await,
    );
    let response = provider_shadow.check(request("GET", "/admin/x", &[])).await;
    assert_eq!(denied_status(&response), Some(401));
}

#[tokio::test]
async fn a_reload_switches_shadow_to_enforce() {
    let (jwks, key, server) = start_with_key(RULES).await;
    allowed(&server.check(request("GET", "/admin/x", &[])).await);
    let enforce = config_yaml(&jwks.url(), &RULES.replace("mode: shadow\n", ""));
    server
        .server
        .reload(jwt_authz::Config::from_yaml(&enforce).expect("config"))
        .await
        .expect("reload");
    let response = server.check(request("GET", "/admin/x", &[])).await;
    assert_eq!(denied_status(&response), Some(401));
    let mut admin = claims("a1");
    admin["role"] = json!("admin");
    allowed(&server.check_token("/admin/x", &key.token(&admin)).await);
}

#[tokio::test]
async fn a_path_that_cannot_be_read_is_refused_even_in_shadow_mode() {
    let (_jwks, key, server) = start_with_key(RULES).await;
    let token = key.token(&claims("u1"));
    // The billing rule enforces; a client that garbles the path (an escaped slash, a path
    // parameter the upstream may route on, dot-segments past the root) must not reach it
    // anonymously through the top-level shadow mode, with or without a token, nor any other
    // route: no rule is known for a path that cannot be read.
    for target in ["/billing%2Fsecret", "/billing;x/secret", "/api/x%2Fy"] {
        let response = server.check(request("GET", target, &SPOOF)).await;
        assert_eq!(denied_status(&response), Some(400), "{target}");
        let response = server.check_token(target, &token).await;
        assert_eq!(denied_status(&response), Some(400), "{target} with a token");
    }
    // A readable path still follows its mode: shadow outside billing.
    allowed(&server.check(request("GET", "/api/x", &SPOOF)).await);
}
