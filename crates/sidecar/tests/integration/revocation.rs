//! Revocation by Token Status List (draft-ietf-oauth-status-list) in the sidecar: lists
//! served by a loopback server, signed here, checked on every request (cache hits too);
//! hostile lists refused; staleness fails closed.

use std::time::{Duration, Instant};

use crate::support::*;
use jwt_authz_jose::status_list::StatusList;
use serde_json::{Value, json};

/// Provider fields for a provider that checks status lists, with short intervals.
fn status_config(mode: &str, max_stale: &str) -> String {
    format!(
        "    status_list:\n      mode: {mode}\n      max_stale: {max_stale}\n      min_ttl: 1s\n      fetch_timeout: 2s\n"
    )
}

/// Serves a Status List Token for `list` at `/status/{name}` (signed by `key`, no extra
/// claims) and returns its URI.
fn publish(jwks: &JwksServer, key: &TestKey, name: &str, list: &Value) -> String {
    let uri = jwks.document_url(name);
    jwks.set_document(name, &list_token(key, &uri, list, json!({})), None);
    uri
}

/// An access token of `sub` referencing entry `idx` of the list at `uri`.
fn token_at(key: &TestKey, sub: &str, uri: &str, idx: u64) -> String {
    let mut claims = claims(sub);
    claims["status"] = json!({"status_list": {"idx": idx, "uri": uri}});
    key.token(&claims)
}

/// Makes a list token for the URI it will be served at.
type MakeList<'a> = Box<dyn Fn(&str) -> String + 'a>;

fn list_of(bits: u8, len: u64, set: &[(u64, u8)]) -> Value {
    let mut list = StatusList::new(bits, len).expect("list");
    for (idx, value) in set {
        list.set(*idx, *value).expect("set");
    }
    list.encode()
}

async fn metrics(server: &TestServer) -> String {
    server.admin_get("/metrics").await.1
}

/// Waits (at most 5 s) until a list fetch with this outcome has been counted.
async fn wait_for_fetch(server: &TestServer, outcome: &str) {
    let start = Instant::now();
    loop {
        let m = metrics(server).await;
        if metric(
            &m,
            "jwt_authz_status_list_fetches_total",
            &[("outcome", outcome)],
        ) >= 1
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no {outcome} fetch within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `check` gives a response that `done` accepts, or `within` passes.
async fn eventually(
    server: &TestServer,
    token: &str,
    within: Duration,
    done: impl Fn(&envoy_types::pb::envoy::service::auth::v3::CheckResponse) -> bool,
) -> envoy_types::pb::envoy::service::auth::v3::CheckResponse {
    let start = Instant::now();
    loop {
        let response = server.check_token("/api", token).await;
        if done(&response) || start.elapsed() > within {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_unavailable(response: &envoy_types::pb::envoy::service::auth::v3::CheckResponse) {
    assert_eq!(denied_status(response), Some(503), "{response:?}");
    let (_, body) = denial(response);
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(
        body["error_description"],
        "token status unavailable, retry later"
    );
}

/// The draft's own 1-bit example list (§4.1: statuses 1 0 0 1 1 1 0 1 1 1 0 0 0 1 0 1),
/// fetched, verified and read through a real check: each index decides as the document
/// says, and an index past its 16 entries is refused (§8.3 step 6).
#[tokio::test]
async fn the_drafts_example_list_decides_each_index() {
    let (jwks, key, server) = start_with_key(&status_config("optional", "1m")).await;
    let example = json!({"bits": 1, "lst": "eNrbuRgAAhcBXQ"});
    let uri = publish(&jwks, &key, "example", &example);
    let expected = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1];
    for (idx, status) in expected.iter().enumerate() {
        let response = server
            .check_token("/api", &token_at(&key, "alice", &uri, idx as u64))
            .await;
        if *status == 0 {
            allowed(&response);
        } else {
            assert_invalid_token(&response, "token revoked");
        }
    }
    let past_the_end = server
        .check_token("/api", &token_at(&key, "alice", &uri, 16))
        .await;
    assert_invalid_token(&past_the_end, "token status cannot be checked");
    // One fetch served all seventeen checks.
    assert_eq!(jwks.document_fetches("example"), 1);
    let m = metrics(&server).await;
    assert_eq!(
        metric(
            &m,
            "jwt_authz_revoked_tokens_total",
            &[("status", "invalid")]
        ),
        9
    );
}

/// A token revoked after it was verified and cached is refused once the list says so:
/// the status is read on every request, cache hits included. SUSPENDED and unregistered
/// values are refused too; the neighbours stay valid.
#[tokio::test]
async fn a_cached_token_is_refused_once_its_list_revokes_it() {
    let (jwks, key, server) = start_with_key(&status_config("optional", "1m")).await;
    let uri = publish(&jwks, &key, "1", &list_of(2, 64, &[]));
    let tokens: Vec<String> = (0..4).map(|i| token_at(&key, "bob", &uri, i)).collect();
    for token in &tokens {
        allowed(&server.check_token("/api", token).await);
        allowed(&server.check_token("/api", token).await);
    }
    let cache_hits = metric(
        &metrics(&server).await,
        "jwt_authz_token_cache_lookups_total",
        &[("result", "hit")],
    );
    assert!(cache_hits >= 4, "the second checks were cache hits");

    // 1 = INVALID, 2 = SUSPENDED, 3 = application-specific: none of them is VALID.
    let revoked = list_of(2, 64, &[(1, 1), (2, 2), (3, 3)]);
    // A later iat than the list held (a list never goes back in time).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    jwks.set_document("1", &list_token(&key, &uri, &revoked, json!({})), None);
    let start = Instant::now();
    let response = eventually(&server, &tokens[1], Duration::from_secs(5), |r| {
        denied_status(r).is_some()
    })
    .await;
    assert_invalid_token(&response, "token revoked");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "refused within the list's ttl (1 s) plus a refresh tick, took {:?}",
        start.elapsed()
    );
    for token in &tokens[2..] {
        assert_invalid_token(&server.check_token("/api", token).await, "token revoked");
    }
    allowed(&server.check_token("/api", &tokens[0]).await);
    let m = metrics(&server).await;
    for status in ["invalid", "suspended", "other"] {
        assert!(
            metric(&m, "jwt_authz_revoked_tokens_total", &[("status", status)]) >= 1,
            "{status}"
        );
    }
    assert!(
        metric(
            &m,
            "jwt_authz_status_list_fetches_total",
            &[("outcome", "ok")]
        ) >= 2
    );
    assert!(m.contains("jwt_authz_status_list_age_seconds{"), "{m}");
}

/// Lists that fail the draft's validation rules are never used: each is refused as a
/// fetch ("invalid" in the metrics), and the tokens naming it get 503, never an allow.
#[tokio::test]
async fn hostile_lists_are_refused() {
    let (jwks, key, server) = start_with_key(&status_config("optional", "1m")).await;
    let other = TestKey::rsa("k1"); // same kid, another key: a forged signature
    let stranger = TestKey::rsa("k-other"); // a key the provider does not publish
    let valid = list_of(1, 64, &[]);
    // A list whose 24 bytes of `lst` inflate to 16 MiB (the limit is 4 MiB).
    let bomb = {
        use std::io::Write;
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        encoder
            .write_all(&vec![0u8; 16 * 1024 * 1024])
            .expect("compress");
        json!({"bits": 1, "lst": b64(&encoder.finish().expect("compress"))})
    };
    let cases: Vec<(&str, MakeList)> = vec![
        (
            "wrong-typ",
            Box::new(|uri: &str| {
                key.sign(
                    &json!({"alg": key.alg, "kid": key.kid, "typ": "JWT"}),
                    &json!({"sub": uri, "iat": now(), "exp": now() + 600, "status_list": valid}),
                )
            }),
        ),
        (
            "no-typ",
            Box::new(|uri: &str| {
                key.sign(
                    &json!({"alg": key.alg, "kid": key.kid}),
                    &json!({"sub": uri, "iat": now(), "exp": now() + 600, "status_list": valid}),
                )
            }),
        ),
        (
            "forged",
            Box::new(|uri: &str| list_token(&other, uri, &valid, json!({}))),
        ),
        (
            "unknown-key",
            Box::new(|uri: &str| list_token(&stranger, uri, &valid, json!({}))),
        ),
        (
            "other-subject",
            Box::new(|_: &str| list_token(&key, &jwks.document_url("another"), &valid, json!({}))),
        ),
        (
            "expired",
            Box::new(|uri: &str| {
                list_token(
                    &key,
                    uri,
                    &valid,
                    json!({"iat": now() - 700, "exp": now() - 100}),
                )
            }),
        ),
        (
            "no-iat",
            Box::new(|uri: &str| list_token(&key, uri, &valid, json!({"iat": null}))),
        ),
        (
            "other-issuer",
            Box::new(|uri: &str| {
                list_token(&key, uri, &valid, json!({"iss": "https://evil.test"}))
            }),
        ),
        (
            "zip-bomb",
            Box::new(|uri: &str| list_token(&key, uri, &bomb, json!({}))),
        ),
        (
            "bad-bits",
            Box::new(|uri: &str| {
                list_token(
                    &key,
                    uri,
                    &json!({"bits": 3, "lst": "eNrbuRgAAhcBXQ"}),
                    json!({}),
                )
            }),
        ),
        (
            "alg-none",
            Box::new(|uri: &str| {
                let claims =
                    json!({"sub": uri, "iat": now(), "exp": now() + 600, "status_list": valid});
                format!(
                    "{}.{}.",
                    b64(json!({"alg": "none", "typ": "statuslist+jwt"})
                        .to_string()
                        .as_bytes()),
                    b64(claims.to_string().as_bytes())
                )
            }),
        ),
    ];
    for (name, make) in &cases {
        let uri = jwks.document_url(name);
        jwks.set_document(name, &make(&uri), None);
        let response = server
            .check_token("/api", &token_at(&key, "mallory", &uri, 0))
            .await;
        assert_eq!(denied_status(&response), Some(503), "{name}: {response:?}");
        assert_unavailable(&response);
    }
    let m = metrics(&server).await;
    assert_eq!(
        metric(
            &m,
            "jwt_authz_status_list_fetches_total",
            &[("outcome", "invalid")]
        ),
        cases.len() as u64
    );
    assert_eq!(
        metric(
            &m,
            "jwt_authz_status_list_fetches_total",
            &[("outcome", "ok")]
        ),
        0
    );
}

/// A list signed by another provider's key is refused: a list is trusted only with the
/// keys of the provider whose token names it.
#[tokio::test]
async fn a_list_signed_by_another_provider_is_refused() {
    let key = TestKey::rsa("k1");
    let other_key = TestKey::rsa("k2");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let other_jwks = JwksServer::start(vec![other_key.jwk()]).await;
    let extra = format!(
        "{}  - name: other\n    issuer: https://other.test\n    audiences: [api]\n    jwks:\n      uri: {}\n",
        status_config("optional", "1m"),
        other_jwks.url()
    );
    let server = TestServer::start_ready(&config_yaml(&jwks.url(), &extra)).await;
    let uri = jwks.document_url("1");
    // Signed by the other provider's key, with its kid: a key jwt-authz trusts, but not
    // for this provider's tokens.
    jwks.set_document(
        "1",
        &list_token(&other_key, &uri, &list_of(1, 8, &[]), json!({})),
        None,
    );
    assert_unavailable(
        &server
            .check_token("/api", &token_at(&key, "a", &uri, 0))
            .await,
    );
    // The same list signed by the right key is accepted.
    let uri = publish(&jwks, &key, "2", &list_of(1, 8, &[]));
    allowed(
        &server
            .check_token("/api", &token_at(&key, "a", &uri, 0))
            .await,
    );
}

/// What a token's `status` claim may name: only lists on the provider's own origins (the
/// issuer's and the JWKS's, by default); a malformed claim is refused; `required` refuses
/// tokens without one, `optional` lets them through.
#[tokio::test]
async fn references_are_checked_and_required_when_asked() {
    let (jwks, key, server) = start_with_key(&status_config("required", "1m")).await;
    let uri = publish(&jwks, &key, "1", &list_of(1, 8, &[]));
    allowed(
        &server
            .check_token("/api", &token_at(&key, "a", &uri, 0))
            .await,
    );

    let plain = key.token(&claims("a"));
    assert_invalid_token(
        &server.check_token("/api", &plain).await,
        "token carries no status",
    );

    for foreign in [
        "https://evil.test/status/1",
        "http://localhost:1/status/1",
        &format!("https://{}/status/1", jwks.addr),
        // The right origin with credentials in it: reqwest would send them.
        &format!("http://user:secret@{}/status/1", jwks.addr),
    ] {
        let token = token_at(&key, "a", foreign, 0);
        assert_invalid_token(
            &server.check_token("/api", &token).await,
            "token status cannot be checked",
        );
    }
    for malformed in [
        json!("revoked"),
        json!({"status_list": {"idx": -1, "uri": uri}}),
        json!({"status_list": {"idx": "0", "uri": uri}}),
        json!({"status_list": {"idx": 0}}),
        json!({"status_list": {"idx": 0, "uri": "ftp://x/1"}}),
    ] {
        let mut claims = claims("a");
        claims["status"] = malformed.clone();
        assert_invalid_token(
            &server.check_token("/api", &key.token(&claims)).await,
            "token status cannot be checked",
        );
    }

    // A Status List Token is signed with the provider's keys, but is never an access token.
    let mut as_list = claims("a");
    as_list["status"] = json!({"status_list": {"idx": 0, "uri": uri}});
    let disguised = key.sign(
        &json!({"alg": key.alg, "kid": key.kid, "typ": "statuslist+jwt"}),
        &as_list,
    );
    assert_invalid_token(
        &server.check_token("/api", &disguised).await,
        "token type not accepted",
    );

    // Optional: a token without a reference passes.
    let (_jwks, key, optional) = start_with_key(&status_config("optional", "1m")).await;
    allowed(&optional.check_token("/api", &key.token(&claims("a"))).await);
}

/// The list server unreachable: the held list keeps deciding until `max_stale` after its
/// last good fetch, then tokens naming it get 503 (never an unchecked allow); when the
/// server is back, they pass again. Concurrent first checks share one fetch.
#[tokio::test]
async fn an_unreachable_list_server_fails_closed_after_max_stale() {
    let (jwks, key, server) = start_with_key(&status_config("optional", "3s")).await;
    let uri = publish(&jwks, &key, "1", &list_of(1, 8, &[]));
    jwks.set_delay(Duration::from_millis(300));
    let token = token_at(&key, "a", &uri, 0);
    let first: Vec<_> =
        futures::future::join_all((0..16).map(|_| server.check_token("/api", &token))).await;
    for response in &first {
        allowed(response);
    }
    assert_eq!(
        jwks.document_fetches("1"),
        1,
        "one fetch for 16 concurrent checks"
    );
    jwks.set_delay(Duration::ZERO);

    jwks.set_failing(true);
    let failing_since = Instant::now();
    allowed(&server.check_token("/api", &token).await);
    let response = eventually(&server, &token, Duration::from_secs(8), |r| {
        denied_status(r).is_some()
    })
    .await;
    assert_unavailable(&response);
    let held_for = failing_since.elapsed();
    assert!(
        held_for >= Duration::from_secs(1) && held_for <= Duration::from_secs(5),
        "the held list was used for {held_for:?} (max_stale 3 s after the last good fetch)"
    );
    assert!(
        metric(
            &metrics(&server).await,
            "jwt_authz_status_list_fetches_total",
            &[("outcome", "error")]
        ) >= 1
    );

    jwks.set_failing(false);
    publish(&jwks, &key, "1", &list_of(1, 8, &[]));
    let response = eventually(&server, &token, Duration::from_secs(8), |r| {
        grpc_code(r) == 0
    })
    .await;
    allowed(&response);
}

/// A refresh answered 304 for the ETag held keeps the list (and renews its staleness
/// clock); a list older than the one held (a stale cache, a replayed response) is refused,
/// so a revocation cannot be undone by serving yesterday's list.
#[tokio::test]
async fn etags_revalidate_and_older_lists_never_replace_newer_ones() {
    let (jwks, key, server) = start_with_key(&status_config("optional", "1m")).await;
    let uri = jwks.document_url("1");
    let old = list_token(&key, &uri, &list_of(1, 8, &[]), json!({"iat": now() - 30}));
    let revoked = list_token(&key, &uri, &list_of(1, 8, &[(0, 1)]), json!({}));
    jwks.set_document("1", &revoked, Some("\"v2\""));
    let token = token_at(&key, "a", &uri, 0);
    assert_invalid_token(&server.check_token("/api", &token).await, "token revoked");
    wait_for_fetch(&server, "not_modified").await;
    jwks.set_document("1", &old, Some("\"v1\""));
    wait_for_fetch(&server, "invalid").await;
    assert_invalid_token(&server.check_token("/api", &token).await, "token revoked");
}

/// A list server slower than `limits.check_timeout`: the first checks time out (503), but
/// the fetch they started is not cancelled with them, so the list arrives and later checks
/// pass, with one fetch in all.
#[tokio::test]
async fn a_slow_list_fetch_outlives_the_checks_that_gave_up_on_it() {
    let extra = format!(
        "{}limits:\n  check_timeout: 300ms\n",
        status_config("optional", "1m")
    );
    let (jwks, key, server) = start_with_key(&extra).await;
    let uri = publish(&jwks, &key, "slow", &list_of(1, 8, &[]));
    jwks.set_delay(Duration::from_millis(1000));
    let token = token_at(&key, "a", &uri, 0);
    let first = server.check_token("/api", &token).await;
    assert_eq!(denied_status(&first), Some(503), "{first:?}");
    assert_eq!(
        denial(&first).1["error_description"],
        "check timed out, retry later"
    );
    let response = eventually(&server, &token, Duration::from_secs(5), |r| {
        grpc_code(r) == 0
    })
    .await;
    allowed(&response);
    assert_eq!(jwks.document_fetches("slow"), 1);
}

/// What a list server may not do: send the fetch to another origin by a redirect, serve a
/// list issued in the future (which would make every correct list after it look older), or
/// keep a held list alive with 304s it was not asked for (only an `If-None-Match` the list
/// held was served with can be answered 304).
#[tokio::test]
async fn redirects_future_lists_and_unasked_304s_are_refused() {
    let (jwks, key, server) = start_with_key(&status_config("optional", "3s")).await;
    let valid = list_of(1, 8, &[]);

    let elsewhere = JwksServer::start(vec![]).await;
    let target = elsewhere.document_url("1");
    elsewhere.set_document("1", &list_token(&key, &target, &valid, json!({})), None);
    let uri = jwks.document_url("moved");
    jwks.set_document("moved", &format!("REDIRECT {target}"), None);
    assert_unavailable(
        &server
            .check_token("/api", &token_at(&key, "a", &uri, 0))
            .await,
    );
    assert_eq!(
        elsewhere.document_fetches("1"),
        0,
        "the redirect was not followed"
    );

    let uri = jwks.document_url("future");
    jwks.set_document(
        "future",
        &list_token(&key, &uri, &valid, json!({"iat": now() + 3600})),
        None,
    );
    assert_unavailable(
        &server
            .check_token("/api", &token_at(&key, "a", &uri, 0))
            .await,
    );

    // Held without an ETag; then the server answers 304 to everything.
    let uri = publish(&jwks, &key, "no-etag", &valid);
    let token = token_at(&key, "a", &uri, 0);
    allowed(&server.check_token("/api", &token).await);
    jwks.set_document("no-etag", "NOT_MODIFIED", None);
    let response = eventually(&server, &token, Duration::from_secs(8), |r| {
        denied_status(r).is_some()
    })
    .await;
    assert_unavailable(&response);
}

/// `max_lists` bounds the lists held: a token naming one more gets 503, the lists already
/// held keep working.
#[tokio::test]
async fn lists_beyond_max_lists_are_answered_503() {
    let extra = "    status_list: {mode: optional, max_lists: 1}\n";
    let (jwks, key, server) = start_with_key(extra).await;
    let [a, b] = ["a", "b"].map(|name| publish(&jwks, &key, name, &list_of(1, 8, &[])));
    let first = token_at(&key, "a", &a, 0);
    allowed(&server.check_token("/api", &first).await);
    let second = token_at(&key, "a", &b, 0);
    assert_unavailable(&server.check_token("/api", &second).await);
    assert_eq!(jwks.document_fetches("b"), 0);
    allowed(&server.check_token("/api", &first).await);
}
