//! A sample MCP server (Model Context Protocol, revisions 2025-11-25, 2025-06-18 and
//! 2025-03-26) on the Streamable HTTP transport, at `POST /mcp`. jwt-authz in front of it is
//! the OAuth protected resource's gatekeeper; this server has no auth code and reads the caller
//! only from the `x-user-*` headers (401 without `x-user-id`, as every sample service).
//!
//! What it implements, by section of the specification (basic/transports unless named):
//! - "Sending Messages to the Server": one JSON-RPC message per POST, answered with one JSON
//!   object (`application/json`; this server never opens an SSE stream); notifications and
//!   responses get 202 Accepted with no body.
//! - "Listening for Messages from the Server": `GET /mcp` is 405, which the section allows for
//!   a server that offers no SSE stream. `DELETE /mcp` is 405 too ("Session Management", 5).
//! - "Session Management": none. The server is stateless and never sends `MCP-Session-Id`;
//!   a caller's notes are keyed by its `x-user-id`, not by a session.
//! - "Protocol Version Header": a present `MCP-Protocol-Version` must name a supported
//!   revision (400 otherwise); a missing one means 2025-03-26, as the section says.
//! - "Security Warning": a present `Origin` must be the server's own (403 otherwise).
//! - basic/lifecycle "Version Negotiation", basic/utilities/ping, server/tools.
//! - basic/index "Messages": requests carry a string or integer id, never null. Batches were
//!   removed in 2025-06-18, but 2025-03-26 (basic/index, "Batching") says a receiver MUST
//!   take them: a JSON array is answered as a batch only under 2025-03-26, -32600 otherwise.
//!
//! Limits: a body of at most 64 KiB (413), a batch of at most 16 messages. Only
//! `application/json` bodies (415); an `Accept` that is present must allow `application/json`
//! (406). Clients MUST list both `application/json` and `text/event-stream` ("Sending
//! Messages to the Server", 2), but since this server answers only in JSON it does not refuse
//! a client for leaving out the stream, nor for sending no `Accept` at all.

mod jsonrpc;
mod tools;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRef, FromRequest, Request, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE, HOST, ORIGIN};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use self::jsonrpc::{
    INVALID_REQUEST, METHOD_NOT_FOUND, Message, PARSE_ERROR, RpcError, TRANSPORT_REFUSED,
};
pub use self::tools::Notes;
use crate::Identity;

/// The revisions this server speaks, newest first: the head is the answer to a client that
/// asks for one it does not know (basic/lifecycle, "Version Negotiation").
pub const SUPPORTED_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// "Protocol Version Header": what a request without the header is taken to speak.
const VERSION_WITHOUT_HEADER: &str = "2025-03-26";

/// The only revision with batches.
const BATCHING_VERSION: &str = "2025-03-26";

const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_BATCH: usize = 16;

const SERVER_NAME: &str = "jwt-authz-sample-mcp";

pub(crate) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Notes: FromRef<S>,
{
    // Other methods get axum's 405 with `Allow: POST`.
    Router::new().route(
        "/mcp",
        post(handle).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
    )
}

/// Why a POST was refused before any JSON-RPC was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    ForeignOrigin,
    UnsupportedVersion,
    NotJson,
    JsonNotAcceptable,
    TooLarge,
    Unreadable,
    /// A response of the client's: this server sends no requests, so it cannot take one.
    UnexpectedResponse,
}

/// What a client sees for each refusal: the HTTP status and a JSON-RPC error without an id
/// ("Sending Messages to the Server", 4, allows such a body with an error status).
impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Refusal::ForeignOrigin => (StatusCode::FORBIDDEN, "origin not allowed"),
            Refusal::UnsupportedVersion => (
                StatusCode::BAD_REQUEST,
                "unsupported MCP-Protocol-Version (supported: 2025-11-25, 2025-06-18, 2025-03-26)",
            ),
            Refusal::NotJson => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type must be application/json",
            ),
            Refusal::JsonNotAcceptable => (
                StatusCode::NOT_ACCEPTABLE,
                "accept must allow application/json",
            ),
            Refusal::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body larger than 64 KiB"),
            Refusal::Unreadable => (StatusCode::BAD_REQUEST, "body could not be read"),
            Refusal::UnexpectedResponse => (StatusCode::BAD_REQUEST, "no request is pending"),
        };
        let error = RpcError::new(TRANSPORT_REFUSED, message);
        json_response(status, &jsonrpc::error(None, &error))
    }
}

#[tracing::instrument(skip_all, fields(caller = %who.id))]
async fn handle(State(notes): State<Notes>, who: Identity, request: Request) -> Response {
    match serve(&notes, &who, request).await {
        Ok(response) => response,
        Err(refusal) => {
            tracing::debug!(?refusal, "mcp request refused");
            refusal.into_response()
        }
    }
}

async fn serve(notes: &Notes, who: &Identity, request: Request) -> Result<Response, Refusal> {
    let version = check_headers(request.headers(), request.uri())?;
    let body = Bytes::from_request(request, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::TooLarge
        } else {
            Refusal::Unreadable
        }
    })?;
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(_) => {
            let error = RpcError::new(PARSE_ERROR, "parse error");
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                &jsonrpc::error(Some(Value::Null), &error),
            ));
        }
    };
    match parsed {
        Value::Array(batch) if version == BATCHING_VERSION => Ok(answer_batch(notes, who, batch)),
        Value::Array(_) => Ok(malformed(
            Value::Null,
            &RpcError::new(
                INVALID_REQUEST,
                "batches are not part of this protocol version",
            ),
        )),
        single => answer_one(notes, who, single),
    }
}

/// The transport's header rules, in one place; answers the protocol version in effect.
fn check_headers(headers: &HeaderMap, uri: &Uri) -> Result<&'static str, Refusal> {
    if let Some(origin) = single(headers, ORIGIN.as_str())? {
        let host = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| headers.get(HOST).and_then(|h| h.to_str().ok()));
        if !same_origin(origin, host) {
            return Err(Refusal::ForeignOrigin);
        }
    }
    let version = match single(headers, "mcp-protocol-version")? {
        None => VERSION_WITHOUT_HEADER,
        Some(asked) => SUPPORTED_VERSIONS
            .into_iter()
            .find(|v| *v == asked)
            .ok_or(Refusal::UnsupportedVersion)?,
    };
    match single(headers, CONTENT_TYPE.as_str()) {
        Ok(Some(value)) if is_json_content_type(value) => {}
        _ => return Err(Refusal::NotJson),
    }
    let accepts: Vec<&HeaderValue> = headers.get_all(ACCEPT).iter().collect();
    if !accepts.is_empty() && !accepts.iter().any(|v| accepts_json(v.as_bytes())) {
        return Err(Refusal::JsonNotAcceptable);
    }
    Ok(version)
}

/// A header that must appear at most once, as visible ASCII. A repeated or unreadable one is
/// refused as if it held a wrong value, since the server cannot tell which was meant.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Refusal> {
    let mut values = headers.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return if headers.contains_key(name) {
            Err(refusal_for(name))
        } else {
            Ok(None)
        };
    };
    value.to_str().map(Some).map_err(|_| refusal_for(name))
}

fn refusal_for(header: &str) -> Refusal {
    match header {
        "origin" => Refusal::ForeignOrigin,
        "content-type" => Refusal::NotJson,
        _ => Refusal::UnsupportedVersion,
    }
}

/// `Origin` names the host the request was sent to (scheme default ports aside). This keeps
/// other web sites' pages from posting here; DNS rebinding (a foreign page under a name that
/// resolves here) is met by the proxy in front, which needs a bearer token no browser attaches
/// by itself.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let (default_port, authority) = if let Some(rest) = origin.strip_prefix("https://") {
        (":443", rest)
    } else if let Some(rest) = origin.strip_prefix("http://") {
        (":80", rest)
    } else {
        return false;
    };
    let strip = |a: &'_ str| {
        a.strip_suffix(default_port)
            .unwrap_or(a)
            .to_ascii_lowercase()
    };
    !authority.is_empty() && strip(authority) == strip(host)
}

/// `application/json`, with no parameter but an optional UTF-8 charset (basic/transports:
/// messages MUST be UTF-8).
fn is_json_content_type(value: &str) -> bool {
    let mut parts = value.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default();
    essence.eq_ignore_ascii_case("application/json")
        && parts.all(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("charset")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
        })
}

/// Whether one `Accept` value (RFC 9110 §12.5.1) allows `application/json`: a matching
/// range (`application/json`, `application/*`, `*/*`) whose weight is not zero.
fn accepts_json(value: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    value.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let matches = matches!(media.as_str(), "application/json" | "application/*" | "*/*");
        let weight = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1.0), |(_, q)| q.trim().parse::<f32>().ok());
        matches && weight.is_some_and(|q| q > 0.0 && q <= 1.0)
    })
}

fn answer_one(notes: &Notes, who: &Identity, value: Value) -> Result<Response, Refusal> {
    match jsonrpc::classify(value) {
        Ok(Message::Request { id, method, params }) => {
            let body = match dispatch(&method, &params, who, notes) {
                Ok(result) => jsonrpc::result(id, result),
                Err(error) => jsonrpc::error(Some(id), &error),
            };
            Ok(json_response(StatusCode::OK, &body))
        }
        // Every notification is taken and has nothing to act on: `initialized` opens no
        // session here, and no request runs long enough to be cancelled.
        Ok(Message::Notification { method }) => {
            tracing::debug!(method = %truncated(&method), "mcp notification");
            Ok(StatusCode::ACCEPTED.into_response())
        }
        Ok(Message::Response) => Err(Refusal::UnexpectedResponse),
        Err(invalid) if invalid.error.is_malformed() => Ok(malformed(invalid.id, &invalid.error)),
        Err(invalid) => Ok(json_response(
            StatusCode::OK,
            &jsonrpc::error(Some(invalid.id), &invalid.error),
        )),
    }
}

/// 2025-03-26 (basic/index, "Batching"; basic/transports, "Sending Messages to the Server"):
/// one answer per request, in order; 202 when the batch holds no request.
fn answer_batch(notes: &Notes, who: &Identity, batch: Vec<Value>) -> Response {
    if batch.is_empty() || batch.len() > MAX_BATCH {
        let error = RpcError::new(INVALID_REQUEST, "a batch holds 1 to 16 messages");
        return malformed(Value::Null, &error);
    }
    let mut answers = Vec::new();
    for value in batch {
        match jsonrpc::classify(value) {
            // 2025-03-26 basic/lifecycle: the initialize request MUST NOT be part of a batch.
            Ok(Message::Request { id, method, .. }) if method == "initialize" => {
                let error = RpcError::new(INVALID_REQUEST, "initialize cannot be batched");
                answers.push(jsonrpc::error(Some(id), &error));
            }
            Ok(Message::Request { id, method, params }) => {
                answers.push(match dispatch(&method, &params, who, notes) {
                    Ok(result) => jsonrpc::result(id, result),
                    Err(error) => jsonrpc::error(Some(id), &error),
                });
            }
            Ok(Message::Notification { .. }) => {}
            Ok(Message::Response) => {
                let error = RpcError::new(INVALID_REQUEST, "no request is pending");
                answers.push(jsonrpc::error(Some(Value::Null), &error));
            }
            Err(invalid) => answers.push(jsonrpc::error(Some(invalid.id), &invalid.error)),
        }
    }
    if answers.is_empty() {
        StatusCode::ACCEPTED.into_response()
    } else {
        json_response(StatusCode::OK, &Value::Array(answers))
    }
}

/// The request methods: basic/lifecycle `initialize`, basic/utilities/ping `ping`,
/// server/tools `tools/list` and `tools/call`.
fn dispatch(
    method: &str,
    params: &serde_json::Map<String, Value>,
    who: &Identity,
    notes: &Notes,
) -> Result<Value, RpcError> {
    match method {
        "initialize" => initialize(params),
        "ping" => Ok(json!({})),
        // Pagination: this server hands out no cursors, so any cursor is invalid
        // (server/utilities/pagination, "Error Handling").
        "tools/list" if params.contains_key("cursor") => Err(RpcError::new(
            jsonrpc::INVALID_PARAMS,
            "this server issues no cursors",
        )),
        "tools/list" => Ok(tools::list(who)),
        "tools/call" => tools::call(params, who, notes),
        _ => Err(RpcError::new(METHOD_NOT_FOUND, "method not found")),
    }
}

/// basic/lifecycle, "Version Negotiation": the client's version if supported, else the
/// latest this server has.
fn initialize(params: &serde_json::Map<String, Value>) -> Result<Value, RpcError> {
    let Some(Value::String(asked)) = params.get("protocolVersion") else {
        return Err(RpcError::new(
            jsonrpc::INVALID_PARAMS,
            "protocolVersion must be a string",
        ));
    };
    let version = SUPPORTED_VERSIONS
        .into_iter()
        .find(|v| v == asked)
        .unwrap_or(SUPPORTED_VERSIONS[0]);
    Ok(json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": SERVER_NAME, "version": env!("CARGO_PKG_VERSION")},
    }))
}

/// A value that is no request: 400, since the transport wants an HTTP error for input it
/// cannot take ("Sending Messages to the Server", 4).
fn malformed(id: Value, error: &RpcError) -> Response {
    json_response(StatusCode::BAD_REQUEST, &jsonrpc::error(Some(id), error))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body.to_string(),
    )
        .into_response()
}

fn truncated(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_values() {
        for (value, ok) in [
            ("application/json, text/event-stream", true),
            ("text/event-stream, application/json", true),
            ("APPLICATION/JSON", true),
            ("*/*", true),
            ("application/*;q=0.5", true),
            ("application/json; q=0.001", true),
            ("text/event-stream", false),
            ("text/html", false),
            ("application/json;q=0", false),
            ("application/json;q=0.000", false),
            ("application/json;q=nope", false),
            ("application/json;q=2", false),
            ("application/jsonx", false),
            ("", false),
        ] {
            assert_eq!(accepts_json(value.as_bytes()), ok, "{value:?}");
        }
        assert!(!accepts_json(b"application/json\xff"));
    }

    #[test]
    fn content_types() {
        for (value, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/json;charset=\"UTF-8\"", true),
            ("application/json; charset=latin1", false),
            ("application/json; boundary=x", false),
            ("application/json;", false),
            ("application/jsonp", false),
            ("text/plain", false),
            ("", false),
        ] {
            assert_eq!(is_json_content_type(value), ok, "{value:?}");
        }
    }

    #[test]
    fn origins() {
        for (origin, host, ok) in [
            ("http://mcp.example", Some("mcp.example"), true),
            ("https://mcp.example", Some("MCP.example:443"), true),
            ("http://localhost:8000", Some("localhost:8000"), true),
            ("http://evil.example", Some("mcp.example"), false),
            ("http://mcp.example.evil", Some("mcp.example"), false),
            ("https://mcp.example:8443", Some("mcp.example"), false),
            ("null", Some("mcp.example"), false),
            ("http://", Some(""), false),
            ("ftp://mcp.example", Some("mcp.example"), false),
            ("http://mcp.example", None, false),
        ] {
            assert_eq!(same_origin(origin, host), ok, "{origin} {host:?}");
        }
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated("short"), "short");
        assert_eq!(truncated(&"é".repeat(100)).chars().count(), 64);
    }
}
