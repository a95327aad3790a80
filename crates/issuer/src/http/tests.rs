use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use clap::Parser;
use tower::ServiceExt;

use crate::Issuer;
use crate::config::Cli;

fn issuer(dir: &tempfile::TempDir) -> Issuer {
    let settings = Cli::try_parse_from([
        "issuer".to_owned(),
        "--demo".into(),
        "--db".into(),
        dir.path().join("users.db").display().to_string(),
        "--key-dir".into(),
        dir.path().join("keys").display().to_string(),
    ])
    .unwrap()
    .settings;
    Issuer::open(settings).unwrap()
}

async fn status(app: &axum::Router, request: Request<Body>) -> StatusCode {
    app.clone().oneshot(request).await.unwrap().status()
}

/// Status requests are answered while a write holds the database's writer, as a login
/// recording its token or a revocation does.
#[tokio::test]
async fn status_lists_are_served_while_the_writer_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer(&dir);
    let app = issuer.router();
    let login = Request::post("/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            r#"{"username":"alice","password":"alice-password"}"#,
        ))
        .unwrap();
    assert_eq!(status(&app, login).await, StatusCode::OK);

    let users = issuer.state.users.clone();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let _writer = users.conn();
        let _ = locked_tx.send(());
        let _ = release_rx.recv_timeout(Duration::from_secs(30));
    });
    locked_rx.recv().unwrap();
    for path in ["/auth/status/1", "/auth/status"] {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), status(&app, request)).await;
        assert_eq!(answer, Ok(StatusCode::OK), "{path}");
    }
    let _ = release_tx.send(());
    holder.join().unwrap();
}
