//! The images, run with testcontainers on a private Docker network, checked through Envoy:
//! access, denials, stripped identity headers, and faults (issuer stopped, jwt-authz stopped
//! and restarted, a key rotated inside the issuer container).
//!
//! These need a Docker engine and the locally built images, so they are `#[ignore]`d in a
//! plain `cargo test`; `scripts/test.sh` runs them when an engine answers and says why it
//! skips them when none does.
//!
//! Engine API versions: testcontainers 0.28 builds its client with bollard 0.21.1 and API
//! version 1.53, which Docker 20.10 (API 1.41) refuses in a versioned path ("client version
//! 1.53 is too new") and which is above some newer engines' too. bollard 0.21.1 joins each
//! endpoint's absolute path onto `/v1.53`, which replaces it, so every request it sends is
//! unversioned and the engine serves it at its own current version; that works from Docker
//! 20.10 to 29+ without pinning anything. `bollard_requests_are_unversioned` guards this:
//! should an update start sending `/v1.xx/`, it fails and says what to do.

use crate::support::docker;

use std::time::{Duration, Instant};

use crate::support::gateway::{Gateway, jwt_part};
use crate::support::stack::render;
use reqwest::StatusCode;
use testcontainers::bollard;
use testcontainers::core::{ExecCommand, Healthcheck, IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// jwt-authz's client secret at the issuer's introspection endpoint, copied into both.
const SECRET: &[u8] = b"containers-introspection-secret-0123\n";

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const PUBLIC_URL: &str = "http://localhost:8000";

fn template(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(WORKSPACE).join(path)).expect("template")
}

fn image(name: &str, tag: &str) -> GenericImage {
    GenericImage::new(name, tag)
}

/// The stack's containers; all are removed when this is dropped.
struct Stack {
    issuer: ContainerAsync<GenericImage>,
    authz: ContainerAsync<GenericImage>,
    _services: Vec<ContainerAsync<GenericImage>>,
    _envoy: ContainerAsync<GenericImage>,
    gw: Gateway,
}

fn probe_health(binary: &str, args: &[&str]) -> Healthcheck {
    let mut cmd = vec![binary.to_owned()];
    cmd.extend(args.iter().map(|s| (*s).to_owned()));
    Healthcheck::cmd(cmd)
        .with_interval(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(3))
        .with_retries(60)
}

impl Stack {
    async fn start() -> Self {
        let mut id = [0u8; 4];
        aws_lc_rs::rand::fill(&mut id).expect("random");
        let net = format!(
            "jwtz-{}",
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let name = |svc: &str| format!("{net}-{svc}");

        let issuer = image("jwt-authz-issuer", "latest")
            .with_wait_for(WaitFor::healthcheck())
            .with_health_check(probe_health(
                "/usr/local/bin/issuer",
                &["probe", "http://127.0.0.1:8080/healthz"],
            ))
            // jwt-authz fetches status lists where it fetches keys, as compose sets it.
            .with_cmd([
                "--demo".to_owned(),
                "--issuer-url".to_owned(),
                PUBLIC_URL.to_owned(),
                "--trust-forwarded-for".to_owned(),
                "--status-base-url".to_owned(),
                format!("http://{}:8080", name("issuer")),
                "--introspection-client".to_owned(),
                "jwt-authz=/etc/issuer/introspection.secret".to_owned(),
                "--resource".to_owned(),
                format!("{PUBLIC_URL}/mcp"),
                "--scope".to_owned(),
                "mcp:tools".to_owned(),
            ])
            .with_copy_to("/etc/issuer/introspection.secret", SECRET.to_vec())
            .with_network(&net)
            .with_container_name(name("issuer"))
            .start()
            .await
            .expect("issuer container");

        let authz_config = render(
            &template("config/jwt-authz.demo.yaml.tmpl"),
            &[
                ("JWT_AUTHZ_GRPC_LISTEN", "0.0.0.0:9001".into()),
                ("JWT_AUTHZ_ADMIN_LISTEN", "0.0.0.0:9002".into()),
                ("PUBLIC_ISSUER_URL", PUBLIC_URL.into()),
                (
                    "JWKS_URI",
                    format!("http://{}:8080/.well-known/jwks.json", name("issuer")),
                ),
                (
                    "INTROSPECTION_ENDPOINT",
                    format!("http://{}:8080/auth/introspect", name("issuer")),
                ),
                (
                    "INTROSPECTION_SECRET_FILE",
                    "/etc/jwt-authz/introspection.secret".into(),
                ),
            ],
        );
        // Key snapshots in the image's state directory (kept across a container restart).
        let authz_config = format!("{authz_config}state_dir: /var/lib/jwt-authz\n");
        let authz = image("jwt-authz", "latest")
            .with_wait_for(WaitFor::healthcheck())
            .with_health_check(probe_health(
                "/usr/local/bin/jwt-authz",
                &["--probe", "http://127.0.0.1:9002/readyz"],
            ))
            .with_copy_to("/etc/jwt-authz/config.yaml", authz_config.into_bytes())
            .with_copy_to("/etc/jwt-authz/introspection.secret", SECRET.to_vec())
            .with_env_var("RUST_LOG", "info,jwt_authz=debug")
            .with_env_var("JWT_AUTHZ_HTTP_LISTEN", "0.0.0.0:9003")
            .with_network(&net)
            .with_container_name(name("authz"))
            .start()
            .await
            .expect("jwt-authz container");

        let mut services = Vec::new();
        for svc in ["users", "orders", "feed", "mcp"] {
            services.push(
                image("jwt-authz-sample-service", "latest")
                    .with_wait_for(WaitFor::message_on_stderr("sample service listening"))
                    .with_cmd(["--service", svc, "--listen", "0.0.0.0:8101"])
                    .with_network(&net)
                    .with_container_name(name(svc))
                    .start()
                    .await
                    .expect("service container"),
            );
        }

        let envoy_config = render(
            &template("envoy/envoy.yaml.tmpl"),
            &[
                ("ENVOY_LISTEN_ADDRESS", "0.0.0.0".into()),
                ("ENVOY_LISTEN_PORT", "8000".into()),
                ("ENVOY_ADMIN_PORT", "9901".into()),
                ("JWT_AUTHZ_HOST", name("authz")),
                ("JWT_AUTHZ_PORT", "9001".into()),
                ("ISSUER_HOST", name("issuer")),
                ("ISSUER_PORT", "8080".into()),
                ("USERS_HOST", name("users")),
                ("USERS_PORT", "8101".into()),
                ("ORDERS_HOST", name("orders")),
                ("ORDERS_PORT", "8101".into()),
                ("FEED_HOST", name("feed")),
                ("FEED_PORT", "8101".into()),
                ("MCP_HOST", name("mcp")),
                ("MCP_PORT", "8101".into()),
                ("JWT_AUTHZ_HTTP_PORT", "9003".into()),
            ],
        );
        let envoy = image("jwt-authz-envoy", "1.40.0-local")
            .with_exposed_port(8000.tcp())
            .with_wait_for(WaitFor::message_on_stderr("starting workers"))
            .with_copy_to("/etc/envoy/envoy.yaml", envoy_config.into_bytes())
            .with_cmd([
                "-c",
                "/etc/envoy/envoy.yaml",
                "--concurrency",
                "1",
                "--log-level",
                "info",
            ])
            .with_network(&net)
            .with_container_name(name("envoy"))
            .start()
            .await
            .expect("envoy container");
        let port = envoy.get_host_port_ipv4(8000).await.expect("envoy port");
        let stack = Self {
            issuer,
            authz,
            _services: services,
            _envoy: envoy,
            gw: Gateway::new(&format!("http://127.0.0.1:{port}")),
        };
        // Envoy's first health check of jwt-authz, and DNS, may take a moment.
        let first = stack
            .gw
            .eventually(
                "/api/orders",
                None,
                StatusCode::UNAUTHORIZED,
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(first, StatusCode::UNAUTHORIZED, "stack never answered 401");
        stack
    }
}

impl Stack {
    /// Waits (up to 40 s: Envoy's health check and DNS after a restart) until `token` is
    /// allowed again.
    async fn passes_again(&self, token: &str) {
        let status = self
            .gw
            .eventually(
                "/api/orders",
                Some(token),
                StatusCode::OK,
                Duration::from_secs(40),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
}

/// Answers like an engine with API 1.41 and records each request line.
async fn fake_engine(socket: std::path::PathBuf) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind fake engine");
    let record = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                let mut reader = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    record.lock().expect("lock").push(line.trim().to_owned());
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).await.unwrap_or(0) == 0 || header == "\r\n"
                        {
                            break;
                        }
                    }
                    let body = if line.contains("/version") {
                        r#"{"ApiVersion":"1.41","MinAPIVersion":"1.12","Version":"20.10.24"}"#
                    } else {
                        "[]"
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if reader
                        .get_mut()
                        .write_all(response.as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    seen
}

#[tokio::test]
async fn bollard_requests_are_unversioned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("docker.sock");
    let seen = fake_engine(socket.clone()).await;
    // The constructor and version testcontainers 0.28 use for a unix socket.
    let docker = bollard::Docker::connect_with_unix(
        &socket.display().to_string(),
        5,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("client");
    docker.version().await.expect("version");
    docker
        .list_containers(None::<bollard::query_parameters::ListContainersOptions>)
        .await
        .expect("list");
    let lines = seen.lock().expect("lock").clone();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in lines {
        let path = line.split(' ').nth(1).unwrap_or_default();
        assert!(
            !path.starts_with("/v1."),
            "bollard now sends a versioned path ({line}); engines older or newer than that \
             version will refuse it: call bollard's negotiate_version, or put a proxy that \
             rewrites the version in front of the engine"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and the local images; run by scripts/test.sh"]
async fn containers_login_access_denials_and_stripped_headers() {
    docker::ensure_images();
    let stack = Stack::start().await;
    let bob = stack
        .gw
        .try_login("bob", "bob-password")
        .await
        .expect("bob");
    let alice = stack
        .gw
        .try_login("alice", "alice-password")
        .await
        .expect("alice");

    let (status, _, me) = stack
        .gw
        .get(
            "/api/users/me",
            Some(&bob),
            &[("x-user-role", "admin"), ("x-user-id", "someone-else")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "bob");
    assert_eq!(me["role"], "user", "client-sent x-user-role stripped");
    assert_ne!(me["id"], "someone-else", "client-sent x-user-id stripped");

    assert_eq!(
        stack.gw.get("/api/orders", Some(&bob), &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        stack
            .gw
            .get("/api/feed/hierarchical", Some(&bob), &[])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        stack.gw.get("/api/orders", None, &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        stack.gw.get("/api/users", Some(&bob), &[]).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        stack.gw.get("/api/users", Some(&alice), &[]).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and the local images; run by scripts/test.sh"]
async fn containers_rotation_and_faults() {
    docker::ensure_images();
    let stack = Stack::start().await;
    let before = stack
        .gw
        .try_login("bob", "bob-password")
        .await
        .expect("bob");
    assert_eq!(
        stack.gw.get("/api/orders", Some(&before), &[]).await.0,
        StatusCode::OK
    );

    // A key rotated inside the issuer container: new tokens carry it and pass.
    let mut exec = stack
        .issuer
        .exec(ExecCommand::new([
            "/usr/local/bin/issuer",
            "keys",
            "rotate",
            "--kid",
            "rotated-in-container",
            "--key-publish-ahead",
            "0s",
        ]))
        .await
        .expect("exec rotate");
    let out = String::from_utf8_lossy(&exec.stdout_to_vec().await.expect("stdout")).into_owned();
    assert!(out.contains("rotated-in-container"), "{out}");
    let start = Instant::now();
    let rotated = loop {
        let token = stack
            .gw
            .try_login("bob", "bob-password")
            .await
            .expect("bob");
        if jwt_part(&token, 0)["kid"] == "rotated-in-container" {
            break token;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "rotation not picked up"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        stack.gw.get("/api/orders", Some(&rotated), &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        stack.gw.get("/api/orders", Some(&before), &[]).await.0,
        StatusCode::OK
    );

    // jwt-authz stopped: Envoy fails closed. Restarted: the service recovers.
    stack.authz.stop().await.expect("stop jwt-authz");
    let (status, _, body) = stack.gw.get("/api/orders", Some(&rotated), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.get("orders").is_none());
    stack.authz.start().await.expect("start jwt-authz");
    stack.passes_again(&rotated).await;

    // The issuer stopped: jwt-authz keeps serving the keys it holds.
    let unused = stack
        .gw
        .try_login("alice", "alice-password")
        .await
        .expect("alice");
    stack.issuer.stop().await.expect("stop issuer");
    assert_eq!(
        stack.gw.get("/api/orders", Some(&rotated), &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        stack.gw.get("/api/users", Some(&unused), &[]).await.0,
        StatusCode::OK
    );
    assert!(
        stack.gw.try_login("bob", "bob-password").await.is_err(),
        "login is down"
    );

    // jwt-authz restarted while the issuer is still down: it starts from its snapshots of
    // the keys and of the status list in state_dir, and tokens keep passing.
    stack.authz.stop().await.expect("stop jwt-authz");
    stack.authz.start().await.expect("start jwt-authz");
    stack.passes_again(&rotated).await;
    assert_eq!(
        stack.gw.get("/api/users", Some(&unused), &[]).await.0,
        StatusCode::OK
    );
}
