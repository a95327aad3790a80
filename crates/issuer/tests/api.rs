//! The issuer's HTTP API, mostly without sockets (router + `oneshot`), plus a few over real
//! sockets. Tokens are checked with aws-lc directly against the served JWKS: an independent
//! verifier, not the signing library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use issuer::Issuer;
use issuer::config::Cli;
use issuer::keys::KeyDir;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn settings(&self, extra: &[&str]) -> issuer::Settings {
        let db = self.dir.path().join("users.db");
        let keys = self.dir.path().join("keys");
        let mut args = vec![
            "issuer".to_owned(),
            "--demo".into(),
            "--issuer-url".into(),
            "http://issuer.test".into(),
            "--db".into(),
            db.display().to_string(),
            "--key-dir".into(),
            keys.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Cli::try_parse_from(args).expect("settings").settings
    }

    fn issuer(&self, extra: &[&str]) -> Issuer {
        Issuer::open(self.settings(extra)).expect("issuer")
    }
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = app.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

fn login_request(body: &str, content_type: &str) -> Request<Body> {
    Request::post("/auth/login")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_owned()))
        .expect("request")
}

fn login(user: &str, password: &str) -> Request<Body> {
    login_request(
        &json!({"username": user, "password": password}).to_string(),
        "application/json",
    )
}

async fn jwks(app: &Router) -> Value {
    let (status, headers, body) = call(
        app,
        Request::get("/.well-known/jwks.json")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=300");
    body
}

fn b64d(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

/// Verifies an RS256 token against a JWKS with aws-lc; returns (header, claims).
fn verify_independently(token: &str, jwks: &Value) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&b64d(parts[0])).expect("header");
    let claims: Value = serde_json::from_slice(&b64d(parts[1])).expect("claims");
    let kid = header["kid"].as_str().expect("kid");
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid)
        .expect("kid published");
    let public = aws_lc_rs::signature::RsaPublicKeyComponents {
        n: b64d(jwk["n"].as_str().expect("n")),
        e: b64d(jwk["e"].as_str().expect("e")),
    };
    public
        .verify(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &b64d(parts[2]),
        )
        .expect("signature verifies");
    (header, claims)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[tokio::test]
async fn login_returns_a_token_with_exactly_the_documented_claims() {
    let fx = Fixture::new();
    let issuer = fx.issuer(&[]);
    let app = issuer.router();
    let (status, headers, body) = call(&app, login("alice", "alice-password")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["expiresIn"], 900);
    let token = body["accessToken"].as_str().expect("token");
    let (header, claims) = verify_independently(token, &jwks(&app).await);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], issuer.signing_kid());

    let mut names: Vec<_> = claims
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "aud", "exp", "iat", "iss", "jti", "nbf", "role", "status", "sub", "username"
        ]
    );
    // draft-ietf-oauth-status-list §6.2: the entry of this token in a list on the issuer.
    assert_eq!(claims["status"]["status_list"]["idx"].as_u64(), Some(0));
    assert_eq!(
        claims["status"]["status_list"]["uri"],
        "http://issuer.test/auth/status/1"
    );
    let alice = issuer
        .users()
        .list()
        .expect("list")
        .into_iter()
        .find(|u| u.username == "alice")
        .expect("alice");
    assert_eq!(claims["sub"], alice.id);
    assert_eq!(claims["username"], "alice");
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["iss"], "http://issuer.test");
    assert_eq!(claims["aud"], "api-gateway");
    let iat = claims["iat"].as_u64().expect("iat");
    assert!(iat.abs_diff(now()) < 5);
    assert_eq!(claims["nbf"].as_u64(), Some(iat));
    assert_eq!(claims["exp"].as_u64(), Some(iat + 900));

    let (_, _, second) = call(&app, login("alice", "alice-password")).await;
    let (_, claims2) = verify_independently(
        second["accessToken"].as_str().expect("token"),
        &jwks(&app).await,
    );
    assert_ne!(claims["jti"], claims2["jti"], "jti is unique");
}

#[tokio::test]
async fn bad_credentials_look_the_same_for_unknown_user_and_wrong_password() {
    let fx = Fixture::new();
    let app = fx.issuer(&[]).router();
    let (s1, _, b1) = call(&app, login("alice", "wrong-password")).await;
    let (s2, _, b2) = call(&app, login("mallory", "wrong-password")).await;
    assert_eq!(s1, StatusCode::UNAUTHORIZED);
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!(b1["error"], "invalid_credentials");

    // Both cost one password hash verification: compare median timings loosely.
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..3 {
        let t = std::time::Instant::now();
        call(&app, login("bob", &format!("nope-{i}-xxxx"))).await;
        known.push(t.elapsed());
        let t = std::time::Instant::now();
        call(&app, login(&format!("ghost{i}"), "nope-xxxx")).await;
        unknown.push(t.elapsed());
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[1].as_secs_f64(), unknown[1].as_secs_f64());
    assert!(
        u > k / 3.0,
        "unknown users answered much faster ({u:.4}s vs {k:.4}s)"
    );
}

#[tokio::test]
async fn malformed_wrong_type_and_oversized_bodies() {
    let fx = Fixture::new();
    let app = fx.issuer(&[]).router();
    let (status, _, body) = call(&app, login_request("{not json", "application/json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");
    let (status, _, _) = call(
        &app,
        login_request(r#"{"username":"alice"}"#, "application/json"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = call(
        &app,
        login_request(
            r#"{"username":"alice","password":"alice-password"}"#,
            "text/plain",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = json!({"username": "alice", "password": "x".repeat(20_000)}).to_string();
    let (status, _, _) = call(&app, login_request(&big, "application/json")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, _) = call(
        &app,
        login_request(
            r#"{"username":"alice","password":"alice-password"}"#,
            "application/json; charset=utf-8",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn rotation_keeps_old_tokens_verifiable_and_new_tokens_carry_the_new_kid() {
    let fx = Fixture::new();
    let issuer = fx.issuer(&[]);
    let app = issuer.router();
    let (_, _, old) = call(&app, login("bob", "bob-password")).await;
    let old_token = old["accessToken"].as_str().expect("token").to_owned();
    let old_kid = issuer.signing_kid();

    let settings = fx.settings(&[]);
    KeyDir::new(&settings.key_dir, 2048)
        .expect("dir")
        .rotate(Some("rotated-1"), Duration::ZERO, settings.key_retention())
        .expect("rotate");
    issuer.reload_keys().expect("reload");
    assert_eq!(issuer.signing_kid(), "rotated-1");

    let keys = jwks(&app).await;
    let kids: Vec<_> = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kids, vec!["rotated-1".to_owned(), old_kid.clone()]);
    verify_independently(&old_token, &keys);
    let (_, _, new) = call(&app, login("bob", "bob-password")).await;
    let (header, _) = verify_independently(new["accessToken"].as_str().expect("token"), &keys);
    assert_eq!(header["kid"], "rotated-1");
}

#[tokio::test]
async fn jwks_and_discovery_publish_no_private_parts() {
    let fx = Fixture::new();
    let app = fx.issuer(&[]).router();
    for key in jwks(&app).await["keys"].as_array().expect("keys") {
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            assert!(key.get(private).is_none(), "{private} published");
        }
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], "RS256");
    }
    let (status, _, doc) = call(
        &app,
        Request::get("/.well-known/openid-configuration")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["issuer"], "http://issuer.test");
    assert_eq!(doc["jwks_uri"], "http://issuer.test/.well-known/jwks.json");
    assert_eq!(doc["token_endpoint"], "http://issuer.test/auth/token");
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    assert_eq!(
        doc["status_list_aggregation_endpoint"],
        "http://issuer.test/auth/status"
    );
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

/// The raw response of `GET path` with optional `If-None-Match`.
async fn get_raw(
    app: &Router,
    path: &str,
    if_none_match: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut request = Request::get(path);
    if let Some(tag) = if_none_match {
        request = request.header(header::IF_NONE_MATCH, tag);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        headers,
        String::from_utf8(bytes.to_vec()).expect("text"),
    )
}

fn logout(token: &str) -> Request<Body> {
    Request::post("/auth/logout")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request")
}

/// The statuses of a list token's entries, decoded by the sidecar's reader after the
/// signature is verified independently.
fn statuses(token: &str, jwks: &Value, uri: &str, entries: u64) -> Vec<u8> {
    let (header, claims) = verify_independently(token, jwks);
    assert_eq!(header["typ"], "statuslist+jwt");
    assert_eq!(claims["sub"], uri);
    assert_eq!(claims["iss"], "http://issuer.test");
    let iat = claims["iat"].as_u64().expect("iat");
    assert_eq!(claims["exp"].as_u64(), Some(iat + 3600));
    assert_eq!(claims["ttl"], 60);
    let map = claims.as_object().expect("claims");
    let (list, _) =
        jwt_authz_jose::status_list::check_token_claims(map, uri, now(), 1 << 20).expect("list");
    (0..entries)
        .map(|i| match list.get(i).expect("entry") {
            jwt_authz_jose::status_list::Status::Valid => 0,
            jwt_authz_jose::status_list::Status::Invalid => 1,
            jwt_authz_jose::status_list::Status::Suspended => 2,
            jwt_authz_jose::status_list::Status::Other(v) => v,
        })
        .collect()
}

#[tokio::test]
async fn logout_revokes_the_token_in_its_signed_status_list() {
    let fx = Fixture::new();
    let app = fx.issuer(&["--status-list-size", "8"]).router();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let (status, _, body) = call(&app, login("bob", "bob-password")).await;
        assert_eq!(status, StatusCode::OK);
        tokens.push(body["accessToken"].as_str().expect("token").to_owned());
    }
    let keys = jwks(&app).await;
    let uri = "http://issuer.test/auth/status/1";
    let (status, headers, list) = get_raw(&app, "/auth/status/1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/statuslist+jwt");
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=60");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let etag = headers[header::ETAG].to_str().expect("etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(statuses(&list, &keys, uri, 8), vec![0; 8]);
    // Unchanged: the same copy, and 304 for its ETag.
    let (status, headers, body) = get_raw(&app, "/auth/status/1", Some(&etag)).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers[header::ETAG], etag.as_str());
    assert!(body.is_empty());
    // RFC 9110 §13.1.2: If-None-Match compares weakly; lists of tags work too.
    let listed = format!("\"other\", W/{etag}");
    assert_eq!(
        get_raw(&app, "/auth/status/1", Some(&listed)).await.0,
        StatusCode::NOT_MODIFIED
    );

    let (status, headers, _) = call(&app, logout(&tokens[1])).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    // Logging out twice is fine.
    assert_eq!(
        call(&app, logout(&tokens[1])).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, headers, list) = get_raw(&app, "/auth/status/1", Some(&etag)).await;
    assert_eq!(status, StatusCode::OK, "a changed list is not 304");
    assert_ne!(headers[header::ETAG], etag.as_str());
    assert_eq!(statuses(&list, &keys, uri, 8), vec![0, 1, 0, 0, 0, 0, 0, 0]);

    // Tokens not from here, or not tokens, revoke nothing.
    let forged = {
        let mut parts: Vec<String> = tokens[0].split('.').map(str::to_owned).collect();
        parts[2] = parts[2].chars().rev().collect();
        parts.join(".")
    };
    for bad in [forged.as_str(), "x.y.z"] {
        let (status, headers, body) = call(&app, logout(bad)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(body["error"], "invalid_token");
    }
    let (status, _, body) = call(
        &app,
        Request::post("/auth/logout")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_request");
    let (_, _, list) = get_raw(&app, "/auth/status/1", None).await;
    assert_eq!(statuses(&list, &keys, uri, 8), vec![0, 1, 0, 0, 0, 0, 0, 0]);

    // Unknown lists, and other spellings of a list's URI, are not found.
    for path in [
        "/auth/status/2",
        "/auth/status/01",
        "/auth/status/0",
        "/auth/status/-1",
        "/auth/status/x",
    ] {
        assert_eq!(
            get_raw(&app, path, None).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_revocation_by_the_cli_reaches_the_list_within_a_second() {
    let fx = Fixture::new();
    let issuer = fx.issuer(&["--status-list-size", "8"]);
    let app = issuer.router();
    let (status, _, _) = call(&app, login("bob", "bob-password")).await;
    assert_eq!(status, StatusCode::OK);
    let keys = jwks(&app).await;
    let uri = "http://issuer.test/auth/status/1";
    let (_, _, list) = get_raw(&app, "/auth/status/1", None).await;
    assert_eq!(statuses(&list, &keys, uri, 1), vec![0]);
    // `issuer tokens revoke --user bob` in another process: its own connection.
    let cli = issuer::users::UserStore::open(&fx.dir.path().join("users.db")).expect("open");
    let bob = cli.find("bob").expect("find").expect("bob");
    assert_eq!(cli.revoke_subject(&bob.id).expect("revoke"), 1);
    tokio::time::sleep(issuer::list_heads::MAX_AGE + Duration::from_millis(100)).await;
    let (_, _, list) = get_raw(&app, "/auth/status/1", None).await;
    assert_eq!(statuses(&list, &keys, uri, 1), vec![1]);
}

#[test]
fn a_list_lifetime_shorter_than_two_ttls_is_refused_at_start() {
    let fx = Fixture::new();
    let settings = fx.settings(&["--status-list-ttl", "60s", "--status-list-lifetime", "90s"]);
    let error = Issuer::open(settings).expect_err("refused").to_string();
    assert!(error.contains("--status-list-lifetime"), "{error}");
}

#[tokio::test]
async fn a_full_list_is_followed_by_a_new_one_and_the_aggregation_names_both() {
    let fx = Fixture::new();
    let app = fx.issuer(&["--status-list-size", "8"]).router();
    let mut references = Vec::new();
    for i in 0..10 {
        let (_, _, body) = call(&app, login("alice", "alice-password")).await;
        // The aggregation is held in memory between writes: each login's list is named at
        // once (the second list from the ninth login on).
        let (_, _, aggregation) = call(&app, get("/auth/status")).await;
        let named = aggregation["status_lists"].as_array().map_or(0, Vec::len);
        assert_eq!(named, if i < 8 { 1 } else { 2 }, "after login {i}");
        let (_, claims) = verify_independently(
            body["accessToken"].as_str().expect("token"),
            &jwks(&app).await,
        );
        references.push(claims["status"]["status_list"].clone());
    }
    for (i, reference) in references.iter().enumerate() {
        let list = i / 8 + 1;
        assert_eq!(reference["idx"].as_u64(), Some((i % 8) as u64));
        assert_eq!(
            reference["uri"],
            format!("http://issuer.test/auth/status/{list}")
        );
    }
    let (status, _, body) = call(&app, get("/auth/status")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status_lists": ["http://issuer.test/auth/status/1", "http://issuer.test/auth/status/2"]})
    );
}

#[tokio::test]
async fn users_and_keys_persist_across_a_restart() {
    let fx = Fixture::new();
    let first = fx.issuer(&[]);
    first
        .users()
        .add("carol", "user", "carol-password")
        .expect("add");
    let kid = first.signing_kid();
    let jwks_before = jwks(&first.router()).await;
    drop(first);

    let second = fx.issuer(&[]);
    assert_eq!(second.signing_kid(), kid);
    assert_eq!(jwks(&second.router()).await, jwks_before);
    let (status, _, body) = call(&second.router(), login("carol", "carol-password")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        second.users().list().expect("list").len(),
        3,
        "demo users not seeded twice"
    );
}

#[tokio::test]
/// Without a known client address (no socket here) only the per-user limit applies.
async fn repeated_failures_are_throttled_with_retry_after() {
    let fx = Fixture::new();
    let app = fx
        .issuer(&["--login-max-failures-per-user", "3", "--login-window", "1m"])
        .router();
    for _ in 0..3 {
        let (status, _, _) = call(&app, login("alice", "bad-password")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, headers, body) = call(&app, login("alice", "alice-password")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"], "too_many_attempts");
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // Another user is not affected.
    let (status, _, _) = call(&app, login("bob", "bob-password")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn over_real_sockets_with_address_throttling() {
    let fx = Fixture::new();
    let issuer = fx.issuer(&["--login-max-failures-per-address", "4"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(issuer.serve(listener, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
    let response = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": "bob", "password": "bob-password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 200);
    // Four different usernames from one address: the address is then throttled.
    for i in 0..4 {
        let r = client
            .post(format!("{base}/auth/login"))
            .json(&json!({"username": format!("user{i}"), "password": "bad-password"}))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), 401);
    }
    let r = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": "bob", "password": "bob-password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 429);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stopped in time")
        .expect("task")
        .expect("serve");
}

/// RFC 8705 §3: behind an Envoy that verifies client certificates and sets
/// `x-forwarded-client-cert`, a login gets a token bound to that certificate; the header is
/// ignored unless trusted, and one that a proxy appended to is refused.
#[tokio::test]
async fn a_login_over_mtls_gets_a_certificate_bound_token_only_when_trusted() {
    let certificate = rcgen::generate_simple_self_signed(vec!["client.test".into()]).unwrap();
    let encoded = percent_encoding::utf8_percent_encode(
        &certificate.cert.pem(),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    // Envoy's element: Hash, Cert (URL-encoded PEM), Subject.
    let xfcc = format!("Hash=00ff;Cert=\"{encoded}\";Subject=\"CN=client.test\"");
    let expected = URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, certificate.cert.der()).as_ref(),
    );
    let with_header = |value: &str| {
        let mut request = login("bob", "bob-password");
        request.headers_mut().insert(
            "x-forwarded-client-cert",
            value.parse().expect("header value"),
        );
        request
    };

    let fx = Fixture::new();
    let trusted = fx.issuer(&["--trust-client-cert-header"]).router();
    let (status, _, body) = call(&trusted, with_header(&xfcc)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tokenType"], "Bearer");
    let token = body["accessToken"].as_str().expect("token");
    let (_, claims) = verify_independently(token, &jwks(&trusted).await);
    assert_eq!(claims["cnf"], json!({"x5t#S256": expected}));
    let (status, _, body) = call(&trusted, with_header(&format!("{xfcc},{xfcc}"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let fx = Fixture::new();
    let untrusted = fx.issuer(&[]).router();
    let (status, _, body) = call(&untrusted, with_header(&xfcc)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, claims) = verify_independently(
        body["accessToken"].as_str().expect("token"),
        &jwks(&untrusted).await,
    );
    assert!(claims.get("cnf").is_none(), "{claims}");
}
