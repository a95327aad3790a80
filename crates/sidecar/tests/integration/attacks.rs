//! Each known way to get a forged or stolen-context token past a JWT verifier, denied.

use crate::support::*;
use serde_json::json;

fn unsigned(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let (_jwks, _key, server) = start_with_key("").await;
    for alg in ["none", "None", "NONE"] {
        let token = unsigned(&json!({"alg": alg, "typ": "JWT"}), &claims("u"));
        assert_invalid_token(&server.check_token("/x", &token).await, "malformed token");
        let token = unsigned(&json!({"alg": alg, "kid": "k1"}), &claims("u"));
        assert_invalid_token(&server.check_token("/x", &token).await, "malformed token");
    }
}

#[tokio::test]
async fn hs256_keyed_with_the_rsa_public_key_is_rejected() {
    let (_jwks, key, server) = start_with_key("").await;
    let der = key.public_key_der();
    let jwk_json = key.jwk().to_string();
    for secret in [der.as_slice(), jwk_json.as_bytes()] {
        let token = hs256_token(&json!({"alg": "HS256", "kid": "k1"}), &claims("u"), secret);
        assert_invalid_token(
            &server.check_token("/x", &token).await,
            "algorithm not allowed",
        );
    }
}

#[tokio::test]
async fn key_supplied_by_the_token_is_ignored() {
    let (_jwks, _key, server) = start_with_key("").await;
    let attacker = TestKey::rsa("evil");
    // Embedded jwk, with and without reusing the victim's kid.
    for kid in ["evil", "k1"] {
        let header = json!({"alg": "RS256", "kid": kid, "jwk": attacker.jwk()});
        let response = server
            .check_token("/x", &attacker.sign(&header, &claims("u")))
            .await;
        assert_eq!(denied_status(&response), Some(401), "kid {kid}");
    }
    // jku / x5u pointing at an attacker's JWKS that does hold the key.
    let evil_jwks = JwksServer::start(vec![attacker.jwk()]).await;
    let header =
        json!({"alg": "RS256", "kid": "evil", "jku": evil_jwks.url(), "x5u": evil_jwks.url()});
    let response = server
        .check_token("/x", &attacker.sign(&header, &claims("u")))
        .await;
    assert_invalid_token(&response, "unknown signing key");
    assert_eq!(
        evil_jwks.fetches(),
        0,
        "the token's jku must never be fetched"
    );
    let header = json!({"alg": "RS256", "kid": "k1", "jku": evil_jwks.url()});
    let response = server
        .check_token("/x", &attacker.sign(&header, &claims("u")))
        .await;
    assert_invalid_token(&response, "invalid signature");
}

#[tokio::test]
async fn tampered_payload_or_signature_is_rejected() {
    let (_jwks, key, server) = start_with_key("").await;
    let token = key.token(&claims("u-1"));
    let parts: Vec<&str> = token.split('.').collect();

    let mut escalated = claims("u-1");
    escalated["role"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(escalated.to_string().as_bytes()),
        parts[2]
    );
    assert_invalid_token(
        &server.check_token("/x", &forged).await,
        "invalid signature",
    );

    let mut sig = parts[2].to_owned().into_bytes();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        String::from_utf8(sig).expect("ascii")
    );
    assert_invalid_token(
        &server.check_token("/x", &forged).await,
        "invalid signature",
    );

    let stripped = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(
        denied_status(&server.check_token("/x", &stripped).await),
        Some(401)
    );
    // The genuine token still passes.
    allowed(&server.check_token("/x", &token).await);
}

#[tokio::test]
async fn wrong_issuer_or_audience_is_rejected() {
    let (_jwks, key, server) = start_with_key("").await;
    let mut c = claims("u");
    c["iss"] = json!("https://evil.test");
    assert_invalid_token(
        &server.check_token("/x", &key.token(&c)).await,
        "unknown issuer",
    );

    let mut c = claims("u");
    c["aud"] = json!("someone-else");
    assert_invalid_token(
        &server.check_token("/x", &key.token(&c)).await,
        "invalid audience",
    );

    let mut c = claims("u");
    c.as_object_mut().map(|o| o.remove("aud"));
    assert_invalid_token(
        &server.check_token("/x", &key.token(&c)).await,
        "missing required claim",
    );

    // Any one configured audience suffices.
    let mut c = claims("u");
    c["aud"] = json!(["someone-else", "other-api"]);
    allowed(&server.check_token("/x", &key.token(&c)).await);
}

#[tokio::test]
async fn expired_future_and_missing_exp_are_rejected() {
    let (_jwks, key, server) = start_with_key("").await;
    let mut c = claims("u");
    c["exp"] = json!(now() - 60);
    assert_invalid_token(
        &server.check_token("/x", &key.token(&c)).await,
        "token expired",
    );

    let mut c = claims("u");
    c["nbf"] = json!(now() + 600);
    assert_invalid_token(
        &server.check_token("/x", &key.token(&c)).await,
        "token not yet valid",
    );

    let mut c = claims("u");
    c.as_object_mut().map(|o| o.remove("exp"));
    assert_invalid_token(
        &server.check_token("/x", &key.token(&c)).await,
        "missing required claim",
    );

    // Within the 5 s leeway.
    let mut c = claims("u");
    c["exp"] = json!(now() - 2);
    allowed(&server.check_token("/x", &key.token(&c)).await);
}

#[tokio::test]
async fn unknown_kid_and_algorithm_key_mismatch_are_rejected() {
    let key = TestKey::rsa("k1");
    let ec = TestKey::ec256("e1");
    let jwks = JwksServer::start(vec![key.jwk(), ec.jwk()]).await;
    let server = TestServer::start_ready(&config_yaml(&jwks.url(), "")).await;

    let stranger = TestKey::rsa("nobody");
    assert_invalid_token(
        &server
            .check_token("/x", &stranger.token(&claims("u")))
            .await,
        "unknown signing key",
    );
    // An RSA-signed token naming the EC key.
    let header = json!({"alg": "RS256", "kid": "e1"});
    assert_eq!(
        denied_status(
            &server
                .check_token("/x", &key.sign(&header, &claims("u")))
                .await
        ),
        Some(401)
    );
    // PS256 with a key published as RS256 only.
    let pss = json!({"alg": "PS256", "kid": "k1"});
    let signer = TestKey::rsa_pss("k1");
    assert_eq!(
        denied_status(
            &server
                .check_token("/x", &signer.sign(&pss, &claims("u")))
                .await
        ),
        Some(401)
    );
    // Without kid, only keys of the token's algorithm are tried.
    let header = json!({"alg": "ES256"});
    allowed(
        &server
            .check_token("/x", &ec.sign(&header, &claims("u")))
            .await,
    );
}

#[tokio::test]
async fn algorithm_outside_the_provider_list_is_rejected() {
    let key = TestKey::ec256("e1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let yaml = config_yaml(&jwks.url(), "").replace(
        "algorithms: [RS256, PS256, ES256, EdDSA]",
        "algorithms: [RS256]",
    );
    let server = TestServer::start(&yaml).await;
    assert_invalid_token(
        &server.check_token("/x", &key.token(&claims("u"))).await,
        "algorithm not allowed",
    );
}

#[tokio::test]
async fn oct_keys_in_the_jwks_are_never_used() {
    let secret = b"shared-secret-shared-secret-0123";
    let jwks = JwksServer::start(vec![json!({
        "kty": "oct", "kid": "h1", "alg": "HS256", "k": b64(secret)
    })])
    .await;
    let yaml = config_yaml(&jwks.url(), "");
    let server = TestServer::start(&yaml).await;
    let token = hs256_token(&json!({"alg": "HS256", "kid": "h1"}), &claims("u"), secret);
    let response = server.check_token("/x", &token).await;
    assert_eq!(denied_status(&response), Some(401));
    assert_eq!(
        server.readyz().await,
        503,
        "a JWKS of only oct keys gives no keys"
    );
}

#[tokio::test]
async fn oversized_and_duplicate_tokens_are_rejected_before_parsing() {
    let (_jwks, key, server) = start_with_key("").await;
    let huge = format!(
        "{}.{}.{}",
        "a".repeat(4000),
        "b".repeat(4000),
        "c".repeat(400)
    );
    let response = server.check_token("/x", &huge).await;
    assert_eq!(denied_status(&response), Some(400));
    assert_eq!(denial(&response).1["error_description"], "token too large");

    let token = key.token(&claims("u"));
    let two = format!("Bearer {token}, Bearer {token}");
    let response = server
        .check(request("GET", "/x", &[("authorization", &two)]))
        .await;
    assert_eq!(denied_status(&response), Some(400));
    assert_eq!(
        denial(&response).1["error_description"],
        "more than one token in request"
    );
}

#[tokio::test]
async fn crit_header_and_garbage_are_rejected() {
    let (_jwks, key, server) = start_with_key("").await;
    let header = json!({"alg": "RS256", "kid": "k1", "crit": ["exp-ext"], "exp-ext": 1});
    assert_invalid_token(
        &server
            .check_token("/x", &key.sign(&header, &claims("u")))
            .await,
        "unsupported token header",
    );
    for garbage in [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "....",
        "eyJhbGciOiJSUzI1NiJ9.e30",
    ] {
        let response = server.check_token("/x", garbage).await;
        assert_eq!(denied_status(&response), Some(401), "{garbage:?}");
    }
}

#[tokio::test]
async fn header_injection_through_claims_is_refused() {
    let (_jwks, key, server) = start_with_key("").await;
    let c = json!({
        "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 60,
        "sub": "u-1\r\nx-user-role: admin"
    });
    let response = server.check_token("/x", &key.token(&c)).await;
    assert_eq!(denied_status(&response), Some(401));
}
