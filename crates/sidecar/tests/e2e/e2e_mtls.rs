//! Certificate-bound tokens (RFC 8705 §3) end to end: Envoy (envoy/envoy-mtls.yaml.tmpl)
//! requires client certificates from a CA made here; the issuer binds the token a client gets
//! to that client's certificate, and jwt-authz lets it through only over a connection with
//! that very certificate.

use std::time::Duration;

use crate::support::gateway::{Gateway, jwt_part};
use crate::support::stack::{Front, Options, Stack, TlsFiles};
use crate::support::tls::TestCa;
use reqwest::StatusCode;

/// A client trusting `ca`, presenting `identity` (certificate and key PEM) if given.
fn client(ca: &TestCa, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("CA")]);
    if let Some((cert, key)) = identity {
        builder = builder.identity(
            reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).expect("identity"),
        );
    }
    builder.build().expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_bound_token_passes_only_with_its_certificate() {
    let ca = TestCa::new("e2e client CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let (server_cert, server_key) = ca.issue(&["127.0.0.1", "localhost"]);
    let tls = TlsFiles {
        cert: write("server.pem", &server_cert),
        key: write("server.key", &server_key),
        client_ca: write("ca.pem", &ca.pem()),
    };
    let stack = Stack::start_with(Options {
        front: Front::EnvoyMtls,
        tls: Some(tls),
        ..Options::default()
    })
    .expect("Envoy is always available");

    let mine = ca.issue(&["client-a.test"]);
    let other = ca.issue(&["client-b.test"]);
    let alice = Gateway::with_client(&stack.base, client(&ca, Some(&mine)));
    let token = alice.login("bob", "bob-password").await;
    // RFC 8705 §3.1: base64url SHA-256 of the DER certificate, computed here.
    let der = pem::parse(mine.0.as_bytes()).expect("PEM").into_contents();
    let thumbprint =
        crate::support::b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der).as_ref());
    assert_eq!(jwt_part(&token, 1)["cnf"]["x5t#S256"], thumbprint.as_str());

    let (status, _, orders) = alice.get("/api/orders", Some(&token), &[]).await;
    assert_eq!(status, StatusCode::OK, "{orders}");
    assert_eq!(orders["owner"], jwt_part(&token, 1)["sub"]);

    // The same token from another client of the same CA: refused.
    let thief = Gateway::with_client(&stack.base, client(&ca, Some(&other)));
    let (status, headers, body) = thief.get("/api/orders", Some(&token), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(
        body["error_description"],
        "token bound to another certificate"
    );
    assert!(
        headers["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("Bearer ")
    );
    // A client-sent x-forwarded-client-cert naming alice's certificate changes nothing:
    // Envoy overwrites it, so the thief's login is bound to the thief's own certificate.
    let forged = format!(
        "Cert=\"{}\"",
        percent_encoding::utf8_percent_encode(&mine.0, percent_encoding::NON_ALPHANUMERIC)
    );
    let response = client(&ca, Some(&other))
        .post(format!("{}/auth/login", stack.base))
        .header("x-forwarded-client-cert", &forged)
        .json(&serde_json::json!({"username": "bob", "password": "bob-password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("json");
    let stolen_identity = body["accessToken"].as_str().expect("token");
    let bound = jwt_part(stolen_identity, 1)["cnf"]["x5t#S256"].clone();
    assert!(bound.is_string() && bound != thumbprint.as_str(), "{bound}");

    // No certificate: no connection at all (no answer counts as 502 here).
    let anonymous = Gateway::with_client(&stack.base, client(&ca, None));
    assert_eq!(
        anonymous.status("/api/orders", Some(&token)).await,
        StatusCode::BAD_GATEWAY
    );
}
