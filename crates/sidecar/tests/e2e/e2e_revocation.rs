//! Revocation end to end through the real Envoy with the real issuer and two jwt-authz
//! replicas: a logout reaches both replicas within the status list's ttl, `issuer tokens
//! revoke --user` ends every session of a user, and with the issuer stopped tokens keep
//! working until `max_stale`, then get 503 (never an unchecked allow).

use std::time::{Duration, Instant};

use crate::support::admin_metric;
use crate::support::gateway::Gateway;
use crate::support::stack::{Options, Stack};
use reqwest::StatusCode;

/// The list's ttl at the issuer, and how long jwt-authz uses a list it cannot refresh.
const TTL_SECS: u64 = 2;
const MAX_STALE_SECS: u64 = 6;

/// `requests` consecutive answers of `want` (Envoy round-robins the two replicas, so four
/// in a row come from both), within `within`; returns how long it took.
async fn until_all(
    gw: &Gateway,
    token: &str,
    want: StatusCode,
    requests: usize,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let mut all = true;
        for _ in 0..requests {
            let (status, _, body) = gw.get("/api/orders", Some(token), &[]).await;
            if status != want {
                all = false;
                break;
            }
            if want == StatusCode::UNAUTHORIZED {
                assert_eq!(body["error_description"], "token revoked", "{body}");
            }
        }
        if all {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "no {requests} answers of {want} in a row within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn logout(gw: &Gateway, token: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!("{}/auth/logout", gw.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("logout")
        .status()
}

async fn revoked_count(admin: u16) -> u64 {
    admin_metric(
        admin,
        "jwt_authz_revoked_tokens_total",
        &[("status", "invalid")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_both_replicas_and_an_issuer_outage_fails_closed() {
    let mut stack = Stack::start_with(Options {
        replicas: 2,
        issuer_args: vec!["--status-list-ttl".into(), format!("{TTL_SECS}s")],
        status_list: Some(format!(
            "{{mode: required, max_stale: {MAX_STALE_SECS}s, min_ttl: 1s}}"
        )),
        ..Options::default()
    })
    .expect("Envoy is always available");
    let gw = stack.gateway();

    // Logout: the token works on both replicas, then is refused on both within the ttl.
    let alice = gw.login("alice", "alice-password").await;
    until_all(&gw, &alice, StatusCode::OK, 4, Duration::from_secs(5)).await;
    assert_eq!(logout(&gw, &alice).await, StatusCode::NO_CONTENT);
    let took = until_all(
        &gw,
        &alice,
        StatusCode::UNAUTHORIZED,
        4,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        took <= Duration::from_secs(TTL_SECS + 2),
        "the logout took {took:?} to reach both replicas (list ttl {TTL_SECS} s)"
    );
    let counts = [
        revoked_count(stack.replica_admins[0]).await,
        revoked_count(stack.replica_admins[1]).await,
    ];
    assert!(
        counts.iter().all(|c| *c >= 1),
        "both replicas refused: {counts:?}"
    );
    let fresh = gw.login("alice", "alice-password").await;
    until_all(&gw, &fresh, StatusCode::OK, 4, Duration::from_secs(5)).await;

    // `issuer tokens revoke --user bob`: both of bob's sessions end; alice's stays.
    let bob = [
        gw.login("bob", "bob-password").await,
        gw.login("bob", "bob-password").await,
    ];
    for token in &bob {
        until_all(&gw, token, StatusCode::OK, 4, Duration::from_secs(5)).await;
    }
    let out = stack
        .issuer_command()
        .args(["tokens", "revoke", "--user", "bob"])
        .output()
        .expect("issuer tokens revoke");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked 2 unexpired token(s) of bob"),
        "{out:?}"
    );
    for token in &bob {
        until_all(
            &gw,
            token,
            StatusCode::UNAUTHORIZED,
            4,
            Duration::from_secs(10),
        )
        .await;
    }
    until_all(&gw, &fresh, StatusCode::OK, 4, Duration::from_secs(5)).await;

    // The issuer stopped: alice's token works on the held list, then 503 once the list is
    // older than max_stale.
    stack.stop("issuer");
    let stopped = Instant::now();
    let mut last_ok = None;
    let first_503 = loop {
        let (status, _, body) = gw.get("/api/orders", Some(&fresh), &[]).await;
        match status {
            StatusCode::OK => last_ok = Some(stopped.elapsed()),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["error"], "temporarily_unavailable", "{body}");
                break stopped.elapsed();
            }
            other => panic!("{other}: {body}"),
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(MAX_STALE_SECS + 6),
            "still allowed {:?} after the issuer stopped",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let last_ok = last_ok.expect("the held list kept deciding after the issuer stopped");
    // The last good fetch was at most ttl × 0.8 before the stop; whole seconds round it.
    assert!(
        last_ok >= Duration::from_secs(MAX_STALE_SECS - TTL_SECS - 2),
        "the held list was used for {last_ok:?} only (max_stale {MAX_STALE_SECS} s)"
    );
    assert!(
        first_503 <= Duration::from_secs(MAX_STALE_SECS + 2),
        "{first_503:?}"
    );
    // Both replicas answer 503 now.
    until_all(
        &gw,
        &fresh,
        StatusCode::SERVICE_UNAVAILABLE,
        4,
        Duration::from_secs(5),
    )
    .await;
}
