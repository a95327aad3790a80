//! JWT-SVIDs (SPIFFE): a provider from a trust bundle's `jwt-svid` keys, `sub` held to a
//! SPIFFE ID of its trust domain, `iss` optional (the trust domain in `sub` finds the
//! provider), and routes restricted to workloads by SPIFFE ID.

use serde_json::{Value, json};

use crate::support::*;

const DOMAIN: &str = "prod.example";
const API: &str = "spiffe://prod.example/ns/payments/sa/api";

/// A JWT-SVID for `sub` (no `iss`, as SPIRE mints them by default), audience `api`.
fn svid(key: &TestKey, sub: &str) -> String {
    key.token(&json!({"sub": sub, "aud": [AUDIENCE], "exp": now() + 300, "iat": now()}))
}

fn jwk_with_use(key: &TestKey, key_use: &str) -> Value {
    let mut jwk = key.jwk();
    jwk["use"] = json!(key_use);
    jwk
}

fn config(jwks: &JwksServer) -> String {
    config_yaml(&jwks.url(), "")
        .replace(ISSUER, "https://spire.prod.example")
        .replace(
            "    leeway: 5s\n",
            &format!("    leeway: 5s\n    spiffe: {{trust_domain: {DOMAIN}}}\n"),
        )
        + "rules:\n  - name: payments-internal\n    match: {path: {prefix: /internal/}}\n    access:\n      claims: [{claim: sub, path_prefix: [\"spiffe://prod.example/ns/payments/sa/api\"]}]\n"
}

#[tokio::test]
async fn jwt_svids_of_the_trust_domain_pass_and_routes_go_by_spiffe_id() {
    let (bundle, x509) = (
        TestKey::rsa("jwt-authority"),
        TestKey::rsa("x509-authority"),
    );
    let jwks = JwksServer::start(vec![
        jwk_with_use(&bundle, "jwt-svid"),
        jwk_with_use(&x509, "x509-svid"),
    ])
    .await;
    let server = TestServer::start_ready(&config(&jwks)).await;

    let (set, _) = allowed(
        &server
            .check_token("/internal/pay", &svid(&bundle, API))
            .await,
    );
    assert_eq!(set["x-user-id"], API);
    // Another workload of the domain: authenticated, but not on the payments route.
    let other = svid(&bundle, "spiffe://prod.example/ns/payments/sa/batch");
    assert_eq!(
        grpc_code(&server.check_token("/api/orders", &other).await),
        0
    );
    assert_eq!(
        denied_status(&server.check_token("/internal/pay", &other).await),
        Some(403)
    );
    // A name that only starts like the allowed one.
    let lookalike = svid(&bundle, "spiffe://prod.example/ns/payments/sa/api-old");
    assert_eq!(
        denied_status(&server.check_token("/internal/pay", &lookalike).await),
        Some(403)
    );
    // An `iss`, when present, must be the provider's.
    let with_iss = bundle.token(&json!({"iss": "https://spire.prod.example", "sub": API, "aud": AUDIENCE, "exp": now() + 300}));
    assert_eq!(
        grpc_code(&server.check_token("/internal/pay", &with_iss).await),
        0
    );

    for (why, token, description) in [
        (
            "another trust domain (no iss: no provider has it)",
            svid(&bundle, "spiffe://dev.example/ns/payments/sa/api"),
            "unknown issuer",
        ),
        (
            "another trust domain under this provider's issuer",
            bundle.token(&json!({"iss": "https://spire.prod.example", "sub": "spiffe://dev.example/ns/payments/sa/api", "aud": AUDIENCE, "exp": now() + 300})),
            "subject is not a SPIFFE ID of this trust domain",
        ),
        (
            "a subject that is not a SPIFFE ID",
            bundle.token(&json!({"iss": "https://spire.prod.example", "sub": "payments", "aud": AUDIENCE, "exp": now() + 300})),
            "subject is not a SPIFFE ID of this trust domain",
        ),
        (
            "a trailing slash (another spelling of the ID)",
            svid(&bundle, "spiffe://prod.example/ns/payments/sa/api/"),
            "unknown issuer",
        ),
        (
            "no aud (JWT-SVID §3)",
            bundle.token(&json!({"sub": API, "exp": now() + 300})),
            "missing required claim",
        ),
        (
            "signed by the bundle's X.509 authority",
            svid(&x509, API),
            "unknown signing key",
        ),
    ] {
        let response = server.check_token("/internal/pay", &token).await;
        assert_eq!(denied_status(&response), Some(401), "{why}");
        assert_eq!(denial(&response).1["error_description"], description, "{why}");
    }
}

#[test]
fn a_spiffe_provider_is_checked_at_start() {
    let base = "listen: {grpc: 127.0.0.1:0, admin: 127.0.0.1:0}\nproviders:\n  - name: spire\n    issuer: https://spire.prod.example\n    audiences: [api]\n    jwks: {uri: https://spire.prod.example/bundle}\n";
    let read = |extra: &str| jwt_authz::Config::from_yaml(&format!("{base}{extra}"));
    assert!(read("    spiffe: {trust_domain: prod.example}\n").is_ok());
    for (extra, wants) in [
        (
            "    spiffe: {trust_domain: Prod.Example}\n",
            "providers[0].spiffe.trust_domain",
        ),
        (
            "    spiffe: {trust_domain: \"prod.example:443\"}\n",
            "providers[0].spiffe.trust_domain",
        ),
        (
            "    spiffe: {trust_domain: prod.example}\n    require_exp: false\n",
            "providers[0].require_exp",
        ),
    ] {
        let error = read(extra).expect_err(extra).to_string();
        assert!(error.starts_with(wants), "{extra}: {error}");
    }
    let twice = format!(
        "{base}    spiffe: {{trust_domain: prod.example}}\n  - name: again\n    issuer: https://again.example\n    audiences: [api]\n    jwks: {{uri: https://again.example/bundle}}\n    spiffe: {{trust_domain: prod.example}}\n"
    );
    let error = jwt_authz::Config::from_yaml(&twice)
        .expect_err("duplicate")
        .to_string();
    assert!(
        error.starts_with("providers[1].spiffe.trust_domain: duplicate"),
        "{error}"
    );
}
