//! The shared verification steps: keys a provider may and may not use, and a token checked
//! step by step with the error each refusal gives.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::*;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

struct Key(EcdsaKeyPair);

impl Key {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("generate");
        Key(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .expect("key"),
        )
    }

    fn jwk(&self, kid: &str) -> Value {
        let point = self.0.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
               "x": b64(&point[1..33]), "y": b64(&point[33..65])})
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .0
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

const NOW: u64 = 1_800_000_000;
const ES256: &[Algorithm] = &[Algorithm::ES256];

fn profile<'a>(required: &'a [String], types: &'a [String]) -> Profile<'a> {
    Profile {
        issuer: "https://issuer.test",
        algorithms: ES256,
        leeway: 5,
        require_exp: true,
        required_claims: required,
        max_lifetime: Some(3600),
        token_types: types,
        spiffe_trust_domain: None,
    }
}

fn claims() -> Value {
    json!({"iss": "https://issuer.test", "aud": "api", "sub": "u", "iat": NOW - 10, "exp": NOW + 600})
}

fn check(p: &Profile<'_>, keys: &[VerifyingKey], token: &str) -> Result<Verified, VerifyError> {
    verify(p, keys, Unverified::parse(token)?, NOW)
}

#[test]
fn a_token_passes_every_step_and_each_step_refuses_its_own() {
    let key = Key::new();
    let keys = vec![VerifyingKey::from_jwk_value(key.jwk("k1"), ES256).expect("key")];
    let (none, types) = (Vec::new(), Vec::new());
    let p = profile(&none, &types);
    let header = json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
    let ok = check(&p, &keys, &key.sign(&header, &claims())).expect("verified");
    assert_eq!(ok.exp, Some(NOW + 600));
    assert_eq!(ok.thumbprint, keys[0].thumbprint);

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        key.sign(&header, &c)
    };
    let other = Key::new();
    for (why, token, expected) in [
        (
            "another key's signature",
            other.sign(&header, &claims()),
            VerifyError::BadSignature,
        ),
        (
            "an unknown kid",
            key.sign(&json!({"alg": "ES256", "kid": "k9"}), &claims()),
            VerifyError::UnknownKey,
        ),
        (
            "an algorithm not accepted",
            key.sign(&json!({"alg": "RS256", "kid": "k1"}), &claims()),
            VerifyError::AlgorithmNotAllowed,
        ),
        (
            "crit",
            key.sign(
                &json!({"alg": "ES256", "kid": "k1", "crit": ["x"], "x": 1}),
                &claims(),
            ),
            VerifyError::UnsupportedHeader,
        ),
        (
            "a status list token",
            key.sign(
                &json!({"alg": "ES256", "kid": "k1", "typ": "statuslist+jwt"}),
                &claims(),
            ),
            VerifyError::WrongTokenType,
        ),
        (
            "expired",
            with(&|c| c["exp"] = json!(NOW - 6)),
            VerifyError::Expired,
        ),
        (
            "another issuer",
            with(&|c| c["iss"] = json!("https://evil.test")),
            VerifyError::WrongIssuer,
        ),
        (
            "no aud",
            with(&|c| {
                c.as_object_mut().map(|o| o.remove("aud"));
            }),
            VerifyError::MissingClaim("aud".into()),
        ),
        (
            "issued in the future",
            with(&|c| c["iat"] = json!(NOW + 60)),
            VerifyError::IssuedInFuture,
        ),
        (
            "too long a lifetime",
            with(&|c| {
                c["iat"] = json!(NOW - 10);
                c["exp"] = json!(NOW + 7200)
            }),
            VerifyError::LifetimeTooLong,
        ),
    ] {
        assert_eq!(check(&p, &keys, &token).map(|_| ()), Err(expected), "{why}");
    }
    // The provider's own requirements: a typed token, a claim.
    let (required, types) = (vec!["tenant".to_owned()], vec!["at+jwt".to_owned()]);
    let strict = profile(&required, &types);
    let typed = json!({"alg": "ES256", "kid": "k1", "typ": "application/at+jwt"});
    let mut c = claims();
    c["tenant"] = json!("t1");
    assert!(check(&strict, &keys, &key.sign(&typed, &c)).is_ok());
    assert_eq!(
        check(&strict, &keys, &key.sign(&header, &c)).map(|_| ()),
        Err(VerifyError::WrongTokenType)
    );
    assert_eq!(
        check(&strict, &keys, &key.sign(&typed, &claims())).map(|_| ()),
        Err(VerifyError::MissingClaim("tenant".into()))
    );
}

#[test]
fn only_keys_a_provider_may_verify_with_are_read() {
    let key = Key::new();
    assert!(VerifyingKey::from_jwk_value(key.jwk("k"), ES256).is_ok());
    let mut svid = key.jwk("k");
    svid["use"] = json!("jwt-svid");
    assert!(VerifyingKey::from_jwk_value(svid, ES256).is_ok());
    for (why, jwk, algorithms) in [
        ("symmetric", json!({"kty": "oct", "k": "c2VjcmV0"}), ES256),
        (
            "private",
            {
                let mut j = key.jwk("k");
                j["d"] = json!("AAAA");
                j
            },
            ES256,
        ),
        (
            "encryption key",
            {
                let mut j = key.jwk("k");
                j["use"] = json!("enc");
                j
            },
            ES256,
        ),
        (
            "x509-svid",
            {
                let mut j = key.jwk("k");
                j["use"] = json!("x509-svid");
                j
            },
            ES256,
        ),
        (
            "no verify in key_ops",
            {
                let mut j = key.jwk("k");
                j["key_ops"] = json!(["sign"]);
                j
            },
            ES256,
        ),
        (
            "alg of another type",
            {
                let mut j = key.jwk("k");
                j["alg"] = json!("RS256");
                j
            },
            ES256,
        ),
        (
            "provider takes none of its algorithms",
            key.jwk("k"),
            &[Algorithm::RS256][..],
        ),
    ] {
        assert!(
            VerifyingKey::from_jwk_value(jwk, algorithms).is_err(),
            "{why}"
        );
    }
}

#[test]
fn a_profile_travels_as_json_unchanged() {
    let (required, types) = (vec!["tenant".to_owned()], vec!["at+jwt".to_owned()]);
    let p = profile(&required, &types);
    let owned = OwnedProfile::of(&p);
    let back: OwnedProfile =
        serde_json::from_str(&serde_json::to_string(&owned).expect("json")).expect("read");
    assert_eq!(back, owned);
    let view = back.view();
    assert_eq!(view.issuer, p.issuer);
    assert_eq!(view.max_lifetime, Some(3600));
    assert_eq!(view.token_types, p.token_types);
}
