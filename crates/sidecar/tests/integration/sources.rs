//! The three JWKS sources: a URI, OIDC discovery from the issuer, and a local file.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn oidc_discovery_finds_the_jwks() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let yaml = config_yaml(&jwks.url(), "")
        .replace(&format!("uri: {}", jwks.url()), "")
        .replace("    jwks:\n      \n", "    jwks: discovery\n")
        .replace(ISSUER, &jwks.issuer());
    let server = TestServer::start_ready(&yaml).await;
    let mut c = claims("u-d");
    c["iss"] = json!(jwks.issuer());
    let (set, _) = allowed(&server.check_token("/x", &key.token(&c)).await);
    assert_eq!(set["x-user-id"], "u-d");
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    // Configured issuer has a trailing path the document does not name.
    let issuer = format!("{}/realm", jwks.issuer());
    let yaml = config_yaml(&jwks.url(), "")
        .replace(&format!("uri: {}", jwks.url()), "")
        .replace("    jwks:\n      \n", "    jwks: discovery\n")
        .replace(ISSUER, &issuer);
    let server = TestServer::start(&yaml).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(server.readyz().await, 503);
    assert_eq!(
        jwks.fetches(),
        0,
        "the JWKS of a mismatched document is never fetched"
    );
}

#[tokio::test]
async fn jwks_from_a_file() {
    let key = TestKey::ed25519("f1");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({"keys": [key.jwk()]}).to_string()).expect("write");
    let yaml = config_yaml("http://unused.test/jwks.json", "").replace(
        "uri: http://unused.test/jwks.json",
        &format!("file: {}", path.display()),
    );
    let server = TestServer::start_ready(&yaml).await;
    allowed(&server.check_token("/x", &key.token(&claims("u-f"))).await);

    // A rotation on disk is picked up by the unknown-kid refetch.
    let next = TestKey::ed25519("f2");
    std::fs::write(&path, json!({"keys": [key.jwk(), next.jwk()]}).to_string()).expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    allowed(&server.check_token("/x", &next.token(&claims("u-f2"))).await);
}
