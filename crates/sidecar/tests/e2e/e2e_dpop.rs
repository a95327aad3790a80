//! DPoP (RFC 9449) end to end through the real Envoy: a client logs in with a proof at the
//! issuer (through Envoy), calls a service with a fresh proof per request, and a replayed
//! proof is refused; with two jwt-authz replicas behind Envoy sharing a real `redis-server`,
//! a proof one replica accepted is refused by the other, and with Redis stopped DPoP
//! requests get 503 while bearer tokens still pass.

use crate::support::bins::free_port;
use crate::support::dpop::DpopClient;
use crate::support::gateway::{Gateway, jwt_part};
use crate::support::redis::Redis;
use crate::support::stack::{Front, Options, Stack, debian_binary};
use reqwest::StatusCode;

/// A DPoP-bound token for bob, logged in through Envoy.
async fn dpop_login(gw: &Gateway, client: &DpopClient) -> String {
    let (status, body) = gw.login_dpop("bob", "bob-password", client).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tokenType"], "DPoP");
    let token = body["accessToken"].as_str().expect("token").to_owned();
    assert_eq!(jwt_part(&token, 1)["cnf"]["jkt"], client.jkt());
    token
}

/// A proof for `GET /api/orders` with `token`, sent once (200): the next use is a replay.
async fn used_proof(gw: &Gateway, client: &DpopClient, token: &str) -> String {
    let url = format!("{}/api/orders", gw.base);
    let proof = client.proof("GET", &url, Some(token));
    let (status, _, body) = gw
        .get_dpop("/api/orders", token, client, Some(&proof))
        .await;
    assert_eq!(status, StatusCode::OK, "first use of a fresh proof: {body}");
    proof
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_bound_token_works_only_with_a_fresh_proof_each_time() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let client = DpopClient::new();
    let token = dpop_login(&gw, &client).await;
    let sub = jwt_part(&token, 1)["sub"].as_str().expect("sub").to_owned();

    let (status, _, orders) = gw.get_dpop("/api/orders", &token, &client, None).await;
    assert_eq!(status, StatusCode::OK, "{orders}");
    assert_eq!(orders["owner"], sub.as_str());
    // Each request its own proof: a second fresh one passes too (the token is cached now).
    let (status, _, _) = gw.get_dpop("/api/orders", &token, &client, None).await;
    assert_eq!(status, StatusCode::OK);

    let proof = used_proof(&gw, &client, &token).await;
    let (status, headers, body) = gw
        .get_dpop("/api/orders", &token, &client, Some(&proof))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "replayed proof");
    assert_eq!(body["error"], "invalid_dpop_proof");
    let challenge = headers["www-authenticate"].to_str().expect("ascii");
    assert!(
        challenge.starts_with("DPoP realm=\"jwt-authz-demo\", algs=\""),
        "{challenge}"
    );

    // A proof for another resource, the token as a bearer token, a thief's own key.
    let elsewhere = client.proof("GET", &format!("{}/api/feed/x", gw.base), Some(&token));
    let (status, _, _) = gw
        .get_dpop("/api/orders", &token, &client, Some(&elsewhere))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        gw.status("/api/orders", Some(&token)).await,
        StatusCode::UNAUTHORIZED
    );
    let thief = DpopClient::new();
    let (status, _, body) = gw.get_dpop("/api/orders", &token, &thief, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error_description"], "invalid DPoP key binding");
}

/// `jwt_authz_dpop_proofs_total{result}` of the replica whose admin port is `admin`.
async fn proofs(admin: u16, result: &str) -> u64 {
    crate::support::admin_metric(admin, "jwt_authz_dpop_proofs_total", &[("result", result)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_behind_envoy_share_redis_and_fail_closed_without_it() {
    let Some(binary) = debian_binary("redis-server") else {
        return;
    };
    let mut redis = Redis::start(&binary, free_port());
    let stack = Stack::start_with(Options {
        authz_extra: format!(
            "dpop:\n  replay_store:\n    redis: {{url: \"{}\", timeout: 300ms}}\n",
            redis.url()
        ),
        replicas: 2,
        ..Options::default()
    })
    .expect("Envoy is always available");
    let gw = stack.gateway();
    let client = DpopClient::new();
    let token = dpop_login(&gw, &client).await;

    let proof = used_proof(&gw, &client, &token).await;
    // Envoy round-robins the replicas: four replays reach both, and both refuse.
    for attempt in 0..4 {
        let (status, _, body) = gw
            .get_dpop("/api/orders", &token, &client, Some(&proof))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "replay {attempt}: {body}");
    }
    let [a, b] = [stack.replica_admins[0], stack.replica_admins[1]];
    let accepted = [proofs(a, "accepted").await, proofs(b, "accepted").await];
    let replayed = [proofs(a, "replayed").await, proofs(b, "replayed").await];
    assert_eq!(accepted.iter().sum::<u64>(), 1, "accepted {accepted:?}");
    let other = usize::from(accepted[0] == 1);
    assert!(
        replayed[other] >= 1,
        "the replica that never saw the proof refused it: accepted {accepted:?}, replayed {replayed:?}"
    );

    redis.stop();
    for _ in 0..2 {
        let (status, headers, body) = gw.get_dpop("/api/orders", &token, &client, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(headers.get("retry-after").is_some());
    }
    // Bearer tokens never touch the store.
    let bearer = gw.login("alice", "alice-password").await;
    assert_eq!(
        gw.status("/api/orders", Some(&bearer)).await,
        StatusCode::OK
    );
}

/// DPoP through each HTTP front end (Envoy HTTP ext_authz, nginx `auth_request`, Caddy
/// `forward_auth`) with server nonces: the shipped configs carry the `DPoP` header to
/// jwt-authz and the `use_dpop_nonce` answer's `WWW-Authenticate` and `DPoP-Nonce` back to
/// the client (HTTP front ends report no scheme: `dpop.scheme` says it).
async fn dpop_with_nonces_through(front: Front) {
    let secret = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(secret.path(), "0123456789abcdef0123456789abcdef").expect("write");
    let Some(stack) = Stack::start_with(Options {
        front,
        authz_extra: format!(
            "dpop:\n  scheme: http\n  nonce: {{secret_file: \"{}\", lifetime: 60s}}\n",
            secret.path().display()
        ),
        ..Options::default()
    }) else {
        return;
    };
    let gw = stack.gateway();
    let client = DpopClient::new();
    let token = dpop_login(&gw, &client).await;
    let url = format!("{}/api/orders", gw.base);

    let (status, headers, _) = gw.get_dpop("/api/orders", &token, &client, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{front:?}");
    let challenge = headers["www-authenticate"].to_str().expect("ascii");
    assert!(
        challenge.contains("error=\"use_dpop_nonce\""),
        "{front:?}: {challenge}"
    );
    let nonce = headers
        .get("dpop-nonce")
        .unwrap_or_else(|| panic!("{front:?}: no DPoP-Nonce in {headers:?}"))
        .to_str()
        .expect("ascii")
        .to_owned();

    let proof = client.proof_with_nonce("GET", &url, Some(&token), Some(&nonce));
    let (status, _, orders) = gw
        .get_dpop("/api/orders", &token, &client, Some(&proof))
        .await;
    assert_eq!(status, StatusCode::OK, "{front:?}: {orders}");
    assert_eq!(orders["owner"], jwt_part(&token, 1)["sub"], "{front:?}");
    let (status, headers, _) = gw
        .get_dpop("/api/orders", &token, &client, Some(&proof))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{front:?}: replay");
    let challenge = headers["www-authenticate"].to_str().expect("ascii");
    assert!(
        challenge.contains("invalid_dpop_proof"),
        "{front:?}: {challenge}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_with_nonces_through_envoy_http_ext_authz() {
    dpop_with_nonces_through(Front::EnvoyHttp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_with_nonces_through_nginx() {
    dpop_with_nonces_through(Front::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_with_nonces_through_caddy() {
    dpop_with_nonces_through(Front::Caddy).await;
}
