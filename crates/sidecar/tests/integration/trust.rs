//! Which tokens a route trusts: per-route providers and audiences (the `requirement_map` of
//! Envoy's jwt_authn), explicit token types (RFC 8725 §3.11), a maximum lifetime, and `iat`
//! in the future.

use crate::support::*;
use serde_json::{Value, json};

const PARTNER: &str = "https://partner.test";

async fn two_providers() -> (TestKey, TestKey, JwksServer, JwksServer, TestServer) {
    let corp = TestKey::rsa("corp-1");
    let partner = TestKey::rsa("partner-1");
    let corp_jwks = JwksServer::start(vec![corp.jwk()]).await;
    let partner_jwks = JwksServer::start(vec![partner.jwk()]).await;
    let yaml = format!(
        r#"
listen: {{grpc: 127.0.0.1:0, admin: 127.0.0.1:0}}
realm: test
providers:
  - name: corp
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    jwks: {{uri: "{}"}}
  - name: partner
    issuer: {PARTNER}
    audiences: [partner-api]
    jwks: {{uri: "{}"}}
rules:
  - name: billing
    match: {{path: {{prefix: /billing/}}}}
    providers: [partner]
    audiences: [billing-api]
    access: authenticated
  - name: corp-only
    match: {{path: {{prefix: /corp/}}}}
    providers: [corp]
    access: authenticated
  - name: corp-docs
    match: {{path: {{prefix: /docs/}}}}
    providers: [corp]
    access: public
"#,
        corp_jwks.url(),
        partner_jwks.url()
    );
    let server = TestServer::start_ready(&yaml).await;
    (corp, partner, corp_jwks, partner_jwks, server)
}

fn partner_claims(aud: Value) -> Value {
    let mut c = claims("p1");
    c["iss"] = json!(PARTNER);
    c["aud"] = aud;
    c
}

#[tokio::test]
async fn a_route_accepts_only_its_providers() {
    let (corp, partner, _a, _b, server) = two_providers().await;
    let corp_token = corp.token(&claims("c1"));
    let partner_token = partner.token(&partner_claims(json!("partner-api")));

    allowed(&server.check_token("/corp/x", &corp_token).await);
    assert_invalid_token(
        &server.check_token("/corp/x", &partner_token).await,
        "token not accepted on this route",
    );
    // The corp token is cached now; the cache never skips the route's own checks.
    assert_invalid_token(
        &server.check_token("/billing/x", &corp_token).await,
        "token not accepted on this route",
    );
    // A public route that names providers still refuses a present token from another one.
    allowed(&server.check(request("GET", "/docs/a", &[])).await);
    assert_invalid_token(
        &server.check_token("/docs/a", &partner_token).await,
        "token not accepted on this route",
    );
    // Routes without `providers` take every provider, each with its own audiences.
    allowed(&server.check_token("/other", &corp_token).await);
    allowed(&server.check_token("/other", &partner_token).await);
}

#[tokio::test]
async fn route_audiences_replace_the_providers() {
    let (_corp, partner, _a, _b, server) = two_providers().await;
    let for_partner_api = partner.token(&partner_claims(json!("partner-api")));
    let for_billing = partner.token(&partner_claims(json!(["billing-api", "x"])));

    assert_invalid_token(
        &server.check_token("/billing/x", &for_partner_api).await,
        "invalid audience",
    );
    let (set, _) = allowed(&server.check_token("/billing/x", &for_billing).await);
    assert_eq!(set["x-user-id"], "p1");
    // Outside /billing/ the provider's own audiences apply again, cached token or not.
    assert_invalid_token(
        &server.check_token("/other", &for_billing).await,
        "invalid audience",
    );
    allowed(&server.check_token("/other", &for_partner_api).await);
}

#[tokio::test]
async fn token_types_keep_id_tokens_out() {
    let (_jwks, key, server) = start_with_key("    token_types: [at+jwt]\n").await;
    let with_typ = |typ: Option<&str>| {
        let mut header = json!({"alg": "RS256", "kid": "k1"});
        if let Some(typ) = typ {
            header["typ"] = json!(typ);
        }
        key.sign(&header, &claims("u1"))
    };
    for typ in [
        "at+jwt",
        "application/at+jwt",
        "AT+JWT",
        "Application/At+JWT",
    ] {
        allowed(&server.check_token("/api", &with_typ(Some(typ))).await);
    }
    for typ in [Some("JWT"), Some("id_token+jwt"), Some("text/at+jwt"), None] {
        assert_invalid_token(
            &server.check_token("/api", &with_typ(typ)).await,
            "token type not accepted",
        );
    }
}

#[tokio::test]
async fn max_lifetime_needs_iat_and_exp_close_enough() {
    let (_jwks, key, server) = start_with_key("    max_lifetime: 1h\n").await;
    let mut short = claims("u1");
    let iat = short["iat"].as_u64().expect("iat");
    short["exp"] = json!(iat + 3600);
    allowed(&server.check_token("/api", &key.token(&short)).await);

    let mut long = claims("u1");
    long["exp"] = json!(iat + 3601);
    long["iat"] = json!(iat);
    assert_invalid_token(
        &server.check_token("/api", &key.token(&long)).await,
        "token lifetime too long",
    );
    // A long-lived token that hides its age is refused too.
    let mut no_iat = claims("u1");
    no_iat.as_object_mut().map(|c| c.remove("iat"));
    assert_invalid_token(
        &server.check_token("/api", &key.token(&no_iat)).await,
        "missing required claim",
    );
}

#[tokio::test]
async fn iat_in_the_future_beyond_the_leeway_is_refused() {
    // config_yaml sets a 5 s leeway.
    let (_jwks, key, server) = start_with_key("").await;
    let mut future = claims("u1");
    future["iat"] = json!(now() + 3600);
    assert_invalid_token(
        &server.check_token("/api", &key.token(&future)).await,
        "token issued in the future",
    );
    let mut skewed = claims("u1");
    skewed["iat"] = json!(now() + 2);
    allowed(&server.check_token("/api", &key.token(&skewed)).await);
    let mut garbage = claims("u1");
    garbage["iat"] = json!("yesterday");
    let response = server.check_token("/api", &key.token(&garbage)).await;
    assert_eq!(denied_status(&response), Some(401));
}
