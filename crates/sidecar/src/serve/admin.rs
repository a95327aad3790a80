//! The admin HTTP port: liveness, readiness (every provider holds keys) and Prometheus
//! metrics, kept off the gRPC port so that probes and scrapes never compete with checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::obs::metrics::Metrics;
use crate::runtime::Runtime;

#[derive(Debug, Clone)]
pub struct AdminState {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub metrics: Arc<Metrics>,
    /// Set when shutdown begins, so load balancers stop sending work.
    pub draining: Arc<AtomicBool>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned(),
        );
    }
    let runtime = state.runtime.load();
    let missing = runtime.providers_without_keys();
    if missing.is_empty() {
        let on_snapshot = runtime.providers_on_snapshot();
        if on_snapshot.is_empty() {
            (StatusCode::OK, "ready\n".to_owned())
        } else {
            (
                StatusCode::OK,
                format!(
                    "ready; keys from a snapshot (JWKS unreachable) for: {}\n",
                    on_snapshot.join(", ")
                ),
            )
        }
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no signing keys for: {}\n", missing.join(", ")),
        )
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let body = state.metrics.encode(state.runtime.load().key_set_status());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}
