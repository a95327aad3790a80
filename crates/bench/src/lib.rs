//! Shared pieces of the benchmark tools: the benchmark's tokens (signed and published with
//! the test kit's JWS helpers, `testkit::jws`) and Check requests as Envoy sends them.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use serde_json::{Value, json};
use testkit::jws;

pub const ISSUER: &str = "https://bench.test";
pub const AUDIENCE: &str = "bench";
pub const RSA_KID: &str = "bench-rsa";
pub const ED_KID: &str = "bench-ed";

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Claims of a benchmark token for user `n`, valid for a day.
pub fn claims(n: u64) -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": format!("user-{n}"),
        "username": format!("name-{n}"), "role": "user",
        "iat": now(), "nbf": now(), "exp": now() + 86_400,
    })
}

fn header(alg: &str, kid: &str, typ: &str) -> Value {
    json!({"alg": alg, "kid": kid, "typ": typ})
}

pub fn sign_rs256(key: &signature::RsaKeyPair, claims: &Value) -> String {
    sign_rs256_typed(key, "JWT", claims)
}

/// An RS256 JWS with this `typ` (`statuslist+jwt` for a Status List Token).
pub fn sign_rs256_typed(key: &signature::RsaKeyPair, typ: &str, claims: &Value) -> String {
    jws::compact(&header("RS256", RSA_KID, typ), claims, |input| {
        jws::rsa_sign(key, &signature::RSA_PKCS1_SHA256, input)
    })
}

pub fn sign_ed25519(key: &signature::Ed25519KeyPair, claims: &Value) -> String {
    sign_ed25519_as(key, ED_KID, claims)
}

/// An EdDSA token under key id `kid`.
pub fn sign_ed25519_as(key: &signature::Ed25519KeyPair, kid: &str, claims: &Value) -> String {
    jws::compact(&header("EdDSA", kid, "JWT"), claims, |input| {
        key.sign(input).as_ref().to_vec()
    })
}

pub fn rsa_jwk(key: &signature::RsaKeyPair) -> Value {
    jws::published(jws::rsa_public_jwk(key), RSA_KID, "RS256")
}

pub fn ed_jwk(key: &signature::Ed25519KeyPair) -> Value {
    ed_jwk_as(key, ED_KID)
}

/// The public JWK of an Ed25519 key under key id `kid`.
pub fn ed_jwk_as(key: &signature::Ed25519KeyPair, kid: &str) -> Value {
    jws::published(jws::ed25519_public_jwk(key), kid, "EdDSA")
}

/// A Check request for `GET /bench` carrying `token` (or none).
pub fn check_request(token: Option<&str>) -> CheckRequest {
    let mut headers = HashMap::from([
        (":authority".to_owned(), "bench.test".to_owned()),
        ("user-agent".to_owned(), "authz-load".to_owned()),
        ("x-request-id".to_owned(), "6f1c2e0a-bench".to_owned()),
    ]);
    if let Some(t) = token {
        headers.insert("authorization".to_owned(), format!("Bearer {t}"));
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/bench".into(),
                    host: "bench.test".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

/// The public JWK of a DPoP key (P-256), as a proof header carries it.
pub fn dpop_jwk(key: &signature::EcdsaKeyPair) -> Value {
    jws::p256_public_jwk(key)
}

/// The RFC 7638 thumbprint of a DPoP key: what a bound token's `cnf.jkt` holds.
pub fn dpop_jkt(key: &signature::EcdsaKeyPair) -> String {
    jws::p256_thumbprint(&dpop_jwk(key))
}

/// The URI [`check_request`] describes, as a proof's `htu` names it.
pub const BENCH_URI: &str = "http://bench.test/bench";

/// A fresh ES256 DPoP proof (RFC 9449 §4.2) for [`check_request`]'s request with `token`.
pub fn dpop_proof(key: &signature::EcdsaKeyPair, token: &str, jti: u64) -> String {
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": dpop_jwk(key)});
    let ath = b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref());
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).expect("random");
    let claims = json!({"jti": format!("{jti}-{}", b64(&nonce)), "htm": "GET", "htu": BENCH_URI,
                        "iat": now(), "ath": ath});
    jws::compact(&header, &claims, |input| jws::es256_sign(key, input))
}

/// [`check_request`] with `Authorization: DPoP token` and the proof.
pub fn check_request_dpop(token: &str, proof: &str) -> CheckRequest {
    let mut request = check_request(None);
    set_header(&mut request, "authorization", format!("DPoP {token}"));
    set_header(&mut request, "dpop", proof.to_owned());
    request
}

/// Sets a header of the request a Check describes.
pub fn set_header(request: &mut CheckRequest, name: &str, value: String) {
    if let Some(http) = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.headers.insert(name.to_owned(), value);
    }
}
