//! Keys from a private endpoint, the way a Kubernetes API server serves its service-account
//! JWKS: HTTPS under a CA of its own and a bearer token on every request, the token read
//! from a file at each fetch so that a rotated (projected) token keeps working.

use std::time::Duration;

use crate::support::tls::{PrivateJwksServer, TestCa};
use crate::support::{ISSUER, TestKey, TestServer, claims, denied_status, grpc_code};

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(ca_pem: &str, token: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca_pem).expect("ca");
        std::fs::write(dir.path().join("token"), format!("{token}\n")).expect("token");
        Self { dir }
    }

    fn set_token(&self, token: &str) {
        std::fs::write(self.dir.path().join("token"), token).expect("token");
    }

    fn jwks_http(&self) -> String {
        format!(
            "    jwks_http:\n      ca_file: {}\n      bearer_token_file: {}\n",
            self.dir.path().join("ca.pem").display(),
            self.dir.path().join("token").display()
        )
    }
}

fn config(issuer: &str, jwks: &str, files: &Files) -> String {
    format!(
        r#"
listen: {{grpc: 127.0.0.1:0, admin: 127.0.0.1:0}}
realm: test
providers:
  - name: cluster
    issuer: {issuer}
    audiences: [api]
    jwks: {jwks}
{}    jwks_cache: {{min_ttl: 1s, unknown_kid_interval: 1s, max_retry_interval: 1s, fetch_timeout: 2s}}
"#,
        files.jwks_http()
    )
}

fn uri(jwks: &PrivateJwksServer) -> String {
    format!("{{uri: \"{}\"}}", jwks.jwks_url())
}

/// Starts jwt-authz and checks that, after its first fetch and a retry (1 s apart here), its
/// provider still holds no keys.
async fn start_without_keys(yaml: &str) -> TestServer {
    let authz = TestServer::start(yaml).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(authz.readyz().await, 503, "the provider got keys");
    authz
}

#[tokio::test]
async fn keys_come_over_private_tls_with_a_token_reread_at_every_fetch() {
    let ca = TestCa::new("cluster CA");
    let first = TestKey::rsa("k1");
    let jwks = PrivateJwksServer::start(&ca, vec![first.jwk()], "sa-token-1").await;
    let files = Files::new(&ca.pem(), "sa-token-1");
    let authz = TestServer::start_ready(&config(ISSUER, &uri(&jwks), &files)).await;
    let ok = authz.check_token("/api", &first.token(&claims("u1"))).await;
    assert_eq!(grpc_code(&ok), 0, "{ok:?}");
    let seen = jwks.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|a| a.as_deref() == Some("Bearer sa-token-1")),
        "{seen:?}"
    );

    // The kubelet rotates the projected token and the server stops taking the old one; the
    // next fetch (here forced by a token signed with a new key) reads the new file.
    jwks.set_token("sa-token-2");
    files.set_token("sa-token-2");
    let second = TestKey::rsa("k2");
    jwks.set_keys(vec![first.jwk(), second.jwk()]);
    let token = second.token(&claims("u2"));
    let mut code = -1;
    for _ in 0..40 {
        code = grpc_code(&authz.check_token("/api", &token).await);
        if code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        code, 0,
        "a key published after the token rotated was never fetched"
    );
    assert_eq!(
        jwks.seen().last().cloned().flatten().as_deref(),
        Some("Bearer sa-token-2")
    );
}

#[tokio::test]
async fn discovery_uses_the_same_trust_and_token() {
    let ca = TestCa::new("cluster CA");
    let key = TestKey::rsa("k1");
    let jwks = PrivateJwksServer::start(&ca, vec![key.jwk()], "sa-token").await;
    let files = Files::new(&ca.pem(), "sa-token");
    let issuer = jwks.base();
    let authz = TestServer::start_ready(&config(&issuer, "discovery", &files)).await;
    let mut token_claims = claims("u1");
    token_claims["iss"] = issuer.clone().into();
    let ok = authz.check_token("/api", &key.token(&token_claims)).await;
    assert_eq!(grpc_code(&ok), 0, "{ok:?}");
    let seen = jwks.seen();
    assert!(seen.len() >= 2, "discovery and JWKS: {seen:?}");
    assert!(seen.iter().all(|a| a.as_deref() == Some("Bearer sa-token")));
}

#[tokio::test]
async fn a_server_outside_the_ca_file_gets_no_request_and_no_trust() {
    let ca = TestCa::new("cluster CA");
    let other = TestCa::new("some other CA");
    let key = TestKey::rsa("k1");
    let jwks = PrivateJwksServer::start(&ca, vec![key.jwk()], "sa-token").await;
    // The CA file names another CA: the handshake fails, so the token is never sent.
    let files = Files::new(&other.pem(), "sa-token");
    let authz = start_without_keys(&config(ISSUER, &uri(&jwks), &files)).await;
    let denied = authz.check_token("/api", &key.token(&claims("u1"))).await;
    assert_eq!(denied_status(&denied), Some(503));
    assert!(jwks.seen().is_empty(), "{:?}", jwks.seen());
}

#[tokio::test]
async fn a_wrong_token_keeps_the_provider_without_keys() {
    let ca = TestCa::new("cluster CA");
    let key = TestKey::rsa("k1");
    let jwks = PrivateJwksServer::start(&ca, vec![key.jwk()], "the-right-token").await;
    let files = Files::new(&ca.pem(), "a-stale-token");
    let authz = start_without_keys(&config(ISSUER, &uri(&jwks), &files)).await;
    assert!(!jwks.seen().is_empty());
    // Once the file holds the right token, the next retry succeeds without a restart.
    files.set_token("the-right-token");
    authz.wait_ready().await;
    let ok = authz.check_token("/api", &key.token(&claims("u1"))).await;
    assert_eq!(grpc_code(&ok), 0, "{ok:?}");
}

/// A Kubernetes API server's discovery document names its external address as `jwks_uri`.
/// The bearer token is only ever sent to the configured origin, so such a provider stays
/// without keys (and says why in the log) rather than hand the token to another host.
#[tokio::test]
async fn discovery_never_sends_the_token_to_another_origin() {
    let ca = TestCa::new("cluster CA");
    let key = TestKey::rsa("k1");
    let jwks = PrivateJwksServer::start(&ca, vec![key.jwk()], "sa-token").await;
    // The same server under another name: another origin to the client.
    jwks.set_discovered_jwks_uri(&format!(
        "https://localhost:{}/openid/v1/jwks",
        jwks.addr.port()
    ));
    let files = Files::new(&ca.pem(), "sa-token");
    let _authz = start_without_keys(&config(&jwks.base(), "discovery", &files)).await;
    let requests = jwks.requests();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|(path, _)| path == "/.well-known/openid-configuration"),
        "{requests:?}"
    );
}

/// A key fetch follows redirects only within its origin: https to plain http is refused even
/// to a loopback server that would be allowed if configured directly.
#[tokio::test]
async fn a_redirect_out_of_https_is_refused() {
    let ca = TestCa::new("cluster CA");
    let key = TestKey::rsa("k1");
    let plain = crate::support::JwksServer::start(vec![key.jwk()]).await;
    let jwks = PrivateJwksServer::start(&ca, vec![key.jwk()], "sa-token").await;
    jwks.set_redirect(&plain.url());
    let files = Files::new(&ca.pem(), "sa-token");
    let _authz = start_without_keys(&config(ISSUER, &uri(&jwks), &files)).await;
    assert!(!jwks.requests().is_empty());
    assert_eq!(plain.fetches(), 0, "the redirect was followed");
}
