//! The services trust only the injected identity headers.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sample_services::{Service, router};
use serde_json::Value;
use tower::ServiceExt;

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let res = app.clone().oneshot(req).await.expect("response");
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn get(path: &str, id: Option<&str>, role: &str) -> Request<Body> {
    let mut b = Request::get(path);
    if let Some(id) = id {
        b = b.header("x-user-id", id).header("x-user-role", role);
    }
    b.body(Body::empty()).expect("request")
}

#[tokio::test]
async fn no_identity_headers_means_401() {
    let app = router(Service::All);
    for path in [
        "/api/users/me",
        "/api/users",
        "/api/orders",
        "/api/feed/hierarchical",
        "/api/feed/highlights",
    ] {
        assert_eq!(
            call(&app, get(path, None, "")).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
}

#[tokio::test]
async fn orders_belong_to_their_owner() {
    let app = router(Service::Orders);
    let post = Request::post("/api/orders")
        .header("x-user-id", "u1")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"item":"book","quantity":2}"#))
        .expect("request");
    let (status, order) = call(&app, post).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(order["item"], "book");
    let (_, mine) = call(&app, get("/api/orders", Some("u1"), "user")).await;
    assert_eq!(mine["orders"].as_array().map(Vec::len), Some(1));
    let (_, theirs) = call(&app, get("/api/orders", Some("u2"), "user")).await;
    assert_eq!(theirs["orders"].as_array().map(Vec::len), Some(0));
    // Only this service's routes are served.
    assert_eq!(
        call(&app, get("/api/users/me", Some("u1"), "user")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn users_me_feed_and_admin_listing() {
    let app = router(Service::All);
    let (status, me) = call(&app, get("/api/users/me", Some("u1"), "user")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["id"], "u1");
    assert_eq!(
        call(&app, get("/api/users", Some("u1"), "user")).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, list) = call(&app, get("/api/users", Some("a1"), "admin")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["users"].as_array().map(Vec::len), Some(2));
    let (status, feed) = call(&app, get("/api/feed/hierarchical", Some("u1"), "user")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(feed["viewer"]["id"], "u1");
}

#[tokio::test]
async fn highlights_answer_the_anonymous_and_the_signed_in_differently() {
    let app = router(Service::Feed);
    let anonymous = Request::get("/api/feed/highlights")
        .header("x-user-anonymous", "true")
        .body(Body::empty())
        .expect("request");
    let (status, body) = call(&app, anonymous).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["anonymous"], true);
    assert!(body.get("viewer").is_none());
    let (status, body) = call(&app, get("/api/feed/highlights", Some("u1"), "user")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["anonymous"].clone(), body["viewer"]["id"].clone()),
        (false.into(), "u1".into())
    );
    // Only `true` says anonymous.
    let odd = Request::get("/api/feed/highlights")
        .header("x-user-anonymous", "yes")
        .body(Body::empty())
        .expect("request");
    assert_eq!(call(&app, odd).await.0, StatusCode::UNAUTHORIZED);
}
