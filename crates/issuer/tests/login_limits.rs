//! Login limits under attack, over real sockets with the client address taken from
//! `X-Forwarded-For` (as behind Envoy): parallel guesses cannot pass the limit, guesses from
//! one place do not lock the owner out, an IPv6 /64 is one client, and password hashing is
//! bounded.

use std::time::Duration;

use serde_json::json;

mod support;

/// The demo issuer trusting `X-Forwarded-For`, and a client that opens a new connection
/// for every request.
struct Running {
    _issuer: support::Running,
    base: String,
    client: reqwest::Client,
}

async fn start(extra: &[&str]) -> Running {
    let mut args = vec!["--trust-forwarded-for"];
    args.extend_from_slice(extra);
    let issuer = support::start(&args).await;
    Running {
        base: issuer.base.clone(),
        _issuer: issuer,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client"),
    }
}

impl Running {
    /// Logs in as `user` from client address `from`; the status and Retry-After.
    async fn login(&self, user: &str, password: &str, from: &str) -> (u16, Option<String>) {
        let response = self
            .client
            .post(format!("{}/auth/login", self.base))
            .header("x-forwarded-for", from)
            .json(&json!({"username": user, "password": password}))
            .send()
            .await
            .expect("login");
        support::status_and_retry_after(&response)
    }
}

fn count(statuses: &[(u16, Option<String>)], status: u16) -> usize {
    statuses.iter().filter(|(s, _)| *s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_cannot_pass_the_limit_nor_lock_the_owner_out() {
    let issuer = start(&["--login-max-failures", "5"]).await;
    let guesses = (0..40).map(|i| {
        let issuer = &issuer;
        async move {
            issuer
                .login("bob", &format!("guess-{i}"), "203.0.113.7")
                .await
        }
    });
    let answers = futures::future::join_all(guesses).await;
    assert!(count(&answers, 401) <= 5, "{answers:?}");
    assert_eq!(
        count(&answers, 401) + count(&answers, 429),
        40,
        "{answers:?}"
    );
    assert!(answers.iter().all(|(s, r)| *s != 429 || r.is_some()));
    // The attacker's address stays locked out for bob...
    assert_eq!(
        issuer.login("bob", "bob-password", "203.0.113.7").await.0,
        429
    );
    // ...but bob, from his own address, still logs in.
    assert_eq!(
        issuer.login("bob", "bob-password", "198.51.100.20").await.0,
        200
    );
}

#[tokio::test]
async fn the_per_user_limit_still_slows_guesses_from_many_addresses() {
    let issuer = start(&["--login-max-failures-per-user", "6"]).await;
    for i in 0..6 {
        let from = format!("198.51.100.{i}");
        assert_eq!(issuer.login("alice", "wrong", &from).await.0, 401);
    }
    assert_eq!(issuer.login("alice", "wrong", "198.51.100.99").await.0, 429);
}

#[tokio::test]
async fn an_ipv6_slash_64_is_one_client() {
    let issuer = start(&["--login-max-failures-per-address", "3"]).await;
    for (i, from) in ["2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:1:abcd::3"]
        .iter()
        .enumerate()
    {
        let user = format!("user{i}");
        assert_eq!(issuer.login(&user, "wrong", from).await.0, 401, "{from}");
    }
    // A fourth address of the same /64, another username: throttled.
    assert_eq!(
        issuer
            .login("user9", "wrong", "2001:db8:0:1:ffff:ffff:ffff:ffff")
            .await
            .0,
        429
    );
    // The neighbouring /64 is someone else.
    assert_eq!(
        issuer.login("user9", "wrong", "2001:db8:0:2::1").await.0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hashing_is_bounded_and_the_rest_get_503() {
    let issuer = start(&[
        "--login-hash-concurrency",
        "1",
        "--login-hash-queue",
        "2",
        "--login-max-failures-per-user",
        "1",
    ])
    .await;
    // Different users from different addresses: no throttle is involved.
    let logins = (0..30).map(|i| {
        let issuer = &issuer;
        async move {
            issuer
                .login(&format!("user{i}"), "wrong", &format!("192.0.2.{i}"))
                .await
        }
    });
    let answers = futures::future::join_all(logins).await;
    let busy = count(&answers, 503);
    assert!(busy > 0, "{answers:?}");
    assert_eq!(busy + count(&answers, 401), 30, "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|(s, _)| *s == 503)
            .all(|(_, r)| r.as_deref() == Some("1")),
        "{answers:?}"
    );
    // One attempt per user is allowed: a user answered 401 is now throttled, while one
    // answered 503 never reached the password check and may try again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, (status, _)) in answers.iter().enumerate() {
        let (user, from) = (format!("user{i}"), format!("192.0.2.{i}"));
        let again = issuer.login(&user, "wrong", &from).await.0;
        let expected = if *status == 503 { 401 } else { 429 };
        assert_eq!(again, expected, "{user} first got {status}");
    }
}
