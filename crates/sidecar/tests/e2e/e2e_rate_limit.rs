//! The per-identity rate-limit recipe (deploy/envoy/per-identity-rate-limit.yaml) through the
//! real Envoy: each user identified by jwt-authz gets a bucket of its own, so one user over
//! its quota gets 429 while another still passes, and a forged `x-user-id` cannot spend
//! another user's bucket.

use crate::support::bins::free_port;
use crate::support::envoy::{
    Envoy, echo_upstream, envoy_config_rate_limited, envoy_config_rate_limited_tiered,
};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_over_quota_gets_429_while_another_passes() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let authz = TestServer::start_ready(&config_yaml(&jwks.url(), "")).await;
    let upstream = echo_upstream().await;
    let ports = (free_port(), free_port());
    let envoy = Envoy::start_config(
        ports,
        &envoy_config_rate_limited(ports.0, ports.1, authz.grpc.port(), upstream, 3),
    );
    let (alice, bob) = (key.token(&claims("alice")), key.token(&claims("bob")));

    let mut alice_statuses = Vec::new();
    for _ in 0..5 {
        alice_statuses.push(envoy.get("/api/orders", Some(&alice)).await.0);
    }
    assert_eq!(alice_statuses, [200, 200, 200, 429, 429]);
    // Bob, claiming to be alice (whose bucket is empty): jwt-authz overwrote the header, so
    // these are bob's requests, in bob's bucket.
    let mut bob_statuses = Vec::new();
    for _ in 0..4 {
        let (status, _) = envoy
            .get_with("/api/orders", Some(&bob), &[("x-user-id", "alice")])
            .await;
        bob_statuses.push(status);
    }
    assert_eq!(bob_statuses, [200, 200, 200, 429]);
    // No token: jwt-authz's 401 comes first, and spends nobody's bucket.
    assert_eq!(envoy.get("/api/orders", None).await.0, 401);
    assert_eq!(envoy_stat_any(ports.1).await, 3, "three requests limited");
}

/// The tiered variant: the verified token's role chooses the bucket size, per user; a
/// client's own `x-user-role` changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_from_a_claim_chooses_the_bucket() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let authz = TestServer::start_ready(&config_yaml(&jwks.url(), "")).await;
    let upstream = echo_upstream().await;
    let ports = (free_port(), free_port());
    let envoy = Envoy::start_config(
        ports,
        &envoy_config_rate_limited_tiered(
            ports.0,
            ports.1,
            authz.grpc.port(),
            upstream,
            &[("admin", 5), ("user", 2)],
        ),
    );
    let mut admin_claims = claims("root");
    admin_claims["role"] = serde_json::json!("admin");
    let admin = key.token(&admin_claims);
    let user = key.token(&claims("carol"));

    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(envoy.get("/api/orders", Some(&admin)).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429], "admin tier: 5");
    // A user claiming the admin tier: jwt-authz overwrote x-user-role from the token.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, _) = envoy
            .get_with("/api/orders", Some(&user), &[("x-user-role", "admin")])
            .await;
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 429], "user tier: 2");
    // Another user of the same tier has a bucket of its own.
    let other = key.token(&claims("dave"));
    assert_eq!(envoy.get("/api/orders", Some(&other)).await.0, 200);
}

/// The filter's `rate_limited` counter, whatever prefix this Envoy version gives it.
async fn envoy_stat_any(admin: u16) -> u64 {
    let text = reqwest::get(format!(
        "http://127.0.0.1:{admin}/stats?filter=rate_limited"
    ))
    .await
    .expect("stats")
    .text()
    .await
    .expect("text");
    text.lines()
        .filter(|l| l.contains("per_identity") && l.contains("rate_limited"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}
