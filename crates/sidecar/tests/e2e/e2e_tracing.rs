//! Tracing through a real Envoy: Envoy traces every request with its OpenTelemetry tracer
//! (W3C `traceparent`) and exports its spans to the OTLP collector running in this test;
//! jwt-authz exports to the same collector. jwt-authz's check span must belong to the trace
//! Envoy carries, as the child of a span Envoy itself reported.

use std::time::{Duration, Instant};

use crate::support::envoy::{Envoy, echo_upstream};
use crate::support::otlp::{Collector, Span};
use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

async fn stack(collector: &Collector) -> (TestKey, JwksServer, TestServer, Envoy) {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let tracing = format!(
        r#"
tracing:
  otlp_endpoint: {}
  service_name: jwt-authz-e2e
  root_sample_ratio: 0
  export_interval: 100ms
"#,
        collector.endpoint()
    );
    let authz = TestServer::start_ready(&config_yaml(&jwks.url(), &tracing)).await;
    let upstream = echo_upstream().await;
    let envoy = Envoy::start_traced(authz.grpc.port(), upstream, collector.port);
    // The first request also waits for Envoy's connection to jwt-authz.
    let token = key.token(&claims("warmup"));
    let start = Instant::now();
    while envoy.get("/warmup", Some(&token)).await.0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "Envoy never passed a request"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (key, jwks, authz, envoy)
}

fn is_check(span: &Span) -> bool {
    span.service == "jwt-authz-e2e" && span.name == "jwt-authz check"
}

/// Waits for jwt-authz's check span of the request to `path`, then for Envoy's span that
/// is its parent; returns both.
async fn check_and_parent(collector: &Collector, path: &str) -> (Span, Span) {
    let check = collector
        .wait_for(WAIT, |s| is_check(s) && s.attr("url.path") == Some(path))
        .await;
    let parent = collector
        .wait_for(WAIT, |s| {
            s.service == "envoy-test" && s.span_id == check.parent_span_id
        })
        .await;
    (check, parent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_span_continues_the_trace_envoy_started() {
    let collector = Collector::start().await;
    let (key, _jwks, _authz, envoy) = stack(&collector).await;
    let token = key.token(&claims("alice"));

    // No trace context from the client: Envoy starts the trace.
    let (status, _) = envoy.get("/orders/started-by-envoy", Some(&token)).await;
    assert_eq!(status, 200);
    let (check, parent) = check_and_parent(&collector, "/orders/started-by-envoy").await;
    assert_eq!(check.trace_id, parent.trace_id);
    // The parent is Envoy's client span of the ext_authz call (from the call's metadata).
    assert_eq!(parent.kind, 3, "{parent:?}");
    assert!(parent.name.contains("Authorization.Check"), "{parent:?}");
    assert_eq!(check.attr("jwt_authz.decision"), Some("allow"));
    // Envoy's request span (the root of the trace) is in the same trace.
    collector
        .wait_for(WAIT, |s| {
            s.service == "envoy-test" && s.trace_id == check.trace_id && s.parent_span_id.is_empty()
        })
        .await;

    // A client that sends traceparent: Envoy continues it, and so does jwt-authz.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client = format!("00-{trace}-00f067aa0ba902b7-01");
    let (status, _) = envoy
        .get_with("/orders/from-client", None, &[("traceparent", &client)])
        .await;
    assert_eq!(status, 401);
    let (check, parent) = check_and_parent(&collector, "/orders/from-client").await;
    assert_eq!(check.trace_id, trace);
    assert_eq!(parent.trace_id, trace);
    assert_ne!(
        check.parent_span_id, "00f067aa0ba902b7",
        "the parent is Envoy's span, not the client's"
    );
    assert_eq!(check.attr("jwt_authz.decision"), Some("deny"));
    assert_eq!(check.attr("jwt_authz.reason"), Some("missing_token"));

    // A client that sends a trace Envoy does not sample: jwt-authz follows (no span).
    let unsampled = "66666666666666666666666666666666";
    let client = format!("00-{unsampled}-00f067aa0ba902b7-00");
    envoy
        .get_with(
            "/orders/unsampled",
            Some(&token),
            &[("traceparent", &client)],
        )
        .await;
    envoy.get("/orders/after", Some(&token)).await;
    check_and_parent(&collector, "/orders/after").await;
    assert!(
        collector
            .spans()
            .iter()
            .all(|s| !(is_check(s) && s.attr("url.path") == Some("/orders/unsampled"))),
        "a check Envoy did not sample made a span"
    );
}
