use super::*;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_jwk() -> Value {
    let pair =
        aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let public = pair.public_key();
    json!({
        "kty": "RSA",
        "n": b64(public.modulus().big_endian_without_leading_zero()),
        "e": b64(public.exponent().big_endian_without_leading_zero()),
    })
}

fn ec_jwk() -> Value {
    let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
    )
    .unwrap();
    let point = pair.public_key().as_ref();
    json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])})
}

fn provider(algorithms: &[Algorithm]) -> ProviderConfig {
    ProviderConfig {
        name: "p".into(),
        issuer: "https://i".into(),
        audiences: vec!["a".into()],
        jwks: crate::config::JwksSource::Uri("https://i/jwks".into()),
        algorithms: algorithms.to_vec(),
        leeway: std::time::Duration::from_secs(0),
        require_exp: true,
        required_claims: vec![],
        token_sources: vec![crate::config::TokenSource::Bearer],
        jwks_cache: Default::default(),
        jwks_http: Default::default(),
        allow_insecure_http: false,
        mode: None,
        token_types: vec![],
        max_lifetime: None,
        dpop: Default::default(),
        certificate_binding: Default::default(),
        status_list: Default::default(),
    }
}

fn with(mut jwk: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        jwk[k] = v.clone();
    }
    jwk
}

fn parse(keys: Vec<Value>, algorithms: &[Algorithm]) -> Result<KeySet, KeySetError> {
    KeySet::parse(
        json!({"keys": keys}).to_string().as_bytes(),
        &provider(algorithms),
    )
}

#[test]
fn algorithms_are_narrowed_by_key_type_declared_alg_and_provider() {
    let rsa = rsa_jwk();
    let set = parse(
        vec![
            with(rsa.clone(), json!({"kid": "free"})),
            with(rsa.clone(), json!({"kid": "pinned", "alg": "PS256"})),
            with(ec_jwk(), json!({"kid": "ec"})),
        ],
        &[Algorithm::RS256, Algorithm::PS256, Algorithm::ES256],
    )
    .unwrap();
    let algs = |kid: &str| set.by_kid(kid).next().unwrap().algorithms.clone();
    assert_eq!(algs("free"), vec![Algorithm::RS256, Algorithm::PS256]);
    assert_eq!(algs("pinned"), vec![Algorithm::PS256]);
    assert_eq!(algs("ec"), vec![Algorithm::ES256]);
    assert_eq!(set.for_algorithm(Algorithm::ES256).count(), 1);
    assert_eq!(set.for_algorithm(Algorithm::PS256).count(), 2);
}

#[test]
fn unsafe_or_unusable_keys_are_skipped() {
    let rsa = rsa_jwk();
    let set = parse(
        vec![
            json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}),
            with(rsa.clone(), json!({"kid": "private", "d": "AAAA"})),
            with(rsa.clone(), json!({"kid": "enc", "use": "enc"})),
            with(rsa.clone(), json!({"kid": "ops", "key_ops": ["encrypt"]})),
            with(rsa.clone(), json!({"kid": "mismatch", "alg": "ES256"})),
            with(rsa.clone(), json!({"kid": "hmac-alg", "alg": "HS256"})),
            with(ec_jwk(), json!({"kid": "ec-not-allowed"})),
            json!({"kty": "RSA", "kid": "short", "n": b64(&[0xC0; 128]), "e": "AQAB"}),
            json!({"kty": "XYZ", "kid": "unknown"}),
            with(rsa, json!({"kid": "good", "use": "sig", "alg": "RS256"})),
        ],
        &[Algorithm::RS256],
    )
    .unwrap();
    let kids: Vec<_> = set.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
    assert_eq!(kids, vec!["good"]);
}

#[test]
fn a_document_without_usable_keys_is_an_error() {
    assert!(matches!(
        parse(
            vec![json!({"kty": "oct", "k": "c2VjcmV0"})],
            &[Algorithm::RS256]
        ),
        Err(KeySetError::NoUsableKeys { skipped: 1 })
    ));
    assert!(matches!(
        KeySet::parse(b"<html>", &provider(&[Algorithm::RS256])),
        Err(KeySetError::NotJwks(_))
    ));
}

#[test]
fn thumbprint_identifies_the_key_material() {
    let rsa = rsa_jwk();
    let set = parse(
        vec![
            with(rsa.clone(), json!({"kid": "a"})),
            with(rsa, json!({"kid": "b"})),
        ],
        &[Algorithm::RS256],
    )
    .unwrap();
    assert_eq!(set.keys[0].thumbprint, set.keys[1].thumbprint);
    assert!(set.contains(&set.keys[0].thumbprint));
    assert!(!set.contains("other"));
}

#[test]
fn every_key_of_a_large_set_is_found_by_its_thumbprint() {
    let keys: Vec<Value> = (0..40)
        .map(|i| {
            let pair = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
            json!({"kty": "OKP", "crv": "Ed25519", "kid": format!("k{i}"),
                   "x": b64(pair.public_key().as_ref())})
        })
        .collect();
    let set = parse(keys, &[Algorithm::EdDSA]).unwrap();
    assert_eq!(set.keys.len(), 40);
    for key in &set.keys {
        assert!(set.contains(&key.thumbprint), "{}", key.thumbprint);
        let mut other = key.thumbprint.clone();
        other.push('x');
        assert!(!set.contains(&other));
    }
    assert!(!set.contains(""));
    assert!(!KeySet::default().contains(&set.keys[0].thumbprint));
}
