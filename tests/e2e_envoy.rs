//! End to end through the real Envoy binary: client → Envoy → jwt-authz → sample services,
//! with the issuer for login. Each test runs its own stack on free loopback ports.

mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::stack::Stack;
use support::{TestKey, now};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn login(stack: &Stack, user: &str, password: &str) -> String {
    let response = client()
        .post(format!("{}/auth/login", stack.base))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), StatusCode::OK, "login through Envoy");
    let body: Value = response.json().await.expect("json");
    body["accessToken"].as_str().expect("token").to_owned()
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("b64")).expect("json")
}

async fn get(
    stack: &Stack,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = client().get(format!("{}{path}", stack.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let response = req.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// Retries until `path` answers `want` (Envoy's health checks need a moment after a restart).
async fn eventually(
    stack: &Stack,
    path: &str,
    token: &str,
    want: StatusCode,
    within: Duration,
) -> StatusCode {
    let start = Instant::now();
    loop {
        let (status, _, _) = get(stack, path, Some(token), &[]).await;
        if status == want || start.elapsed() > within {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_then_every_service_answers_for_that_user() {
    let stack = Stack::start();
    let token = login(&stack, "bob", "bob-password").await;
    let sub = payload(&token)["sub"].as_str().expect("sub").to_owned();

    let (status, _, me) = get(&stack, "/api/users/me", Some(&token), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me, json!({"id": sub, "username": "bob", "role": "user"}));

    let created = client()
        .post(format!("{}/api/orders", stack.base))
        .bearer_auth(&token)
        .json(&json!({"item": "book", "quantity": 2}))
        .send()
        .await
        .expect("post");
    assert_eq!(created.status(), StatusCode::CREATED);
    let (status, _, orders) = get(&stack, "/api/orders", Some(&token), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(orders["owner"], sub.as_str());
    assert_eq!(orders["orders"][0]["item"], "book");

    let (status, _, feed) = get(&stack, "/api/feed/hierarchical", Some(&token), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(feed["viewer"]["id"], sub.as_str());

    let admin = login(&stack, "alice", "alice-password").await;
    let (status, _, users) = get(&stack, "/api/users", Some(&admin), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(users["users"].is_array());
    // alice's orders are not bob's.
    let (_, _, theirs) = get(&stack, "/api/orders", Some(&admin), &[]).await;
    assert_eq!(theirs["orders"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_401_and_403() {
    let stack = Stack::start();
    let (status, headers, body) = get(&stack, "/api/orders", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"jwt-authz-demo\""
    );
    assert_eq!(body["error_description"], "bearer token required");

    let bob = login(&stack, "bob", "bob-password").await;
    let (status, headers, body) = get(&stack, "/api/users", Some(&bob), &[]).await;
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
    let mut good = payload(&bob);
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
        let (status, headers, body) = get(&stack, "/api/orders", Some(&token), &[]).await;
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
        get(&stack, "/api/orders", Some(&sign(&good)), &[]).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_identity_headers_never_reach_a_service() {
    let stack = Stack::start();
    let alice = login(&stack, "alice", "alice-password").await;
    let alice_sub = payload(&alice)["sub"].as_str().expect("sub").to_owned();
    let bob = login(&stack, "bob", "bob-password").await;
    let spoof = [
        ("x-user-id", alice_sub.as_str()),
        ("x-user-role", "admin"),
        ("x-user-name", "alice"),
    ];
    let (status, _, me) = get(&stack, "/api/users/me", Some(&bob), &spoof).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "bob");
    assert_eq!(me["role"], "user");
    assert_ne!(me["id"], alice_sub.as_str());
    assert_eq!(
        get(&stack, "/api/users", Some(&bob), &spoof).await.0,
        StatusCode::FORBIDDEN
    );
    // Without a token the spoofed headers get nothing at all.
    assert_eq!(
        get(&stack, "/api/users/me", None, &spoof).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_needs_no_token_even_with_a_bad_one() {
    let stack = Stack::start();
    let response = client()
        .post(format!("{}/auth/login", stack.base))
        .bearer_auth("not.a.token")
        .json(&json!({"username": "bob", "password": "bob-password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), StatusCode::OK);
    let (status, _, jwks) = get(&stack, "/.well-known/jwks.json", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotated_at_the_running_issuer_needs_no_restart() {
    let stack = Stack::start();
    let old = login(&stack, "bob", "bob-password").await;
    assert_eq!(
        get(&stack, "/api/orders", Some(&old), &[]).await.0,
        StatusCode::OK
    );

    let out = stack
        .issuer_command()
        .args(["keys", "rotate", "--kid", "rotated-key"])
        .output()
        .expect("issuer keys rotate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let start = Instant::now();
    let new = loop {
        let token = login(&stack, "bob", "bob-password").await;
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().expect("header"))
                .expect("b64"),
        )
        .expect("json");
        if header["kid"] == "rotated-key" {
            break token;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "issuer did not pick up the rotation"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        get(&stack, "/api/orders", Some(&new), &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        get(&stack, "/api/orders", Some(&old), &[]).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_down_valid_tokens_still_pass() {
    let mut stack = Stack::start();
    let used = login(&stack, "bob", "bob-password").await;
    let unused = login(&stack, "alice", "alice-password").await;
    assert_eq!(
        get(&stack, "/api/orders", Some(&used), &[]).await.0,
        StatusCode::OK
    );
    stack.stop("issuer");
    let (status, _, _) = get(&stack, "/api/orders", Some(&used), &[]).await;
    assert_eq!(status, StatusCode::OK);
    // Never seen by jwt-authz before: verified against the keys it holds.
    let (status, _, _) = get(&stack, "/api/users", Some(&unused), &[]).await;
    assert_eq!(status, StatusCode::OK);
    // Login itself is down, as expected.
    let response = client()
        .post(format!("{}/auth/login", stack.base))
        .json(&json!({"username": "bob", "password": "bob-password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_authz_down_fails_closed_and_recovers() {
    let mut stack = Stack::start();
    let token = login(&stack, "bob", "bob-password").await;
    assert_eq!(
        get(&stack, "/api/orders", Some(&token), &[]).await.0,
        StatusCode::OK
    );

    stack.stop("jwt-authz");
    let (status, _, body) = get(&stack, "/api/orders", Some(&token), &[]).await;
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
        get(&stack, "/api/users/me", None, &[]).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    stack.start_authz();
    let status = eventually(
        &stack,
        "/api/orders",
        &token,
        StatusCode::OK,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "recovered once jwt-authz is back");
}
