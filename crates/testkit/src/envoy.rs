//! A real Envoy in front of jwt-authz for end-to-end tests that need their own shape: an
//! Envoy that normalises no path (as a new user might configure it), an upstream that echoes
//! what it received, and raw HTTP/1.1 requests (a client library would resolve dot-segments
//! before sending).

use std::process::{Child, Command, Stdio};

use axum::Router;
use axum::http::{HeaderMap, Uri};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use crate::bins::filter_wasm;
use crate::bins::{envoy_binary, free_port};

/// An Envoy that normalises nothing: ext_authz (gRPC, fail closed) in front of one upstream;
/// with `collector`, tracing with OpenTelemetry (every request sampled, W3C `traceparent`
/// propagated) and spans exported there over OTLP/gRPC, flushed every 200 ms.
pub fn envoy_config(
    listen: u16,
    admin: u16,
    authz: u16,
    upstream: u16,
    collector: Option<u16>,
) -> String {
    let (tracing, runtime, cluster) = match collector {
        None => (String::new(), String::new(), String::new()),
        Some(port) => (
            r#"
          tracing:
            random_sampling: {value: 100}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service:
                  envoy_grpc: {cluster_name: otel}
                  timeout: 2s
                service_name: envoy-test"#
                .to_owned(),
            r#"
layered_runtime:
  layers:
  - name: static
    static_layer:
      tracing.opentelemetry.flush_interval_ms: 200
      tracing.opentelemetry.min_flush_spans: 1"#
                .to_owned(),
            grpc_cluster("otel", port),
        ),
    };
    let authz_cluster = grpc_cluster("jwt_authz", authz);
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
          path_with_escaped_slashes_action: KEEP_UNCHANGED{tracing}
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
  clusters:{authz_cluster}
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}{cluster}{runtime}
"#
    )
}

/// [`envoy_config`] (no tracing) with the shipped per-identity rate-limit recipe
/// (`deploy/envoy/per-identity-rate-limit.yaml`) applied as it says: its filter after
/// ext_authz, its `rate_limits` on the route; each user's bucket holding `per_user` requests
/// for the minute.
pub fn envoy_config_rate_limited(
    listen: u16,
    admin: u16,
    authz: u16,
    upstream: u16,
    per_user: u64,
) -> String {
    rate_limited(listen, admin, authz, upstream, &[("", per_user)])
}

/// [`envoy_config_rate_limited`] with the recipe's tiered variant: `tiers` are (tier, bucket
/// size per user), in the recipe's order of `tiered_descriptors`.
pub fn envoy_config_rate_limited_tiered(
    listen: u16,
    admin: u16,
    authz: u16,
    upstream: u16,
    tiers: &[(&str, u64)],
) -> String {
    rate_limited(listen, admin, authz, upstream, tiers)
}

/// The recipe in Envoy's test configuration: one bucket per user (`tiers` = `[("", n)]`),
/// or the tiered variant's descriptors with their sizes.
fn rate_limited(
    listen: u16,
    admin: u16,
    authz: u16,
    upstream: u16,
    tiers: &[(&str, u64)],
) -> String {
    let recipe: Value = serde_norway::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(crate::bins::WORKSPACE)
                .join("deploy/envoy/per-identity-rate-limit.yaml"),
        )
        .expect("the recipe"),
    )
    .expect("the recipe is YAML");
    let mut filter = recipe["http_filter"].clone();
    let tiered = tiers.iter().any(|(tier, _)| !tier.is_empty());
    if tiered {
        filter["typed_config"]["descriptors"] = recipe["tiered_descriptors"].clone();
    }
    for (i, (tier, size)) in tiers.iter().enumerate() {
        let descriptor = &mut filter["typed_config"]["descriptors"][i];
        if tiered {
            assert_eq!(
                descriptor["entries"][0]["value"],
                json!(tier),
                "the recipe's tier {i}"
            );
        }
        let bucket = &mut descriptor["token_bucket"];
        bucket["max_tokens"] = json!(size);
        bucket["tokens_per_fill"] = json!(size);
    }
    let limits = if tiered {
        &recipe["tiered_route_rate_limits"]
    } else {
        &recipe["route_rate_limits"]
    };
    let config = envoy_config(listen, admin, authz, upstream, None);
    // JSON is YAML's flow style: the recipe's parts go in as they are.
    let with_filter = config.replacen(
        "          - name: envoy.filters.http.router",
        &format!("          - {filter}\n          - name: envoy.filters.http.router"),
        1,
    );
    let with_route = with_filter.replacen(
        "route: {cluster: upstream}",
        &format!("route: {{cluster: upstream, rate_limits: {}}}", limits),
        1,
    );
    assert_ne!(with_route, config, "the recipe went in");
    with_route
}

/// A loopback cluster speaking HTTP/2 (gRPC), as a `clusters:` entry.
fn grpc_cluster(name: &str, port: u16) -> String {
    format!(
        r#"
  - name: {name}
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}"#
    )
}

/// The upstream: answers every request with the path it received and its identity headers.
pub async fn echo_upstream() -> u16 {
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
            "host": header("host"),
            // Every header as received, names lowercase (http's), repeats kept.
            "headers": headers
                .iter()
                .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
                .collect::<Vec<_>>(),
            "user": header("x-user-id"),
            "role": header("x-user-role"),
            // Header names an app may read as identity headers (x_user_id is HTTP_X_USER_ID
            // to CGI-style apps, like x-user-id).
            "underscored": headers
                .keys()
                .map(|k| k.as_str())
                .filter(|k| k.contains('_'))
                .collect::<Vec<_>>(),
        }))
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

pub struct Envoy {
    child: Child,
    _dir: tempfile::TempDir,
    pub port: u16,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    pub fn start(authz: u16, upstream: u16) -> Self {
        Self::start_with(authz, upstream, None)
    }

    /// An Envoy that traces every request and exports its spans to `collector` (a port).
    pub fn start_traced(authz: u16, upstream: u16, collector: u16) -> Self {
        Self::start_with(authz, upstream, Some(collector))
    }

    fn start_with(authz: u16, upstream: u16, collector: Option<u16>) -> Self {
        let ports = (free_port(), free_port());
        let config = envoy_config(ports.0, ports.1, authz, upstream, collector);
        Self::start_config(ports, &config)
    }

    /// Sends `GET target` exactly as written and returns the status and the JSON body.
    pub async fn get(&self, target: &str, token: Option<&str>) -> (u16, Value) {
        self.get_with(target, token, &[]).await
    }

    /// [`Envoy::get`] with more request headers.
    pub async fn get_with(
        &self,
        target: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to envoy");
        let mut auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        for (name, value) in headers {
            auth.push_str(&format!("{name}: {value}\r\n"));
        }
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

/// The RBAC filter envoy/envoy-in-proxy.yaml.tmpl puts after the Wasm filter, as shipped:
/// only requests the filter marked as decided go on.
pub fn in_proxy_guard() -> String {
    let template = include_str!("../../../envoy/envoy-in-proxy.yaml.tmpl");
    let start = template
        .find("          - name: envoy.filters.http.rbac")
        .expect("the shipped template has the guard");
    let end = start
        + template[start..]
            .find("          - name: envoy.filters.http.router")
            .expect("the router after the guard");
    format!("\n{}", template[start..end].trim_end())
}

/// An Envoy with jwt-authz's Wasm filter (in-proxy mode, V8, fail closed) in front of one
/// upstream; the filter's callouts go to cluster `jwt_authz_http`, the sidecar's HTTP port
/// `sidecar_http`, and `plugin` (the sidecar's own YAML) is its configuration.
pub fn in_proxy_config(
    ports: (u16, u16),
    sidecar_http: u16,
    upstream: u16,
    wasm: &std::path::Path,
    plugin: &str,
) -> String {
    let (listen, admin) = ports;
    let wasm = wasm.display();
    // A JSON string is a YAML double-quoted scalar.
    let plugin = serde_json::to_string(plugin).expect("a string");
    let guard = in_proxy_guard();
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
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: jwt_authz
                root_id: jwt_authz
                failure_policy: FAIL_CLOSED
                vm_config:
                  vm_id: jwt_authz
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: "{wasm}"}}}}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {plugin}{guard}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: jwt_authz_http
    type: STATIC
    connect_timeout: 0.5s
    load_assignment:
      cluster_name: jwt_authz_http
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {sidecar_http}}}}}}}
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

impl Envoy {
    /// An Envoy running `config` (built by one of this module's functions from `ports`:
    /// listener, admin).
    pub fn start_config(ports: (u16, u16), config: &str) -> Self {
        match Self::spawn(ports, config, None) {
            Ok((envoy, _)) => envoy,
            Err(log) => panic!(
                "envoy not ready at its admin port {}; its log:\n{log}",
                ports.1
            ),
        }
    }

    /// [`Envoy::start_config`] with the process's address space limited to `kib` KiB
    /// (`ulimit -v`): where the limit leaves room for the main thread's Wasm VM but not a
    /// worker's, the worker's VM fails to start as it would on a host out of memory.
    /// `None` when it never got ready (the limit left no room even for the main thread).
    pub fn start_config_limited(ports: (u16, u16), config: &str, kib: u64) -> Option<Self> {
        Self::spawn(ports, config, Some(kib))
            .ok()
            .map(|(envoy, _)| envoy)
    }

    /// What Envoy has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("envoy.log")).unwrap_or_default()
    }

    fn spawn(ports: (u16, u16), config: &str, kib: Option<u64>) -> Result<(Self, String), String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).expect("write");
        let log_path = dir.path().join("envoy.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let mut command = match kib {
            // The limit is set by the shell that then becomes Envoy (no pre_exec here).
            Some(kib) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", "ulimit -v \"$0\" && exec \"$@\"", &kib.to_string()])
                    .arg(envoy_binary());
                sh
            }
            None => Command::new(envoy_binary()),
        };
        let child = command
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
        let mut envoy = Self {
            child,
            _dir: dir,
            port: ports.0,
        };
        let ready = wait_ready(&mut envoy.child, ports.1);
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if ready { Ok((envoy, log)) } else { Err(log) }
    }
}

/// Whether Envoy's admin `/ready` answers 200 within 30 s; `false` at once if it exited.
fn wait_ready(child: &mut Child, admin: u16) -> bool {
    let url = format!("http://127.0.0.1:{admin}/ready");
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(30) {
        if http_probe::ok(&url, std::time::Duration::from_secs(2)).is_ok() {
            return true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// A counter from Envoy's admin `/stats` (0 when absent).
pub async fn envoy_stat(admin: u16, name: &str) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{admin}/stats?filter={name}"))
        .await
        .expect("envoy stats")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
