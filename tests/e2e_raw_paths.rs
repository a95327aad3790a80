//! Through a real Envoy configured as a new user might: `normalize_path: false`,
//! `merge_slashes: false`, escaped slashes kept. Envoy forwards every path as the client
//! sent it, so only jwt-authz stands between a crafted path and the rule it should meet.
//! Requests are written on a raw socket: an HTTP client library would resolve the
//! dot-segments before sending.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, Uri};
use serde_json::{Value, json};
use support::stack::{envoy_binary, free_port, wait_http};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An Envoy that normalises nothing: ext_authz (gRPC, fail closed) in front of one upstream.
fn envoy_config(listen: u16, admin: u16, authz: u16, upstream: u16) -> String {
    format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          normalize_path: false
          merge_slashes: false
          path_with_escaped_slashes_action: KEEP_UNCHANGED
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream}}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              status_on_error: {{code: ServiceUnavailable}}
              grpc_service:
                envoy_grpc: {{cluster_name: jwt_authz}}
                timeout: 2s
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: jwt_authz
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: jwt_authz
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {authz}}}}}}}
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}
"#
    )
}

/// The upstream: answers every request with the path it received and its identity headers.
async fn echo_upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = Router::new().fallback(|uri: Uri, headers: HeaderMap| async move {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        axum::Json(json!({
            "path": uri.path_and_query().map(|p| p.as_str().to_owned()),
            "user": header("x-user-id"),
            "role": header("x-user-role"),
        }))
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

struct Envoy {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    fn start(authz: u16, upstream: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, admin) = (free_port(), free_port());
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, envoy_config(port, admin, authz, upstream)).expect("write");
        let log = std::fs::File::create(dir.path().join("envoy.log")).expect("log");
        let child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn envoy");
        let envoy = Self {
            child,
            _dir: dir,
            port,
        };
        wait_http(&format!("http://127.0.0.1:{admin}/ready"), "envoy");
        envoy
    }

    /// Sends `GET target` exactly as written and returns the status and the JSON body.
    async fn get(&self, target: &str, token: Option<&str>) -> (u16, Value) {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to envoy");
        let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        let request = format!(
            "GET {target} HTTP/1.1\r\nhost: api.test\r\n{auth}x-user-id: forged\r\nx-user-role: admin\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

async fn stack() -> (TestKey, JwksServer, TestServer, Envoy) {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let authz = TestServer::start_ready(&config_yaml(&jwks.url(), PATH_RULES)).await;
    let upstream = echo_upstream().await;
    let envoy = Envoy::start(authz.grpc.port(), upstream);
    // The first request also waits for Envoy's connection to jwt-authz.
    let start = Instant::now();
    while envoy.get("/public/ping", None).await.0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "Envoy never passed a request"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (key, jwks, authz, envoy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_alone_refuses_crafted_paths() {
    let (key, _jwks, _authz, envoy) = stack().await;

    // No token: a public prefix followed by a dot-segment is not public.
    for target in [
        "/public/../api/users",
        "/public/%2e%2e/api/users",
        "/public/x/../../secret",
    ] {
        let (status, body) = envoy.get(target, None).await;
        assert_eq!(status, 401, "{target}: {body}");
        assert_eq!(
            body["error_description"], "bearer token required",
            "{target}"
        );
    }
    // Escaped slashes and other ambiguous forms: 400 from jwt-authz itself (its JSON body,
    // not an Envoy error page), on public and protected routes alike.
    let user = key.token(&claims("u1"));
    for (target, token) in [
        ("/public/%2F../api/users", None),
        ("/public/..%2Fapi/users", None),
        ("/public/..%5Capi/users", None),
        // Envoy's HTTP/1 parser lets a raw backslash through.
        ("/public\\..\\api/users", None),
        ("/public/..;/api/users", None),
        // Java servers read /api;x/users as /api/users.
        ("/api;x/users", Some(user.as_str())),
        ("/public/../../etc/passwd", None),
        ("/api%2Fusers", Some(user.as_str())),
        ("/api/x/..%2F..%2Fusers", Some(user.as_str())),
    ] {
        let (status, body) = envoy.get(target, token).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert_eq!(body["error"], "invalid_request", "{target}");
        assert_eq!(
            body["error_description"], "ambiguous request path",
            "{target}"
        );
    }
    // A plain user's token does not reach the admin-only route through doubled slashes or
    // escaped letters.
    for target in ["//api/users", "/api//users", "/api/%75sers", "/api/./users"] {
        let (status, body) = envoy.get(target, Some(&user)).await;
        assert_eq!(status, 403, "{target}: {body}");
        assert_eq!(body["error"], "insufficient_scope", "{target}");
    }
    let mut admin = claims("a1");
    admin["role"] = json!("admin");
    let (status, body) = envoy.get("/api//users", Some(&key.token(&admin))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "a1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_paths_reach_the_upstream_unchanged() {
    let (key, _jwks, _authz, envoy) = stack().await;
    let user = key.token(&claims("u1"));
    for (target, token) in [
        ("/public/a%20b", None),
        // Envoy forwards dot-segments untouched (this Envoy normalises nothing); jwt-authz
        // decided on /public/y, and the path stays what the client sent.
        ("/public/x/./../y", None),
        ("/public/~user/caf%C3%A9", None),
        ("/public/%E2%9C%93?q=%2F..%2F&x=1", None),
        ("/docs/%7Euser/report.pdf", Some(user.as_str())),
        ("/data/caf%c3%a9/x", Some(user.as_str())),
    ] {
        let (status, body) = envoy.get(target, token).await;
        assert_eq!(status, 200, "{target}: {body}");
        assert_eq!(body["path"], target, "the upstream saw another path");
        // Forged identity never passes: set from the token, or removed without one.
        assert_eq!(body["user"], json!(token.map(|_| "u1")), "{target}");
        assert_eq!(body["role"], json!(token.map(|_| "user")), "{target}");
    }
}
