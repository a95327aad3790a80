//! The upstream for the end-to-end runs: 200 "ok" for any request.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9102".into());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = axum::Router::new().fallback(|| async { "ok" });
    axum::serve(listener, app).await?;
    Ok(())
}
