//! The HTTP authorization port: Envoy/Istio HTTP ext_authz and the forward-auth endpoints
//! answer from the same runtime as the gRPC port, with the same denials, and a forward-auth
//! decision is about the request the proxy's own headers describe, nothing a client sets.

use crate::support::{
    PATH_RULES, TestKey, TestServer, claims, denial, metric, request_with, start_with_key,
};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const HOST_RULES: &str = r#"
  - name: internal-host
    match: {hosts: [internal.test]}
    access: deny
"#;

async fn start() -> (crate::support::JwksServer, TestKey, TestServer) {
    start_with_key(&format!("{PATH_RULES}{HOST_RULES}")).await
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ascii"))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

async fn send(server: &TestServer, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let client = reqwest::Client::new();
    let mut builder = client.request(
        method.parse().expect("method"),
        format!("http://{}{path}", server.http),
    );
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = builder
        .send()
        .await
        .expect("HTTP authorization port answers");
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.expect("body"),
    }
}

/// `jwt_authz_checks_total` for one front end, result and reason.
fn checks(metrics: &str, front_end: &str, result: &str, reason: &str) -> u64 {
    metric(
        metrics,
        "jwt_authz_checks_total",
        &[
            ("front_end", front_end),
            ("result", result),
            ("reason", reason),
        ],
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn ext_authz_allows_with_identity_and_names_what_envoy_must_remove() {
    let (_jwks, key, server) = start().await;
    let mut no_role = claims("u-1");
    no_role.as_object_mut().expect("object").remove("role");
    let auth = bearer(&key.token(&no_role));
    let answer = send(
        &server,
        "POST",
        "/ext-authz/api/orders?page=2",
        &[("authorization", &auth), ("x-user-role", "admin")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.header("x-user-id"), Some("u-1"));
    assert_eq!(answer.header("x-user-name"), Some("u-1-name"));
    // The role the token lacks, and the token itself, are removed upstream.
    let removed: Vec<&str> = answer
        .header("x-envoy-auth-headers-to-remove")
        .expect("removal list")
        .split(',')
        .collect();
    assert_eq!(
        removed,
        ["x-user-role", "x-user-anonymous", "authorization"]
    );
    assert_eq!(answer.header("x-user-role"), None);

    // A public route: every identity header a client might send is removed.
    let answer = send(
        &server,
        "GET",
        "/ext-authz/public/doc",
        &[("x-user-id", "admin")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-user-id"), None);
    assert_eq!(
        answer.header("x-envoy-auth-headers-to-remove"),
        Some("x-user-id,x-user-name,x-user-role")
    );
}

#[tokio::test]
async fn ext_authz_denials_match_the_grpc_answer() {
    let (_jwks, key, server) = start().await;
    let user = bearer(&key.token(&claims("u-1")));
    let expired = {
        let mut c = claims("u-1");
        c["exp"] = json!(crate::support::now() - 600);
        bearer(&key.token(&c))
    };
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: [Case; 5] = [
        ("GET", "/api/orders", vec![], 401),
        (
            "GET",
            "/api/users",
            vec![("authorization", user.as_str())],
            403,
        ),
        (
            "GET",
            "/api/orders",
            vec![("authorization", expired.as_str())],
            401,
        ),
        ("GET", "/public/..%2Fapi%2Fusers", vec![], 400),
        ("GET", "/x", vec![("host", "internal.test")], 403),
    ];
    for (method, path, headers, status) in cases {
        let http = send(&server, method, &format!("/ext-authz{path}"), &headers).await;
        assert_eq!(http.status.as_u16(), status, "{path}: {}", http.body);
        let host = headers
            .iter()
            .find(|(k, _)| *k == "host")
            .map_or("api.test", |(_, v)| *v);
        let grpc = server
            .check(request_with(
                method,
                path,
                host,
                &headers,
                Default::default(),
            ))
            .await;
        let (grpc_headers, grpc_body) = denial(&grpc);
        assert_eq!(http.json(), grpc_body, "{path}");
        for name in ["www-authenticate", "content-type", "cache-control"] {
            assert_eq!(
                http.header(name),
                grpc_headers.get(name).map(String::as_str),
                "{path}: {name}"
            );
        }
    }
}

#[tokio::test]
async fn ext_authz_reads_the_method_and_only_paths_under_its_prefix() {
    let (_jwks, key, server) = start_with_key(
        r#"
rules:
  - name: read-only-docs
    match: {path: {prefix: /docs/}, methods: [GET, HEAD]}
    access: public
"#,
    )
    .await;
    assert_eq!(
        send(&server, "GET", "/ext-authz/docs/a", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&server, "HEAD", "/ext-authz/docs/a", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&server, "DELETE", "/ext-authz/docs/a", &[])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // Not under the prefix (segment-wise), or the prefix itself: nothing is decided.
    for path in ["/docs/a", "/ext-authzdocs/a", "/"] {
        assert_eq!(
            send(&server, "GET", path, &[]).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let answer = send(&server, "GET", "/ext-authz?x=1", &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error_description"], "ambiguous request path");
    let token = bearer(&key.token(&claims("u-2")));
    assert_eq!(
        send(&server, "GET", "/ext-authz/", &[("authorization", &token)])
            .await
            .status,
        StatusCode::OK
    );
}

fn forwarded<'a>(method: &'a str, uri: &'a str, host: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("x-forwarded-method", method),
        ("x-forwarded-uri", uri),
        ("x-forwarded-host", host),
    ]
}

#[tokio::test]
async fn forward_auth_decides_the_request_its_headers_describe() {
    let (_jwks, key, server) = start().await;
    let admin_claims = {
        let mut c = claims("root");
        c["role"] = json!("admin");
        c
    };
    let admin = bearer(&key.token(&admin_claims));
    let user = bearer(&key.token(&claims("u-1")));

    let mut headers = forwarded("GET", "/api/users", "api.test");
    headers.push(("authorization", &admin));
    let answer = send(&server, "GET", "/forward-auth", &headers).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.header("x-user-id"), Some("root"));
    assert_eq!(answer.header("x-user-role"), Some("admin"));

    // The endpoint's own method and query say nothing about the original request.
    let mut headers = forwarded("GET", "/api/users", "api.test");
    headers.push(("authorization", &user));
    let answer = send(&server, "POST", "/forward-auth?uri=/public/x", &headers).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.json()["error"], "insufficient_scope");

    let answer = send(
        &server,
        "GET",
        "/forward-auth",
        &forwarded("GET", "/api/users", "api.test"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer realm=\"test\"")
    );

    // Host rules read X-Forwarded-Host.
    let mut headers = forwarded("GET", "/x", "internal.test:443");
    headers.push(("authorization", &admin));
    assert_eq!(
        send(&server, "GET", "/forward-auth", &headers).await.status,
        StatusCode::FORBIDDEN
    );
    // The path checks apply to the forwarded URI.
    let answer = send(
        &server,
        "GET",
        "/forward-auth",
        &forwarded("GET", "/public/..%2Fapi%2Fusers", "api.test"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn forward_auth_identity_headers_are_all_present_empty_when_not_supplied() {
    let (_jwks, key, server) = start().await;
    let mut no_name = claims("u-1");
    no_name.as_object_mut().expect("object").remove("username");
    let auth = bearer(&key.token(&no_name));
    let mut headers = forwarded("GET", "/x", "api.test");
    headers.push(("authorization", &auth));
    let answer = send(&server, "GET", "/forward-auth", &headers).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-user-id"), Some("u-1"));
    assert_eq!(answer.header("x-user-name"), Some(""));
    assert_eq!(answer.header("x-envoy-auth-headers-to-remove"), None);

    let answer = send(
        &server,
        "GET",
        "/forward-auth",
        &forwarded("GET", "/public/a", "api.test"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    for name in ["x-user-id", "x-user-name", "x-user-role"] {
        assert_eq!(answer.header(name), Some(""), "{name}");
    }
}

#[tokio::test]
async fn a_client_sent_original_uri_cannot_pick_the_decided_path() {
    let (_jwks, _key, server) = start().await;
    // Through Traefik or Caddy (x-forwarded family): a client's X-Original-URI is just a
    // header.
    let mut headers = forwarded("GET", "/api/orders", "api.test");
    headers.extend([
        ("x-original-uri", "/public/a"),
        ("x-original-method", "GET"),
    ]);
    assert_eq!(
        send(&server, "GET", "/forward-auth", &headers).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Through nginx (x-original family): a client's X-Forwarded-Uri is just a header.
    let headers = [
        ("x-original-method", "GET"),
        ("x-original-uri", "/api/orders"),
        ("x-original-host", "api.test"),
        ("x-forwarded-uri", "/public/a"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "api.test"),
    ];
    assert_eq!(
        send(&server, "GET", "/auth-request", &headers).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A proxy that appends to the client's copy instead of overwriting it: two values,
    // refused, whichever comes first.
    for order in [["/public/a", "/api/orders"], ["/api/orders", "/public/a"]] {
        let headers = [
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", order[0]),
            ("x-forwarded-uri", order[1]),
            ("x-forwarded-host", "api.test"),
        ];
        let answer = send(&server, "GET", "/forward-auth", &headers).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            answer.json()["error_description"],
            "original request not described"
        );
    }
    // A proxy that sets nothing: refused, not decided as the endpoint's own path.
    let answer = send(&server, "GET", "/auth-request", &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);

    let (_, metrics) = server.admin_get("/metrics").await;
    let count =
        |front_end: &str, result: &str, reason: &str| checks(&metrics, front_end, result, reason);
    assert_eq!(
        count("forward_auth", "deny", "missing_token"),
        2,
        "{metrics}"
    );
    assert_eq!(
        count("forward_auth", "deny", "bad_forwarded_request"),
        3,
        "{metrics}"
    );
    assert_eq!(count("grpc", "deny", "missing_token"), 0, "{metrics}");
}

#[tokio::test]
async fn metrics_label_each_front_end() {
    let (_jwks, key, server) = start().await;
    let auth = bearer(&key.token(&claims("u-1")));
    let mut headers = forwarded("GET", "/x", "api.test");
    headers.push(("authorization", &auth));
    send(&server, "GET", "/forward-auth", &headers).await;
    send(&server, "GET", "/ext-authz/x", &[("authorization", &auth)]).await;
    send(&server, "GET", "/ext-authz/x", &[("authorization", &auth)]).await;
    server.check_token("/x", &auth["Bearer ".len()..]).await;
    let (_, metrics) = server.admin_get("/metrics").await;
    let count = |front_end: &str, reason: &str| checks(&metrics, front_end, "allow", reason);
    assert_eq!(count("forward_auth", "verified"), 1, "{metrics}");
    assert_eq!(count("http", "cached"), 2, "{metrics}");
    assert_eq!(count("grpc", "cached"), 1, "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "jwt_authz_check_duration_seconds_count",
            &[("front_end", "http")]
        ),
        2
    );
}

#[tokio::test]
async fn endpoints_follow_the_configuration_and_can_be_turned_off() {
    let (_jwks, _key, server) = start_with_key(
        r#"
http:
  ext_authz_prefix: null
  forward_auth:
    - {path: /authz/caddy, headers: x-forwarded}
"#,
    )
    .await;
    assert_eq!(
        send(&server, "GET", "/ext-authz/x", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(
            &server,
            "GET",
            "/forward-auth",
            &forwarded("GET", "/x", "a")
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&server, "GET", "/authz/caddy", &forwarded("GET", "/x", "a"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_before_any_decision() {
    let (_jwks, _key, server) = start().await;
    let many: Vec<(String, String)> = (0..150)
        .map(|i| (format!("x-filler-{i}"), "v".to_owned()))
        .collect();
    let headers: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let answer = send(&server, "GET", "/ext-authz/x", &headers).await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let (_, metrics) = server.admin_get("/metrics").await;
    assert_eq!(
        metric(&metrics, "jwt_authz_checks_total", &[("front_end", "http")]),
        0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_garbled_forward_auth_request_is_refused_even_in_shadow_mode() {
    let (_jwks, _key, server) = start_with_key(
        r#"
mode: shadow
rules:
  - name: admin
    match: {path: {prefix: /admin/}}
    access: deny
    mode: enforce
"#,
    )
    .await;
    // Shadow mode lets a described request through...
    assert_eq!(
        send(
            &server,
            "GET",
            "/forward-auth",
            &forwarded("GET", "/x", "a.test")
        )
        .await
        .status,
        StatusCode::OK
    );
    // ...but not one whose description a client could have garbled: no rule is known, and
    // it might have been about /admin/.
    let mut twice = forwarded("GET", "/admin/x", "a.test");
    twice.push(("x-forwarded-uri", "/x"));
    let answer = send(&server, "GET", "/forward-auth", &twice).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.header("x-user-id"), None);
}

/// Every spelling of a host is the host its rules name, through every front end: the
/// `internal.test` deny rule holds for its uppercase, trailing-dot and ported spellings. A
/// host that is not one host, and an identity header in another spelling, are refused with
/// 400 and counted under their own reasons.
#[tokio::test]
async fn hosts_are_judged_canonical_and_lookalike_identity_headers_are_refused() {
    let (_jwks, key, server) = start().await;
    let auth = bearer(&key.token(&claims("u-1")));
    let grpc = |host: &str, headers: &[(&str, &str)]| {
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        request_with("GET", "/api/orders", host, &all, Default::default())
    };
    for host in [
        "internal.test",
        "INTERNAL.test.",
        "internal.test.:8443",
        "Internal.Test:80",
    ] {
        let response = server.check(grpc(host, &[])).await;
        assert_eq!(
            crate::support::denied_status(&response),
            Some(403),
            "grpc {host}"
        );
        let mut headers = forwarded("GET", "/api/orders", host);
        headers.push(("authorization", &auth));
        let answer = send(&server, "GET", "/forward-auth", &headers).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "forward-auth {host}");
        let answer = send(
            &server,
            "GET",
            "/ext-authz/api/orders",
            &[("authorization", &auth), ("host", host)],
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "ext_authz {host}");
    }
    for host in [
        "internal.test..",
        "u@internal.test",
        "internal%2Etest",
        "[::1",
    ] {
        let response = server.check(grpc(host, &[])).await;
        assert_eq!(
            crate::support::denied_status(&response),
            Some(400),
            "grpc {host}"
        );
        let (_, body) = denial(&response);
        assert_eq!(body["error_description"], "invalid host", "grpc {host}");
        let mut headers = forwarded("GET", "/api/orders", host);
        headers.push(("authorization", &auth));
        let answer = send(&server, "GET", "/forward-auth", &headers).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "forward-auth {host}"
        );
    }
    // A valid host and token, and another spelling of x-user-id or x-user-role: refused on
    // a route any token passes, with the token's identity or without.
    for name in ["x_user_id", "x-user_role", "x.user-id"] {
        let response = server.check(grpc("api.test", &[(name, "admin")])).await;
        assert_eq!(
            crate::support::denied_status(&response),
            Some(400),
            "grpc {name}"
        );
        let (_, body) = denial(&response);
        assert_eq!(
            body["error_description"], "identity header in another spelling",
            "grpc {name}"
        );
        let mut headers = forwarded("GET", "/public/doc", "api.test");
        headers.push((name, "admin"));
        let answer = send(&server, "GET", "/forward-auth", &headers).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "forward-auth {name}"
        );
        assert_eq!(answer.header("x-user-id"), None, "forward-auth {name}");
        let answer = send(
            &server,
            "GET",
            "/ext-authz/api/orders",
            &[("authorization", &auth), (name, "admin")],
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "ext_authz {name}");
    }
    // The header's own spelling is overwritten as always, not refused.
    let response = server
        .check(grpc("api.test", &[("x-user-id", "admin")]))
        .await;
    assert_eq!(crate::support::grpc_code(&response), 0);

    let (_, metrics) = server.admin_get("/metrics").await;
    let count = |front_end: &str, reason: &str| checks(&metrics, front_end, "deny", reason);
    assert_eq!(count("grpc", "invalid_host"), 4, "{metrics}");
    assert_eq!(count("grpc", "lookalike_identity_header"), 3, "{metrics}");
    assert_eq!(
        count("forward_auth", "lookalike_identity_header"),
        3,
        "{metrics}"
    );
    assert_eq!(count("http", "lookalike_identity_header"), 3, "{metrics}");
}

/// Shadow mode lets denials through, but not a request carrying a lookalike identity
/// header: the app might read it as the identity header.
#[tokio::test]
async fn a_lookalike_identity_header_is_refused_even_in_shadow_mode() {
    let (_jwks, _key, server) = start_with_key("mode: shadow\n").await;
    let mut headers = forwarded("GET", "/api/orders", "a.test");
    let answer = send(&server, "GET", "/forward-auth", &headers).await;
    assert_eq!(answer.status, StatusCode::OK, "shadow mode allows");
    headers.push(("x_user_id", "admin"));
    let answer = send(&server, "GET", "/forward-auth", &headers).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.header("x-user-id"), None);
}
