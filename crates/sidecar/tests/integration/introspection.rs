//! Opaque tokens through `providers[].introspection`, against an endpoint these tests
//! control (what it answers, how slowly, what it was sent): the answers that pass and those
//! that do not, the endpoint failing every way (503, never 401), the cache and its single
//! flight, the rate limit, client authentication on the wire, and RFC 9701 signed answers.
//! The issuer's real endpoint is `with_issuer`'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use serde_json::{Value, json};

use crate::support::*;

/// What the endpoint answers.
#[derive(Clone)]
enum Answer {
    Json(Value),
    Status(u16),
    Raw(&'static str, String),
}

struct Endpoint {
    answer: std::sync::Mutex<Answer>,
    delay: std::sync::Mutex<Duration>,
    calls: AtomicUsize,
    /// The last request's headers and body.
    last: std::sync::Mutex<Option<(HeaderMap, String)>>,
}

struct Fake {
    url: String,
    state: Arc<Endpoint>,
}

impl Fake {
    async fn start(answer: Answer) -> Self {
        let state = Arc::new(Endpoint {
            answer: std::sync::Mutex::new(answer),
            delay: std::sync::Mutex::new(Duration::ZERO),
            calls: AtomicUsize::new(0),
            last: std::sync::Mutex::new(None),
        });
        async fn introspect(
            State(state): State<Arc<Endpoint>>,
            headers: HeaderMap,
            body: String,
        ) -> Response {
            state.calls.fetch_add(1, Ordering::SeqCst);
            *state.last.lock().expect("lock") = Some((headers, body));
            let delay = *state.delay.lock().expect("lock");
            tokio::time::sleep(delay).await;
            match state.answer.lock().expect("lock").clone() {
                Answer::Json(value) => axum::Json(value).into_response(),
                Answer::Status(code) => StatusCode::from_u16(code).expect("status").into_response(),
                Answer::Raw(content_type, body) => {
                    ([("content-type", content_type)], body).into_response()
                }
            }
        }
        let app = Router::new()
            .route("/introspect", post(introspect))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/introspect", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state }
    }

    fn answer(&self, answer: Answer) {
        *self.state.answer.lock().expect("lock") = answer;
    }

    fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    fn last(&self) -> (HeaderMap, String) {
        self.state
            .last
            .lock()
            .expect("lock")
            .clone()
            .expect("a call")
    }
}

/// An active answer for `sub`, for this provider and audience, valid for 5 minutes.
fn active(sub: &str) -> Value {
    json!({
        "active": true,
        "iss": ISSUER,
        "sub": sub,
        "aud": AUDIENCE,
        "exp": now() + 300,
        "iat": now(),
        "username": format!("{sub}-name"),
        "role": "user",
        "scope": "orders:read profile",
        "token_type": "Bearer",
    })
}

/// The test provider (keys from `jwks`) introspecting opaque tokens at `endpoint` with
/// `auth` (YAML), and a scope rule.
fn config(jwks: &JwksServer, endpoint: &str, auth: &str, more: &str) -> String {
    config_yaml(&jwks.url(), "")
        .replace(
            "    jwks_cache:",
            &format!(
                "    introspection:\n      endpoint: {endpoint}\n      client_id: jwt-authz\n      client_auth: {auth}\n      timeout: 500ms\n{more}    jwks_cache:"
            ),
        )
        + "rules:\n  - name: orders\n    match: {path: {prefix: /api/orders}}\n    access:\n      claims: [{claim: scope, all_of: [\"orders:read\"]}]\n  - name: admin\n    match: {path: {prefix: /admin}}\n    access:\n      claims: [{claim: scope, all_of: [\"admin\"]}]\n"
}

fn secret_file(dir: &std::path::Path) -> (String, String) {
    let path = dir.join("secret");
    std::fs::write(&path, "s3cret:with spaces\n").expect("secret");
    (
        format!(
            "{{client_secret_basic: {{secret_file: {}}}}}",
            path.display()
        ),
        path.display().to_string(),
    )
}

async fn start(answer: Answer, more: &str) -> (tempfile::TempDir, JwksServer, Fake, TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = JwksServer::start(vec![TestKey::rsa("k1").jwk()]).await;
    let fake = Fake::start(answer).await;
    let (auth, _) = secret_file(dir.path());
    let server = TestServer::start_ready(&config(&jwks, &fake.url, &auth, more)).await;
    (dir, jwks, fake, server)
}

fn reason_count(metrics: &str, reason: &str) -> u64 {
    metric(metrics, "jwt_authz_checks_total", &[("reason", reason)])
}

#[tokio::test]
async fn an_active_token_passes_with_its_members_as_claims_and_is_then_cached() {
    let (_dir, _jwks, fake, server) = start(Answer::Json(active("u-7")), "").await;
    let opaque = "2YotnFZFEjr1zCsicMWpAA";
    let (set, removed) = allowed(&server.check_token("/api/orders", opaque).await);
    assert_eq!(set["x-user-id"], "u-7");
    assert_eq!(set["x-user-name"], "u-7-name");
    assert!(removed.contains(&"authorization".to_owned()));
    // The scope the answer lacks: 403, from the same cached answer.
    let denied = server.check_token("/admin/x", opaque).await;
    assert_eq!(denied_status(&denied), Some(403));
    // And the allowed route again.
    assert_eq!(
        grpc_code(&server.check_token("/api/orders", opaque).await),
        0
    );
    assert_eq!(
        fake.calls(),
        1,
        "the later checks were answered by the cache"
    );
    let (headers, body) = fake.last();
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    assert!(form.contains(&("token".to_owned(), opaque.to_owned())));
    assert!(form.contains(&("token_type_hint".to_owned(), "access_token".to_owned())));
    // RFC 6749 §2.3.1: id and secret form-encoded, then base64.
    let basic = headers["authorization"].to_str().expect("ascii");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim_start_matches("Basic "))
        .expect("base64");
    assert_eq!(
        String::from_utf8(decoded).expect("utf-8"),
        "jwt-authz:s3cret%3Awith+spaces"
    );
    let (_, metrics) = server.admin_get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "jwt_authz_introspections_total",
            &[("outcome", "active")]
        ),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            "jwt_authz_introspection_cache_lookups_total",
            &[("outcome", "hit")]
        ),
        2
    );
    assert_eq!(reason_count(&metrics, "cached"), 1, "{metrics}");
}

#[tokio::test]
async fn concurrent_checks_of_one_token_make_one_call() {
    let (_dir, _jwks, fake, server) = start(Answer::Json(active("u-1")), "").await;
    *fake.state.delay.lock().expect("lock") = Duration::from_millis(300);
    let server = Arc::new(server);
    let checks: Vec<_> = (0..20)
        .map(|_| {
            let server = Arc::clone(&server);
            tokio::spawn(async move { server.check_token("/api/orders", "same-opaque").await })
        })
        .collect();
    for check in checks {
        let response = check.await.expect("joined");
        assert_eq!(grpc_code(&response), 0, "{response:?}");
    }
    assert_eq!(fake.calls(), 1, "20 concurrent checks, one call");
    // Each waited on that call: none was answered by the cache.
    let (_, metrics) = server.admin_get("/metrics").await;
    let lookups = |outcome| {
        metric(
            &metrics,
            "jwt_authz_introspection_cache_lookups_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!((lookups("hit"), lookups("miss")), (0, 20), "{metrics}");
}

#[tokio::test]
async fn inactive_and_unusable_answers_are_401_and_inactive_ones_are_cached_briefly() {
    let (_dir, _jwks, fake, server) = start(
        Answer::Json(json!({"active": false})),
        "      cache: {inactive_ttl: 300ms, max_ttl: 10s}\n",
    )
    .await;
    for _ in 0..3 {
        let response = server.check_token("/api/orders", "dead-token").await;
        assert_eq!(denied_status(&response), Some(401));
        let (headers, body) = denial(&response);
        assert!(
            headers["www-authenticate"].contains("invalid_token"),
            "{headers:?}"
        );
        assert_eq!(body["error_description"], "token not active");
    }
    assert_eq!(fake.calls(), 1, "an inactive answer is cached");
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.check_token("/api/orders", "dead-token").await;
    assert_eq!(fake.calls(), 2, "...for inactive_ttl only");

    // What the endpoint says of a token, held to a JWT's rules: each a 401 of its own.
    let mut expired = active("u-2");
    expired["exp"] = json!(now() - 3600);
    let mut other_issuer = active("u-3");
    other_issuer["iss"] = json!("https://elsewhere.example");
    let mut other_audience = active("u-4");
    other_audience["aud"] = json!("another-api");
    let mut refresh = active("u-5");
    refresh["token_type"] = json!("refresh_token");
    let mut no_exp = active("u-6");
    no_exp.as_object_mut().expect("object").remove("exp");
    let big = format!("{{\"active\": true, \"pad\": \"{}\"}}", "x".repeat(70_000));
    for (i, (answer, description)) in [
        (Answer::Json(expired), "token expired"),
        (Answer::Json(other_issuer), "invalid issuer"),
        (Answer::Json(other_audience), "invalid audience"),
        (Answer::Json(refresh), "token type not accepted"),
        (Answer::Json(no_exp), "missing required claim"),
        (
            Answer::Json(json!({"active": "true"})),
            "token could not be introspected",
        ),
        (
            Answer::Json(json!([true])),
            "token could not be introspected",
        ),
        (
            Answer::Raw("text/html", "<html>login</html>".into()),
            "token could not be introspected",
        ),
        (
            Answer::Raw("application/json", big),
            "token could not be introspected",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        fake.answer(answer);
        let response = server
            .check_token("/api/orders", &format!("token-{i}"))
            .await;
        assert_eq!(denied_status(&response), Some(401), "{description}");
        assert_eq!(denial(&response).1["error_description"], description);
    }
}

#[tokio::test]
async fn an_endpoint_that_fails_is_503_never_401() {
    let (_dir, _jwks, fake, server) = start(Answer::Status(500), "").await;
    let unavailable = |response: &CheckResponse, why: &str| {
        assert_eq!(denied_status(response), Some(503), "{why}: {response:?}");
        let (_, body) = denial(response);
        assert_eq!(body["error"], "temporarily_unavailable", "{why}");
    };
    unavailable(
        &server.check_token("/api/orders", "t-500").await,
        "HTTP 500",
    );
    fake.answer(Answer::Status(401));
    unavailable(
        &server.check_token("/api/orders", "t-401").await,
        "client refused",
    );
    fake.answer(Answer::Json(active("u-1")));
    *fake.state.delay.lock().expect("lock") = Duration::from_millis(900);
    unavailable(
        &server.check_token("/api/orders", "t-slow").await,
        "timeout",
    );
    // Nothing was cached: the endpoint back, the same token passes.
    *fake.state.delay.lock().expect("lock") = Duration::ZERO;
    assert_eq!(
        grpc_code(&server.check_token("/api/orders", "t-500").await),
        0
    );
    let (_, metrics) = server.admin_get("/metrics").await;
    for outcome in ["error", "auth_refused", "timeout"] {
        assert_eq!(
            metric(
                &metrics,
                "jwt_authz_introspections_total",
                &[("outcome", outcome)]
            ),
            1,
            "{outcome}: {metrics}"
        );
    }
    assert_eq!(reason_count(&metrics, "introspection_unavailable"), 3);

    // Nothing listening at all.
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = JwksServer::start(vec![TestKey::rsa("k1").jwk()]).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let (auth, _) = secret_file(dir.path());
    let down = TestServer::start_ready(&config(
        &jwks,
        &format!("http://{closed}/introspect"),
        &auth,
        "",
    ))
    .await;
    unavailable(&down.check_token("/api/orders", "any").await, "down");
}

#[tokio::test]
async fn calls_beyond_the_rate_limit_are_503_and_jwts_are_never_sent() {
    let (_dir, _jwks, fake, server) = start(
        Answer::Json(json!({"active": false})),
        "      rate_limit: {per_second: 0.5, burst: 2}\n",
    )
    .await;
    for i in 0..2 {
        let response = server.check_token("/api/orders", &format!("r-{i}")).await;
        assert_eq!(denied_status(&response), Some(401));
    }
    let limited = server.check_token("/api/orders", "r-3").await;
    assert_eq!(denied_status(&limited), Some(503));
    assert_eq!(
        denial(&limited).1["error_description"],
        "server busy, retry later"
    );
    assert_eq!(fake.calls(), 2);
    // A JWT (even one this provider did not sign) is verified here, never introspected.
    let jwt = TestKey::rsa("other").token(&claims("u-9"));
    assert_eq!(
        denied_status(&server.check_token("/api/orders", &jwt).await),
        Some(401)
    );
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn client_secret_post_and_private_key_jwt_authenticate_on_the_wire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = JwksServer::start(vec![TestKey::rsa("k1").jwk()]).await;
    let fake = Fake::start(Answer::Json(active("u-1"))).await;
    let (_, secret) = secret_file(dir.path());
    let post = TestServer::start_ready(&config(
        &jwks,
        &fake.url,
        &format!("{{client_secret_post: {{secret_file: {secret}}}}}"),
        "",
    ))
    .await;
    assert_eq!(grpc_code(&post.check_token("/api/orders", "p-1").await), 0);
    let (headers, body) = fake.last();
    assert!(headers.get("authorization").is_none());
    let form: std::collections::HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(form["client_id"], "jwt-authz");
    assert_eq!(form["client_secret"], "s3cret:with spaces");

    // private_key_jwt: a P-256 key in a PKCS#8 PEM file.
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .expect("key");
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    let key_file = dir.path().join("client.pem");
    std::fs::write(&key_file, pem).expect("key file");
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
    )
    .expect("pair");
    let signed = TestServer::start_ready(&config(
        &jwks,
        &fake.url,
        &format!(
            "{{private_key_jwt: {{key_file: {}, algorithm: ES256, kid: client-1}}}}",
            key_file.display()
        ),
        "",
    ))
    .await;
    assert_eq!(
        grpc_code(&signed.check_token("/api/orders", "p-2").await),
        0
    );
    let (_, body) = fake.last();
    let form: std::collections::HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert!(!form.contains_key("client_secret"));
    // The assertion verifies with the client's public key and says what RFC 7523 §3 asks.
    use aws_lc_rs::signature::KeyPair as _;
    let point = pair.public_key().as_ref();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let key =
        jsonwebtoken::DecodingKey::from_ec_components(&b64(&point[1..33]), &b64(&point[33..]))
            .expect("public key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[&fake.url]);
    validation.set_issuer(&["jwt-authz"]);
    let assertion = jsonwebtoken::decode::<Value>(&form["client_assertion"], &key, &validation)
        .expect("a valid assertion");
    assert_eq!(assertion.header.kid.as_deref(), Some("client-1"));
    let claims = assertion.claims;
    assert_eq!(claims["sub"], "jwt-authz");
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    let lifetime = claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat");
    assert!(lifetime <= 60, "{lifetime}");
}

#[tokio::test]
async fn signed_answers_are_verified_with_the_providers_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let signed = |key: &TestKey, typ: &str, answer: Value| {
        key.sign(
            &json!({"alg": "RS256", "kid": key.kid, "typ": typ}),
            &json!({"iss": ISSUER, "aud": "jwt-authz", "iat": now(), "token_introspection": answer}),
        )
    };
    let fake = Fake::start(Answer::Raw(
        "application/token-introspection+jwt",
        signed(&key, "token-introspection+jwt", active("u-1")),
    ))
    .await;
    let (auth, _) = secret_file(dir.path());
    let server = TestServer::start_ready(&config(
        &jwks,
        &fake.url,
        &auth,
        "      jwt_response: true\n",
    ))
    .await;
    let (set, _) = allowed(&server.check_token("/api/orders", "s-1").await);
    assert_eq!(set["x-user-id"], "u-1");
    assert_eq!(
        fake.last().0["accept"].to_str().expect("ascii"),
        "application/token-introspection+jwt"
    );
    let stale = key.sign(
        &json!({"alg": "RS256", "kid": key.kid, "typ": "token-introspection+jwt"}),
        &json!({"iss": ISSUER, "aud": "jwt-authz", "iat": now() - 600, "token_introspection": active("u-3")}),
    );
    for (i, answer) in [
        // Issued ten minutes ago: a replay, whatever token it is shown for.
        Answer::Raw("application/token-introspection+jwt", stale),
        // Signed by a key the provider does not publish.
        Answer::Raw(
            "application/token-introspection+jwt",
            signed(
                &TestKey::rsa("k1"),
                "token-introspection+jwt",
                active("u-2"),
            ),
        ),
        // Another kind of JWT of the provider's.
        Answer::Raw(
            "application/token-introspection+jwt",
            signed(&key, "JWT", active("u-2")),
        ),
        // The plain JSON answer, which this provider does not take.
        Answer::Json(active("u-2")),
    ]
    .into_iter()
    .enumerate()
    {
        fake.answer(answer);
        let response = server
            .check_token("/api/orders", &format!("s-{}", i + 2))
            .await;
        assert_eq!(denied_status(&response), Some(401), "case {i}");
        assert_eq!(
            denial(&response).1["error_description"],
            "token could not be introspected",
            "case {i}"
        );
    }
}

#[test]
fn two_introspecting_providers_may_not_share_a_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (auth, _) = secret_file(dir.path());
    let provider = |name: &str| {
        format!(
            "  - name: {name}\n    issuer: https://{name}.example\n    audiences: [api]\n    jwks: {{uri: https://{name}.example/jwks}}\n    introspection:\n      endpoint: https://{name}.example/introspect\n      client_id: c\n      client_auth: {auth}\n"
        )
    };
    let yaml = format!(
        "listen: {{grpc: 127.0.0.1:0, admin: 127.0.0.1:0}}\nproviders:\n{}{}",
        provider("one"),
        provider("two")
    );
    let error = jwt_authz::Config::from_yaml(&yaml)
        .expect_err("refused")
        .to_string();
    assert!(
        error.starts_with("providers[1].token_sources: providers[0] also introspects"),
        "{error}"
    );
    // A secret file that cannot be read fails at start, naming it; plain http elsewhere too.
    let missing = yaml.replace(
        &dir.path().join("secret").display().to_string(),
        "/nonexistent/secret",
    );
    let error = jwt_authz::Config::from_yaml(&missing)
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("introspection.client_auth.secret_file"),
        "{error}"
    );
    let plain = provider("one").replace(
        "https://one.example/introspect",
        "http://one.example/introspect",
    );
    let error = jwt_authz::Config::from_yaml(&format!(
        "listen: {{grpc: 127.0.0.1:0, admin: 127.0.0.1:0}}\nproviders:\n{plain}"
    ))
    .expect_err("refused")
    .to_string();
    assert!(error.contains("must be reached over https"), "{error}");
}

/// Made-up tokens spend the shared rate; a token seen active keeps a bucket of its own, and
/// a reload that leaves the provider as it was keeps the answers.
#[tokio::test]
async fn tokens_seen_active_are_not_starved_and_a_reload_keeps_the_answers() {
    let (_dir, jwks, fake, server) = start(
        Answer::Json(active("u-1")),
        "      rate_limit: {per_second: 0.01, burst: 1}\n      cache: {max_entries: 0}\n",
    )
    .await;
    assert_eq!(
        grpc_code(&server.check_token("/api/orders", "known").await),
        0
    );
    // The shared bucket is empty: a new token waits...
    let flood = server.check_token("/api/orders", "made-up").await;
    assert_eq!(denied_status(&flood), Some(503));
    // ...and the token seen active passes on its own bucket (once: it holds one call too).
    assert_eq!(
        grpc_code(&server.check_token("/api/orders", "known").await),
        0
    );
    assert_eq!(
        denied_status(&server.check_token("/api/orders", "known").await),
        Some(503)
    );
    assert_eq!(fake.calls(), 2);
    drop((jwks, server));

    // With a cache: reloaded with the same provider, the answer is still held.
    let (dir, jwks, fake, server) = start(Answer::Json(active("u-2")), "").await;
    assert_eq!(
        grpc_code(&server.check_token("/api/orders", "held").await),
        0
    );
    let (auth, _) = secret_file(dir.path());
    let same = config(&jwks, &fake.url, &auth, "");
    server
        .server
        .reload(
            jwt_authz::Config::from_yaml(&format!("{same}log: {{level: debug}}\n"))
                .expect("config"),
        )
        .await
        .expect("reload");
    assert_eq!(
        grpc_code(&server.check_token("/api/orders", "held").await),
        0
    );
    assert_eq!(fake.calls(), 1, "the reload kept the cached answer");
}

/// Status lists are the JWTs' revocation; an introspected token's is the endpoint's answer:
/// `status_list.mode: required` refuses a JWT without a reference, not an opaque token.
#[tokio::test]
async fn a_required_status_list_applies_to_jwts_not_to_introspected_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let fake = Fake::start(Answer::Json(active("u-1"))).await;
    let (auth, _) = secret_file(dir.path());
    let server = TestServer::start_ready(&config(
        &jwks,
        &fake.url,
        &auth,
        "    status_list: {mode: required}\n",
    ))
    .await;
    assert_eq!(
        grpc_code(&server.check_token("/api/orders", "opaque").await),
        0
    );
    let mut jwt_claims = claims("u-2");
    jwt_claims["scope"] = json!("orders:read");
    let response = server
        .check_token("/api/orders", &key.token(&jwt_claims))
        .await;
    assert_eq!(denied_status(&response), Some(401));
    assert_eq!(
        denial(&response).1["error_description"],
        "token carries no status"
    );
}
