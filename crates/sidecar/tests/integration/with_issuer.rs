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
    start_issuer_with(dir, &[]).await
}

/// [`start_issuer`] with more command-line arguments.
async fn start_issuer_with(dir: &std::path::Path, extra: &[&str]) -> (String, issuer::Settings) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let db = dir.join("users.db").display().to_string();
    let keys = dir.join("keys").display().to_string();
    let mut args = vec![
        "issuer",
        "--demo",
        "--issuer-url",
        &base,
        "--audience",
        "api",
        "--db",
        &db,
        "--key-dir",
        &keys,
    ];
    args.extend_from_slice(extra);
    let settings = issuer::config::Cli::try_parse_from(args)
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

/// The issuer as an introspecting provider: `jwt-authz` its client (secret `secret`), and the
/// sidecar's config for it (endpoint found by discovery, answers cached for 1 s), `more`
/// provider lines added, and `introspection_more` lines in its `introspection`.
async fn introspecting_pair(
    dir: &std::path::Path,
    issuer_args: &[&str],
    sidecar_secret: &str,
    more: &str,
    introspection_more: &str,
) -> (String, TestServer) {
    let issuer_secret = dir.join("issuer-secret");
    std::fs::write(&issuer_secret, "introspection-secret-0123456789\n").expect("secret");
    let sidecar_file = dir.join("sidecar-secret");
    std::fs::write(&sidecar_file, sidecar_secret).expect("secret");
    let client = format!("jwt-authz={}", issuer_secret.display());
    let mut args = vec!["--introspection-client", client.as_str()];
    args.extend_from_slice(issuer_args);
    let (base, _) = start_issuer_with(dir, &args).await;
    let yaml = config_yaml(&format!("{base}/.well-known/jwks.json"), "")
        .replace(ISSUER, &base)
        .replace("audiences: [api, other-api]", "audiences: [api]")
        .replace(
            "    leeway: 5s\n",
            &format!(
                "    leeway: 1s\n{more}    introspection:\n      client_id: jwt-authz\n      client_auth: {{client_secret_basic: {{secret_file: {}}}}}\n      cache: {{max_ttl: 1s, inactive_ttl: 1s}}\n{introspection_more}",
                sidecar_file.display()
            ),
        )
        + "rules:\n  - name: billing\n    match: {path: {prefix: /billing/}}\n    audiences: [billing-api]\n    access: authenticated\n";
    (base, TestServer::start_ready(&yaml).await)
}

/// RFC 7662 end to end: the issuer's opaque tokens pass through its real introspection
/// endpoint (found by discovery), each token asked about once however many checks arrive at
/// once, and a token logged out stops passing within the cache's second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuers_opaque_tokens_are_introspected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, server) =
        introspecting_pair(dir.path(), &[], "introspection-secret-0123456789", "", "").await;
    let issuer_api = Gateway::new(&base);
    let token = issuer_api.opaque_token("bob", "bob-password").await;
    assert!(!token.contains('.'), "opaque");
    let (set, _) = allowed(&server.check_token("/api/orders", &token).await);
    assert_eq!(set["x-user-name"], "bob");
    assert_eq!(set["x-user-role"], "user");
    let introspections = |metrics: &str, outcome: &str| {
        metric(
            metrics,
            "jwt_authz_introspections_total",
            &[("outcome", outcome)],
        )
    };
    // Another route of the same token: the cached answer.
    assert_eq!(
        denied_status(&server.check_token("/billing/1", &token).await),
        Some(401),
        "another audience"
    );
    let (_, metrics) = server.admin_get("/metrics").await;
    assert_eq!(introspections(&metrics, "active"), 1, "{metrics}");

    // A second token, checked 16 times at once: one call.
    let alice = issuer_api.opaque_token("alice", "alice-password").await;
    let server = std::sync::Arc::new(server);
    let checks: Vec<_> = (0..16)
        .map(|_| {
            let (server, alice) = (std::sync::Arc::clone(&server), alice.clone());
            tokio::spawn(async move { server.check_token("/api/orders", &alice).await })
        })
        .collect();
    for check in checks {
        assert_eq!(grpc_code(&check.await.expect("joined")), 0);
    }
    let (_, metrics) = server.admin_get("/metrics").await;
    assert_eq!(introspections(&metrics, "active"), 2, "{metrics}");

    // Logged out: the issuer answers active: false once the cached answer is gone.
    assert_eq!(issuer_api.logout(&token).await, 204);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = server.check_token("/api/orders", &token).await;
    assert_eq!(denied_status(&response), Some(401));
    assert_eq!(denial(&response).1["error_description"], "token not active");
    // A token the issuer never issued.
    let response = server
        .check_token("/api/orders", "never-issued-token")
        .await;
    assert_eq!(denial(&response).1["error_description"], "token not active");
}

/// An expired opaque token, a sidecar whose secret the issuer refuses (503: nothing is known
/// of the token), and a DPoP-bound opaque token (`cnf.jkt` in the answer) that passes only
/// with its proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_refused_and_bound_opaque_tokens() {
    // Tokens that live one second.
    let short_dir = tempfile::tempdir().expect("tempdir");
    let (base, server) = introspecting_pair(
        short_dir.path(),
        &["--token-ttl", "1s"],
        "introspection-secret-0123456789",
        "",
        "",
    )
    .await;
    let token = Gateway::new(&base)
        .opaque_token("bob", "bob-password")
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let response = server.check_token("/api/orders", &token).await;
    assert_eq!(denied_status(&response), Some(401), "expired: {response:?}");

    // DPoP-bound.
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, server) = introspecting_pair(
        dir.path(),
        &[],
        "introspection-secret-0123456789",
        "    dpop: {mode: optional, algorithms: [ES256]}\n",
        "",
    )
    .await;
    let client = crate::support::dpop::DpopClient::new();
    let (status, body) = Gateway::new(&base)
        .login_opaque("bob", "bob-password", Some(&client))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tokenType"], "DPoP");
    let bound = body["accessToken"].as_str().expect("token").to_owned();
    let proof = client.proof("GET", "http://api.test/api/orders", Some(&bound));
    let with_proof = with_scheme(
        request(
            "GET",
            "/api/orders",
            &[
                ("authorization", &format!("DPoP {bound}")),
                ("dpop", &proof),
            ],
        ),
        "http",
    );
    let (set, _) = allowed(&server.check(with_proof).await);
    assert_eq!(set["x-user-name"], "bob");
    let response = server.check_token("/api/orders", &bound).await;
    assert_eq!(
        denied_status(&response),
        Some(401),
        "a bound token is not a bearer token"
    );

    // The issuer refuses this sidecar's secret: 503, never 401.
    let refused_dir = tempfile::tempdir().expect("tempdir");
    let (base, refused) = introspecting_pair(
        refused_dir.path(),
        &[],
        "not-the-secret-at-all-0000",
        "",
        "",
    )
    .await;
    let token = Gateway::new(&base)
        .opaque_token("bob", "bob-password")
        .await;
    let response = refused.check_token("/api/orders", &token).await;
    assert_eq!(denied_status(&response), Some(503), "{response:?}");
    let (_, metrics) = refused.admin_get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "jwt_authz_introspections_total",
            &[("outcome", "auth_refused")]
        ),
        1
    );
}

/// RFC 9701: the sidecar asks for signed answers, and the issuer's (RS256, its current key)
/// verify with the keys the sidecar holds for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuers_signed_introspection_answers_are_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, server) = introspecting_pair(
        dir.path(),
        &[],
        "introspection-secret-0123456789",
        "",
        "      jwt_response: true\n",
    )
    .await;
    let issuer_api = Gateway::new(&base);
    let token = issuer_api.opaque_token("alice", "alice-password").await;
    let (set, _) = allowed(&server.check_token("/api/orders", &token).await);
    assert_eq!(set["x-user-name"], "alice");
    let response = server
        .check_token("/api/orders", "never-issued-token")
        .await;
    assert_eq!(denial(&response).1["error_description"], "token not active");
}
