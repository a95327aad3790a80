//! Limits on what checks can pile up: checks in flight, checks waiting on a key fetch, and
//! how long one check may take. Each excess is answered 503 at once, never queued.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;

/// A provider whose JWKS answers only after `delay`, and tokens naming unknown keys, which
/// force a refetch (no valid signature needed, only the provider's `iss`).
async fn slow_jwks(limits: &str, delay: Duration) -> (JwksServer, TestKey, TestServer) {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    jwks.set_cache_control("max-age=3600");
    let server = TestServer::start_ready(&config_yaml(&jwks.url(), limits)).await;
    jwks.set_delay(delay);
    (jwks, key, server)
}

fn unknown_kid_token(key: &TestKey, n: usize) -> String {
    key.sign(
        &json!({"alg": "RS256", "kid": format!("unknown-{n}"), "typ": "JWT"}),
        &claims("u1"),
    )
}

/// Sends `n` checks at once; returns each answer's error reason (or "ok") and latency.
async fn burst(server: &TestServer, key: &TestKey, n: usize) -> Vec<(String, Duration)> {
    let checks = (0..n).map(|i| {
        let token = unknown_kid_token(key, i);
        async move {
            let started = Instant::now();
            let response = server.check_token("/api", &token).await;
            let reason = match denied_status(&response) {
                None => "ok".to_owned(),
                Some(status) => format!("{status} {}", denial(&response).1["error_description"]),
            };
            (reason, started.elapsed())
        }
    });
    futures::future::join_all(checks).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_does_not_queue_behind_a_slow_jwks() {
    let delay = Duration::from_millis(2000);
    let (_jwks, key, server) = slow_jwks(
        "limits: {max_key_fetch_waiters: 4, check_timeout: 10s}\n",
        delay,
    )
    .await;
    let answers = burst(&server, &key, 30).await;
    let busy: Vec<_> = answers
        .iter()
        .filter(|(r, _)| r == "503 \"signing keys being fetched, retry later\"")
        .collect();
    assert_eq!(busy.len(), 26, "{answers:?}");
    // Those were answered at once, not after the fetch.
    assert!(
        busy.iter().all(|(_, took)| *took < delay / 2),
        "{answers:?}"
    );
    // The four that waited got the fetch's verdict: the key is unknown.
    let waited = answers
        .iter()
        .filter(|(r, _)| r == "401 \"unknown signing key\"")
        .count();
    assert_eq!(waited, 4, "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_beyond_the_concurrency_limit_are_503() {
    let (_jwks, key, server) = slow_jwks(
        "limits: {max_concurrent_checks: 2}\n",
        Duration::from_millis(1500),
    )
    .await;
    let answers = burst(&server, &key, 10).await;
    let overloaded = answers
        .iter()
        .filter(|(r, _)| r == "503 \"server busy, retry later\"")
        .count();
    assert_eq!(overloaded, 8, "{answers:?}");
    // With the burst over, checks go through again.
    allowed(&server.check_token("/api", &key.token(&claims("u1"))).await);
}

#[tokio::test]
async fn a_check_that_takes_too_long_is_503() {
    let delay = Duration::from_millis(3000);
    let (_jwks, key, server) = slow_jwks("limits: {check_timeout: 300ms}\n", delay).await;
    let answers = burst(&server, &key, 1).await;
    let (reason, took) = &answers[0];
    assert_eq!(reason, "503 \"check timed out, retry later\"");
    assert!(*took < delay / 2, "{took:?}");
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(metrics.contains("reason=\"timeout\""), "{metrics}");
}

/// A check that gives up does not take the key fetch it started down with it: the fetch
/// finishes in the background, and the next check finds the new key held.
#[tokio::test]
async fn a_timed_out_check_leaves_its_key_fetch_running() {
    let delay = Duration::from_millis(1000);
    let (jwks, key, server) = slow_jwks("limits: {check_timeout: 300ms}\n", delay).await;
    let rotated = TestKey::rsa("k2");
    jwks.set_keys(vec![key.jwk(), rotated.jwk()]);
    let token = rotated.token(&claims("u1"));
    let first = server.check_token("/api", &token).await;
    assert_eq!(denied_status(&first), Some(503), "{first:?}");
    tokio::time::sleep(delay + Duration::from_millis(300)).await;
    allowed(&server.check_token("/api", &token).await);
}

/// A flood of tokens that each cost a signature check (known kid, bad signature, all
/// distinct) against one verification thread with room for two waiting: the first
/// refusals (`limits.isolate_after_refusals`, 32 by default) move signature checks to the
/// thread, the excess is answered 503 at once (`verify_busy`, counted), everything
/// checked is refused, and the cached token checked in the middle of the flood is always
/// allowed, since a cache hit never waits for the verification threads. A few refusals
/// before it do not isolate anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_signatures_is_shed_and_cache_hits_never_wait_for_it() {
    let (_jwks, key, server) =
        start_with_key("limits: {verify_threads: 1, max_queued_verifications: 2}\n").await;
    let attacker = TestKey::rsa("k1");
    let valid = key.token(&claims("u1"));
    assert_eq!(
        denied_status(&server.check_token("/api", &valid).await),
        None
    );
    for i in 0..5 {
        let forged = attacker.token(&claims(&format!("before-{i}")));
        assert_eq!(
            denied_status(&server.check_token("/api", &forged).await),
            Some(401)
        );
    }
    let isolations = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("jwt_authz_verification_isolations_total "))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let (_, metrics) = server.admin_get("/metrics").await;
    assert_eq!(isolations(&metrics), Some(0), "5 refusals isolate nothing");

    let flood = (0..300).map(|i| {
        let forged = attacker.token(&claims(&format!("flood-{i}")));
        let server = &server;
        async move {
            let response = server.check_token("/api", &forged).await;
            let status = denied_status(&response);
            format!("{status:?} {}", denial(&response).1["error_description"])
        }
    });
    let hits = (0..100).map(|_| {
        let server = &server;
        let valid = &valid;
        async move { denied_status(&server.check_token("/api", valid).await) }
    });
    let (flood, hits) = futures::future::join(
        futures::future::join_all(flood),
        futures::future::join_all(hits),
    )
    .await;
    assert!(hits.iter().all(Option::is_none), "{hits:?}");
    let shed = flood
        .iter()
        .filter(|r| *r == "Some(503) \"server busy, retry later\"")
        .count();
    let refused = flood
        .iter()
        .filter(|r| *r == "Some(401) \"invalid signature\"")
        .count();
    assert_eq!(shed + refused, flood.len(), "{flood:?}");
    assert!(shed > 0 && refused > 0, "shed {shed}, refused {refused}");
    let (_, metrics) = server.admin_get("/metrics").await;
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("jwt_authz_verifications_shed_total "))
        .and_then(|v| v.parse::<usize>().ok());
    assert_eq!(counted, Some(shed));
    assert_eq!(isolations(&metrics), Some(1), "raised once by the flood");
    assert_eq!(
        metric(
            &metrics,
            "jwt_authz_checks_total",
            &[("result", "deny"), ("reason", "verify_busy")]
        ) as usize,
        shed
    );
}
