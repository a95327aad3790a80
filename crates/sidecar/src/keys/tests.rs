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
        introspection: None,
        spiffe: None,
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

/// RFC 7515 Appendix A.2 (RS256) and A.3 (ES256): the document's own compact JWSs verify
/// with its public keys, the payload reads as the RFC prints it (CRLF and all), and one
/// changed bit in the signature or the payload is refused. (A.3's signature is a "high S"
/// one: RFC 7518 §3.4 does not ask for low S, so it must verify.)
#[test]
fn rfc7515_appendix_a2_and_a3_examples_verify() {
    let rs256 = json!({
        "kty": "RSA",
        "n": concat!(
        "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qP",
        "CJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47s",
        "oMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2",
        "R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoud",
        "F8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
    ),
        "e": "AQAB",
    });
    let es256 = json!({
        "kty": "EC",
        "crv": "P-256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    });
    let a2 = concat!(
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh",
        "0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB",
        "__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9",
        "uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARN",
        "PvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZES",
        "c6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVm",
        "tVrBp0igcN_IoypGlUPQGe77Rw",
    );
    let a3 = concat!(
        "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh",
        "0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6",
        "-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
    );
    let keys = parse(vec![rs256, es256], &[Algorithm::RS256, Algorithm::ES256]).unwrap();
    for (example, compact, alg) in [("A.2", a2, Algorithm::RS256), ("A.3", a3, Algorithm::ES256)] {
        let token = jwt_authz_jose::jws::Unverified::parse(compact).unwrap();
        assert_eq!(token.header.alg, alg, "{example}");
        assert_eq!(token.claims["iss"], "joe");
        assert_eq!(token.claims["exp"], 1_300_819_380);
        assert_eq!(token.claims["http://example.com/is_root"], true);
        let verifies = |input: &[u8], signature: &[u8]| {
            keys.for_algorithm(alg)
                .filter(|key| key.verify_signature(alg, input, signature))
                .count()
        };
        assert_eq!(
            verifies(&token.signing_input, &token.signature),
            1,
            "{example}"
        );
        let mut signature = token.signature.clone();
        signature[7] ^= 1;
        assert_eq!(verifies(&token.signing_input, &signature), 0, "{example}");
        let mut input = token.signing_input.clone();
        let last = input.len() - 1;
        input[last] ^= 1;
        assert_eq!(verifies(&input, &token.signature), 0, "{example}");
    }
    // The payload octets of A.2.1, as printed: CRLF line breaks and a leading space.
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(a2.split('.').nth(1).unwrap())
        .unwrap();
    assert_eq!(
        payload,
        b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}"
    );
}
