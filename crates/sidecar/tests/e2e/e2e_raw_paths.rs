//! Through a real Envoy configured as a new user might: `normalize_path: false`,
//! `merge_slashes: false`, escaped slashes kept. Envoy forwards every path as the client
//! sent it, so only jwt-authz stands between a crafted path and the rule it should meet.
//! Requests are written on a raw socket: an HTTP client library would resolve the
//! dot-segments before sending.

use std::time::{Duration, Instant};

use crate::support::envoy::{Envoy, echo_upstream};
use crate::support::*;
use serde_json::json;

async fn stack() -> (TestKey, JwksServer, TestServer, Envoy) {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let authz = TestServer::start_ready(&config_yaml(&jwks.url(), PATH_RULES)).await;
    let upstream = echo_upstream().await;
    let envoy = Envoy::start(authz.grpc.port(), upstream);
    // The first request also waits for Envoy's connection to jwt-authz.
    let start = Instant::now();
    while envoy.get("/public/ping", None).await.0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "Envoy never passed a request"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (key, jwks, authz, envoy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_alone_refuses_crafted_paths() {
    let (key, _jwks, _authz, envoy) = stack().await;

    // No token: a public prefix followed by a dot-segment is not public.
    for target in [
        "/public/../api/users",
        "/public/%2e%2e/api/users",
        "/public/x/../../secret",
    ] {
        let (status, body) = envoy.get(target, None).await;
        assert_eq!(status, 401, "{target}: {body}");
        assert_eq!(
            body["error_description"], "bearer token required",
            "{target}"
        );
    }
    // Escaped slashes and other ambiguous forms: 400 from jwt-authz itself (its JSON body,
    // not an Envoy error page), on public and protected routes alike.
    let user = key.token(&claims("u1"));
    for (target, token) in [
        ("/public/%2F../api/users", None),
        ("/public/..%2Fapi/users", None),
        ("/public/..%5Capi/users", None),
        // Envoy's HTTP/1 parser lets a raw backslash through.
        ("/public\\..\\api/users", None),
        ("/public/..;/api/users", None),
        // Java servers read /api;x/users as /api/users.
        ("/api;x/users", Some(user.as_str())),
        ("/public/../../etc/passwd", None),
        ("/api%2Fusers", Some(user.as_str())),
        ("/api/x/..%2F..%2Fusers", Some(user.as_str())),
    ] {
        let (status, body) = envoy.get(target, token).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert_eq!(body["error"], "invalid_request", "{target}");
        assert_eq!(
            body["error_description"], "ambiguous request path",
            "{target}"
        );
    }
    // A plain user's token does not reach the admin-only route through doubled slashes or
    // escaped letters.
    for target in ["//api/users", "/api//users", "/api/%75sers", "/api/./users"] {
        let (status, body) = envoy.get(target, Some(&user)).await;
        assert_eq!(status, 403, "{target}: {body}");
        assert_eq!(body["error"], "insufficient_scope", "{target}");
    }
    let mut admin = claims("a1");
    admin["role"] = json!("admin");
    let (status, body) = envoy.get("/api//users", Some(&key.token(&admin))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "a1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_paths_reach_the_upstream_unchanged() {
    let (key, _jwks, _authz, envoy) = stack().await;
    let user = key.token(&claims("u1"));
    for (target, token) in [
        ("/public/a%20b", None),
        // Envoy forwards dot-segments untouched (this Envoy normalises nothing); jwt-authz
        // decided on /public/y, and the path stays what the client sent.
        ("/public/x/./../y", None),
        ("/public/~user/caf%C3%A9", None),
        ("/public/%E2%9C%93?q=%2F..%2F&x=1", None),
        ("/docs/%7Euser/report.pdf", Some(user.as_str())),
        ("/data/caf%c3%a9/x", Some(user.as_str())),
    ] {
        let (status, body) = envoy.get(target, token).await;
        assert_eq!(status, 200, "{target}: {body}");
        assert_eq!(body["path"], target, "the upstream saw another path");
        // Forged identity never passes: set from the token, or removed without one.
        assert_eq!(body["user"], json!(token.map(|_| "u1")), "{target}");
        assert_eq!(body["role"], json!(token.map(|_| "user")), "{target}");
    }
}
