use std::net::SocketAddr;

use clap::Parser;
use sample_services::{Service, router};

/// A sample resource service for the jwt-authz demo.
#[derive(Debug, Parser)]
struct Cli {
    #[arg(long, env = "SERVICE_LISTEN", default_value = "127.0.0.1:8101")]
    listen: SocketAddr,
    #[arg(long, env = "SERVICE_NAME", value_enum, default_value = "all")]
    service: Service,
    /// GET URL and exit 0 if it answers 200 (a container health check without curl).
    #[arg(long, value_name = "URL")]
    probe: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(url) = &cli.probe {
        return http_probe::exit_code(url);
    }
    let listener = match tokio::net::TcpListener::bind(cli.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sample-service: cannot listen on {}: {e}", cli.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, service = ?cli.service, "sample service listening");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    let result = axum::serve(listener, router(cli.service))
        .with_graceful_shutdown(async {
            tokio::select! { _ = shutdown => {}, _ = term => {} }
        })
        .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sample-service: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
