//! The issuer and jwt-authz together, in-process, over real sockets: a token from
//! `/auth/login` is accepted by `Check` with the JWKS fetched over HTTP, and a key rotated
//! while both run is picked up without a restart.

use std::time::Duration;

use crate::support::gateway::{Gateway, jwt_part};
use crate::support::*;
use clap::Parser;

/// How many keys jwt-authz holds for its provider, from its metrics.
async fn jwt_authz_keys(server: &TestServer) -> u64 {
    let (_, metrics) = server.admin_get("/metrics").await;
    metric(&metrics, "jwt_authz_jwks_keys", &[])
}

/// The issuer serving on a loopback port (demo users, audience `api`, data in `dir`): its
/// base URL and the settings it runs with.
async fn start_issuer(dir: &std::path::Path) -> (String, issuer::Settings) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let settings = issuer::config::Cli::try_parse_from([
        "issuer",
        "--demo",
        "--issuer-url",
        &base,
        "--audience",
        "api",
        "--db",
        &dir.join("users.db").display().to_string(),
        "--key-dir",
        &dir.join("keys").display().to_string(),
    ])
    .expect("settings")
    .settings;
    let iss = issuer::Issuer::open(settings.clone()).expect("issuer");
    tokio::spawn(iss.serve(listener, std::future::pending()));
    (base, settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_tokens_pass_check_and_rotation_needs_no_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, settings) = start_issuer(dir.path()).await;
    let key_dir = settings.key_dir.clone();
    let retention = settings.key_retention();

    let yaml = config_yaml(&format!("{base}/.well-known/jwks.json"), "")
        .replace(ISSUER, &base)
        .replace("audiences: [api, other-api]", "audiences: [api]")
        // Refresh about every second whatever the issuer's max-age says.
        .replace("max_ttl: 1h", "max_ttl: 1s");
    let server = TestServer::start_ready(&yaml).await;

    // The issuer answers /auth/login itself here (no Envoy in front).
    let issuer_api = Gateway::new(&base);
    let token = issuer_api.login("bob", "bob-password").await;
    let claims = jwt_part(&token, 1);
    let (set, _) = allowed(&server.check_token("/api/orders", &token).await);
    assert_eq!(set["x-user-id"], claims["sub"].as_str().expect("sub"));
    assert_eq!(set["x-user-name"], "bob");
    assert_eq!(set["x-user-role"], "user");

    // Rotate on disk while both run. The new key is published at once and signs only 5 s
    // later (at least 4 s, as times are whole seconds); meanwhile jwt-authz's scheduled
    // refresh picks it up, so no token ever names a key it does not hold.
    let first_kid = jwt_part(&token, 0)["kid"].clone();
    issuer::keys::KeyDir::new(&key_dir, 2048)
        .expect("dir")
        .rotate(Some("second"), Duration::from_secs(5), retention)
        .expect("rotate");
    let rotated = std::time::Instant::now();
    while jwt_authz_keys(&server).await < 2 {
        assert!(
            rotated.elapsed() < Duration::from_millis(3500),
            "never published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let early = issuer_api.login("alice", "alice-password").await;
    assert!(rotated.elapsed() < Duration::from_secs(4));
    assert_eq!(
        jwt_part(&early, 0)["kid"],
        first_kid,
        "signed before its time"
    );
    let mut new_token = early;
    for _ in 0..40 {
        new_token = issuer_api.login("alice", "alice-password").await;
        if jwt_part(&new_token, 0)["kid"] == "second" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(jwt_part(&new_token, 0)["kid"], "second");
    let (set, _) = allowed(&server.check_token("/api/users", &new_token).await);
    assert_eq!(set["x-user-role"], "admin");

    // The token signed before the rotation still passes.
    allowed(&server.check_token("/api/orders", &token).await);
}

/// The issuer mints a DPoP-bound token for a login with a proof (RFC 9449 §5), and
/// jwt-authz accepts it only with a fresh proof by the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_login_gets_a_bound_token_usable_only_with_proofs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, _) = start_issuer(dir.path()).await;
    let issuer_api = Gateway::new(&base);
    let client = crate::support::dpop::DpopClient::new();

    let (status, body) = issuer_api.login_dpop("bob", "bob-password", &client).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tokenType"], "DPoP");
    let token = body["accessToken"].as_str().expect("token").to_owned();
    assert_eq!(jwt_part(&token, 1)["cnf"]["jkt"], client.jkt());

    // A proof for another URI, a replayed proof, two proofs: 400 invalid_dpop_proof, and no
    // token (§5).
    let url = format!("{base}/auth/login");
    let http = reqwest::Client::new();
    let login = |proofs: Vec<String>| {
        let mut request = http
            .post(&url)
            .json(&serde_json::json!({"username": "bob", "password": "bob-password"}));
        for proof in proofs {
            request = request.header("dpop", proof);
        }
        request.send()
    };
    let used = client.proof("POST", &url, None);
    assert_eq!(
        login(vec![used.clone()]).await.expect("login").status(),
        200
    );
    for (case, proofs) in [
        ("replayed", vec![used]),
        (
            "other htu",
            vec![client.proof("POST", &format!("{base}/other"), None)],
        ),
        ("wrong htm", vec![client.proof("GET", &url, None)]),
        (
            "two proofs",
            vec![
                client.proof("POST", &url, None),
                client.proof("POST", &url, None),
            ],
        ),
    ] {
        let response = login(proofs).await.expect("login");
        assert_eq!(response.status(), 400, "{case}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["error"], "invalid_dpop_proof", "{case}");
        assert!(body.get("accessToken").is_none(), "{case}");
    }

    let doc: serde_json::Value = http
        .get(format!("{base}/.well-known/openid-configuration"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(
        doc["dpop_signing_alg_values_supported"],
        serde_json::json!(["ES256", "ES384", "RS256", "PS256", "EdDSA"])
    );

    let yaml = config_yaml(&format!("{base}/.well-known/jwks.json"), "")
        .replace(ISSUER, &base)
        .replace("audiences: [api, other-api]", "audiences: [api]")
        .replace(
            "    leeway: 5s\n",
            "    leeway: 5s\n    dpop: {mode: required, algorithms: [ES256]}\n",
        );
    let server = TestServer::start_ready(&yaml).await;
    let proof = client.proof("GET", "http://api.test/api/orders", Some(&token));
    let request = with_scheme(
        request(
            "GET",
            "/api/orders",
            &[
                ("authorization", &format!("DPoP {token}")),
                ("dpop", &proof),
            ],
        ),
        "http",
    );
    let (set, _) = allowed(&server.check(request.clone()).await);
    assert_eq!(set["x-user-name"], "bob");
    assert_eq!(denied_status(&server.check(request).await), Some(401));
    assert_eq!(
        denied_status(&server.check_token("/api/orders", &token).await),
        Some(401),
        "a bound token is not a bearer token"
    );
}
