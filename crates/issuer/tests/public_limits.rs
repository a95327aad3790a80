//! The rate limit on the public endpoints, over real sockets: each client binds its own
//! loopback address (127.0.0.2, 127.0.0.3, ...), so the issuer sees distinct peers.

use std::net::IpAddr;

use serde_json::json;

mod support;

use support::{Running, start};

/// A client whose connections come from `from` (a loopback address).
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().expect("address"))
        .build()
        .expect("client")
}

impl Running {
    /// `GET path` from `client`, with an `X-Forwarded-For` if given: status and Retry-After.
    async fn get(
        &self,
        client: &reqwest::Client,
        path: &str,
        forwarded: Option<&str>,
    ) -> (u16, Option<String>) {
        let mut request = client.get(format!("{}{path}", self.base));
        if let Some(from) = forwarded {
            request = request.header("x-forwarded-for", from);
        }
        let response = request.send().await.expect("get");
        support::status_and_retry_after(&response)
    }
}

#[tokio::test]
async fn one_address_past_its_burst_gets_429_while_another_is_served() {
    let issuer = start(&["--public-rate-limit", "1", "--public-rate-burst", "3"]).await;
    let (a, b) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    for _ in 0..3 {
        assert_eq!(issuer.get(&a, "/auth/status", None).await.0, 200);
    }
    assert_eq!(
        issuer.get(&a, "/auth/status", None).await,
        (429, Some("1".to_owned()))
    );
    // Every public endpoint draws on the same bucket.
    for path in [
        "/auth/status/1",
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
    ] {
        assert_eq!(issuer.get(&a, path, None).await.0, 429, "{path}");
    }
    // X-Forwarded-For is not trusted by default: a made-up one changes nothing.
    assert_eq!(
        issuer.get(&a, "/auth/status", Some("203.0.113.9")).await.0,
        429
    );
    // The other address is served; health checks and logins are not limited here.
    assert_eq!(issuer.get(&b, "/auth/status", None).await.0, 200);
    assert_eq!(issuer.get(&a, "/healthz", None).await.0, 200);
    let login = a
        .post(format!("{}/auth/login", issuer.base))
        .json(&json!({"username": "bob", "password": "bob-password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status().as_u16(), 200);
    let body: serde_json::Value = serde_json::from_slice(
        &a.get(format!("{}/auth/status", issuer.base))
            .send()
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body"),
    )
    .expect("json");
    assert_eq!(body["error"], "too_many_requests");
    // One request a second comes back.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(issuer.get(&a, "/auth/status", None).await.0, 200);
    assert_eq!(issuer.get(&a, "/auth/status", None).await.0, 429);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_limited() {
    let issuer = start(&[
        "--trust-forwarded-for",
        "--public-rate-limit",
        "1",
        "--public-rate-burst",
        "2",
    ])
    .await;
    // One proxy, two clients behind it.
    let proxy = client_from("127.0.0.4");
    for _ in 0..2 {
        let answer = issuer
            .get(&proxy, "/auth/status", Some("198.51.100.1"))
            .await;
        assert_eq!(answer.0, 200);
    }
    assert_eq!(
        issuer
            .get(&proxy, "/auth/status", Some("10.0.0.1, 198.51.100.1"))
            .await
            .0,
        429,
        "the last entry, appended by the proxy, is the client"
    );
    assert_eq!(
        issuer
            .get(&proxy, "/auth/status", Some("198.51.100.2"))
            .await
            .0,
        200
    );
}
