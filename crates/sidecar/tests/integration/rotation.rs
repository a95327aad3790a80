//! Key rotation without restarts: new kids picked up, old keys honoured while published,
//! removed keys (and tokens cached under them) refused after a refresh; the unknown-kid
//! refetch is rate-limited; `Cache-Control` sets the refresh schedule.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn new_kid_is_picked_up_and_old_key_honoured_while_published() {
    let old = TestKey::rsa("old");
    let jwks = JwksServer::start(vec![old.jwk()]).await;
    jwks.set_cache_control("max-age=3600");
    let server = TestServer::start_ready(&config_yaml(&jwks.url(), "")).await;
    let old_token = old.token(&claims("u-old"));
    allowed(&server.check_token("/x", &old_token).await);

    // The issuer rotates: both keys published, new tokens carry the new kid. The refresh
    // schedule is an hour away, so only the unknown-kid refetch can find the new key.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new = TestKey::rsa("new");
    jwks.set_keys(vec![old.jwk(), new.jwk()]);
    let (set, _) = allowed(&server.check_token("/x", &new.token(&claims("u-new"))).await);
    assert_eq!(set["x-user-id"], "u-new");
    allowed(&server.check_token("/x", &old_token).await);
    allowed(
        &server
            .check_token("/x", &old.token(&claims("u-old2")))
            .await,
    );
}

#[tokio::test]
async fn removed_key_is_rejected_after_one_refresh_even_when_cached() {
    let old = TestKey::rsa("old");
    let new = TestKey::rsa("new");
    let jwks = JwksServer::start(vec![old.jwk(), new.jwk()]).await;
    jwks.set_cache_control("max-age=1");
    let server = TestServer::start_ready(&config_yaml(&jwks.url(), "")).await;
    let old_token = old.token(&claims("u-old"));
    allowed(&server.check_token("/x", &old_token).await);
    allowed(&server.check_token("/x", &old_token).await); // now served from the cache

    let before = jwks.fetches();
    jwks.set_keys(vec![new.jwk()]);
    // max-age=1 clamped to min_ttl=1s: refreshed within about a second.
    let mut waited = 0;
    while jwks.fetches() < before + 1 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(jwks.fetches() > before, "no refresh happened");
    let response = server.check_token("/x", &old_token).await;
    assert_invalid_token(&response, "unknown signing key");
    allowed(&server.check_token("/x", &new.token(&claims("u-new"))).await);
}

#[tokio::test]
async fn unknown_kids_trigger_at_most_one_fetch_per_interval() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    jwks.set_cache_control("max-age=3600");
    // Room for all 100 to wait: this is about the fetch count (tests/limits.rs covers what
    // happens past max_key_fetch_waiters).
    let yaml = config_yaml(&jwks.url(), "limits: {max_key_fetch_waiters: 1000}\n")
        .replace("unknown_kid_interval: 1s", "unknown_kid_interval: 30s");
    let server = std::sync::Arc::new(TestServer::start_ready(&yaml).await);
    let before = jwks.fetches();

    let bogus = TestKey::rsa("bogus");
    let mut tasks = Vec::new();
    for i in 0..100 {
        let server = std::sync::Arc::clone(&server);
        let token = bogus.sign(
            &serde_json::json!({"alg": "RS256", "kid": format!("bogus-{i}")}),
            &claims("u"),
        );
        tasks.push(tokio::spawn(async move {
            denied_status(&server.check_token("/x", &token).await)
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), Some(401));
    }
    let extra = jwks.fetches() - before;
    assert!(extra <= 1, "{extra} fetches for 100 unknown kids");
    // Valid tokens were never held up.
    allowed(&server.check_token("/x", &key.token(&claims("u"))).await);
}

#[tokio::test]
async fn unknown_kid_refetch_is_shared_and_happens_once_the_interval_allows() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    jwks.set_cache_control("max-age=3600");
    let server = TestServer::start_ready(&config_yaml(&jwks.url(), "")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = jwks.fetches();
    let bogus = TestKey::rsa("bogus");
    let token = bogus.token(&claims("u"));
    let (a, b, c) = tokio::join!(
        server.check_token("/x", &token),
        server.check_token("/x", &token),
        server.check_token("/x", &token)
    );
    for r in [a, b, c] {
        assert_invalid_token(&r, "unknown signing key");
    }
    assert_eq!(jwks.fetches() - before, 1, "one shared refetch");
}

#[tokio::test]
async fn cache_control_max_age_sets_the_refresh_schedule() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    jwks.set_cache_control("public, max-age=2");
    let yaml = config_yaml(&jwks.url(), "");
    let server = TestServer::start_ready(&yaml).await;
    let start = jwks.fetches();
    tokio::time::sleep(Duration::from_millis(5000)).await;
    let in_window = jwks.fetches() - start;
    // Refresh at 90 % of 2 s: two or three fetches in 5 s; min_ttl alone (1 s) would make
    // five.
    assert!((2..=3).contains(&in_window), "{in_window} fetches");
    drop(server);

    // A long max-age is clamped to max_ttl.
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    jwks.set_cache_control("max-age=86400");
    let yaml = config_yaml(&jwks.url(), "").replace("max_ttl: 1h", "max_ttl: 2s");
    let server = TestServer::start_ready(&yaml).await;
    let start = jwks.fetches();
    tokio::time::sleep(Duration::from_millis(5000)).await;
    let in_window = jwks.fetches() - start;
    assert!((2..=3).contains(&in_window), "{in_window} fetches");

    // A long max-age within bounds: no refresh in the window.
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    jwks.set_cache_control("max-age=600");
    let server2 = TestServer::start_ready(&config_yaml(&jwks.url(), "")).await;
    let start = jwks.fetches();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(jwks.fetches(), start);
    drop((server, server2));
}

#[tokio::test]
async fn a_recent_scheduled_fetch_does_not_hold_back_a_new_kid() {
    let old = TestKey::rsa("old");
    let jwks = JwksServer::start(vec![old.jwk()]).await;
    jwks.set_cache_control("max-age=3600");
    // Room for all 100 to wait: this is about the fetch count (tests/limits.rs covers what
    // happens past max_key_fetch_waiters).
    let yaml = config_yaml(&jwks.url(), "limits: {max_key_fetch_waiters: 1000}\n")
        .replace("unknown_kid_interval: 1s", "unknown_kid_interval: 30s");
    let server = TestServer::start_ready(&yaml).await;
    // The start-up fetch happened moments ago; the issuer rotates right after it.
    let new = TestKey::rsa("new");
    jwks.set_keys(vec![old.jwk(), new.jwk()]);
    let (set, _) = allowed(&server.check_token("/x", &new.token(&claims("u-new"))).await);
    assert_eq!(set["x-user-id"], "u-new");
    // That forced refetch now counts against the interval: bogus kids cause no more fetches.
    let before = jwks.fetches();
    let bogus = TestKey::rsa("bogus");
    assert_invalid_token(
        &server.check_token("/x", &bogus.token(&claims("u"))).await,
        "unknown signing key",
    );
    assert_eq!(jwks.fetches(), before);
}
