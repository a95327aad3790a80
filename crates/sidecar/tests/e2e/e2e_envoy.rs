//! End to end through the real Envoy binary: client → Envoy → jwt-authz → sample services,
//! with the issuer for login. Each test runs its own stack on free loopback ports.

use std::time::{Duration, Instant};

use crate::support::gateway::jwt_part;
use crate::support::stack::Stack;
use crate::support::{TestKey, now};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_then_every_service_answers_for_that_user() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let token = gw.login("bob", "bob-password").await;
    let sub = jwt_part(&token, 1)["sub"].as_str().expect("sub").to_owned();

    let (status, _, me) = gw.get("/api/users/me", Some(&token), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me, json!({"id": sub, "username": "bob", "role": "user"}));

    let created = reqwest::Client::new()
        .post(format!("{}/api/orders", gw.base))
        .bearer_auth(&token)
        .json(&json!({"item": "book", "quantity": 2}))
        .send()
        .await
        .expect("post");
    assert_eq!(created.status(), StatusCode::CREATED);
    let (status, _, orders) = gw.get("/api/orders", Some(&token), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(orders["owner"], sub.as_str());
    assert_eq!(orders["orders"][0]["item"], "book");

    let (status, _, feed) = gw.get("/api/feed/hierarchical", Some(&token), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(feed["viewer"]["id"], sub.as_str());

    let admin = gw.login("alice", "alice-password").await;
    let (status, _, users) = gw.get("/api/users", Some(&admin), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(users["users"].is_array());
    // alice's orders are not bob's.
    let (_, _, theirs) = gw.get("/api/orders", Some(&admin), &[]).await;
    assert_eq!(theirs["orders"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_401_and_403() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let (status, headers, body) = gw.get("/api/orders", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], crate::support::DEMO_CHALLENGE);
    assert_eq!(body["error_description"], "bearer token required");

    let bob = gw.login("bob", "bob-password").await;
    let (status, headers, body) = gw.get("/api/users", Some(&bob), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "insufficient_scope");
    assert!(
        headers["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains("error=\"insufficient_scope\"")
    );

    // Tokens signed with the issuer's real key but wrong in a claim, and a forged one.
    let ring = issuer::keys::KeyDir::new(stack.key_dir(), 2048)
        .expect("dir")
        .load()
        .expect("keys");
    let sign = |claims: &Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(ring.signer.entry.kid.clone());
        jsonwebtoken::encode(&header, claims, &ring.signer.encoding_key).expect("sign")
    };
    let mut good = jwt_part(&bob, 1);
    good["jti"] = json!("x");
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    expired["nbf"] = json!(now() - 7200);
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("another-api");
    let forged = TestKey::rsa(&ring.signer.entry.kid).token(&good);
    for (token, description) in [
        (sign(&expired), "token expired"),
        (sign(&wrong_aud), "invalid audience"),
        (forged, "invalid signature"),
    ] {
        let (status, headers, body) = gw.get("/api/orders", Some(&token), &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{description}");
        assert_eq!(body["error_description"], description);
        assert!(
            headers["www-authenticate"]
                .to_str()
                .expect("ascii")
                .contains("error=\"invalid_token\"")
        );
    }
    // The same claims signed properly pass: the denials above were about the claims.
    assert_eq!(
        gw.get("/api/orders", Some(&sign(&good)), &[]).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_identity_headers_never_reach_a_service() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let alice = gw.login("alice", "alice-password").await;
    let alice_sub = jwt_part(&alice, 1)["sub"].as_str().expect("sub").to_owned();
    let bob = gw.login("bob", "bob-password").await;
    let spoof = [
        ("x-user-id", alice_sub.as_str()),
        ("x-user-role", "admin"),
        ("x-user-name", "alice"),
    ];
    let (status, _, me) = gw.get("/api/users/me", Some(&bob), &spoof).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "bob");
    assert_eq!(me["role"], "user");
    assert_ne!(me["id"], alice_sub.as_str());
    assert_eq!(
        gw.get("/api/users", Some(&bob), &spoof).await.0,
        StatusCode::FORBIDDEN
    );
    // Without a token the spoofed headers get nothing at all.
    assert_eq!(
        gw.get("/api/users/me", None, &spoof).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_needs_no_token_even_with_a_bad_one() {
    let stack = Stack::start();
    let gw = stack.gateway();
    assert_eq!(gw.login_status_with_a_bad_token().await, StatusCode::OK);
    let (status, _, jwks) = gw.get("/.well-known/jwks.json", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotated_at_the_running_issuer_needs_no_restart() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let old = gw.login("bob", "bob-password").await;
    assert_eq!(
        gw.get("/api/orders", Some(&old), &[]).await.0,
        StatusCode::OK
    );

    let out = stack
        .issuer_command()
        .args([
            "keys",
            "rotate",
            "--kid",
            "rotated-key",
            "--key-publish-ahead",
            "0s",
        ])
        .output()
        .expect("issuer keys rotate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let start = Instant::now();
    let new = loop {
        let token = gw.login("bob", "bob-password").await;
        if jwt_part(&token, 0)["kid"] == "rotated-key" {
            break token;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "issuer did not pick up the rotation"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        gw.get("/api/orders", Some(&new), &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        gw.get("/api/orders", Some(&old), &[]).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_down_valid_tokens_still_pass() {
    let mut stack = Stack::start();
    let gw = stack.gateway();
    let used = gw.login("bob", "bob-password").await;
    let unused = gw.login("alice", "alice-password").await;
    assert_eq!(
        gw.get("/api/orders", Some(&used), &[]).await.0,
        StatusCode::OK
    );
    stack.stop("issuer");
    let (status, _, _) = gw.get("/api/orders", Some(&used), &[]).await;
    assert_eq!(status, StatusCode::OK);
    // Never seen by jwt-authz before: verified against the keys it holds.
    let (status, _, _) = gw.get("/api/users", Some(&unused), &[]).await;
    assert_eq!(status, StatusCode::OK);
    // Login itself is down, as expected.
    assert_eq!(
        gw.try_login("bob", "bob-password").await,
        Err(StatusCode::SERVICE_UNAVAILABLE)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_authz_down_fails_closed_and_recovers() {
    let mut stack = Stack::start();
    let gw = stack.gateway();
    let token = gw.login("bob", "bob-password").await;
    assert_eq!(
        gw.get("/api/orders", Some(&token), &[]).await.0,
        StatusCode::OK
    );

    stack.stop("jwt-authz");
    let (status, _, body) = gw.get("/api/orders", Some(&token), &[]).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "fails closed with status_on_error"
    );
    assert!(
        body.get("orders").is_none(),
        "the service must not answer: {body}"
    );
    assert_eq!(
        gw.get("/api/users/me", None, &[]).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    stack.start_authz();
    let status = gw
        .eventually(
            "/api/orders",
            Some(&token),
            StatusCode::OK,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "recovered once jwt-authz is back");
}

/// The demo walkthrough's two steps of issue 33, through Envoy to the sample services: an
/// opaque login works like a JWT one (jwt-authz asks the issuer's introspection endpoint,
/// once) and stops working after logout; the optional highlights route answers the
/// anonymous, the signed-in and the bearer of a bad token (served anonymously, the token kept
/// from the service) differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_login_and_an_optional_route_through_envoy() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let (status, body) = gw.login_opaque("bob", "bob-password", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let opaque = body["accessToken"].as_str().expect("token").to_owned();
    assert!(!opaque.contains('.'));
    let (status, _, me) = gw.get("/api/users/me", Some(&opaque), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "bob");
    let (status, _, _) = gw.get("/api/orders", Some(&opaque), &[]).await;
    assert_eq!(status, StatusCode::OK, "the cached answer");
    let calls = crate::support::admin_metric(
        stack.authz_admin,
        "jwt_authz_introspections_total",
        &[("outcome", "active")],
    )
    .await;
    assert_eq!(calls, 1);
    // Logged out (through Envoy): refused once the cached answer is gone (max_ttl 60s is
    // too long to wait here: a token never issued shows the same answer).
    assert_eq!(gw.logout(&opaque).await, StatusCode::NO_CONTENT);
    let (status, _, body) = gw
        .get("/api/users/me", Some("never-issued-opaque-token"), &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error_description"], "token not active");

    // The optional route.
    let (status, _, anonymous) = gw
        .get("/api/feed/highlights", None, &[("x-user-id", "forged")])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(anonymous["anonymous"], true);
    let jwt = gw.login("alice", "alice-password").await;
    let (status, _, signed_in) = gw.get("/api/feed/highlights", Some(&jwt), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(signed_in["anonymous"], false);
    assert_eq!(signed_in["viewer"]["username"], "alice");
    let (status, _, bad) = gw
        .get("/api/feed/highlights", Some("not.a.token"), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "on_invalid: anonymous");
    assert_eq!(bad["anonymous"], true);
}
