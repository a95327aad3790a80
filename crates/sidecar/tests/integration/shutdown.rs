//! Graceful shutdown: health turns NOT_SERVING and readiness fails, a check already in
//! flight is answered (not cut off), and the servers then stop.

use std::time::Duration;

use crate::support::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_checks_complete_and_health_turns_not_serving() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    // No background refresh during the test: only the check's own refetch fetches.
    jwks.set_cache_control("max-age=3600");
    let server = TestServer::start_ready(&config_yaml(&jwks.url(), "")).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let status = |name: &str| HealthCheckRequest {
        service: name.to_owned(),
    };
    let serving = health
        .check(status("envoy.service.auth.v3.Authorization"))
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(serving, ServingStatus::Serving as i32);

    // A token whose kid is unknown makes the check wait for a JWKS refetch that the server
    // answers slowly: the check is in flight when shutdown begins.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    jwks.set_delay(Duration::from_millis(1500));
    let rotated = TestKey::rsa("k2");
    jwks.set_keys(vec![key.jwk(), rotated.jwk()]);
    let token = rotated.token(&claims("u-late"));
    let grpc = server.grpc;
    let in_flight = tokio::spawn(async move {
        let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
            format!("http://{grpc}"),
        )
        .await
        .expect("connect");
        client
            .check(request(
                "GET",
                "/x",
                &[("authorization", &format!("Bearer {token}"))],
            ))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A health watcher sees the status change as it happens.
    let mut watch = health.watch(status("")).await.expect("watch").into_inner();
    let first = watch.message().await.expect("stream").expect("status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let admin = server.admin;
    let stopping = tokio::spawn(server.shutdown());
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("status update")
        .expect("stream")
        .expect("status");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    // While the in-flight check drains, the admin port still answers, and says not ready.
    assert!(
        !in_flight.is_finished(),
        "the check should still be waiting for its JWKS fetch"
    );
    let ready = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .expect("admin still answers while draining");
    assert_eq!(ready.status(), 503);

    let answer = in_flight
        .await
        .expect("task")
        .expect("the in-flight check was answered, not cut off")
        .into_inner();
    let (set, _) = allowed(&answer);
    assert_eq!(set["x-user-id"], "u-late");
    drop(health);
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("shutdown finished")
        .expect("task");
}
