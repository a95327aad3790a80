use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use jwt_authz::config::LogFormat;
use jwt_authz::serve::Listeners;
use jwt_authz::{Config, Server};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// mimalloc instead of the system allocator: decoding a Check request, answering it and the
/// HTTP/2 frames around both allocate and free dozens of small buffers per check, and glibc's
/// malloc took about a tenth of the process's CPU under load (perf, hot token).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Envoy ext_authz server that verifies JWTs and injects identity headers.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The YAML configuration file.
    #[arg(long, env = "JWT_AUTHZ_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate FILE and exit: 0 when it is valid, 1 with the reason when it is not.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// Overrides `listen.grpc`.
    #[arg(long, env = "JWT_AUTHZ_GRPC_LISTEN", value_name = "ADDR")]
    grpc_listen: Option<SocketAddr>,
    /// Overrides `listen.admin`.
    #[arg(long, env = "JWT_AUTHZ_ADMIN_LISTEN", value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Overrides `listen.http` (turns the HTTP authorization port on).
    #[arg(long, env = "JWT_AUTHZ_HTTP_LISTEN", value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// GET URL and exit 0 if it answers 200 (a container health check without curl).
    #[arg(long, value_name = "URL", conflicts_with_all = ["config", "check_config"])]
    probe: Option<String>,
    /// Overrides `log.format`.
    #[arg(long, env = "JWT_AUTHZ_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Decide one request as the server would and show every step. Exit status: 0 allowed,
    /// 1 denied, 2 usage or configuration error. The token is shown only as a fingerprint.
    Explain(ExplainArgs),
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    /// The configuration to decide with.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Use this JWKS file for every provider instead of fetching its keys.
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    #[arg(long, default_value = "GET")]
    method: String,
    /// The request's :path, query included.
    #[arg(long)]
    path: String,
    #[arg(long, default_value = "localhost")]
    host: String,
    /// A request header, `name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The token, sent as `Authorization: Bearer` (prefer --token-file: command lines are
    /// visible to other users of the machine).
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl Cli {
    fn load(&self, path: &Path) -> Result<Config, jwt_authz::config::ConfigError> {
        let mut config = Config::load(path)?;
        if let Some(addr) = self.grpc_listen {
            config.listen.grpc = addr;
        }
        if let Some(addr) = self.admin_listen {
            config.listen.admin = addr;
        }
        if let Some(addr) = self.http_listen {
            config.listen.http = Some(addr);
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Explain(args)) = cli.command {
        return explain(args);
    }
    if let Some(url) = &cli.probe {
        return http_probe::exit_code(url);
    }
    if let Some(path) = &cli.check_config {
        return match Config::load(path) {
            Ok(config) => {
                println!(
                    "{}: ok ({} provider(s), {} rule(s))",
                    path.display(),
                    config.providers.len(),
                    config.rules.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: invalid configuration: {e}", path.display());
                ExitCode::FAILURE
            }
        };
    }
    let Some(path) = cli.config.clone() else {
        eprintln!("jwt-authz: no configuration: pass --config FILE or set JWT_AUTHZ_CONFIG");
        return ExitCode::FAILURE;
    };
    let config = match cli.load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("jwt-authz: {}: invalid configuration: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jwt-authz: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, path, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "jwt-authz stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, path: PathBuf, config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let grpc = TcpListener::bind(config.listen.grpc)
        .await
        .map_err(|e| format!("cannot listen on {} (gRPC): {e}", config.listen.grpc))?;
    let admin = TcpListener::bind(config.listen.admin)
        .await
        .map_err(|e| format!("cannot listen on {} (admin): {e}", config.listen.admin))?;
    let http = match config.listen.http {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (HTTP authorization): {e}"))?,
        ),
        None => None,
    };
    if http.is_none() && !config.resources.is_empty() {
        tracing::warn!(
            "resources are configured but listen.http is off: their metadata is served nowhere, and the 401s name it; set listen.http (or JWT_AUTHZ_HTTP_LISTEN) and route /.well-known/oauth-protected-resource there"
        );
    }
    tracing::info!(
        grpc = %grpc.local_addr()?,
        admin = %admin.local_addr()?,
        http = %http
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or_else(|| "off".to_owned(), |a| a.to_string()),
        providers = config.providers.len(),
        rules = config.rules.len(),
        "jwt-authz listening"
    );
    let listen = config.listen.clone();
    let server = Server::new(config)?;

    let mut hangup = signal(SignalKind::hangup())?;
    let reloader = std::sync::Arc::clone(&server);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match cli.load(&path) {
                Ok(config) => {
                    if config.listen.grpc != listen.grpc
                        || config.listen.admin != listen.admin
                        || config.listen.http != listen.http
                    {
                        tracing::warn!("listen addresses change only on restart");
                    }
                    match reloader.reload(config).await {
                        Ok(()) => tracing::info!(path = %path.display(), "configuration reloaded"),
                        Err(e) => {
                            tracing::error!(error = %e, "reload failed; keeping the configuration in force")
                        }
                    }
                }
                Err(e) => tracing::error!(
                    path = %path.display(),
                    error = %e,
                    "reload rejected; keeping the configuration in force"
                ),
            }
        }
    });

    let mut terminate = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
        }
    };
    server
        .serve(Listeners { grpc, admin, http }, shutdown)
        .await?;
    tracing::info!("stopped");
    Ok(())
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(config.log.level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

/// `jwt-authz explain`: 0 allowed, 1 denied, 2 usage or configuration error.
fn explain(args: ExplainArgs) -> ExitCode {
    let usage = |message: String| {
        eprintln!("jwt-authz explain: {message}");
        ExitCode::from(2)
    };
    let mut config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            return usage(format!(
                "{}: invalid configuration: {e}",
                args.config.display()
            ));
        }
    };
    if let Some(jwks) = &args.jwks {
        for provider in &mut config.providers {
            provider.jwks = jwt_authz::config::JwksSource::File(jwks.clone());
            provider.jwks_http = Default::default();
        }
    }
    let mut headers = std::collections::HashMap::new();
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            return usage(format!("header {header:?} is not `name: value`"));
        };
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => Some(token.trim().to_owned()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(e) => return usage(format!("cannot read {}: {e}", path.display())),
        },
        (None, None) => None,
    };
    if let Some(token) = token {
        headers.insert("authorization".to_owned(), format!("Bearer {token}"));
    }
    let request = jwt_authz::explain::Request {
        method: args.method.to_ascii_uppercase(),
        path: args.path.clone(),
        host: args.host.clone(),
        headers,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return usage(format!("cannot start the async runtime: {e}")),
    };
    let report = runtime.block_on(async {
        let client = jwt_authz::keys::fetch::http_client(&Default::default())?;
        let wait = config
            .providers
            .iter()
            .map(|p| p.jwks_cache.fetch_timeout)
            .max()
            .unwrap_or_default()
            + std::time::Duration::from_secs(1);
        let metrics = std::sync::Arc::new(jwt_authz::obs::metrics::Metrics::new());
        let telemetry = jwt_authz::obs::telemetry::Telemetry::off();
        let decider = jwt_authz::runtime::Runtime::start(config, None, client, metrics, telemetry)
            .map_err(|e| e.to_string())?;
        let started = std::time::Instant::now();
        while !decider.ready() && started.elapsed() < wait {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok::<_, String>(jwt_authz::explain::explain(&decider, &request).await)
    });
    let report = match report {
        Ok(report) => report,
        Err(e) => return usage(e),
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => return usage(format!("cannot encode the report: {e}")),
        }
    } else {
        print!("{}", jwt_authz::explain::render(&report));
    }
    if report.decision.result == "deny" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
