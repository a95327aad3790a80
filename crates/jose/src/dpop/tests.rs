use super::*;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;

use super::examples::{ACCESS_TOKEN, EXAMPLE_JKT, FIGURE_2, FIGURE_13};

const ALGS: &[Algorithm] = &[Algorithm::ES256, Algorithm::PS256, Algorithm::EdDSA];

/// A GET of `uri` with `access_token` at `now`: 60 s window, 5 s leeway, [`ALGS`].
fn get(uri: &'static str, access_token: &'static str, now: u64) -> Expected<'static> {
    Expected {
        method: "GET",
        uri,
        access_token: Some(access_token),
        nonce: None,
        algorithms: ALGS,
        now,
        max_age: 60,
        leeway: 5,
    }
}

fn resource_request(now: u64) -> Expected<'static> {
    get(
        "https://resource.example.org/protectedresource",
        ACCESS_TOKEN,
        now,
    )
}

#[test]
fn rfc_9449_figure_13_resource_proof_verifies() {
    // The RFC's proofs are from 2019: its clock, not ours.
    let proof = verify_proof(FIGURE_13, &resource_request(1_562_262_618)).unwrap();
    assert_eq!(
        proof,
        Proof {
            jti: "e1j3V_bKic8-LAEB".into(),
            iat: 1_562_262_618,
            jkt: EXAMPLE_JKT.into(),
        }
    );
    // §4.2 ath: the Figure 14 value.
    assert_eq!(
        access_token_hash(ACCESS_TOKEN),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
}

#[test]
fn rfc_9449_figure_2_token_request_proof_verifies() {
    let expected = Expected {
        method: "POST",
        uri: "https://server.example.com/token",
        access_token: None,
        ..resource_request(1_562_262_616)
    };
    let proof = verify_proof(FIGURE_2, &expected).unwrap();
    assert_eq!(proof.jti, "-BwC3ESc6acc2lTc");
    assert_eq!(proof.jkt, EXAMPLE_JKT);
}

#[test]
fn rfc_9449_examples_fail_each_check_they_should() {
    let at = 1_562_262_618;
    let wrong = |edit: &dyn Fn(&mut Expected<'static>)| {
        let mut expected = resource_request(at);
        edit(&mut expected);
        verify_proof(FIGURE_13, &expected).unwrap_err()
    };
    assert_eq!(wrong(&|e| e.method = "POST"), DpopError::WrongMethod);
    assert_eq!(wrong(&|e| e.method = "get"), DpopError::WrongMethod);
    assert_eq!(
        wrong(&|e| e.uri = "https://resource.example.org/other"),
        DpopError::WrongUri
    );
    assert_eq!(
        wrong(&|e| e.uri = "https://evil.example.org/protectedresource"),
        DpopError::WrongUri
    );
    assert_eq!(
        wrong(&|e| e.uri = "http://resource.example.org/protectedresource"),
        DpopError::WrongUri
    );
    assert_eq!(wrong(&|e| e.now = at + 61), DpopError::StaleOrFuture);
    assert_eq!(wrong(&|e| e.now = at - 6), DpopError::StaleOrFuture);
    assert_eq!(
        wrong(&|e| e.access_token = Some("another-token")),
        DpopError::WrongTokenHash
    );
    assert_eq!(
        wrong(&|e| e.algorithms = &[Algorithm::PS256]),
        DpopError::AlgorithmNotAllowed
    );
    assert_eq!(
        wrong(&|e| e.nonce = Some(NonceCheck(&|n| n == "eyJ7S_zG.eyJH0-Z.HX4w-7v"))),
        DpopError::NonceRequired
    );
    // The query of the request is not part of htu: the same proof matches.
    let mut with_query = resource_request(at);
    with_query.uri = "https://resource.example.org/protectedresource?x=1#f";
    assert!(verify_proof(FIGURE_13, &with_query).is_ok());
    // A token-request proof (no ath) does not accompany an access token.
    let mut no_ath = resource_request(1_562_262_616);
    no_ath.method = "POST";
    no_ath.uri = "https://server.example.com/token";
    assert_eq!(
        verify_proof(FIGURE_2, &no_ath).unwrap_err(),
        DpopError::MissingClaim("ath")
    );
    // A tampered signature.
    // (A character inside the signature: the last one carries padding bits.)
    let mut tampered: Vec<char> = FIGURE_13.chars().collect();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    assert_eq!(
        verify_proof(&tampered, &resource_request(at)).unwrap_err(),
        DpopError::BadSignature
    );
}

#[test]
fn rfc_7638_and_rfc_8037_thumbprints() {
    // RFC 7638 §3.1 (members beyond the required ones are ignored).
    let rsa = json!({"kty": "RSA", "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"});
    assert_eq!(
        thumbprint(rsa.as_object().unwrap()).unwrap(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    // RFC 8037 Appendix A.3.
    let okp =
        json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    assert_eq!(
        thumbprint(okp.as_object().unwrap()).unwrap(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
    // Private members, symmetric keys, unknown curves and values that would change the
    // canonical JSON are refused.
    for bad in [
        json!({"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "secret"}),
        json!({"kty": "RSA", "n": "a", "e": "AQAB", "p": "x"}),
        json!({"kty": "oct", "k": "c2VjcmV0"}),
        json!({"kty": "EC", "crv": "secp256k1", "x": "a", "y": "b"}),
        json!({"kty": "EC", "crv": "P-256", "x": "a\",\"y\":\"z", "y": "b"}),
        json!({"kty": "RSA", "n": "a"}),
    ] {
        assert_eq!(
            thumbprint(bad.as_object().unwrap()),
            Err(DpopError::BadKey),
            "{bad}"
        );
    }
}

/// A fresh P-256 key and proofs signed with it, header and claims as given.
struct Client {
    key: EcdsaKeyPair,
}

impl Client {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        Self { key }
    }

    fn jwk(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()})
    }
}

fn claims(now: u64) -> Value {
    json!({
        "jti": "j-1",
        "htm": "GET",
        "htu": "https://api.test/orders",
        "iat": now,
        "ath": access_token_hash("the.access.token"),
    })
}

fn api_request(now: u64) -> Expected<'static> {
    get("https://api.test/orders", "the.access.token", now)
}

#[test]
fn hostile_proofs_are_refused() {
    let now = 1_800_000_000;
    let client = Client::new();
    let good = client.sign(&client.header(), &claims(now));
    let proof = verify_proof(&good, &api_request(now)).unwrap();
    assert_eq!(
        proof.jkt,
        thumbprint(client.jwk().as_object().unwrap()).unwrap()
    );

    let refused = |header: Value, body: Value| {
        verify_proof(&client.sign(&header, &body), &api_request(now)).unwrap_err()
    };
    // A query or fragment in htu (§4.2: htu is without them).
    let mut query = claims(now);
    query["htu"] = json!("https://api.test/orders?all=1");
    assert_eq!(refused(client.header(), query), DpopError::WrongUri);
    let mut fragment = claims(now);
    fragment["htu"] = json!("https://api.test/orders#x");
    assert_eq!(refused(client.header(), fragment), DpopError::WrongUri);
    // Private key in the proof's jwk.
    let mut header = client.header();
    header["jwk"]["d"] = json!("c2VjcmV0");
    assert_eq!(refused(header, claims(now)), DpopError::BadKey);
    // Wrong or missing typ.
    let mut header = client.header();
    header["typ"] = json!("JWT");
    assert_eq!(refused(header, claims(now)), DpopError::WrongType);
    let mut header = client.header();
    header.as_object_mut().unwrap().remove("typ");
    assert_eq!(refused(header, claims(now)), DpopError::WrongType);
    // No jwk, or the key of someone else (signature no longer verifies).
    let mut header = client.header();
    header.as_object_mut().unwrap().remove("jwk");
    assert_eq!(refused(header, claims(now)), DpopError::BadKey);
    let mut header = client.header();
    header["jwk"] = Client::new().jwk();
    assert_eq!(refused(header, claims(now)), DpopError::BadSignature);
    // alg none, and HS256 keyed with anything: never accepted.
    for alg in ["none", "HS256"] {
        let mut header = client.header();
        header["alg"] = json!(alg);
        assert_eq!(
            refused(header, claims(now)),
            DpopError::AlgorithmNotAllowed,
            "{alg}"
        );
    }
    let hs = {
        let mut header = client.header();
        header["alg"] = json!("HS256");
        header["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"});
        header
    };
    let mut everything = api_request(now);
    everything.algorithms = &[Algorithm::HS256, Algorithm::ES256];
    assert_eq!(
        verify_proof(&client.sign(&hs, &claims(now)), &everything).unwrap_err(),
        DpopError::AlgorithmNotAllowed
    );
    // Each required claim.
    for name in ["jti", "htm", "htu", "iat", "ath"] {
        let mut body = claims(now);
        body.as_object_mut().unwrap().remove(name);
        assert_eq!(
            refused(client.header(), body),
            DpopError::MissingClaim(name)
        );
    }
    let mut body = claims(now);
    body["iat"] = json!("1800000000");
    assert_eq!(
        refused(client.header(), body),
        DpopError::MissingClaim("iat")
    );
    // Nonces (§8): the current one passes, an old one does not.
    let mut with_nonce = claims(now);
    with_nonce["nonce"] = json!("n-2");
    let proof = client.sign(&client.header(), &with_nonce);
    let mut expected = api_request(now);
    expected.nonce = Some(NonceCheck(&|n| n == "n-2"));
    assert!(verify_proof(&proof, &expected).is_ok());
    expected.nonce = Some(NonceCheck(&|n| n == "n-3"));
    assert_eq!(
        verify_proof(&proof, &expected).unwrap_err(),
        DpopError::WrongNonce
    );
    // Malformed and oversized input.
    for junk in [
        "",
        "a.b",
        "a.b.c.d",
        "!!.!!.!!",
        &"a".repeat(MAX_PROOF_BYTES + 1),
    ] {
        assert!(verify_proof(junk, &api_request(now)).is_err(), "{junk:.20}");
    }
}

#[test]
fn htu_is_compared_after_rfc_3986_normalisation() {
    let same = [
        ("https://api.test/orders", "HTTPS://API.Test:443/orders"),
        ("https://api.test", "https://api.test/"),
        ("http://api.test:80/a", "http://api.test/a"),
        ("https://api.test/a/./b/../c", "https://api.test/a/c"),
        ("https://api.test/%7Euser/%2f", "https://api.test/~user/%2F"),
        ("https://[::1]:443/x", "https://[::1]/x"),
    ];
    for (a, b) in same {
        assert!(same_uri(a, b), "{a} vs {b}");
    }
    let different = [
        ("https://api.test/orders", "https://api.test:8443/orders"),
        ("https://api.test/orders", "http://api.test/orders"),
        ("https://api.test/Orders", "https://api.test/orders"),
        ("https://api.test/orders", "https://user@api.test/orders"),
        ("ftp://api.test/orders", "ftp://api.test/orders"),
        ("https://api.test:x/orders", "https://api.test:x/orders"),
    ];
    for (a, b) in different {
        assert!(!same_uri(a, b), "{a} vs {b}");
    }
}
