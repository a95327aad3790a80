//! The allow/deny matrix through the real gRPC server: identity headers, route rules, token
//! sources and the shape of every denial.

use std::collections::HashMap;

use crate::support::*;
use envoy_types::pb::google::protobuf::value::Kind;
use serde_json::json;

const RULES: &str = r#"
rules:
  - name: health
    match: {path: {exact: /healthz}}
    access: public
  - name: docs
    match: {path: {prefix: /docs/}, methods: [GET]}
    access: public
  - name: admin
    match: {path: {prefix: /api/users}, methods: [GET]}
    access:
      claims:
        - {claim: role, any_of: [admin]}
  - name: orders-write
    match: {path: {regex: "/api/orders/[0-9]+"}, methods: [PUT, DELETE]}
    access:
      claims:
        - {claim: scope, all_of: ["orders:write", "orders:read"]}
  - name: tenant
    match: {path: {prefix: /tenant}, hosts: [acme.test]}
    access:
      claims:
        - {claim: org.id, equals: 7}
  - name: internal
    match: {context_extensions: {zone: internal}}
    access: deny
"#;

#[tokio::test]
async fn valid_token_is_allowed_with_identity_headers() {
    let (_jwks, key, server) = start_with_key(RULES).await;
    let response = server
        .check_token("/api/orders", &key.token(&claims("u-42")))
        .await;
    let (set, removed) = allowed(&response);
    assert_eq!(set.get("x-user-id").map(String::as_str), Some("u-42"));
    assert_eq!(
        set.get("x-user-name").map(String::as_str),
        Some("u-42-name")
    );
    assert_eq!(set.get("x-user-role").map(String::as_str), Some("user"));
    // The token itself does not travel upstream (strip_authorization defaults to true), nor
    // does a claim of anonymity.
    assert_eq!(
        removed,
        vec!["x-user-anonymous".to_string(), "authorization".to_string()]
    );
    assert!(!set.contains_key("x-user-anonymous"));
}

#[tokio::test]
async fn every_supported_algorithm_verifies() {
    let keys = [
        TestKey::rsa("rs"),
        TestKey::rsa_pss("ps"),
        TestKey::ec256("es"),
        TestKey::ed25519("ed"),
    ];
    let jwks = JwksServer::start(keys.iter().map(TestKey::jwk).collect()).await;
    let server = TestServer::start_ready(&config_yaml(&jwks.url(), "")).await;
    for key in &keys {
        let response = server.check_token("/x", &key.token(&claims(key.alg))).await;
        let (set, _) = allowed(&response);
        assert_eq!(set["x-user-id"], key.alg);
    }
}

#[tokio::test]
async fn missing_token_is_401_without_error_attribute() {
    let (_jwks, _key, server) = start_with_key(RULES).await;
    let response = server.check(request("GET", "/api/orders", &[])).await;
    assert_eq!(denied_status(&response), Some(401));
    assert_eq!(grpc_code(&response), 16);
    let (headers, body) = denial(&response);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"test\"");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["error_description"], "bearer token required");
}

#[tokio::test]
async fn client_sent_identity_headers_are_overwritten_or_removed() {
    let (_jwks, key, server) = start_with_key(RULES).await;
    let mut c = claims("u-1");
    c.as_object_mut().map(|o| o.remove("username"));
    let token = key.token(&c);
    let auth = format!("Bearer {token}");
    let response = server
        .check(request(
            "GET",
            "/api/orders",
            &[
                ("authorization", &auth),
                ("x-user-id", "admin"),
                ("x-user-name", "root"),
                ("x-user-role", "admin"),
            ],
        ))
        .await;
    let (set, removed) = allowed(&response);
    assert_eq!(set["x-user-id"], "u-1");
    assert_eq!(set["x-user-role"], "user");
    // The anonymous marker goes too: this request has an identity.
    assert_eq!(
        removed,
        vec![
            "x-user-name".to_string(),
            "x-user-anonymous".to_string(),
            "authorization".to_string()
        ]
    );
}

#[tokio::test]
async fn public_route_without_token_strips_all_identity_headers() {
    let (_jwks, _key, server) = start_with_key(RULES).await;
    let response = server
        .check(request(
            "GET",
            "/healthz",
            &[("x-user-id", "admin"), ("x-user-role", "admin")],
        ))
        .await;
    let (set, mut removed) = allowed(&response);
    // No identity: the upstream is told so.
    assert_eq!(set.len(), 1);
    assert_eq!(
        set.get("x-user-anonymous").map(String::as_str),
        Some("true")
    );
    removed.sort();
    assert_eq!(removed, vec!["x-user-id", "x-user-name", "x-user-role"]);
}

#[tokio::test]
async fn public_route_still_verifies_a_presented_token() {
    let (_jwks, key, server) = start_with_key(RULES).await;
    let response = server
        .check_token("/docs/a", &key.token(&claims("u-7")))
        .await;
    let (set, _) = allowed(&response);
    assert_eq!(set["x-user-id"], "u-7");

    let mut expired = claims("u-7");
    expired["exp"] = json!(now() - 3600);
    let response = server.check_token("/docs/a", &key.token(&expired)).await;
    assert_invalid_token(&response, "token expired");

    // Public only for GET: a POST needs a token.
    let response = server.check(request("POST", "/docs/a", &[])).await;
    assert_eq!(denied_status(&response), Some(401));
}

#[tokio::test]
async fn role_rule_gives_403_insufficient_scope() {
    let (_jwks, key, server) = start_with_key(RULES).await;
    let response = server
        .check_token("/api/users", &key.token(&claims("u-1")))
        .await;
    assert_eq!(denied_status(&response), Some(403));
    assert_eq!(grpc_code(&response), 7, "PERMISSION_DENIED");
    let (headers, body) = denial(&response);
    assert_eq!(body["error"], "insufficient_scope");
    assert!(headers["www-authenticate"].contains("error=\"insufficient_scope\""));

    let mut admin = claims("boss");
    admin["role"] = json!("admin");
    let (set, _) = allowed(&server.check_token("/api/users", &key.token(&admin)).await);
    assert_eq!(set["x-user-role"], "admin");

    // The rule is for GET only; other methods fall through to "authenticated".
    let auth = format!("Bearer {}", key.token(&claims("u-1")));
    let response = server
        .check(request("POST", "/api/users", &[("authorization", &auth)]))
        .await;
    allowed(&response);
}

#[tokio::test]
async fn scope_all_of_and_regex_path() {
    let (_jwks, key, server) = start_with_key(RULES).await;
    let put = |scope: &str| {
        let mut c = claims("u-1");
        c["scope"] = json!(scope);
        let auth = format!("Bearer {}", key.token(&c));
        request(
            "PUT",
            "/api/orders/12?x=1",
            &[("authorization", auth.as_str())],
        )
    };
    allowed(&server.check(put("orders:read orders:write profile")).await);
    let response = server.check(put("orders:read")).await;
    assert_eq!(denied_status(&response), Some(403));
    // Regex matches the whole path only.
    let auth = format!("Bearer {}", key.token(&claims("u-1")));
    allowed(
        &server
            .check(request(
                "PUT",
                "/api/orders/12/items",
                &[("authorization", &auth)],
            ))
            .await,
    );
}

#[tokio::test]
async fn host_and_equals_rule() {
    let (_jwks, key, server) = start_with_key(RULES).await;
    let check = |org: serde_json::Value, host: &str| {
        let mut c = claims("u-1");
        c["org"] = json!({ "id": org });
        let auth = format!("Bearer {}", key.token(&c));
        request_with(
            "GET",
            "/tenant/x",
            host,
            &[("authorization", auth.as_str())],
            HashMap::new(),
        )
    };
    allowed(&server.check(check(json!(7), "acme.test:8080")).await);
    assert_eq!(
        denied_status(&server.check(check(json!(8), "acme.test")).await),
        Some(403)
    );
    // Another host: the rule does not apply, any valid token passes.
    allowed(&server.check(check(json!(8), "other.test")).await);
}

#[tokio::test]
async fn context_extension_deny_rule() {
    let (_jwks, key, server) = start_with_key(RULES).await;
    let auth = format!("Bearer {}", key.token(&claims("u-1")));
    let response = server
        .check(request_with(
            "GET",
            "/anything",
            "api.test",
            &[("authorization", &auth)],
            HashMap::from([("zone".to_owned(), "internal".to_owned())]),
        ))
        .await;
    assert_eq!(denied_status(&response), Some(403));
    assert_eq!(
        denial(&response).1["error_description"],
        "access to this route is denied"
    );
}

#[tokio::test]
async fn strip_authorization_and_dynamic_metadata() {
    let extra = "identity:\n  strip_authorization: true\n  dynamic_metadata: true\n";
    let (_jwks, key, server) = start_with_key(extra).await;
    let response = server.check_token("/x", &key.token(&claims("u-9"))).await;
    let (set, removed) = allowed(&response);
    assert_eq!(set["x-user-id"], "u-9");
    assert!(removed.contains(&"authorization".to_string()));
    let metadata = response.dynamic_metadata.expect("dynamic metadata");
    let Some(Kind::StructValue(claims)) = &metadata.fields["claims"].kind else {
        panic!("claims is not a struct");
    };
    assert_eq!(
        claims.fields["sub"].kind,
        Some(Kind::StringValue("u-9".into()))
    );
    assert_eq!(
        metadata.fields["provider"].kind,
        Some(Kind::StringValue("test".into()))
    );
}

#[tokio::test]
async fn configured_sources_cookie_query_and_header() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let yaml = config_yaml(&jwks.url(), "").replace(
        "    leeway: 5s\n",
        "    leeway: 5s\n    token_sources:\n      - cookie: session\n      - query: access_token\n      - header: {name: x-api-token, prefix: \"Token \"}\n",
    );
    let server = TestServer::start_ready(&yaml).await;
    let token = key.token(&claims("u-3"));
    let cookie = format!("a=b; session={token}");
    allowed(
        &server
            .check(request("GET", "/x", &[("cookie", &cookie)]))
            .await,
    );
    allowed(
        &server
            .check(request("GET", &format!("/x?access_token={token}"), &[]))
            .await,
    );
    let custom = format!("Token {token}");
    allowed(
        &server
            .check(request("GET", "/x", &[("x-api-token", &custom)]))
            .await,
    );
    // Bearer is not a source of this provider.
    let response = server.check_token("/x", &token).await;
    assert_eq!(denied_status(&response), Some(401));
}

#[tokio::test]
async fn request_without_http_attributes_is_a_grpc_error() {
    let (_jwks, _key, server) = start_with_key("").await;
    let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        format!("http://{}", server.grpc),
    )
    .await
    .expect("connect");
    let status = client
        .check(envoy_types::pb::envoy::service::auth::v3::CheckRequest::default())
        .await
        .expect_err("no attributes");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn metrics_count_checks_and_cache() {
    let (_jwks, key, server) = start_with_key("").await;
    let token = key.token(&claims("u-1"));
    for _ in 0..3 {
        allowed(&server.check_token("/x", &token).await);
    }
    server.check(request("GET", "/x", &[])).await;
    let (status, text) = server.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "jwt_authz_checks_total{front_end=\"grpc\",result=\"allow\",reason=\"verified\"} 1",
        "jwt_authz_checks_total{front_end=\"grpc\",result=\"allow\",reason=\"cached\"} 2",
        "jwt_authz_checks_total{front_end=\"grpc\",result=\"deny\",reason=\"missing_token\"} 1",
        "jwt_authz_token_cache_lookups_total{result=\"hit\"} 2",
        "jwt_authz_token_cache_lookups_total{result=\"miss\"} 1",
        "jwt_authz_jwks_keys{provider=\"test\"} 1",
        "jwt_authz_check_duration_seconds_count{front_end=\"grpc\"} 4",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("jwt_authz_jwks_fetches_total{provider=\"test\",outcome=\"ok\"}"));
    assert!(text.contains("jwt_authz_jwks_key_set_age_seconds{provider=\"test\"}"));
    assert_eq!(server.admin_get("/healthz").await.0, 200);
}
