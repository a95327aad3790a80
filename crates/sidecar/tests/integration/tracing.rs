//! OpenTelemetry tracing, against an OTLP collector running in this test (a tonic server
//! implementing the OTLP trace service): a check's span continues the trace its request
//! carries (W3C or B3, from Envoy's gRPC metadata before the request's headers), follows the
//! parent's sampling decision, says what was decided and never holds the token; key fetches
//! have spans, children of the check that caused them; a collector that is down changes no
//! answer.

use std::time::Duration;

use crate::support::otlp::{Collector, Span};
use crate::support::*;
use jwt_authz_jose::status_list::StatusList;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

/// W3C Trace Context §3.2 example values.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str, parent: &str, flags: &str) -> String {
    format!("00-{trace}-{parent}-{flags}")
}

fn tracing_yaml(endpoint: &str, ratio: f64) -> String {
    format!(
        r#"
tracing:
  otlp_endpoint: {endpoint}
  service_name: jwt-authz-test
  root_sample_ratio: {ratio}
  export_interval: 100ms
  export_timeout: 2s
"#
    )
}

async fn start(collector: &Collector, ratio: f64) -> (JwksServer, TestKey, TestServer) {
    start_with_key(&tracing_yaml(&collector.endpoint(), ratio)).await
}

/// A GET of `path` with the bearer header `auth` and these (trace) headers.
async fn get(
    server: &TestServer,
    path: &str,
    auth: &str,
    headers: &[(&str, &str)],
) -> envoy_types::pb::envoy::service::auth::v3::CheckResponse {
    let mut all = vec![("authorization", auth)];
    all.extend_from_slice(headers);
    server.check(request("GET", path, &all)).await
}

/// A check as Envoy sends it: the client's `client` context in the request's headers, and
/// Envoy's own ext_authz span (trace [`TRACE`], span 1111111111111111, sampled) in the
/// call's metadata.
async fn as_envoy_calls(server: &TestServer, path: &str, auth: &str, client: &str) {
    let mut call = tonic::Request::new(request(
        "GET",
        path,
        &[("authorization", auth), ("traceparent", client)],
    ));
    call.metadata_mut().insert(
        "traceparent",
        traceparent(TRACE, "1111111111111111", "01")
            .parse()
            .expect("metadata"),
    );
    server.check_request(call).await;
}

fn check_span(trace: &str) -> impl Fn(&Span) -> bool + '_ {
    move |s: &Span| s.name == "jwt-authz check" && s.trace_id == trace
}

#[tokio::test]
async fn a_check_continues_the_trace_it_carries_and_never_holds_the_token() {
    let collector = Collector::start().await;
    let (_jwks, key, server) = start(&collector, 0.0).await;
    let token = key.token(&claims("alice"));
    let parent = traceparent(TRACE, PARENT, "01");
    let headers = [
        ("authorization", format!("Bearer {token}")),
        ("traceparent", parent),
        ("tracestate", "congo=t61rcWkgMzE".to_owned()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = server
        .check(request("GET", "/orders/1?access_token=x", &headers))
        .await;
    assert_eq!(grpc_code(&first), 0);
    let span = collector.wait_for(WAIT, check_span(TRACE)).await;
    assert_eq!(
        span.parent_span_id, PARENT,
        "the span's parent is the caller's"
    );
    assert_eq!(span.kind, 2, "a server span");
    assert_eq!(span.service, "jwt-authz-test");
    assert_eq!(span.attr("jwt_authz.front_end"), Some("grpc"));
    assert_eq!(span.attr("jwt_authz.decision"), Some("allow"));
    assert_eq!(span.attr("jwt_authz.provider"), Some("test"));
    assert_eq!(span.attr("jwt_authz.token_cache_hit"), Some("false"));
    assert_eq!(span.attr("http.request.method"), Some("GET"));
    assert_eq!(span.attr("url.path"), Some("/orders/1"), "no query");
    assert_eq!(span.attr("http.response.status_code"), Some("200"));
    let fingerprint = span
        .attr("jwt_authz.token_fingerprint")
        .expect("fingerprint");
    assert!(!fingerprint.is_empty() && !token.contains(fingerprint));
    // The miss verified the token in a child span of the check.
    let verify = collector
        .wait_for(WAIT, |s| {
            s.name == "jwt-authz verify token" && s.trace_id == TRACE
        })
        .await;
    assert_eq!(verify.parent_span_id, span.span_id);

    // The same token again: a cache hit, in a trace of its own.
    let second_trace = "0af7651916cd43dd8448eb211c80319c";
    let parent = traceparent(second_trace, "b7ad6b7169203331", "01");
    let auth = format!("Bearer {token}");
    get(&server, "/orders/1", &auth, &[("traceparent", &parent)]).await;
    let hit = collector.wait_for(WAIT, check_span(second_trace)).await;
    assert_eq!(hit.attr("jwt_authz.token_cache_hit"), Some("true"));

    // Nothing any span says holds the token or any of its three parts.
    for span in collector.spans() {
        for part in token.split('.') {
            assert!(
                !span.text.contains(part),
                "span {} holds the token",
                span.name
            );
        }
    }
    assert!(
        admin_metric(
            server.admin.port(),
            "jwt_authz_trace_spans_exported_total",
            &[("result", "ok")]
        )
        .await
            >= 3
    );
}

#[tokio::test]
async fn a_denial_is_recorded_with_its_reason_and_an_outage_is_an_error() {
    let collector = Collector::start().await;
    let (jwks, key, server) = start(&collector, 0.0).await;
    // Signed by another key under the served key's kid.
    let forged = TestKey::rsa("k1").token(&claims("mallory"));
    let parent = traceparent(TRACE, PARENT, "01");
    let auth = format!("Bearer {forged}");
    let denied = get(&server, "/orders", &auth, &[("traceparent", &parent)]).await;
    assert_eq!(denied_status(&denied), Some(401));
    let span = collector.wait_for(WAIT, check_span(TRACE)).await;
    assert_eq!(span.attr("jwt_authz.decision"), Some("deny"));
    assert_eq!(span.attr("jwt_authz.reason"), Some("bad_signature"));
    assert_eq!(span.attr("http.response.status_code"), Some("401"));
    assert_eq!(
        span.status, 0,
        "a denial is the check working, not an error"
    );

    // The JWKS gone and a token naming an unknown key: 503, an error span, and the key
    // fetch the check started is a child of its verification.
    jwks.set_failing(true);
    let other = TestKey::rsa("k2").token(&claims("bob"));
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let parent = traceparent(trace, "b7ad6b7169203331", "01");
    let auth = format!("Bearer {other}");
    let unavailable = get(&server, "/orders", &auth, &[("traceparent", &parent)]).await;
    let status = denied_status(&unavailable).expect("denied");
    let span = collector.wait_for(WAIT, check_span(trace)).await;
    assert_eq!(
        span.attr("http.response.status_code"),
        Some(status.to_string().as_str())
    );
    let fetch = collector
        .wait_for(WAIT, |s| {
            s.name == "jwt-authz jwks fetch" && s.trace_id == trace
        })
        .await;
    assert_eq!(fetch.kind, 3, "a client span");
    assert_eq!(fetch.attr("jwt_authz.provider"), Some("test"));
    assert_eq!(fetch.attr("jwt_authz.fetch_outcome"), Some("error"));
    assert_eq!(fetch.status, 2);
    let verify = collector
        .wait_for(WAIT, |s| {
            s.name == "jwt-authz verify token" && s.trace_id == trace
        })
        .await;
    assert_eq!(fetch.parent_span_id, verify.span_id);
    assert_eq!(verify.parent_span_id, span.span_id);

    // A provider whose keys were never fetched: 503, and the check's span is an error.
    let down = JwksServer::start(vec![key.jwk()]).await;
    down.set_failing(true);
    let blind = TestServer::start(&config_yaml(
        &down.url(),
        &tracing_yaml(&collector.endpoint(), 0.0),
    ))
    .await;
    let trace = "55555555555555555555555555555555";
    let parent = traceparent(trace, PARENT, "01");
    let auth = format!("Bearer {}", key.token(&claims("alice")));
    let answer = get(&blind, "/orders", &auth, &[("traceparent", &parent)]).await;
    assert_eq!(denied_status(&answer), Some(503));
    let span = collector.wait_for(WAIT, check_span(trace)).await;
    assert_eq!(span.status, 2, "jwt-authz could not decide: an error");
    assert_eq!(
        span.status_message,
        span.attr("jwt_authz.reason").unwrap_or("-")
    );
}

#[tokio::test]
async fn the_parents_sampling_decision_is_followed() {
    let collector = Collector::start().await;
    // Requests without a context are always sampled here: only the parent can say no.
    let (_jwks, key, server) = start(&collector, 1.0).await;
    let auth = format!("Bearer {}", key.token(&claims("alice")));
    let unsampled = "11111111111111111111111111111111";
    let parent = traceparent(unsampled, PARENT, "00");
    get(&server, "/orders", &auth, &[("traceparent", &parent)]).await;
    let parent = traceparent(TRACE, PARENT, "01");
    get(&server, "/orders", &auth, &[("traceparent", &parent)]).await;
    // A request without a context starts a trace (ratio 1).
    server
        .check(request("GET", "/orders/root", &[("authorization", &auth)]))
        .await;
    collector.wait_for(WAIT, check_span(TRACE)).await;
    let root = collector
        .wait_for(WAIT, |s| {
            s.name == "jwt-authz check" && s.attr("url.path") == Some("/orders/root")
        })
        .await;
    assert!(root.parent_span_id.is_empty(), "a root span");
    // The background key fetch at start is a root span too.
    let fetch = collector
        .wait_for(WAIT, |s| s.name == "jwt-authz jwks fetch")
        .await;
    assert!(fetch.parent_span_id.is_empty());
    assert_eq!(fetch.attr("jwt_authz.fetch_outcome"), Some("ok"));
    // Spans are exported in order of ending: the unsampled check ended first.
    assert!(
        collector.spans().iter().all(|s| s.trace_id != unsampled),
        "a check whose parent was not sampled made a span"
    );
}

#[tokio::test]
async fn ratio_zero_traces_only_what_a_parent_sampled() {
    let collector = Collector::start().await;
    let (_jwks, key, server) = start(&collector, 0.0).await;
    let auth = format!("Bearer {}", key.token(&claims("alice")));
    for _ in 0..5 {
        server
            .check(request("GET", "/orders/root", &[("authorization", &auth)]))
            .await;
    }
    let parent = traceparent(TRACE, PARENT, "01");
    get(&server, "/orders", &auth, &[("traceparent", &parent)]).await;
    collector.wait_for(WAIT, check_span(TRACE)).await;
    let spans = collector.spans();
    assert!(
        spans
            .iter()
            .all(|s| s.attr("url.path") != Some("/orders/root")),
        "a check without a parent was sampled at ratio 0"
    );
    assert!(spans.iter().all(|s| s.name != "jwt-authz jwks fetch"));
}

#[tokio::test]
async fn envoys_grpc_metadata_comes_before_the_request_headers_and_b3_is_read() {
    let collector = Collector::start().await;
    let (_jwks, key, server) = start(&collector, 0.0).await;
    let auth = format!("Bearer {}", key.token(&claims("alice")));
    // Envoy puts its ext_authz span's context in the call's metadata; the request it asks
    // about carries the client's.
    let client_trace = "22222222222222222222222222222222";
    let client = traceparent(client_trace, PARENT, "01");
    as_envoy_calls(&server, "/orders", &auth, &client).await;
    let span = collector.wait_for(WAIT, check_span(TRACE)).await;
    assert_eq!(span.parent_span_id, "1111111111111111");

    // B3, single header (Istio, Envoy's Zipkin tracer), and the x-b3-* headers.
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    get(
        &server,
        "/orders",
        &auth,
        &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
    )
    .await;
    let span = collector.wait_for(WAIT, check_span(b3_trace)).await;
    assert_eq!(span.parent_span_id, "e457b5a2e4d86bd1");
    let multi_trace = "463ac35c9f6413ad48485a3953bb6124";
    get(
        &server,
        "/orders",
        &auth,
        &[
            ("x-b3-traceid", multi_trace),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    let span = collector.wait_for(WAIT, check_span(multi_trace)).await;
    assert_eq!(span.parent_span_id, "a2fb4a1d1a96d312");
    // A malformed traceparent is no context: ratio 0, so no span at all.
    let bad_trace = "33333333333333333333333333333333";
    server
        .check(request(
            "GET",
            "/orders/bad",
            &[
                ("authorization", &auth),
                ("traceparent", &format!("00-{bad_trace}-{PARENT}")),
            ],
        ))
        .await;
    server
        .check(request(
            "GET",
            "/orders/after",
            &[
                ("authorization", &auth),
                ("traceparent", &traceparent(&"4".repeat(32), PARENT, "01")),
            ],
        ))
        .await;
    collector.wait_for(WAIT, check_span(&"4".repeat(32))).await;
    assert!(
        collector
            .spans()
            .iter()
            .all(|s| s.attr("url.path") != Some("/orders/bad"))
    );
}

#[tokio::test]
async fn forward_auth_checks_continue_the_trace_of_the_proxy() {
    let collector = Collector::start().await;
    let (_jwks, key, server) = start(&collector, 0.0).await;
    let token = key.token(&claims("alice"));
    let response = reqwest::Client::new()
        .get(format!("http://{}/forward-auth", server.http))
        .header("authorization", format!("Bearer {token}"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/orders/7")
        .header("x-forwarded-host", "api.test")
        .header("traceparent", traceparent(TRACE, PARENT, "01"))
        .send()
        .await
        .expect("forward-auth answered");
    assert_eq!(response.status(), 200);
    let span = collector.wait_for(WAIT, check_span(TRACE)).await;
    assert_eq!(span.attr("jwt_authz.front_end"), Some("forward_auth"));
    assert_eq!(span.attr("url.path"), Some("/orders/7"));
    assert_eq!(span.parent_span_id, PARENT);
}

#[tokio::test]
async fn a_collector_that_is_down_changes_no_answer() {
    // A port nothing listens on.
    let endpoint = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!(
            "http://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        )
    };
    let (_jwks, key, server) = start_with_key(&tracing_yaml(&endpoint, 1.0)).await;
    let auth = format!("Bearer {}", key.token(&claims("alice")));
    let parent = traceparent(TRACE, PARENT, "01");
    for _ in 0..20 {
        let response = get(&server, "/orders", &auth, &[("traceparent", &parent)]).await;
        assert_eq!(grpc_code(&response), 0);
    }
    // The exporter gives up on its batches (counted), and the server still stops promptly.
    let mut failed = 0;
    for _ in 0..100 {
        failed = admin_metric(
            server.admin.port(),
            "jwt_authz_trace_spans_exported_total",
            &[("result", "error")],
        )
        .await;
        if failed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed > 0, "failed exports are counted");
    let stopping = tokio::time::Instant::now();
    server.shutdown().await;
    assert!(stopping.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn a_status_list_fetch_is_a_child_of_the_check_that_needed_it() {
    let collector = Collector::start().await;
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let extra = format!(
        "    status_list: {{mode: optional, min_ttl: 1s, fetch_timeout: 2s}}\n{}",
        tracing_yaml(&collector.endpoint(), 0.0)
    );
    let server = TestServer::start_ready(&config_yaml(&jwks.url(), &extra)).await;
    let uri = jwks.document_url("list-1");
    let mut list = StatusList::new(1, 16).expect("list");
    list.set(3, 1).expect("set");
    jwks.set_document(
        "list-1",
        &list_token(&key, &uri, &list.encode(), json!({})),
        None,
    );
    let mut revoked = claims("alice");
    revoked["status"] = json!({"status_list": {"idx": 3, "uri": uri}});
    let auth = format!("Bearer {}", key.token(&revoked));
    let parent = traceparent(TRACE, PARENT, "01");
    let answer = get(&server, "/orders", &auth, &[("traceparent", &parent)]).await;
    assert_eq!(denied_status(&answer), Some(401));
    let check = collector.wait_for(WAIT, check_span(TRACE)).await;
    assert_eq!(check.attr("jwt_authz.reason"), Some("token_revoked"));
    let fetch = collector
        .wait_for(WAIT, |s| {
            s.name == "jwt-authz status list fetch" && s.trace_id == TRACE
        })
        .await;
    assert_eq!(fetch.parent_span_id, check.span_id);
    assert_eq!(fetch.kind, 3);
    assert_eq!(fetch.attr("jwt_authz.fetch_outcome"), Some("ok"));
    assert_eq!(fetch.attr("url.full"), Some(uri.as_str()));
    assert_eq!(fetch.attr("jwt_authz.provider"), Some("test"));
}

#[tokio::test]
async fn what_a_client_sends_is_bounded_in_spans() {
    let collector = Collector::start().await;
    let (_jwks, key, server) = start(&collector, 0.0).await;
    let auth = format!("Bearer {}", key.token(&claims("alice")));
    let path = format!("/orders/{}", "a".repeat(50_000));
    let members: Vec<String> = (0..32)
        .map(|i| format!("v{i:02}={}", "x".repeat(250)))
        .collect();
    let tracestate = members.join(",");
    let parent = traceparent(TRACE, PARENT, "01");
    get(
        &server,
        &path,
        &auth,
        &[("traceparent", &parent), ("tracestate", &tracestate)],
    )
    .await;
    let span = collector.wait_for(WAIT, check_span(TRACE)).await;
    let recorded = span.attr("url.path").expect("path");
    assert!(recorded.len() <= 1024 + "…".len(), "{}", recorded.len());
    assert!(recorded.ends_with('…'));
    assert!(span.trace_state.len() <= 512, "{}", span.trace_state.len());
}

#[tokio::test]
async fn a_failed_fetch_span_names_no_credentials_or_query() {
    let collector = Collector::start().await;
    // Nothing listens there: the fetch fails with reqwest's error, which names the URL.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let uri = format!("http://user:hunter2@127.0.0.1:{closed}/jwks?secret=s3cr3t");
    let _server = TestServer::start(&config_yaml(
        &uri,
        &tracing_yaml(&collector.endpoint(), 1.0),
    ))
    .await;
    let fetch = collector
        .wait_for(WAIT, |s| {
            s.name == "jwt-authz jwks fetch" && s.attr("jwt_authz.fetch_outcome") == Some("error")
        })
        .await;
    assert_eq!(fetch.status, 2);
    assert!(!fetch.status_message.is_empty());
    assert_eq!(
        fetch.attr("url.full"),
        Some(format!("http://127.0.0.1:{closed}/jwks").as_str())
    );
    for secret in ["hunter2", "user:", "s3cr3t", "secret="] {
        assert!(!fetch.text.contains(secret), "{secret} in {}", fetch.text);
    }
}

#[tokio::test]
async fn a_check_the_proxy_gave_up_on_says_so() {
    let collector = Collector::start().await;
    let (jwks, _key, server) = start(&collector, 0.0).await;
    // A token naming a key the JWKS does not hold yet: the check waits on a slow refetch,
    // and the caller stops waiting first.
    jwks.set_delay(Duration::from_secs(5));
    let token = TestKey::rsa("k9").token(&claims("alice"));
    let auth = format!("Bearer {token}");
    let parent = traceparent(TRACE, PARENT, "01");
    let mut call = tonic::Request::new(request(
        "GET",
        "/orders/slow",
        &[("authorization", &auth), ("traceparent", &parent)],
    ));
    call.set_timeout(Duration::from_millis(300));
    let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        format!("http://{}", server.grpc),
    )
    .await
    .expect("connect");
    let gave_up = client.check(call).await;
    assert!(gave_up.is_err(), "the caller's deadline passed first");
    let span = collector.wait_for(WAIT, check_span(TRACE)).await;
    assert_eq!(span.attr("jwt_authz.decision"), Some("abandoned"));
    assert_eq!(span.status, 2);
}

/// Production collectors: spans over TLS to a collector that checks jwt-authz's client
/// certificate, with the headers of `headers_file` (an API key) on every export. Without the
/// client certificate the collector refuses the handshake: no span arrives, the failed export
/// is counted, and no answer changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_tls_with_a_client_certificate_and_the_configured_headers() {
    let server_ca = crate::support::tls::TestCa::new("collector CA");
    let client_ca = crate::support::tls::TestCa::new("jwt-authz client CA");
    let collector = Collector::start_tls(&server_ca, Some(&client_ca)).await;
    assert!(collector.endpoint().starts_with("https://"));
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let ca = write("ca.pem", &server_ca.pem());
    let (cert, key) = client_ca.issue(&["jwt-authz"]);
    let (cert, key) = (write("client.pem", &cert), write("client.key", &key));
    let headers = write(
        "headers",
        "# the vendor's key\nx-api-key: sekret-123\nx-team: auth\n",
    );
    let tls = |client: bool| {
        let identity = if client {
            format!(", cert_file: {cert}, key_file: {key}")
        } else {
            String::new()
        };
        format!(
            "{}  tls: {{ca_file: {ca}{identity}}}\n  headers_file: {headers}\n",
            tracing_yaml(&collector.endpoint(), 1.0)
        )
    };

    let (_jwks, token_key, server) = start_with_key(&tls(true)).await;
    let auth = format!("Bearer {}", token_key.token(&claims("alice")));
    let parent = traceparent(TRACE, PARENT, "01");
    allowed(&get(&server, "/orders", &auth, &[("traceparent", &parent)]).await);
    collector.wait_for(WAIT, check_span(TRACE)).await;
    let metadata = collector.exports_metadata();
    assert!(
        metadata.iter().all(
            |m| m.get("x-api-key").map(String::as_str) == Some("sekret-123")
                && m.get("x-team").map(String::as_str) == Some("auth")
        ),
        "{metadata:?}"
    );

    // No client certificate: refused by the collector; the check is answered all the same.
    let trace = "33333333333333333333333333333333";
    let (_jwks, token_key, server) = start_with_key(&tls(false)).await;
    let auth = format!("Bearer {}", token_key.token(&claims("bob")));
    let parent = traceparent(trace, PARENT, "01");
    allowed(&get(&server, "/orders", &auth, &[("traceparent", &parent)]).await);
    let mut failed = 0;
    for _ in 0..100 {
        let (_, metrics) = server.admin_get("/metrics").await;
        failed = metric(
            &metrics,
            "jwt_authz_trace_spans_exported_total",
            &[("result", "error")],
        );
        if failed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed > 0, "the refused export was not counted");
    assert!(collector.spans().iter().all(|s| s.trace_id != trace));
}

/// `request_context: ignore`: a client's sampled trace context chooses nothing (at ratio 0
/// nothing is traced for it), while the proxy's own call (Envoy's gRPC metadata) still
/// continues its trace.
#[tokio::test]
async fn a_client_cannot_choose_sampling_when_request_contexts_are_ignored() {
    let collector = Collector::start().await;
    let yaml = format!(
        "{}  request_context: ignore\n",
        tracing_yaml(&collector.endpoint(), 0.0)
    );
    let (_jwks, key, server) = start_with_key(&yaml).await;
    let auth = format!("Bearer {}", key.token(&claims("alice")));
    let client_trace = "44444444444444444444444444444444";
    let client = traceparent(client_trace, PARENT, "01");
    allowed(
        &get(
            &server,
            "/orders/client",
            &auth,
            &[("traceparent", &client)],
        )
        .await,
    );
    as_envoy_calls(&server, "/orders/proxy", &auth, &client).await;
    let span = collector.wait_for(WAIT, check_span(TRACE)).await;
    assert_eq!(span.parent_span_id, "1111111111111111");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        collector.spans().iter().all(|s| s.trace_id != client_trace),
        "the client's context chose a trace"
    );
}
