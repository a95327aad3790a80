//! JWKS outages: held keys keep working (stale-on-error) and readiness stays up; a start
//! with no reachable JWKS answers 503 `temporarily_unavailable`, is not ready, and recovers
//! once the JWKS is back.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn held_keys_keep_working_while_the_jwks_is_down() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    jwks.set_cache_control("max-age=1");
    let server = TestServer::start_ready(&config_yaml(&jwks.url(), "")).await;

    jwks.set_failing(true);
    let failed_before = jwks.fetches();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(jwks.fetches() > failed_before, "refresh was attempted");
    // A fresh token (not in the token cache) verifies against the held keys.
    allowed(&server.check_token("/x", &key.token(&claims("u-1"))).await);
    assert_eq!(server.readyz().await, 200);

    jwks.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    allowed(&server.check_token("/x", &key.token(&claims("u-2"))).await);
    assert_eq!(server.readyz().await, 200);
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(
        metrics.contains("jwt_authz_jwks_fetches_total{provider=\"test\",outcome=\"error\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn no_reachable_jwks_at_start_gives_503_and_not_ready_then_recovers() {
    // Reserve a port, then release it so nothing listens there yet.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let url = format!("http://{addr}/jwks.json");
    let server = TestServer::start(&config_yaml(&url, "")).await;
    let key = TestKey::rsa("k1");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.readyz().await, 503);
    let (_, text) = server.admin_get("/readyz").await;
    assert!(text.contains("test"), "{text}");

    let response = server.check_token("/x", &key.token(&claims("u"))).await;
    assert_eq!(denied_status(&response), Some(503));
    assert_eq!(grpc_code(&response), 14, "UNAVAILABLE");
    let (headers, body) = denial(&response);
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(!headers.contains_key("www-authenticate"));

    // A request without a token is still a 401, not an outage.
    assert_eq!(
        denied_status(&server.check(request("GET", "/x", &[])).await),
        Some(401)
    );

    // The JWKS comes up; the background retry (backoff capped at 1 s here) finds it.
    let _jwks = JwksServer::start_on(addr, vec![key.jwk()]).await;
    server.wait_ready().await;
    allowed(&server.check_token("/x", &key.token(&claims("u"))).await);
}

/// Keys are not trusted forever: when refreshes keep failing past `max_stale`, they are
/// dropped, checks answer 503 (cached tokens included) and readiness says why; the next
/// good fetch restores service.
#[tokio::test]
async fn keys_older_than_max_stale_are_dropped() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let yaml =
        config_yaml(&jwks.url(), "").replace("max_ttl: 1h", "max_ttl: 1s\n      max_stale: 2s");
    let server = TestServer::start_ready(&yaml).await;
    let token = key.token(&claims("u-1"));
    allowed(&server.check_token("/x", &token).await);

    jwks.set_failing(true);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(server.readyz().await, 503);
    let (_, text) = server.admin_get("/readyz").await;
    assert!(text.contains("test (keys dropped"), "{text}");
    // The token verified before is in the token cache; it still needs live keys.
    let response = server.check_token("/x", &token).await;
    assert_eq!(denied_status(&response), Some(503), "{response:?}");

    jwks.set_failing(false);
    server.wait_ready().await;
    allowed(&server.check_token("/x", &token).await);
}
