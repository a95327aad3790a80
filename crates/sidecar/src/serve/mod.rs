//! Serving: the gRPC port (Authorization + gRPC health), the HTTP authorization port when
//! configured, and the admin port; the atomic swap of the runtime on reload, and graceful
//! shutdown.

pub mod admin;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::config::{Config, JwksHttpConfig};
use crate::front::grpc::AuthorizationService;
use crate::front::http::{self, HttpState};
use crate::obs::metrics::Metrics;
use crate::obs::telemetry::{Telemetry, TelemetryError};
use crate::runtime::{Runtime, StartError};
use admin::AdminState;

/// The gRPC service name Envoy's health checks can ask about.
pub const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// How long shutdown waits for in-flight checks and open connections before closing them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for the last spans to be exported.
const EXPORT_AT_SHUTDOWN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("admin server failed: {0}")]
    Admin(std::io::Error),
    #[error("HTTP authorization server failed: {0}")]
    Http(std::io::Error),
}

/// The bound sockets a server answers on.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub admin: TcpListener,
    /// The HTTP authorization port (`listen.http`), if configured.
    pub http: Option<TcpListener>,
}

/// A running jwt-authz: the runtime in force and what outlives reloads.
#[derive(Debug)]
pub struct Server {
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    telemetry: Telemetry,
    reloading: Mutex<()>,
}

impl Server {
    /// Builds the runtime for `config` and starts fetching keys. Must run inside a Tokio
    /// runtime.
    pub fn new(config: Config) -> Result<Arc<Self>, Error> {
        let metrics = Arc::new(Metrics::new());
        let client =
            crate::keys::fetch::http_client(&JwksHttpConfig::default()).map_err(Error::Client)?;
        let telemetry = Telemetry::start(&config.tracing, Arc::clone(&metrics))?;
        let runtime = Runtime::start(
            config,
            None,
            client.clone(),
            Arc::clone(&metrics),
            telemetry.clone(),
        )?;
        Ok(Arc::new(Self {
            runtime: Arc::new(ArcSwap::from_pointee(runtime)),
            metrics,
            client,
            telemetry,
            reloading: Mutex::new(()),
        }))
    }

    /// The runtime in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Swaps in a runtime for `config`. Requests already being checked finish on the old one;
    /// on error the old one stays in force.
    pub async fn reload(&self, config: Config) -> Result<(), Error> {
        let _one_at_a_time = self.reloading.lock().await;
        let current = self.runtime.load_full();
        if config.tracing != current.config().tracing {
            tracing::warn!("tracing settings change only on restart");
        }
        let next = Runtime::start(
            config,
            Some(&current),
            self.client.clone(),
            Arc::clone(&self.metrics),
            self.telemetry.clone(),
        )?;
        self.runtime.store(Arc::new(next));
        Ok(())
    }

    /// Serves checks on the gRPC (and HTTP) port and the admin endpoints until `shutdown`
    /// resolves; then reports NOT_SERVING and not-ready, and lets in-flight checks complete.
    pub async fn serve(
        self: Arc<Self>,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let Listeners {
            grpc,
            admin,
            http: http_listener,
        } = listeners;
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(AUTHORIZATION_SERVICE, ServingStatus::Serving)
            .await;
        let draining = Arc::new(AtomicBool::new(false));
        // gRPC stops first; the admin port keeps answering (/readyz 503) until it has drained.
        let (stop_grpc, grpc_rx) = watch::channel(false);
        let (stop_admin, admin_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let authz = AuthorizationService::new(
            Arc::clone(&self.runtime),
            Arc::clone(&self.metrics),
            self.telemetry.clone(),
        );
        let grpc_task = tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(health_service)
                .add_service(AuthorizationServer::new(authz))
                // Builder::tcp_nodelay only reaches listeners tonic binds itself; with Nagle
                // on, a response split over two writes waits ~40 ms for a delayed ACK.
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(grpc).with_nodelay(Some(true)),
                    stopped(grpc_rx.clone()),
                ),
        );
        // The HTTP checks stop with the gRPC ones.
        let http_task = http_listener.map(|listener| {
            let router = http::router(HttpState {
                runtime: Arc::clone(&self.runtime),
                metrics: Arc::clone(&self.metrics),
                telemetry: self.telemetry.clone(),
            });
            tokio::spawn(
                axum::serve(listener, router)
                    .with_graceful_shutdown(stopped(grpc_rx))
                    .into_future(),
            )
        });
        let router = admin::router(AdminState {
            runtime: Arc::clone(&self.runtime),
            metrics: Arc::clone(&self.metrics),
            draining: Arc::clone(&draining),
        });
        let admin_task = tokio::spawn(
            axum::serve(admin, router)
                .with_graceful_shutdown(stopped(admin_rx))
                .into_future(),
        );

        shutdown.await;
        tracing::info!("shutting down: finishing in-flight checks");
        draining.store(true, Ordering::Relaxed);
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health
            .set_service_status(AUTHORIZATION_SERVICE, ServingStatus::NotServing)
            .await;
        let _ = stop_grpc.send(true);
        // Both check ports drain at once, under one deadline; the admin port after them.
        let (grpc_result, http_result) = tokio::join!(drained(grpc_task, "gRPC"), async {
            match http_task {
                Some(task) => drained(task, "HTTP authorization").await,
                None => None,
            }
        });
        let _ = stop_admin.send(true);
        let admin_result = drained(admin_task, "admin").await;
        // The spans of the last checks go out before the process ends.
        let telemetry = self.telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown(EXPORT_AT_SHUTDOWN)).await;
        match grpc_result {
            Some(Ok(result)) => result?,
            Some(Err(join)) => tracing::error!(error = %join, "gRPC server task failed"),
            None => {}
        }
        match http_result {
            Some(Ok(result)) => result.map_err(Error::Http)?,
            Some(Err(join)) => tracing::error!(error = %join, "HTTP server task failed"),
            None => {}
        }
        match admin_result {
            Some(Ok(result)) => result.map_err(Error::Admin)?,
            Some(Err(join)) => tracing::error!(error = %join, "admin server task failed"),
            None => {}
        }
        Ok(())
    }
}

/// Waits up to [`DRAIN_TIMEOUT`] for a server task to finish after its shutdown signal,
/// then aborts it (`None`).
async fn drained<T>(
    task: tokio::task::JoinHandle<T>,
    what: &str,
) -> Option<Result<T, tokio::task::JoinError>> {
    let abort = task.abort_handle();
    match tokio::time::timeout(DRAIN_TIMEOUT, task).await {
        Ok(result) => Some(result),
        Err(_) => {
            tracing::warn!(
                ?DRAIN_TIMEOUT,
                port = what,
                "connections still open after the drain timeout; closing them"
            );
            abort.abort();
            None
        }
    }
}
