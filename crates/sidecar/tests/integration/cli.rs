//! The real binary: `--check-config`, refusing a bad configuration before listening, SIGHUP
//! reloads (good swapped in, bad rejected and the old one kept), graceful SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_jwt-authz");

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// `jwt-authz --check-config PATH`: exit code, stdout, stderr.
fn check_config(path: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg(path)
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_the_example_and_names_the_bad_field() {
    let example = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("config/example.yaml");
    let (code, stdout, stderr) = check_config(&example);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("ok"));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = config_yaml("http://127.0.0.1:9/jwks.json", "").replace(
        "algorithms: [RS256, PS256, ES256, EdDSA]",
        "algorithms: [RS256, HS256]",
    );
    let (code, _, stderr) = check_config(&write(&dir, "bad.yaml", &bad));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("providers[0].algorithms[1]"), "{stderr}");

    let typo = config_yaml("http://127.0.0.1:9/jwks.json", "").replace("audiences:", "audience:");
    let (code, _, stderr) = check_config(&write(&dir, "typo.yaml", &typo));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("providers[0]") && stderr.contains("audience"),
        "{stderr}"
    );
}

#[test]
fn bad_config_exits_before_listening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let bad = config_yaml("not a url", "")
        .replace("grpc: 127.0.0.1:0", &format!("grpc: 127.0.0.1:{port}"));
    let path = write(&dir, "bad.yaml", &bad);
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status, Some(1));
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(stderr.contains("providers[0].jwks.uri"), "{stderr}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    let out = Command::new(BIN).output().expect("run");
    assert_eq!(out.status.code(), Some(1), "no config at all");
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// The binary running with JSON logs collected in the background.
struct Running {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(config: &std::path::Path, log_level: &str) -> Self {
        let mut child = Command::new(BIN)
            .env("JWT_AUTHZ_CONFIG", config)
            .env("JWT_AUTHZ_LOG_FORMAT", "json")
            .env("RUST_LOG", log_level)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        Self { child, logs }
    }

    fn wait_log(&self, needle: &str) -> serde_json::Value {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Some(line) = self
                .logs
                .lock()
                .expect("lock")
                .iter()
                .find(|l| l.contains(needle))
            {
                return serde_json::from_str(line).expect("JSON log line");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no log line with {needle:?}: {:?}",
            self.logs.lock().expect("lock")
        );
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// Multi-threaded: the blocking waits below must not stall the client connection's tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_a_good_config_and_keeps_the_old_one_on_a_bad_one() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "config.yaml", &config_yaml(&jwks.url(), ""));
    let mut running = Running::start(&path, "info");
    let listening = running.wait_log("jwt-authz listening");
    let grpc = listening["fields"]["grpc"]
        .as_str()
        .expect("grpc addr")
        .to_owned();
    let client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        format!("http://{grpc}"),
    )
    .await
    .expect("connect");
    let check = async |path: &str| {
        client
            .clone()
            .check(request("GET", path, &[]))
            .await
            .expect("check")
            .into_inner()
    };
    assert_eq!(denied_status(&check("/open").await), Some(401));

    let public = "rules:\n  - match: {path: {prefix: /open}}\n    access: public\n";
    write(&dir, "config.yaml", &config_yaml(&jwks.url(), public));
    running.signal("HUP");
    running.wait_log("configuration reloaded");
    allowed(&check("/open").await);

    std::fs::write(&path, "providers: [").expect("write");
    running.signal("HUP");
    running.wait_log("reload rejected");
    allowed(&check("/open").await);
    assert_eq!(denied_status(&check("/closed").await), Some(401));

    drop(client);
    running.signal("TERM");
    assert_eq!(
        wait_exit(&mut running.child, Duration::from_secs(10)),
        Some(0)
    );
    running.wait_log("stopped");
}

type Client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<
    tonic::transport::Channel,
>;

/// The binary with decision lines logged, a gRPC client to it, and its keys fetched.
async fn start_with_debug_log(path: &std::path::Path) -> (Running, Client) {
    let running = Running::start(path, "debug");
    let listening = running.wait_log("jwt-authz listening");
    let grpc = listening["fields"]["grpc"]
        .as_str()
        .expect("grpc addr")
        .to_owned();
    let client = Client::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    running.wait_log("JWKS fetched");
    (running, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_log_names_a_fingerprint_never_the_token() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "config.yaml", &config_yaml(&jwks.url(), ""));
    let (running, mut client) = start_with_debug_log(&path).await;
    let token = key.token(&claims("u-log"));
    let mut expired = claims("u-log");
    expired["exp"] = serde_json::json!(now() - 3600);
    let bad = key.token(&expired);
    for t in [&token, &bad] {
        client
            .check(request(
                "GET",
                "/x?q=1",
                &[("authorization", &format!("Bearer {t}"))],
            ))
            .await
            .expect("check");
    }
    let allow = running.wait_log("\"decision\":\"allow\"");
    let deny = running.wait_log("\"reason\":\"expired\"");
    // `sub` is personal data: a keyed fingerprint by default, never the value itself.
    let sub = allow["fields"]["sub"].as_str().expect("sub");
    assert!(sub.starts_with("hmac:") && sub.len() == 21, "{sub}");
    assert_eq!(allow["fields"]["front_end"], "grpc");
    let fingerprint = allow["fields"]["token"].as_str().expect("fingerprint");
    assert_eq!(fingerprint.len(), 12);
    assert_ne!(deny["fields"]["token"], allow["fields"]["token"]);
    let logs = running.logs.lock().expect("lock").join("\n");
    assert!(!logs.contains("u-log"), "a subject reached the log: {logs}");
    for t in [&token, &bad] {
        let signature = t.rsplit('.').next().expect("signature");
        assert!(!logs.contains(signature), "a token reached the log");
        let payload = t.split('.').nth(1).expect("payload");
        assert!(!logs.contains(payload), "a token reached the log");
    }
}

/// The decision line names the trace the request belongs to, whether jwt-authz exports
/// spans or not, and `-` when there is none (also when tracing is on and a request without
/// a context is not sampled: that span's id names no trace anywhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_log_carries_the_trace_id() {
    // Nothing listens at the collector's address: spans are lost, logging is not.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let traced = format!(
        "tracing: {{otlp_endpoint: \"http://127.0.0.1:{closed}\", root_sample_ratio: 0}}\n"
    );
    for extra in ["", traced.as_str()] {
        let key = TestKey::rsa("k1");
        let jwks = JwksServer::start(vec![key.jwk()]).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(&dir, "config.yaml", &config_yaml(&jwks.url(), extra));
        let (running, mut client) = start_with_debug_log(&path).await;
        let auth = format!("Bearer {}", key.token(&claims("u-trace")));
        for (target, headers) in [
            (
                "/w3c",
                vec![(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )],
            ),
            (
                "/b3",
                vec![("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
            ),
            ("/none", vec![]),
        ] {
            let mut headers = headers;
            headers.push(("authorization", &auth));
            client
                .check(request("GET", target, &headers))
                .await
                .expect("check");
        }
        let w3c = running.wait_log("\"path\":\"\\\"/w3c\\\"\"");
        assert_eq!(
            w3c["fields"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{extra}"
        );
        let b3 = running.wait_log("\"path\":\"\\\"/b3\\\"\"");
        assert_eq!(
            b3["fields"]["trace_id"], "80f198ee56343ba864fe8b2a57d3eff7",
            "{extra}"
        );
        let none = running.wait_log("\"path\":\"\\\"/none\\\"\"");
        assert_eq!(none["fields"]["trace_id"], "-", "{extra}");
    }
}

/// Shadow mode's decision line says what was let through and why enforce mode would not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_decisions_are_logged_with_would_deny() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "config.yaml",
        &config_yaml(&jwks.url(), "mode: shadow\n"),
    );
    let (running, mut client) = start_with_debug_log(&path).await;
    let answer = client
        .check(request("GET", "/x", &[]))
        .await
        .expect("check")
        .into_inner();
    allowed(&answer);
    let line = running.wait_log("\"would_deny\":\"missing_token\"");
    assert_eq!(line["fields"]["decision"], "shadow_allow");
    assert_eq!(line["fields"]["reason"], "missing_token");
}
