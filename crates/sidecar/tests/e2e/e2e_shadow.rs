//! Shadow mode through the real Envoy and the real jwt-authz binary: would-be denials reach
//! the upstream without identity headers (forged ones removed) and are counted by reason; a
//! valid token's identity is set; SIGHUP switches the rule to enforce without a restart.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::bins::free_port;
use crate::support::envoy::{Envoy, echo_upstream};
use crate::support::stack::wait_http;
use crate::support::*;
use serde_json::json;

struct Authz {
    child: Child,
    config: std::path::PathBuf,
    admin: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Authz {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(jwks: &str, grpc: u16, admin: u16, mode: &str) -> String {
    config_yaml(jwks, &format!("rules:\n  - name: api\n    match: {{path: {{prefix: /api/}}}}\n    mode: {mode}\n    access: authenticated\n"))
        .replace("grpc: 127.0.0.1:0", &format!("grpc: 127.0.0.1:{grpc}"))
        .replace("admin: 127.0.0.1:0", &format!("admin: 127.0.0.1:{admin}"))
}

impl Authz {
    fn start(jwks: &str) -> (Self, u16) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (grpc, admin) = (free_port(), free_port());
        let path = dir.path().join("jwt-authz.yaml");
        std::fs::write(&path, config(jwks, grpc, admin, "shadow")).expect("write");
        let child = Command::new(env!("CARGO_BIN_EXE_jwt-authz"))
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn jwt-authz");
        let authz = Self {
            child,
            config: path,
            admin,
            _dir: dir,
        };
        wait_http(&format!("http://127.0.0.1:{admin}/readyz"), "jwt-authz");
        (authz, grpc)
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.admin))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body")
    }
}

fn shadow_count(metrics: &str, reason: &str) -> u64 {
    metric(
        metrics,
        "jwt_authz_shadow_denials_total",
        &[("reason", reason)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_lets_denials_through_without_identity_until_sighup_enforces() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let (authz, grpc) = Authz::start(&jwks.url());
    let envoy = Envoy::start(grpc, echo_upstream().await);

    // No token (and the forged x-user-id / x-user-role every request here carries): the
    // upstream answers, and sees no identity at all.
    let start = Instant::now();
    let (status, body) = loop {
        let answer = envoy.get("/api/orders", None).await;
        if answer.0 != 503 || start.elapsed() > Duration::from_secs(20) {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], json!(null));
    assert_eq!(body["role"], json!(null));
    // A forged token: the same.
    let forged = TestKey::rsa("k1").token(&claims("mallory"));
    let (status, body) = envoy.get("/api/orders", Some(&forged)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], json!(null));
    let metrics = authz.metrics().await;
    assert!(shadow_count(&metrics, "missing_token") >= 1, "{metrics}");
    assert_eq!(shadow_count(&metrics, "bad_signature"), 1, "{metrics}");
    // A valid token: its identity, not the forged one.
    let (status, body) = envoy
        .get("/api/orders", Some(&key.token(&claims("u1"))))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "u1");
    assert_eq!(body["role"], "user");

    // Switch the rule to enforce and send SIGHUP: the same request is now 401.
    let text = std::fs::read_to_string(&authz.config).expect("config");
    std::fs::write(&authz.config, text.replace("mode: shadow", "mode: enforce")).expect("write");
    let hup = Command::new("kill")
        .args(["-HUP", &authz.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let start = Instant::now();
    loop {
        let (status, _) = envoy.get("/api/orders", None).await;
        if status == 401 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still {status} after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = envoy
        .get("/api/orders", Some(&key.token(&claims("u2"))))
        .await;
    assert_eq!((status, body["user"].clone()), (200, json!("u2")));
}
