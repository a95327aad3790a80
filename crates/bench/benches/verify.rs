//! The verification path in isolation, so regressions show in review:
//! `cargo bench --bench verify`.
//!
//! - `check/cached`: a whole Check decision for a token already in the verified-token cache
//!   (hash, cache hit, key still published, route rules, identity headers, response).
//! - `check/cached_noncanonical_path`: the same for a path with `//`, dot-segments and an
//!   escape, which the canonicaliser has to rewrite.
//! - `check/uncached`: the same with the cache off, so the RS256 signature is verified
//!   every time.
//! - `verify/rs256`: the token parsed once, provider and key chosen, signature and claims
//!   checked: verification alone.
//! - `dpop/verify_proof`: one ES256 DPoP proof checked (RFC 9449 §4.3), without the replay
//!   store; `dpop/es256_signature`: its P-256 signature check alone in aws-lc (the floor);
//!   `dpop/thumbprint`: the RFC 7638 thumbprint alone.
//! - `signature/prepared` and `signature/stock`: the RS256 check with the aws-lc key parsed
//!   once per fetch, and as `jsonwebtoken` does it (key parsed per call).
//! - `token/parse_once`: the token split and decoded once, as verification does;
//!   `token/jsonwebtoken_decode`: `jsonwebtoken::decode` (stock signature check included).

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::signature::RsaKeyPair;
use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use jwt_authz::Config;
use jwt_authz::front::grpc::check_response;
use jwt_authz::obs::metrics::Metrics;
use jwt_authz::runtime::Runtime;
use jwt_authz_bench::{check_request, claims, rsa_jwk, sign_rs256};
use jwt_authz_core::request::Incoming;

fn runtime_for(jwks: &std::path::Path, cache_entries: u64) -> Runtime {
    let yaml = format!(
        r#"
providers:
  - name: bench
    issuer: https://bench.test
    audiences: [bench]
    jwks: {{file: {}}}
token_cache: {{max_entries: {cache_entries}}}
"#,
        jwks.display()
    );
    let config = Config::from_yaml(&yaml).expect("config");
    Runtime::start(
        config,
        None,
        reqwest::Client::new(),
        Arc::new(Metrics::new()),
        jwt_authz::obs::telemetry::Telemetry::off(),
    )
    .expect("runtime")
}

/// A whole gRPC check as the service answers it: the decision and its `CheckResponse`.
async fn check(
    runtime: &Runtime,
    http: &HttpRequest,
    ext: &HashMap<String, String>,
) -> (bool, CheckResponse) {
    let outcome = runtime
        .check(&Incoming {
            method: &http.method,
            target: &http.path,
            host: &http.host,
            headers: (&http.headers).into(),
            context_extensions: ext,
            scheme: Some(&http.scheme),
            certificate: None,
        })
        .await;
    (outcome.allowed, check_response(outcome.verdict))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [rsa_jwk(&key)]}).to_string(),
    )
    .expect("write");
    let token = sign_rs256(&key, &claims(1));
    let request = check_request(Some(&token));
    let http = request
        .attributes
        .and_then(|a| a.request)
        .and_then(|r| r.http)
        .expect("http");
    let ext = HashMap::new();

    let _guard = rt.enter();
    let cached = runtime_for(&jwks, 1000);
    let uncached = runtime_for(&jwks, 0);
    // Let the refreshers load the key set.
    rt.block_on(async {
        while !(cached.ready() && uncached.ready()) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    assert!(rt.block_on(check(&cached, &http, &ext)).0);

    c.bench_function("check/cached", |b| {
        b.iter(|| rt.block_on(check(&cached, &http, &ext)))
    });
    // The same with a path a non-normalising proxy lets through: canonicalised (owned)
    // before the rules run, where an ordinary path is borrowed.
    let mut crafted = http.clone();
    crafted.path = "/api//bench/./x/../%62ench?q=1".into();
    assert!(rt.block_on(check(&cached, &crafted, &ext)).0);
    c.bench_function("check/cached_noncanonical_path", |b| {
        b.iter(|| rt.block_on(check(&cached, &crafted, &ext)))
    });
    c.bench_function("check/uncached", |b| {
        b.iter(|| rt.block_on(check(&uncached, &http, &ext)))
    });
    c.bench_function("verify/rs256", |b| {
        b.iter(|| rt.block_on(uncached.verify_token(&token)))
    });

    let dpop_key = aws_lc_rs::signature::EcdsaKeyPair::generate(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
    )
    .expect("P-256 key");
    let proof = jwt_authz_bench::dpop_proof(&dpop_key, &token, 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expected = jwt_authz_jose::dpop::Expected {
        method: "GET",
        uri: jwt_authz_bench::BENCH_URI,
        access_token: Some(&token),
        nonce: None,
        algorithms: &[jsonwebtoken::Algorithm::ES256],
        now,
        max_age: 3600,
        leeway: 5,
    };
    assert!(jwt_authz_jose::dpop::verify_proof(&proof, &expected).is_ok());
    c.bench_function("dpop/verify_proof", |b| {
        b.iter(|| jwt_authz_jose::dpop::verify_proof(&proof, &expected))
    });
    // The floor under it: the P-256 signature check alone, in aws-lc.
    let (signed, signature) = proof.rsplit_once('.').expect("jws");
    let signature =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
            .expect("b64");
    let public = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        aws_lc_rs::signature::KeyPair::public_key(&dpop_key)
            .as_ref()
            .to_vec(),
    );
    c.bench_function("dpop/es256_signature", |b| {
        b.iter(|| public.verify(signed.as_bytes(), &signature).expect("valid"))
    });
    let jwk = jwt_authz_bench::dpop_jwk(&dpop_key);
    let jwk = jwk.as_object().expect("object");
    c.bench_function("dpop/thumbprint", |b| {
        b.iter(|| jwt_authz_jose::dpop::thumbprint(jwk))
    });

    // The signature check alone: jsonwebtoken's stock aws-lc verifier (key rebuilt from
    // n and e on every call) against the key prepared once per fetch.
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(rsa_jwk(&key)).expect("jwk");
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
    let alg = jsonwebtoken::Algorithm::RS256;
    let prepared = jwt_authz_jose::crypto::prepare(&decoding, &[alg]);
    let (message, signature) = token.rsplit_once('.').expect("jws");
    let signature =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
            .expect("b64");
    c.bench_function("signature/stock", |b| {
        b.iter(|| {
            let v =
                (jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.verifier_factory)(&alg, &decoding)
                    .expect("verifier");
            v.verify(message.as_bytes(), &signature).expect("valid")
        })
    });
    c.bench_function("signature/prepared", |b| {
        b.iter(|| assert!(prepared[0].verify(message.as_bytes(), &signature)))
    });

    // The miss path around the signature: the token taken apart once (split, base64url,
    // header and claims JSON) as verification does now, against `jsonwebtoken::decode`
    // (signature included) as it did before, less signature/stock.
    c.bench_function("token/parse_once", |b| {
        b.iter(|| jwt_authz_jose::jws::Unverified::parse(&token).expect("parses"))
    });
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.validate_aud = false;
    validation.set_issuer(&["https://bench.test"]);
    c.bench_function("token/jsonwebtoken_decode", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                &token,
                &decoding,
                &validation,
            )
            .expect("valid")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
