//! Compact JWS and public JWKs from aws-lc key pairs, written here from RFC 7515, RFC 7517
//! and RFC 7638 independently of the verifier under test: what [`crate::TestKey`], the DPoP
//! client and the benchmark tools all sign and publish with.

use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{Value, json};

use crate::b64;

/// A compact JWS (RFC 7515 §7.1) over `header` and `claims`, signed by `sign` whatever
/// `header` says.
pub fn compact(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// An RSA signature with PKCS#1 v1.5 (RS256) or PSS (PS256) padding.
pub fn rsa_sign(
    key: &RsaKeyPair,
    padding: &'static dyn signature::RsaEncoding,
    message: &[u8],
) -> Vec<u8> {
    let mut out = vec![0; key.public_modulus_len()];
    key.sign(
        padding,
        &aws_lc_rs::rand::SystemRandom::new(),
        message,
        &mut out,
    )
    .expect("RSA signing");
    out
}

/// An ES256 signature (fixed-length `r || s`, RFC 7518 §3.4).
pub fn es256_sign(key: &EcdsaKeyPair, message: &[u8]) -> Vec<u8> {
    key.sign(&aws_lc_rs::rand::SystemRandom::new(), message)
        .expect("EC signing")
        .as_ref()
        .to_vec()
}

/// The public members of an RSA key (RFC 7518 §6.3.1).
pub fn rsa_public_jwk(key: &RsaKeyPair) -> Value {
    let public = key.public_key();
    json!({
        "kty": "RSA",
        "n": b64(public.modulus().big_endian_without_leading_zero()),
        "e": b64(public.exponent().big_endian_without_leading_zero()),
    })
}

/// The public members of a P-256 key (RFC 7518 §6.2.1).
pub fn p256_public_jwk(key: &EcdsaKeyPair) -> Value {
    let point = key.public_key().as_ref();
    json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])})
}

/// The public members of an Ed25519 key (RFC 8037 §2).
pub fn ed25519_public_jwk(key: &Ed25519KeyPair) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.public_key().as_ref())})
}

/// `jwk` with `kid`, `alg` and `use: sig` added.
pub fn published(mut jwk: Value, kid: &str, alg: &str) -> Value {
    jwk["kid"] = json!(kid);
    jwk["alg"] = json!(alg);
    jwk["use"] = json!("sig");
    jwk
}

/// RFC 7638 thumbprint of a P-256 public JWK: SHA-256 over the required members in
/// lexicographic order, no spaces.
pub fn p256_thumbprint(jwk: &Value) -> String {
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#,
        jwk["x"], jwk["y"]
    );
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
}
