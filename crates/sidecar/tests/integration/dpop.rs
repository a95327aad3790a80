//! DPoP-bound (RFC 9449) and certificate-bound (RFC 8705) tokens through the real gRPC
//! server: a fresh proof per request, replays refused (in memory, and across two replicas
//! sharing a real `redis-server`), downgrades refused, the §7.1 challenges, and a store
//! outage answered 503.

use crate::support::bins::free_port;
use crate::support::dpop::DpopClient;
use crate::support::redis::Redis;
use crate::support::stack::debian_binary;
use crate::support::*;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use serde_json::{Value, json};

const HOST: &str = "api.test";

/// A request as Envoy describes it over TLS (`scheme: https`).
fn https_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    with_scheme(request(method, path, headers), "https")
}

fn url(path: &str) -> String {
    format!("https://{HOST}{path}")
}

/// A DPoP-bound token for `client` (`cnf.jkt`, RFC 9449 §6.1).
fn bound_token(key: &TestKey, client: &DpopClient, sub: &str) -> String {
    let mut claims = claims(sub);
    claims["cnf"] = json!({"jkt": client.jkt()});
    key.token(&claims)
}

/// `GET path` with `Authorization: DPoP token` and a fresh proof.
fn dpop_get(client: &DpopClient, path: &str, token: &str) -> CheckRequest {
    let proof = client.proof("GET", &url(path), Some(token));
    with_proof(path, token, &proof)
}

fn with_proof(path: &str, token: &str, proof: &str) -> CheckRequest {
    https_request(
        "GET",
        path,
        &[("authorization", &format!("DPoP {token}")), ("dpop", proof)],
    )
}

fn challenge(response: &CheckResponse) -> String {
    denial(response)
        .0
        .get("www-authenticate")
        .cloned()
        .unwrap_or_default()
}

fn error(response: &CheckResponse) -> Value {
    denial(response).1["error"].clone()
}

const OPTIONAL: &str = "    dpop: {mode: optional, algorithms: [ES256, EdDSA]}\n";

#[tokio::test]
async fn a_fresh_proof_per_request_is_allowed_and_a_replay_refused() {
    let (_jwks, key, server) = start_with_key(OPTIONAL).await;
    let client = DpopClient::new();
    let token = bound_token(&key, &client, "alice");

    let first = dpop_get(&client, "/api/orders", &token);
    let (set, removed) = allowed(&server.check(first.clone()).await);
    assert_eq!(set.get("x-user-id").map(String::as_str), Some("alice"));
    // The proof is as much a credential as the token: neither goes upstream.
    assert!(
        removed.contains(&"authorization".to_string()),
        "{removed:?}"
    );

    // The same proof again (§11.1).
    let replay = server.check(first).await;
    assert_eq!(denied_status(&replay), Some(401));
    assert_eq!(error(&replay), "invalid_dpop_proof");
    assert_eq!(
        challenge(&replay),
        "DPoP realm=\"test\", algs=\"ES256 EdDSA\", error=\"invalid_dpop_proof\", error_description=\"DPoP proof already used\""
    );

    // The token is now cached; a fresh proof is still needed on every request.
    allowed(&server.check(dpop_get(&client, "/api/orders", &token)).await);
    let no_proof = https_request(
        "GET",
        "/api/orders",
        &[("authorization", &format!("DPoP {token}"))],
    );
    assert_eq!(error(&server.check(no_proof).await), "invalid_dpop_proof");

    let (_, metrics) = server.admin_get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "jwt_authz_dpop_proofs_total",
            &[("result", "accepted")]
        ),
        2
    );
    assert_eq!(
        metric(
            &metrics,
            "jwt_authz_dpop_proofs_total",
            &[("result", "replayed")]
        ),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            "jwt_authz_checks_total",
            &[("reason", "dpop_replayed"), ("result", "deny")]
        ),
        1
    );
}

#[tokio::test]
async fn hostile_proofs_and_downgrades_are_refused() {
    let (_jwks, key, server) = start_with_key(OPTIONAL).await;
    let client = DpopClient::new();
    let token = bound_token(&key, &client, "alice");
    let path = "/api/orders";
    let proof = |claims: Value| client.sign(&claims);
    let base = || {
        json!({"jti": client.fresh_jti(), "htm": "GET", "htu": url(path), "iat": now(),
               "ath": crate::support::dpop::ath(&token)})
    };
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut claims = base();
        edit(&mut claims);
        with_proof(path, &token, &proof(claims))
    };
    let cases: Vec<(&str, CheckRequest)> = vec![
        ("wrong htm", with(&|c| c["htm"] = json!("POST"))),
        ("wrong htu", with(&|c| c["htu"] = json!(url("/api/admin")))),
        (
            "htu with a query",
            with(&|c| c["htu"] = json!(url("/api/orders?x=1"))),
        ),
        ("stale iat", with(&|c| c["iat"] = json!(now() - 3600))),
        ("future iat", with(&|c| c["iat"] = json!(now() + 3600))),
        (
            "bad ath",
            with(&|c| c["ath"] = json!(crate::support::dpop::ath("other"))),
        ),
        (
            "no ath",
            with(&|c| c.as_object_mut().unwrap().retain(|k, _| k != "ath")),
        ),
        (
            "two DPoP headers",
            https_request(
                "GET",
                path,
                &[
                    ("authorization", &format!("DPoP {token}")),
                    ("dpop", &format!("{},{}", proof(base()), proof(base()))),
                ],
            ),
        ),
        (
            "signed with HS256",
            with_proof(
                path,
                &token,
                &hs256_token(
                    &json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": client.public_jwk()}),
                    &base(),
                    b"secret",
                ),
            ),
        ),
        (
            "alg none",
            with_proof(
                path,
                &token,
                &format!(
                    "{}.{}.",
                    b64(
                        json!({"typ": "dpop+jwt", "alg": "none", "jwk": client.public_jwk()})
                            .to_string()
                            .as_bytes()
                    ),
                    b64(base().to_string().as_bytes())
                ),
            ),
        ),
        (
            "private key in jwk",
            with_proof(path, &token, &{
                let mut jwk = client.public_jwk();
                jwk["d"] = json!(b64(b"not-really-a-private-key-but-a-d"));
                let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk});
                TestKey::ec256("x").sign(&header, &base())
            }),
        ),
    ];
    for (case, request) in cases {
        let response = server.check(request).await;
        assert_eq!(denied_status(&response), Some(401), "{case}");
        assert_eq!(error(&response), "invalid_dpop_proof", "{case}");
    }

    // A valid proof by another key: cnf.jkt does not match (§6.1).
    let thief = DpopClient::new();
    let response = server.check(dpop_get(&thief, path, &token)).await;
    assert_eq!(error(&response), "invalid_token");
    assert_eq!(
        denial(&response).1["error_description"],
        "invalid DPoP key binding"
    );

    // The bound token as a bearer token: a downgrade (§7.2).
    let response = server.check_token(path, &token).await;
    assert_eq!(error(&response), "invalid_token");
    assert!(
        challenge(&response).starts_with("DPoP realm=\"test\", algs=\"ES256 EdDSA\""),
        "{}",
        challenge(&response)
    );

    // An unbound token with the DPoP scheme (§7.1).
    let plain = key.token(&claims("bob"));
    let response = server.check(dpop_get(&client, path, &plain)).await;
    assert_eq!(
        denial(&response).1["error_description"],
        "token is not DPoP-bound"
    );
    // ... is still fine as a bearer token in `optional` mode.
    allowed(&server.check_token(path, &plain).await);

    // No token: both schemes are offered (§7.1, RFC 9110 §11.6.1).
    let response = server.check(https_request("GET", path, &[])).await;
    assert_eq!(
        challenge(&response),
        "Bearer realm=\"test\", DPoP realm=\"test\", algs=\"ES256 EdDSA\""
    );
}

#[tokio::test]
async fn required_mode_refuses_bearer_tokens_and_off_refuses_dpop() {
    let (_jwks, key, server) =
        start_with_key("    dpop: {mode: required, algorithms: [ES256]}\n").await;
    let plain = key.token(&claims("bob"));
    let response = server.check_token("/api/orders", &plain).await;
    assert_eq!(
        denial(&response).1["error_description"],
        "DPoP-bound token required"
    );

    let (_jwks, key, server) = start_with_key("").await;
    let client = DpopClient::new();
    let token = bound_token(&key, &client, "alice");
    let response = server.check(dpop_get(&client, "/api/orders", &token)).await;
    assert_eq!(
        denial(&response).1["error_description"],
        "DPoP not accepted for this token"
    );
    // With DPoP off, a bound token is not a bearer token either.
    let response = server.check_token("/api/orders", &token).await;
    assert_eq!(
        denial(&response).1["error_description"],
        "DPoP-bound token sent as bearer"
    );
}

/// Two replicas sharing one `redis-server`: a proof accepted by one is refused by the
/// other; with Redis stopped, DPoP requests are answered 503, never allowed unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_replay_store_and_fail_closed_without_it() {
    let Some(binary) = debian_binary("redis-server") else {
        return;
    };
    let mut redis = Redis::start(&binary, free_port());
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let extra = format!(
        "    dpop: {{mode: optional, algorithms: [ES256]}}\ndpop:\n  replay_store:\n    redis: {{url: \"{}\", timeout: 300ms}}\n",
        redis.url()
    );
    let one = TestServer::start_ready(&config_yaml(&jwks.url(), &extra)).await;
    let two = TestServer::start_ready(&config_yaml(&jwks.url(), &extra)).await;
    let client = DpopClient::new();
    let token = bound_token(&key, &client, "alice");

    let request = dpop_get(&client, "/api/orders", &token);
    allowed(&one.check(request.clone()).await);
    let replay = two.check(request).await;
    assert_eq!(error(&replay), "invalid_dpop_proof");
    allowed(&two.check(dpop_get(&client, "/api/orders", &token)).await);

    redis.stop();
    let response = one.check(dpop_get(&client, "/api/orders", &token)).await;
    assert_eq!(denied_status(&response), Some(503), "{response:?}");
    assert_eq!(grpc_code(&response), 14, "UNAVAILABLE");
    // Bearer tokens do not depend on the store.
    allowed(
        &one.check_token("/api/orders", &key.token(&claims("bob")))
            .await,
    );
    let (_, metrics) = one.admin_get("/metrics").await;
    assert!(
        metric(
            &metrics,
            "jwt_authz_dpop_replay_store_errors_total",
            &[("store", "redis"), ("error", "unavailable")]
        ) >= 1,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_certificate_bound_token_needs_its_certificate() {
    let (_jwks, key, server) = start_with_key("").await;
    let mine = rcgen::generate_simple_self_signed(vec!["mine.test".into()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["other.test".into()]).unwrap();
    let envoy_sends = |pem: &str| {
        percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    // RFC 8705 §3.1: base64url SHA-256 of the DER certificate, computed here independently.
    let thumbprint =
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, mine.cert.der()).as_ref());
    let mut claims = claims("alice");
    claims["cnf"] = json!({"x5t#S256": thumbprint});
    let token = key.token(&claims);
    let over = |certificate: Option<String>| {
        let mut request = request(
            "GET",
            "/api/orders",
            &[("authorization", &format!("Bearer {token}"))],
        );
        if let (Some(attributes), Some(certificate)) = (request.attributes.as_mut(), certificate) {
            attributes.source = Some(Peer {
                certificate,
                ..Default::default()
            });
        }
        request
    };
    allowed(
        &server
            .check(over(Some(envoy_sends(&mine.cert.pem()))))
            .await,
    );
    let response = server
        .check(over(Some(envoy_sends(&other.cert.pem()))))
        .await;
    assert_invalid_token(&response, "token bound to another certificate");
    let response = server.check(over(None)).await;
    assert_invalid_token(
        &response,
        "certificate-bound token without a client certificate",
    );
}

/// Server nonces (RFC 9449 §9): a proof without one is answered `use_dpop_nonce` with a
/// `DPoP-Nonce` to retry with; every replica sharing the secret accepts it.
#[tokio::test]
async fn server_nonces_are_issued_on_demand_and_shared_by_replicas() {
    let secret = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(secret.path(), "0123456789abcdef0123456789abcdef\n").expect("write");
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let extra = format!(
        "{OPTIONAL}dpop:\n  nonce: {{secret_file: \"{}\", lifetime: 60s}}\n",
        secret.path().display()
    );
    let one = TestServer::start_ready(&config_yaml(&jwks.url(), &extra)).await;
    let two = TestServer::start_ready(&config_yaml(&jwks.url(), &extra)).await;
    let client = DpopClient::new();
    let token = bound_token(&key, &client, "alice");
    let path = "/api/orders";
    let proof_with = |nonce: Option<&str>| {
        let mut claims = json!({"jti": client.fresh_jti(), "htm": "GET", "htu": url(path),
                                "iat": now(), "ath": crate::support::dpop::ath(&token)});
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        with_proof(path, &token, &client.sign(&claims))
    };

    let response = one.check(proof_with(None)).await;
    assert_eq!(denied_status(&response), Some(401));
    assert_eq!(error(&response), "use_dpop_nonce");
    assert!(
        challenge(&response).contains("error=\"use_dpop_nonce\""),
        "{}",
        challenge(&response)
    );
    let nonce = denial(&response).0["dpop-nonce"].clone();
    assert!(!nonce.is_empty());

    let (_, removed) = allowed(&one.check(proof_with(Some(&nonce))).await);
    assert!(
        removed.contains(&"dpop".to_string()),
        "the proof stays here: {removed:?}"
    );
    allowed(&two.check(proof_with(Some(&nonce))).await);
    // A nonce this deployment never issued: a fresh one instead.
    let response = two
        .check(proof_with(Some("eyJ7S_zG.eyJH0-Z.HX4w-7v")))
        .await;
    assert_eq!(error(&response), "use_dpop_nonce");
}

/// A reload forgets no proof (§11.1): not when the window changes (max_age 60 s -> 61 s and
/// back), not when the store is replaced (memory -> a real `redis-server` -> memory), not when
/// the provider is renamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reload_keeps_the_proofs_seen() {
    let window = |max_age: &str| format!("    dpop: {{mode: optional, max_age: {max_age}}}\n");
    let (jwks, key, server) = start_with_key(&window("60s")).await;
    let client = DpopClient::new();
    let token = bound_token(&key, &client, "alice");
    let used = dpop_get(&client, "/api/orders", &token);
    allowed(&server.check(used.clone()).await);

    let reload = |extra: String| {
        let yaml = config_yaml(&jwks.url(), &extra);
        let server = std::sync::Arc::clone(&server.server);
        async move {
            server
                .reload(jwt_authz::Config::from_yaml(&yaml).expect("config"))
                .await
                .expect("reload");
        }
    };
    let replayed = |response: &CheckResponse| {
        assert_eq!(denied_status(response), Some(401), "{response:?}");
        let challenge = challenge(response);
        assert!(
            challenge.contains("error_description=\"DPoP proof already used\""),
            "{challenge}"
        );
    };
    reload(window("61s")).await;
    replayed(&server.check(used.clone()).await);
    reload(window("60s")).await;
    replayed(&server.check(used.clone()).await);
    let renamed = window("60s");
    let yaml = config_yaml(&jwks.url(), &renamed).replace("- name: test", "- name: renamed");
    server
        .server
        .reload(jwt_authz::Config::from_yaml(&yaml).expect("config"))
        .await
        .expect("reload");
    replayed(&server.check(used.clone()).await);

    let Some(binary) = debian_binary("redis-server") else {
        return;
    };
    let redis = Redis::start(&binary, free_port());
    let in_redis = format!(
        "{}dpop:\n  replay_store:\n    redis: {{url: \"{}\", timeout: 300ms}}\n",
        window("60s"),
        redis.url()
    );
    reload(in_redis).await;
    // Seen in memory before the store changed.
    replayed(&server.check(used.clone()).await);
    let second = dpop_get(&client, "/api/orders", &token);
    allowed(&server.check(second.clone()).await);
    reload(window("60s")).await;
    // Seen in Redis (asked while what it holds lives), and in the first memory store.
    replayed(&server.check(second).await);
    replayed(&server.check(used).await);
    allowed(&server.check(dpop_get(&client, "/api/orders", &token)).await);
}
