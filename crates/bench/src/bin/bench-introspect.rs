//! The introspection endpoint for `make bench`'s opaque-token rows: `POST /introspect`
//! answers every token active (RFC 7662 §2.2) for the bench provider, valid for an hour,
//! to a caller that sent client credentials, 401 to one that did not. As little work as an
//! endpoint can do, so the miss row measures jwt-authz's side of a round trip.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

async fn introspect(headers: HeaderMap) -> Response {
    if !headers.contains_key("authorization") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    axum::Json(serde_json::json!({
        "active": true,
        "iss": "https://bench.test",
        "sub": "bench-user",
        "aud": "bench",
        "scope": "read",
        "iat": now,
        "exp": now + 3600,
        "token_type": "Bearer",
    }))
    .into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9103".into());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = axum::Router::new().route("/introspect", axum::routing::post(introspect));
    axum::serve(listener, app).await?;
    Ok(())
}
