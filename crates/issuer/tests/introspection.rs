//! Opaque tokens and the introspection endpoint (RFC 7662) over real sockets: what login
//! stores, what an authenticated client is told about every kind of token, every way a
//! client authenticates (RFC 6749 §2.3.1, RFC 7523) and is refused, and the signed answer
//! (RFC 9701). Assertions, DPoP proofs and signature checks are written here from the RFCs
//! with aws-lc, independently of the issuer's code.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use support::{Client, Dpop, Running, form, start_with_clients, urlencode};

const ISSUER: &str = "http://issuer.test";
const ENDPOINT: &str = "http://issuer.test/auth/introspect";
const SECRET: &str = "p@ss:w+rd/0123456789&=";
const JWT_MEDIA_TYPE: &str = "application/token-introspection+jwt";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// A compact JWS (RFC 7515 §7.1).
fn compact(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// A client's key pairs: RSA (RS256) and P-256 (ES256).
struct ClientKeys {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
}

impl ClientKeys {
    fn new() -> Self {
        Self {
            rsa: RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa"),
            ec: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec"),
        }
    }

    /// The public JWKS (RFC 7517 §5) a client registers.
    fn jwks(&self) -> Value {
        let public = self.rsa.public_key();
        let point = self.ec.public_key().as_ref();
        json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig",
             "n": b64(public.modulus().big_endian_without_leading_zero()),
             "e": b64(public.exponent().big_endian_without_leading_zero())},
            {"kty": "EC", "crv": "P-256", "kid": "ec-1", "x": b64(&point[1..33]), "y": b64(&point[33..65])},
        ]})
    }

    fn sign(&self, alg: &str, kid: &str, claims: &Value) -> String {
        compact(
            &json!({"alg": alg, "kid": kid, "typ": "JWT"}),
            claims,
            |input| {
                if alg == "RS256" {
                    let mut out = vec![0; self.rsa.public_modulus_len()];
                    self.rsa
                        .sign(
                            &signature::RSA_PKCS1_SHA256,
                            &SystemRandom::new(),
                            input,
                            &mut out,
                        )
                        .expect("rsa sign");
                    out
                } else {
                    self.ec
                        .sign(&SystemRandom::new(), input)
                        .expect("ec sign")
                        .as_ref()
                        .to_vec()
                }
            },
        )
    }
}

/// RFC 7523 §3 claims for `client`, fresh `jti`.
fn assertion_claims(client: &str) -> Value {
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).expect("random");
    json!({"iss": client, "sub": client, "aud": ENDPOINT, "iat": now(), "exp": now() + 60, "jti": b64(&jti)})
}

fn assertion_params(assertion: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
        ),
        ("client_assertion", assertion.to_owned()),
    ]
}

/// Verifies an RS256 JWT against the issuer's served JWKS with aws-lc; (header, claims).
async fn verify_with_jwks(issuer: &Running, token: &str) -> (Value, Value) {
    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", issuer.base))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("kid published");
    let public = signature::RsaPublicKeyComponents {
        n: URL_SAFE_NO_PAD
            .decode(jwk["n"].as_str().expect("n"))
            .expect("n"),
        e: URL_SAFE_NO_PAD
            .decode(jwk["e"].as_str().expect("e"))
            .expect("e"),
    };
    public
        .verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &URL_SAFE_NO_PAD.decode(parts[2]).expect("sig"),
        )
        .expect("signature verifies with the published key");
    (header, claims)
}

/// The demo issuer at `ISSUER` with client `sidecar` (secret and keys) and `other`
/// (secret only).
async fn issuer_with(extra: &[&str], keys: &ClientKeys) -> Running {
    let jwks = keys.jwks();
    let mut args = vec!["--issuer-url", ISSUER];
    args.extend_from_slice(extra);
    start_with_clients(
        &args,
        &[
            Client {
                id: "sidecar",
                secret: Some(SECRET),
                jwks: Some(&jwks),
            },
            Client {
                id: "other:client",
                secret: Some("another-secret-of-length"),
                jwks: None,
            },
        ],
    )
    .await
}

async fn login_with(issuer: &Running, body: Value, dpop: Option<String>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/auth/login", issuer.base))
        .json(&body);
    if let Some(proof) = dpop {
        request = request.header("dpop", proof);
    }
    request.send().await.expect("login")
}

/// An opaque token for `user` (password `<user>-password`).
async fn opaque_login(issuer: &Running, user: &str) -> String {
    let response = login_with(
        issuer,
        json!({"username": user, "password": format!("{user}-password"), "token_format": "opaque"}),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["accessToken"].as_str().expect("token").to_owned()
}

/// POST /auth/introspect with `params`, Basic credentials if given, `accept` if given.
async fn introspect_raw(
    issuer: &Running,
    body: String,
    basic: Option<(&str, &str)>,
    accept: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/auth/introspect", issuer.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some((id, secret)) = basic {
        // RFC 6749 §2.3.1: each part form-urlencoded, then base64.
        let credentials = format!("{}:{}", urlencode(id), urlencode(secret));
        request = request.header(
            "authorization",
            format!("Basic {}", STANDARD.encode(credentials)),
        );
    }
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    request.send().await.expect("introspect")
}

/// Introspection as `sidecar` with Basic: (status, body).
async fn introspect(issuer: &Running, token: &str) -> (u16, Value) {
    let response = introspect_raw(
        issuer,
        form(&[("token", token)]),
        Some(("sidecar", SECRET)),
        None,
    )
    .await;
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "RFC 7662 §2.2 answers are not cached"
    );
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_opaque_login_stores_only_the_token_hash() {
    let keys = ClientKeys::new();
    let issuer = issuer_with(&[], &keys).await;
    let response = login_with(
        &issuer,
        json!({"username": "bob", "password": "bob-password", "token_format": "opaque"}),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["expiresIn"], 900);
    let token = body["accessToken"].as_str().expect("token");
    assert_eq!(token.len(), 43, "{token}");
    assert!(!token.contains('.'), "{token}");
    assert_eq!(URL_SAFE_NO_PAD.decode(token).expect("base64url").len(), 32);
    assert_ne!(opaque_login(&issuer, "bob").await, token, "fresh each time");

    // The database (and its write-ahead log) never holds the token, only its hash.
    for file in ["users.db", "users.db-wal"] {
        let path = issuer.dir().join(file);
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "{file} holds the token"
            );
        }
    }
    let db = rusqlite::Connection::open(issuer.dir().join("users.db")).expect("db");
    let stored: Vec<Vec<u8>> = db
        .prepare("SELECT token_hash FROM opaque_tokens")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("hashes");
    assert_eq!(stored.len(), 2);
    assert!(stored.contains(&sha256(token.as_bytes())));

    // The default and explicit `jwt` give a JWT; anything else is refused.
    for format in [json!("jwt"), Value::Null] {
        let mut body = json!({"username": "bob", "password": "bob-password"});
        if !format.is_null() {
            body["token_format"] = format;
        }
        let answer: Value = login_with(&issuer, body, None)
            .await
            .json()
            .await
            .expect("json");
        let token = answer["accessToken"].as_str().expect("token");
        assert_eq!(token.split('.').count(), 3, "{token}");
    }
    for format in [json!("JWT"), json!("reference"), json!(null), json!(1)] {
        let response = login_with(
            &issuer,
            json!({"username": "bob", "password": "bob-password", "token_format": format}),
            None,
        )
        .await;
        assert_eq!(response.status(), 400, "{format}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], "invalid_request");
    }
}

#[tokio::test]
async fn an_active_opaque_token_is_described_in_full() {
    let keys = ClientKeys::new();
    let issuer = issuer_with(&[], &keys).await;
    let before = now();
    let token = opaque_login(&issuer, "alice").await;
    let response = introspect_raw(
        &issuer,
        form(&[("token", &token), ("token_type_hint", "refresh_token")]),
        Some(("sidecar", SECRET)),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let answer: Value = response.json().await.expect("json");
    let iat = answer["iat"].as_u64().expect("iat");
    assert!(iat >= before && iat <= now(), "{answer}");
    let sub = answer["sub"].as_str().expect("sub");
    assert_eq!(sub.len(), 32, "the user's stable id: {answer}");
    let jti = answer["jti"].as_str().expect("jti");
    assert_eq!(jti.len(), 32);
    // Exactly these members: no client_id (a login has none), no cnf, no nbf.
    assert_eq!(
        answer,
        json!({
            "active": true,
            "iss": ISSUER,
            "sub": sub,
            "aud": "api-gateway",
            "iat": iat,
            "exp": iat + 900,
            "jti": jti,
            "username": "alice",
            "role": "admin",
            "token_type": "Bearer",
        })
    );
    // The same user's JWT names the same subject.
    let jwt: Value = login_with(
        &issuer,
        json!({"username": "alice", "password": "alice-password"}),
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    let (_, claims) = verify_with_jwks(&issuer, jwt["accessToken"].as_str().expect("t")).await;
    assert_eq!(claims["sub"], sub);
}

#[tokio::test]
async fn unknown_revoked_and_garbage_tokens_are_only_inactive() {
    let keys = ClientKeys::new();
    let issuer = issuer_with(&[], &keys).await;
    let token = opaque_login(&issuer, "bob").await;
    assert_eq!(introspect(&issuer, &token).await.1["active"], true);

    let mut random = [0u8; 32];
    aws_lc_rs::rand::fill(&mut random).expect("random");
    let unknown = b64(&random);
    let long = "A".repeat(8 * 1024);
    let forged = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"none"}"#),
        b64(br#"{"sub":"x"}"#),
        ""
    );
    for garbage in [
        unknown.as_str(),
        "garbage",
        "a.b.c",
        forged.as_str(),
        long.as_str(),
        &token[..42],
        "\u{1F600}",
    ] {
        assert_eq!(
            introspect(&issuer, garbage).await,
            (200, json!({"active": false})),
            "{garbage:.40}"
        );
    }

    // Logout revokes the opaque token: inactive from then on, and a second logout is fine.
    for _ in 0..2 {
        let response = reqwest::Client::new()
            .post(format!("{}/auth/logout", issuer.base))
            .bearer_auth(&token)
            .send()
            .await
            .expect("logout");
        assert_eq!(response.status(), 204);
    }
    assert_eq!(
        introspect(&issuer, &token).await,
        (200, json!({"active": false}))
    );
    // Logout of an opaque token never issued here.
    let response = reqwest::Client::new()
        .post(format!("{}/auth/logout", issuer.base))
        .bearer_auth(&unknown)
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn an_expired_opaque_token_is_inactive_and_pruned_at_a_later_login() {
    let keys = ClientKeys::new();
    // Long enough to be introspected before it expires on a busy machine (1s was not, with
    // the whole suite running on two cores).
    let issuer = issuer_with(&["--token-ttl", "3s"], &keys).await;
    let token = opaque_login(&issuer, "bob").await;
    assert_eq!(introspect(&issuer, &token).await.1["active"], true);
    tokio::time::sleep(Duration::from_millis(4100)).await;
    assert_eq!(
        introspect(&issuer, &token).await,
        (200, json!({"active": false}))
    );
    let _fresh = opaque_login(&issuer, "bob").await;
    let db = rusqlite::Connection::open(issuer.dir().join("users.db")).expect("db");
    let left: Vec<Vec<u8>> = db
        .prepare("SELECT token_hash FROM opaque_tokens")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(left.len(), 1);
    assert!(
        !left.contains(&sha256(token.as_bytes())),
        "the expired row is gone"
    );
}

#[tokio::test]
async fn a_dpop_bound_opaque_token_is_introspected_with_its_key() {
    let keys = ClientKeys::new();
    let issuer = issuer_with(&[], &keys).await;
    let dpop = Dpop::new();
    let response = login_with(
        &issuer,
        json!({"username": "bob", "password": "bob-password", "token_format": "opaque"}),
        Some(dpop.proof(&format!("{ISSUER}/auth/login"))),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["tokenType"], "DPoP");
    let token = body["accessToken"].as_str().expect("token");
    let (status, answer) = introspect(&issuer, token).await;
    assert_eq!(status, 200);
    assert_eq!(answer["active"], true);
    assert_eq!(answer["token_type"], "DPoP");
    assert_eq!(answer["cnf"], json!({"jkt": dpop.jkt()}));
    // The bound token is revoked with the DPoP scheme too.
    let response = reqwest::Client::new()
        .post(format!("{}/auth/logout", issuer.base))
        .header("authorization", format!("DPoP {token}"))
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), 204);
    assert_eq!(introspect(&issuer, token).await.1, json!({"active": false}));
}

#[tokio::test]
async fn the_issuers_own_jwts_are_introspected_until_logout() {
    let keys = ClientKeys::new();
    let issuer = issuer_with(&[], &keys).await;
    let body: Value = login_with(
        &issuer,
        json!({"username": "bob", "password": "bob-password"}),
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    let token = body["accessToken"].as_str().expect("token");
    let (_, claims) = verify_with_jwks(&issuer, token).await;
    let (status, answer) = introspect(&issuer, token).await;
    assert_eq!(status, 200);
    let mut expected = json!({"active": true, "token_type": "Bearer"});
    for name in [
        "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "username", "role",
    ] {
        expected[name] = claims[name].clone();
    }
    assert_eq!(answer, expected);

    // A token of the same shape signed by another key is not active.
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], parts[1], b64(&[0u8; 256]));
    assert_eq!(
        introspect(&issuer, &tampered).await.1,
        json!({"active": false})
    );

    let response = reqwest::Client::new()
        .post(format!("{}/auth/logout", issuer.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), 204);
    assert_eq!(introspect(&issuer, token).await.1, json!({"active": false}));
}

#[tokio::test]
async fn every_client_authentication_method_is_accepted() {
    let keys = ClientKeys::new();
    let issuer = issuer_with(&[], &keys).await;
    let token = opaque_login(&issuer, "bob").await;
    // client_secret_basic, with an id and a secret that need form-encoding.
    let response = introspect_raw(
        &issuer,
        form(&[("token", &token)]),
        Some(("other:client", "another-secret-of-length")),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.expect("json")["active"],
        true
    );
    // client_secret_post.
    let response = introspect_raw(
        &issuer,
        form(&[
            ("token", &token),
            ("client_id", "sidecar"),
            ("client_secret", SECRET),
        ]),
        None,
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.expect("json")["active"],
        true
    );
    // private_key_jwt with each registered key; `aud` the endpoint, the issuer, or a list
    // holding one; `client_id` may be given if it matches.
    for (alg, kid, aud) in [
        ("RS256", "rsa-1", json!(ENDPOINT)),
        ("ES256", "ec-1", json!(ISSUER)),
        ("ES256", "ec-1", json!(["https://elsewhere", ENDPOINT])),
    ] {
        let mut claims = assertion_claims("sidecar");
        claims["aud"] = aud;
        let assertion = keys.sign(alg, kid, &claims);
        let mut params = assertion_params(&assertion);
        params.push(("token", token.clone()));
        params.push(("client_id", "sidecar".into()));
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = introspect_raw(&issuer, form(&params), None, None).await;
        assert_eq!(response.status(), 200, "{alg}");
        assert_eq!(
            response.json::<Value>().await.expect("json")["active"],
            true,
            "{alg}"
        );
    }
}

/// (status, WWW-Authenticate, error) of an introspection request.
async fn refused(
    issuer: &Running,
    params: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, Option<String>, Value) {
    let response = introspect_raw(issuer, form(params), basic, None).await;
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, challenge, body["error"].clone())
}

#[tokio::test]
async fn every_failed_client_authentication_is_invalid_client() {
    let keys = ClientKeys::new();
    let issuer = issuer_with(&[], &keys).await;
    let token = opaque_login(&issuer, "bob").await;
    let t = token.as_str();
    let invalid = |challenge: Option<&str>| {
        (
            401,
            challenge.map(str::to_owned),
            Value::from("invalid_client"),
        )
    };
    let basic_challenge = Some(r#"Basic realm="issuer""#);

    assert_eq!(refused(&issuer, &[("token", t)], None).await, invalid(None));
    assert_eq!(
        refused(
            &issuer,
            &[("token", t)],
            Some(("sidecar", "wrong-secret-0123"))
        )
        .await,
        invalid(basic_challenge)
    );
    assert_eq!(
        refused(&issuer, &[("token", t)], Some(("nobody", SECRET))).await,
        invalid(basic_challenge)
    );
    // Another client's secret, or the right secret under another id.
    assert_eq!(
        refused(
            &issuer,
            &[("token", t)],
            Some(("sidecar", "another-secret-of-length"))
        )
        .await,
        invalid(basic_challenge)
    );
    for (id, secret) in [
        ("sidecar", "wrong-secret-0123"),
        ("nobody", SECRET),
        ("", SECRET),
    ] {
        assert_eq!(
            refused(
                &issuer,
                &[("token", t), ("client_id", id), ("client_secret", secret)],
                None
            )
            .await,
            invalid(None),
            "{id}"
        );
    }
    // A client id alone is no authentication.
    assert_eq!(
        refused(&issuer, &[("token", t), ("client_id", "sidecar")], None).await,
        invalid(None)
    );
    // Basic with another client_id parameter.
    assert_eq!(
        refused(
            &issuer,
            &[("token", t), ("client_id", "other:client")],
            Some(("sidecar", SECRET))
        )
        .await,
        invalid(basic_challenge)
    );
    // Two methods at once.
    let (status, _, error) = refused(
        &issuer,
        &[
            ("token", t),
            ("client_id", "sidecar"),
            ("client_secret", SECRET),
        ],
        Some(("sidecar", SECRET)),
    )
    .await;
    assert_eq!((status, error), (400, json!("invalid_request")));
    let assertion = keys.sign("ES256", "ec-1", &assertion_claims("sidecar"));
    let (status, _, error) = refused(
        &issuer,
        &[
            ("token", t),
            ("client_id", "sidecar"),
            ("client_secret", SECRET),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
        ],
        None,
    )
    .await;
    assert_eq!((status, error), (400, json!("invalid_request")));
}

#[tokio::test]
async fn bad_client_assertions_are_invalid_client() {
    let keys = ClientKeys::new();
    let issuer = issuer_with(&[], &keys).await;
    let token = opaque_login(&issuer, "bob").await;
    let stranger = ClientKeys::new();
    let call = |assertion: String| {
        let token = token.clone();
        let issuer = &issuer;
        async move {
            let mut params = assertion_params(&assertion);
            params.push(("token", token));
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            refused(issuer, &params, None).await
        }
    };
    let invalid = (401, None, json!("invalid_client"));
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = assertion_claims("sidecar");
        change(&mut claims);
        claims
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong aud",
            keys.sign(
                "ES256",
                "ec-1",
                &with(&|c| c["aud"] = json!("http://other.test")),
            ),
        ),
        (
            "token endpoint aud",
            keys.sign(
                "ES256",
                "ec-1",
                &with(&|c| c["aud"] = json!(format!("{ISSUER}/auth/login"))),
            ),
        ),
        (
            "expired",
            keys.sign(
                "ES256",
                "ec-1",
                &with(&|c| {
                    c["iat"] = json!(now() - 600);
                    c["exp"] = json!(now() - 300);
                }),
            ),
        ),
        (
            "exp too far ahead",
            keys.sign("ES256", "ec-1", &with(&|c| c["exp"] = json!(now() + 3600))),
        ),
        (
            "no exp",
            keys.sign(
                "ES256",
                "ec-1",
                &with(&|c| {
                    c.as_object_mut().expect("object").remove("exp");
                }),
            ),
        ),
        (
            "no jti",
            keys.sign(
                "ES256",
                "ec-1",
                &with(&|c| {
                    c.as_object_mut().expect("object").remove("jti");
                }),
            ),
        ),
        (
            "iss is not sub",
            keys.sign(
                "ES256",
                "ec-1",
                &with(&|c| c["iss"] = json!("other:client")),
            ),
        ),
        (
            "another client's name",
            keys.sign("ES256", "ec-1", &assertion_claims("other:client")),
        ),
        (
            "unknown client",
            keys.sign("ES256", "ec-1", &assertion_claims("nobody")),
        ),
        (
            "unregistered key under a registered kid",
            stranger.sign("ES256", "ec-1", &assertion_claims("sidecar")),
        ),
        (
            "unregistered RSA key",
            stranger.sign("RS256", "rsa-1", &assertion_claims("sidecar")),
        ),
        (
            "alg none",
            compact(
                &json!({"alg": "none"}),
                &assertion_claims("sidecar"),
                |_| Vec::new(),
            ),
        ),
        (
            "HS256 with the public key as secret",
            compact(
                &json!({"alg": "HS256", "kid": "ec-1"}),
                &assertion_claims("sidecar"),
                |input| {
                    let key = aws_lc_rs::hmac::Key::new(
                        aws_lc_rs::hmac::HMAC_SHA256,
                        keys.jwks().to_string().as_bytes(),
                    );
                    aws_lc_rs::hmac::sign(&key, input).as_ref().to_vec()
                },
            ),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (name, assertion) in cases {
        assert_eq!(call(assertion).await, invalid, "{name}");
    }

    // A jti is accepted once.
    let assertion = keys.sign("RS256", "rsa-1", &assertion_claims("sidecar"));
    assert_eq!(call(assertion.clone()).await.0, 200);
    assert_eq!(call(assertion).await, invalid, "replayed");

    // The wrong assertion type.
    let assertion = keys.sign("RS256", "rsa-1", &assertion_claims("sidecar"));
    let (status, _, error) = refused(
        &issuer,
        &[
            ("token", &token),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            ),
            ("client_assertion", &assertion),
        ],
        None,
    )
    .await;
    assert_eq!((status, error), (401, json!("invalid_client")));
}

#[tokio::test]
async fn malformed_requests_are_refused_before_anything_is_looked_up() {
    let keys = ClientKeys::new();
    let issuer = issuer_with(&[], &keys).await;
    let basic = Some(("sidecar", SECRET));
    // Over 16 KiB: 413.
    let big = form(&[("token", &"A".repeat(17 * 1024))]);
    let response = introspect_raw(&issuer, big, basic, None).await;
    assert_eq!(response.status(), 413);
    // A token over 8 KiB in a body under 16 KiB: 400.
    let (status, _, error) = refused(&issuer, &[("token", &"A".repeat(8 * 1024 + 1))], basic).await;
    assert_eq!((status, error), (400, json!("invalid_request")));
    // No token, a repeated one, a malformed escape.
    let (status, _, error) = refused(&issuer, &[], basic).await;
    assert_eq!((status, error), (400, json!("invalid_request")));
    for body in [
        "token=a&token=b",
        "token=%zz",
        "token=a&client_id=x&client_id=y",
    ] {
        let response = introspect_raw(&issuer, body.to_owned(), basic, None).await;
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["error"], "invalid_request", "{body}");
    }
    // Not a form: 415.
    for content_type in ["application/json", "text/plain", "multipart/form-data"] {
        let response = reqwest::Client::new()
            .post(format!("{}/auth/introspect", issuer.base))
            .header("content-type", content_type)
            .basic_auth("sidecar", Some(SECRET))
            .body(r#"{"token":"x"}"#)
            .send()
            .await
            .expect("introspect");
        assert_eq!(response.status(), 415, "{content_type}");
    }
    let response = reqwest::Client::new()
        .post(format!("{}/auth/introspect", issuer.base))
        .basic_auth("sidecar", Some(SECRET))
        .body("token=x")
        .send()
        .await
        .expect("introspect");
    assert_eq!(response.status(), 415, "no content type");
}

#[tokio::test]
async fn the_jwt_answer_is_signed_by_the_issuer_for_the_client() {
    let keys = ClientKeys::new();
    let issuer = issuer_with(&[], &keys).await;
    let token = opaque_login(&issuer, "bob").await;
    let (_, plain) = introspect(&issuer, &token).await;
    for (token, expected) in [
        (token.as_str(), plain),
        ("unknown", json!({"active": false})),
    ] {
        let response = introspect_raw(
            &issuer,
            form(&[("token", token)]),
            Some(("sidecar", SECRET)),
            Some("application/json;q=0.5, application/token-introspection+jwt"),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], JWT_MEDIA_TYPE);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let jwt = response.text().await.expect("body");
        let (header, claims) = verify_with_jwks(&issuer, &jwt).await;
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "token-introspection+jwt");
        assert!(header["kid"].is_string());
        let iat = claims["iat"].as_u64().expect("iat");
        assert!(iat.abs_diff(now()) <= 5, "{claims}");
        assert_eq!(
            claims,
            json!({"iss": ISSUER, "aud": "sidecar", "iat": iat, "token_introspection": expected})
        );
    }
    // JSON unless the JWT is asked for.
    let response = introspect_raw(
        &issuer,
        form(&[("token", &token)]),
        Some(("sidecar", SECRET)),
        Some("application/token-introspection+jwt;q=0, application/json"),
    )
    .await;
    assert_eq!(response.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn discovery_lists_the_introspection_endpoint() {
    let keys = ClientKeys::new();
    let issuer = issuer_with(&[], &keys).await;
    let discovery: Value =
        reqwest::get(format!("{}/.well-known/openid-configuration", issuer.base))
            .await
            .expect("discovery")
            .json()
            .await
            .expect("json");
    assert_eq!(discovery["introspection_endpoint"], ENDPOINT);
    assert_eq!(
        discovery["introspection_endpoint_auth_methods_supported"],
        json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt"
        ])
    );
    assert_eq!(
        discovery["introspection_endpoint_auth_signing_alg_values_supported"],
        json!(["RS256", "ES256"])
    );
}

#[tokio::test]
async fn with_no_client_configured_everyone_is_invalid_client() {
    let issuer = start_with_clients(&["--issuer-url", ISSUER], &[]).await;
    let token = opaque_login(&issuer, "bob").await;
    assert_eq!(
        refused(&issuer, &[("token", &token)], Some(("sidecar", SECRET))).await,
        (
            401,
            Some(r#"Basic realm="issuer""#.to_owned()),
            json!("invalid_client")
        )
    );
    assert_eq!(
        refused(
            &issuer,
            &[
                ("token", &token),
                ("client_id", "sidecar"),
                ("client_secret", SECRET)
            ],
            None
        )
        .await,
        (401, None, json!("invalid_client"))
    );
}

#[tokio::test]
async fn failures_spend_the_address_allowance_and_successes_do_not() {
    let keys = ClientKeys::new();
    let issuer = issuer_with(
        &["--public-rate-limit", "1", "--public-rate-burst", "2"],
        &keys,
    )
    .await;
    let token = opaque_login(&issuer, "bob").await;
    // A sidecar's calls are never throttled.
    for _ in 0..10 {
        assert_eq!(introspect(&issuer, &token).await.0, 200);
    }
    // Guesses are: two, then 429 with Retry-After, and no guess is evaluated then, not
    // even a right one.
    for _ in 0..2 {
        let response = introspect_raw(
            &issuer,
            form(&[("token", &token)]),
            Some(("sidecar", "guess-0123456789")),
            None,
        )
        .await;
        assert_eq!(response.status(), 401);
    }
    let response = introspect_raw(
        &issuer,
        form(&[("token", &token)]),
        Some(("sidecar", "guess-0123456789")),
        None,
    )
    .await;
    let (status, retry) = support::status_and_retry_after(&response);
    assert_eq!(status, 429);
    assert!(retry.is_some());
    assert_eq!(introspect(&issuer, &token).await.0, 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(introspect(&issuer, &token).await.0, 200);
}

#[test]
fn a_short_or_missing_secret_file_fails_the_start_with_its_reason() {
    use clap::Parser;
    let dir = tempfile::tempdir().expect("tempdir");
    let short = dir.path().join("short");
    std::fs::write(&short, "too-short\n").expect("write");
    let jwks = dir.path().join("jwks");
    std::fs::write(&jwks, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).expect("write");
    for (flag, value, reason) in [
        (
            "--introspection-client",
            format!("sidecar={}", short.display()),
            "shorter than 16 bytes",
        ),
        (
            "--introspection-client",
            format!("sidecar={}", dir.path().join("missing").display()),
            "cannot read",
        ),
        (
            "--introspection-client-jwks",
            format!("sidecar={}", jwks.display()),
            "neither RSA nor EC P-256",
        ),
    ] {
        let settings = issuer::config::Cli::try_parse_from([
            "issuer".to_owned(),
            "--db".into(),
            dir.path().join("users.db").display().to_string(),
            "--key-dir".into(),
            dir.path().join("keys").display().to_string(),
            flag.into(),
            value,
        ])
        .expect("settings")
        .settings;
        let err = issuer::Issuer::open(settings).expect_err("refused");
        let message = err.to_string();
        assert!(message.contains(reason), "{message}");
        assert!(message.contains("sidecar"), "{message}");
    }
}
