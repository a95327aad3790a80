//! The sample MCP server: the Streamable HTTP transport's rules, the JSON-RPC errors, the
//! tools, and identity only from the headers jwt-authz sets.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use sample_services::{Service, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const VERSION: &str = "2025-06-18";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    raw: Vec<u8>,
    body: Value,
}

async fn send(app: &axum::Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.expect("response");
    let status = res.status();
    let headers = res.headers().clone();
    let raw = axum::body::to_bytes(res.into_body(), 1 << 22)
        .await
        .expect("body")
        .to_vec();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        raw,
        body,
    }
}

/// A well-formed POST from caller `id` (role `role`), with the headers a client must send.
fn post(id: Option<&str>, role: &str) -> axum::http::request::Builder {
    let mut b = Request::post("/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", VERSION);
    if let Some(id) = id {
        b = b
            .header("x-user-id", id)
            .header("x-user-name", format!("{id}-name"))
            .header("x-user-role", role);
    }
    b
}

fn request(id: Option<&str>, role: &str, body: &Value) -> Request<Body> {
    post(id, role)
        .body(Body::from(body.to_string()))
        .expect("request")
}

async fn rpc(app: &axum::Router, who: &str, role: &str, method: &str, params: Value) -> Answer {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    send(app, request(Some(who), role, &body)).await
}

/// A tools/call that succeeded at the protocol level: (isError, text).
async fn call_tool(
    app: &axum::Router,
    who: &str,
    role: &str,
    tool: &str,
    arguments: Value,
) -> (bool, String) {
    let a = rpc(
        app,
        who,
        role,
        "tools/call",
        json!({"name": tool, "arguments": arguments}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{tool}: {}", a.body);
    assert_eq!(a.body["id"], 1);
    let result = &a.body["result"];
    let content = result["content"].as_array().expect("content array");
    assert_eq!(content.len(), 1);
    assert_eq!(content[0]["type"], "text");
    (
        result["isError"].as_bool().expect("isError"),
        content[0]["text"].as_str().expect("text").to_owned(),
    )
}

fn error_code(a: &Answer) -> Option<i64> {
    a.body["error"]["code"].as_i64()
}

#[tokio::test]
async fn initialize_handshake_negotiates_the_version() {
    let app = router(Service::Mcp);
    for (asked, answered) in [
        ("2025-11-25", "2025-11-25"),
        ("2025-06-18", "2025-06-18"),
        ("2025-03-26", "2025-03-26"),
        ("2024-11-05", "2025-11-25"),
        ("1999-01-01", "2025-11-25"),
    ] {
        let body = json!({
            "jsonrpc": "2.0", "id": "init-1", "method": "initialize",
            "params": {"protocolVersion": asked, "capabilities": {},
                       "clientInfo": {"name": "test", "version": "0"}},
        });
        // The first request carries no MCP-Protocol-Version: the version is in the body.
        let req = Request::post("/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("x-user-id", "u1")
            .body(Body::from(body.to_string()))
            .expect("request");
        let a = send(&app, req).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(
            a.headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        // Stateless: no session id.
        assert!(a.headers.get("mcp-session-id").is_none());
        assert_eq!(a.body["jsonrpc"], "2.0");
        assert_eq!(a.body["id"], "init-1");
        let result = &a.body["result"];
        assert_eq!(result["protocolVersion"], answered, "asked {asked}");
        assert_eq!(
            result["capabilities"],
            json!({"tools": {"listChanged": false}})
        );
        assert_eq!(result["serverInfo"]["name"], "jwt-authz-sample-mcp");
        assert!(result["serverInfo"]["version"].is_string());
    }

    // The initialized notification: 202, no body.
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let a = send(&app, request(Some("u1"), "user", &note)).await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert!(a.raw.is_empty());

    let a = rpc(&app, "u1", "user", "ping", json!({})).await;
    assert_eq!(
        (a.status, a.body["result"].clone()),
        (StatusCode::OK, json!({}))
    );

    // initialize without a protocolVersion string is a protocol error.
    for params in [json!({}), json!({"protocolVersion": 20250618})] {
        let a = rpc(&app, "u1", "user", "initialize", params).await;
        assert_eq!(error_code(&a), Some(-32602));
        assert_eq!(a.body["id"], 1);
    }
}

#[tokio::test]
async fn tools_list_has_schemas_and_the_admin_tool_only_for_admins() {
    let app = router(Service::Mcp);
    let names = |a: &Answer| -> Vec<String> {
        a.body["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let a = rpc(&app, "u1", "user", "tools/list", json!({})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(names(&a), ["whoami", "echo", "add_note", "list_notes"]);
    for tool in a.body["result"]["tools"].as_array().expect("tools") {
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
        assert!(tool["description"].is_string());
    }
    let echo = &a.body["result"]["tools"][1]["inputSchema"];
    assert_eq!(echo["required"], json!(["text"]));
    assert_eq!(echo["properties"]["text"]["maxLength"], 1024);

    let a = rpc(&app, "a1", "admin", "tools/list", json!({})).await;
    assert_eq!(names(&a).last().map(String::as_str), Some("list_all_notes"));

    // No params at all is fine; a cursor this server never issued is not.
    let bare = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    assert_eq!(
        send(&app, request(Some("u1"), "user", &bare)).await.status,
        StatusCode::OK
    );
    let a = rpc(&app, "u1", "user", "tools/list", json!({"cursor": "x"})).await;
    assert_eq!(error_code(&a), Some(-32602));
}

#[tokio::test]
async fn whoami_reads_the_identity_headers() {
    let app = router(Service::Mcp);
    let (is_error, text) = call_tool(&app, "u1", "user", "whoami", json!({})).await;
    assert!(!is_error);
    let me: Value = serde_json::from_str(&text).expect("json text");
    assert_eq!(me, json!({"id": "u1", "name": "u1-name", "role": "user"}));

    // Arguments may be left out; unexpected ones are a tool error.
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami"}});
    let a = send(&app, request(Some("u2"), "user", &body)).await;
    assert_eq!(a.body["result"]["isError"], false);
    let (is_error, _) = call_tool(&app, "u1", "user", "whoami", json!({"id": "someone"})).await;
    assert!(is_error);
}

#[tokio::test]
async fn echo_returns_its_text_within_limits() {
    let app = router(Service::Mcp);
    assert_eq!(
        call_tool(&app, "u1", "user", "echo", json!({"text": "héllo \u{0}"})).await,
        (false, "héllo \u{0}".to_owned())
    );
    // 1024 characters (2048 bytes) pass: the limit counts characters.
    let max = "é".repeat(1024);
    assert_eq!(
        call_tool(&app, "u1", "user", "echo", json!({"text": max})).await,
        (false, max.clone())
    );
    for bad in [
        json!({"text": format!("{max}x")}),
        json!({"text": ""}),
        json!({"text": 42}),
        json!({"text": null}),
        json!({"text": ["a"]}),
        json!({}),
        json!({"text": "a", "extra": 1}),
    ] {
        let (is_error, reason) = call_tool(&app, "u1", "user", "echo", bad.clone()).await;
        assert!(is_error, "{bad}");
        assert!(
            reason.len() < 100,
            "the reason does not echo the input: {reason}"
        );
    }
}

#[tokio::test]
async fn notes_belong_to_their_caller() {
    let app = router(Service::Mcp);
    let (is_error, _) =
        call_tool(&app, "u1", "user", "add_note", json!({"text": "u1 secret"})).await;
    assert!(!is_error);
    call_tool(&app, "u2", "user", "add_note", json!({"text": "u2 secret"})).await;

    let notes = |text: String| -> Vec<String> {
        let v: Value = serde_json::from_str(&text).expect("json text");
        v["notes"]
            .as_array()
            .expect("notes")
            .iter()
            .map(|n| n["text"].as_str().expect("text").to_owned())
            .collect()
    };
    let (_, mine) = call_tool(&app, "u1", "user", "list_notes", json!({})).await;
    assert_eq!(notes(mine), ["u1 secret"]);
    let (_, theirs) = call_tool(&app, "u2", "user", "list_notes", json!({})).await;
    assert_eq!(notes(theirs), ["u2 secret"]);
    let (_, nobody) = call_tool(&app, "u3", "user", "list_notes", json!({})).await;
    assert!(notes(nobody).is_empty());

    // A caller cannot name another caller's notes: list_notes takes no owner argument.
    let (is_error, _) = call_tool(&app, "u2", "user", "list_notes", json!({"owner": "u1"})).await;
    assert!(is_error);

    // A non-admin is refused the admin tool (and a forged role claim is jwt-authz's to stop).
    let (is_error, text) = call_tool(&app, "u1", "user", "list_all_notes", json!({})).await;
    assert!(is_error);
    assert!(!text.contains("secret"));
    let (is_error, text) = call_tool(&app, "a1", "admin", "list_all_notes", json!({})).await;
    assert!(!is_error);
    let all: Value = serde_json::from_str(&text).expect("json text");
    assert_eq!(all["notes"]["u1"][0]["text"], "u1 secret");
    assert_eq!(all["notes"]["u2"][0]["text"], "u2 secret");
    assert_eq!(all["truncated"], false);

    // Bad note arguments are tool errors, and each caller has a bounded number of notes.
    let (is_error, _) = call_tool(
        &app,
        "u1",
        "user",
        "add_note",
        json!({"text": "x".repeat(281)}),
    )
    .await;
    assert!(is_error);
    for i in 1..50 {
        let (is_error, _) = call_tool(
            &app,
            "u1",
            "user",
            "add_note",
            json!({"text": format!("n{i}")}),
        )
        .await;
        assert!(!is_error, "note {i}");
    }
    let (is_error, text) = call_tool(
        &app,
        "u1",
        "user",
        "add_note",
        json!({"text": "one too many"}),
    )
    .await;
    assert!(is_error, "{text}");
    let (_, theirs) = call_tool(&app, "u2", "user", "list_notes", json!({})).await;
    assert_eq!(notes(theirs).len(), 1);
}

#[tokio::test]
async fn no_identity_means_401() {
    let app = router(Service::All);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    assert_eq!(
        send(&app, request(None, "", &ping)).await.status,
        StatusCode::UNAUTHORIZED
    );
    // jwt-authz's anonymous marker does not stand in for an identity here.
    let anonymous = post(None, "")
        .header("x-user-anonymous", "true")
        .body(Body::from(ping.to_string()))
        .expect("request");
    assert_eq!(send(&app, anonymous).await.status, StatusCode::UNAUTHORIZED);
    let empty = post(None, "")
        .header("x-user-id", "")
        .body(Body::from(ping.to_string()))
        .expect("request");
    assert_eq!(send(&app, empty).await.status, StatusCode::UNAUTHORIZED);
    // Identity is checked before the body is looked at.
    let huge = post(None, "")
        .body(Body::from(vec![b'x'; 1 << 20]))
        .expect("request");
    assert_eq!(send(&app, huge).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn get_and_delete_are_405() {
    let app = router(Service::Mcp);
    for method in ["GET", "DELETE", "PUT"] {
        let req = Request::builder()
            .method(method)
            .uri("/mcp")
            .header("accept", "text/event-stream")
            .header("x-user-id", "u1")
            .body(Body::empty())
            .expect("request");
        let a = send(&app, req).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(
            a.headers.get("allow").map(|v| v.as_bytes()),
            Some(&b"POST"[..]),
            "{method}"
        );
    }
    // Only the MCP route is served by this instance.
    let req = Request::get("/api/users/me")
        .header("x-user-id", "u1")
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&app, req).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn body_size_is_limited() {
    let app = router(Service::Mcp);
    // Exactly 64 KiB of valid JSON-RPC (padded with whitespace) is taken...
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let mut at_limit = ping.into_bytes();
    at_limit.resize(64 * 1024, b' ');
    let a = send(
        &app,
        post(Some("u1"), "user")
            .body(Body::from(at_limit))
            .expect("request"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    // ... one byte more is not.
    let over = vec![b' '; 64 * 1024 + 1];
    let a = send(
        &app,
        post(Some("u1"), "user")
            .body(Body::from(over))
            .expect("request"),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&a), Some(-32000));
    assert!(a.body.get("id").is_none());
    // A lying content-length changes nothing.
    let lying = post(Some("u1"), "user")
        .header("content-length", "10")
        .body(Body::from(vec![b' '; 1 << 20]))
        .expect("request");
    assert_eq!(
        send(&app, lying).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn content_type_must_be_json() {
    let app = router(Service::Mcp);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/json; charset=latin1"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut b = Request::post("/mcp")
            .header("accept", "application/json, text/event-stream")
            .header("x-user-id", "u1");
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        let a = send(&app, b.body(Body::from(ping.clone())).expect("request")).await;
        assert_eq!(
            a.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
    }
    // Two content types: which one is meant?
    let twice = post(Some("u1"), "user")
        .header("content-type", "text/plain")
        .body(Body::from(ping.clone()))
        .expect("request");
    assert_eq!(
        send(&app, twice).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}

#[tokio::test]
async fn accept_must_allow_json_when_present() {
    let app = router(Service::Mcp);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    for (accept, want) in [
        (None, StatusCode::OK),
        (Some("*/*"), StatusCode::OK),
        (Some("application/json"), StatusCode::OK),
        (Some("text/event-stream"), StatusCode::NOT_ACCEPTABLE),
        (Some("text/html"), StatusCode::NOT_ACCEPTABLE),
        (
            Some("application/json;q=0, text/event-stream"),
            StatusCode::NOT_ACCEPTABLE,
        ),
    ] {
        let mut b = Request::post("/mcp")
            .header("content-type", "application/json")
            .header("x-user-id", "u1");
        if let Some(accept) = accept {
            b = b.header("accept", accept);
        }
        let a = send(&app, b.body(Body::from(ping.clone())).expect("request")).await;
        assert_eq!(a.status, want, "{accept:?}");
    }
}

#[tokio::test]
async fn protocol_version_header() {
    let app = router(Service::Mcp);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let with_version = |v: &str| {
        Request::post("/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("x-user-id", "u1")
            .header("mcp-protocol-version", v)
            .body(Body::from(ping.clone()))
            .expect("request")
    };
    for v in ["2025-11-25", "2025-06-18", "2025-03-26"] {
        assert_eq!(
            send(&app, with_version(v)).await.status,
            StatusCode::OK,
            "{v}"
        );
    }
    for v in [
        "2024-11-05",
        "2026-01-01",
        "2025-06-18,2025-06-18",
        "",
        "latest",
        " 2025-06-18",
    ] {
        let a = send(&app, with_version(v)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{v:?}");
        assert_eq!(error_code(&a), Some(-32000));
    }
    // Sent twice: refused, even when both are supported.
    let twice = post(Some("u1"), "user")
        .header("mcp-protocol-version", "2025-11-25")
        .body(Body::from(ping.clone()))
        .expect("request");
    assert_eq!(send(&app, twice).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_foreign_origin_is_403() {
    let app = router(Service::Mcp);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let with_origin = |origin: &str| {
        post(Some("u1"), "user")
            .header("host", "mcp.example:8000")
            .header("origin", origin)
            .body(Body::from(ping.clone()))
            .expect("request")
    };
    assert_eq!(
        send(&app, with_origin("http://mcp.example:8000"))
            .await
            .status,
        StatusCode::OK
    );
    for origin in [
        "http://evil.example",
        "null",
        "http://mcp.example:8000.evil.example",
        "http://mcp.example",
    ] {
        assert_eq!(
            send(&app, with_origin(origin)).await.status,
            StatusCode::FORBIDDEN,
            "{origin}"
        );
    }
}

#[tokio::test]
async fn malformed_json_is_a_parse_error_with_id_null() {
    let app = router(Service::Mcp);
    let deep = "[".repeat(60_000);
    for raw in [
        "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"ping\"".to_owned(),
        "not json".to_owned(),
        String::new(),
        "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"ping\"} trailing".to_owned(),
        deep,
    ] {
        let a = send(
            &app,
            post(Some("u1"), "user")
                .body(Body::from(raw.clone()))
                .expect("request"),
        )
        .await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{}",
            &raw[..raw.len().min(40)]
        );
        assert_eq!(error_code(&a), Some(-32700));
        assert_eq!(a.body.get("id"), Some(&Value::Null));
    }
    // Not UTF-8.
    let a = send(
        &app,
        post(Some("u1"), "user")
            .body(Body::from(
                &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xffng\"}"[..],
            ))
            .expect("request"),
    )
    .await;
    assert_eq!(error_code(&a), Some(-32700));
}

#[tokio::test]
async fn non_requests_are_invalid_requests() {
    let app = router(Service::Mcp);
    for (body, id) in [
        (
            json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]),
            Value::Null,
        ),
        (
            json!({"jsonrpc": "1.0", "id": 5, "method": "ping"}),
            json!(5),
        ),
        (json!({"id": 5, "method": "ping"}), json!(5)),
        (
            json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
            Value::Null,
        ),
        (
            json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}),
            Value::Null,
        ),
        (
            json!({"jsonrpc": "2.0", "id": 2.5, "method": "ping"}),
            Value::Null,
        ),
        (
            json!({"jsonrpc": "2.0", "id": 5, "method": ["ping"]}),
            json!(5),
        ),
        (json!({"jsonrpc": "2.0", "id": 5}), json!(5)),
        (json!("ping"), Value::Null),
        (json!(null), Value::Null),
    ] {
        let a = send(&app, request(Some("u1"), "user", &body)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(&a), Some(-32600), "{body}");
        assert_eq!(a.body.get("id"), Some(&id), "{body}");
    }
    // A response from the client answers nothing this server asked.
    let response = json!({"jsonrpc": "2.0", "id": 9, "result": {}});
    assert_eq!(
        send(&app, request(Some("u1"), "user", &response))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    // params must be an object.
    let a = send(
        &app,
        request(
            Some("u1"),
            "user",
            &json!({"jsonrpc": "2.0", "id": 3, "method": "ping", "params": [1]}),
        ),
    )
    .await;
    assert_eq!(
        (a.status, error_code(&a), a.body["id"].clone()),
        (StatusCode::OK, Some(-32602), json!(3))
    );
}

#[tokio::test]
async fn unknown_methods_and_tools() {
    let app = router(Service::Mcp);
    for method in [
        "resources/list",
        "prompts/list",
        "tools/delete",
        "",
        "notifications/initialized",
    ] {
        let a = rpc(&app, "u1", "user", method, json!({})).await;
        assert_eq!(a.status, StatusCode::OK, "{method}");
        assert_eq!(error_code(&a), Some(-32601), "{method}");
        assert_eq!(a.body["id"], 1);
    }
    let long_name = "x".repeat(10_000);
    for params in [
        json!({"name": "rm_rf", "arguments": {}}),
        json!({"name": long_name, "arguments": {}}),
        json!({"name": "list_all_notes ", "arguments": {}}),
        json!({"name": "WHOAMI"}),
        json!({"arguments": {}}),
        json!({"name": 1}),
        json!({"name": "echo", "arguments": "text"}),
        json!({"name": "echo", "arguments": ["text"]}),
    ] {
        let a = rpc(&app, "u1", "user", "tools/call", params.clone()).await;
        assert_eq!(error_code(&a), Some(-32602), "{params}");
        assert!(a.raw.len() < 200, "the error does not echo the input");
    }
    // String ids are echoed as given.
    let body = json!({"jsonrpc": "2.0", "id": "abc", "method": "nope"});
    assert_eq!(
        send(&app, request(Some("u1"), "user", &body)).await.body["id"],
        "abc"
    );
}

#[tokio::test]
async fn every_notification_is_202() {
    let app = router(Service::Mcp);
    for body in [
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}),
        json!({"jsonrpc": "2.0", "method": "no/such/notification"}),
        // A request method sent as a notification is not run.
        json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "add_note", "arguments": {"text": "ghost"}}}),
    ] {
        let a = send(&app, request(Some("u1"), "user", &body)).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{body}");
        assert!(a.raw.is_empty());
    }
    let (_, text) = call_tool(&app, "u1", "user", "list_notes", json!({})).await;
    assert!(!text.contains("ghost"));
}

#[tokio::test]
async fn batches_only_under_2025_03_26() {
    let app = router(Service::Mcp);
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": "b", "method": "tools/call", "params": {"name": "whoami"}},
        {"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": {"protocolVersion": "2025-03-26"}},
        {"jsonrpc": "2.0", "id": 4, "method": "nope"},
        {"jsonrpc": "1.0", "id": 5, "method": "ping"},
        [],
    ]);
    // Without the header the server assumes 2025-03-26, which has batches.
    let req = Request::post("/mcp")
        .header("content-type", "application/json")
        .header("x-user-id", "u1")
        .body(Body::from(batch.to_string()))
        .expect("request");
    let a = send(&app, req).await;
    assert_eq!(a.status, StatusCode::OK);
    let answers = a.body.as_array().expect("array");
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    assert_eq!(
        ids,
        [
            &json!(1),
            &json!("b"),
            &json!(3),
            &json!(4),
            &json!(5),
            &Value::Null
        ]
    );
    assert_eq!(answers[0]["result"], json!({}));
    assert_eq!(answers[1]["result"]["isError"], false);
    let codes: Vec<Option<i64>> = answers[2..]
        .iter()
        .map(|a| a["error"]["code"].as_i64())
        .collect();
    assert_eq!(
        codes,
        [Some(-32600), Some(-32601), Some(-32600), Some(-32600)]
    );

    let with_version = |v: &str, body: &Value| {
        Request::post("/mcp")
            .header("content-type", "application/json")
            .header("x-user-id", "u1")
            .header("mcp-protocol-version", v)
            .body(Body::from(body.to_string()))
            .expect("request")
    };
    // Only notifications: 202.
    let notes = json!([{"jsonrpc": "2.0", "method": "notifications/initialized"}]);
    let a = send(&app, with_version("2025-03-26", &notes)).await;
    assert_eq!((a.status, a.raw.len()), (StatusCode::ACCEPTED, 0));
    // Empty, and too long.
    let many = Value::Array(vec![
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
        17
    ]);
    for body in [json!([]), many] {
        let a = send(&app, with_version("2025-03-26", &body)).await;
        assert_eq!(
            (a.status, error_code(&a)),
            (StatusCode::BAD_REQUEST, Some(-32600))
        );
    }
    // Later revisions removed batching.
    for v in ["2025-06-18", "2025-11-25"] {
        let a = send(&app, with_version(v, &batch)).await;
        assert_eq!(
            (a.status, error_code(&a)),
            (StatusCode::BAD_REQUEST, Some(-32600)),
            "{v}"
        );
        assert_eq!(a.body["id"], Value::Null);
    }
}

/// A real socket: the router as `main` serves it, driven over TCP with a raw HTTP/1.1 client.
#[tokio::test]
async fn over_a_real_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, router(Service::All)).await });
    let body =
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "whoami"}})
            .to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-protocol-version: 2025-11-25\r\n\
         x-user-id: u9\r\nx-user-role: user\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    server.abort();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let json_start = answer.find("\r\n\r\n").map(|i| i + 4).expect("head end");
    let v: Value = serde_json::from_str(&answer[json_start..]).expect("json");
    assert_eq!(v["id"], 7);
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .expect("text")
            .contains("\"u9\"")
    );
}
