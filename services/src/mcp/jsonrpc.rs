//! JSON-RPC 2.0 messages as MCP narrows them (MCP basic/index, "Messages"): what a POSTed
//! value is (request, notification, or a response of the client's), the error codes, and the
//! shape of what the server answers.

use serde_json::{Map, Value, json};

/// JSON-RPC 2.0 §5.1: invalid JSON.
pub(super) const PARSE_ERROR: i64 = -32700;
/// JSON-RPC 2.0 §5.1: valid JSON, but not a request object.
pub(super) const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC 2.0 §5.1.
pub(super) const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC 2.0 §5.1; MCP server/tools "Error Handling" uses it for an unknown tool.
pub(super) const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC 2.0 §5.1 leaves -32000 to -32099 to the implementation: the transport's
/// refusals (wrong media type, unsupported protocol version, ...) carry this one.
pub(super) const TRANSPORT_REFUSED: i64 = -32000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RpcError {
    pub code: i64,
    /// Short and stable: never echoes the client's input.
    pub message: &'static str,
}

impl RpcError {
    pub(super) const fn new(code: i64, message: &'static str) -> Self {
        RpcError { code, message }
    }

    /// Whether the message failed as JSON-RPC (no request could be read), as opposed to a
    /// readable request that the server turned down.
    pub(super) fn is_malformed(&self) -> bool {
        matches!(self.code, PARSE_ERROR | INVALID_REQUEST)
    }
}

/// One message the client POSTed (MCP basic/index: requests, notifications, responses).
#[derive(Debug)]
pub(super) enum Message {
    Request {
        /// A string or an integer, never null (MCP basic/index, "Requests").
        id: Value,
        method: String,
        params: Map<String, Value>,
    },
    Notification {
        method: String,
    },
    /// A response of the client's. This server sends no requests, so none can be pending.
    Response,
}

/// A value that is not a message, with the id to answer under: the request's own id when it
/// could be read, null otherwise (JSON-RPC 2.0 §5).
#[derive(Debug)]
pub(super) struct Invalid {
    pub id: Value,
    pub error: RpcError,
}

/// Reads one JSON value as a message.
pub(super) fn classify(value: Value) -> Result<Message, Invalid> {
    let Value::Object(mut object) = value else {
        return Err(invalid(Value::Null, "a message must be a JSON object"));
    };
    let id = match object.remove("id") {
        None => None,
        Some(id) if is_valid_id(&id) => Some(id),
        // Null is a valid JSON-RPC id but not an MCP one (basic/index, "Requests").
        Some(_) => return Err(invalid(Value::Null, "id must be a string or an integer")),
    };
    let answer_id = id.clone().unwrap_or(Value::Null);
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(answer_id, "jsonrpc must be \"2.0\""));
    }
    let Some(method) = object.remove("method") else {
        // JSON-RPC 2.0 §5: a response has an id and exactly one of result or error.
        let is_response =
            id.is_some() && (object.contains_key("result") != object.contains_key("error"));
        return if is_response {
            Ok(Message::Response)
        } else {
            Err(invalid(answer_id, "method is required"))
        };
    };
    let Value::String(method) = method else {
        return Err(invalid(answer_id, "method must be a string"));
    };
    // MCP's params are always an object (basic/index, "Requests" and "Notifications"), where
    // JSON-RPC would also allow an array.
    let params = match object.remove("params") {
        None => Map::new(),
        Some(Value::Object(params)) => params,
        Some(_) => {
            return Err(Invalid {
                id: answer_id,
                error: RpcError::new(INVALID_PARAMS, "params must be an object"),
            });
        }
    };
    Ok(match id {
        Some(id) => Message::Request { id, method, params },
        None => Message::Notification { method },
    })
}

fn invalid(id: Value, message: &'static str) -> Invalid {
    Invalid {
        id,
        error: RpcError::new(INVALID_REQUEST, message),
    }
}

/// MCP basic/index, "Requests": a string or an integer. JSON-RPC's fractional numbers are out.
fn is_valid_id(id: &Value) -> bool {
    match id {
        Value::String(_) => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

/// A result response: the request's id and its result (MCP basic/index, "Result Responses").
pub(super) fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error response. `id` is None where the transport says the body carries no id (MCP
/// basic/transports, "Sending Messages to the Server", 4), and null where JSON-RPC 2.0 §5
/// says the id could not be read.
pub(super) fn error(id: Option<Value>, error: &RpcError) -> Value {
    let mut body = json!({
        "jsonrpc": "2.0",
        "error": {"code": error.code, "message": error.message},
    });
    if let (Some(id), Value::Object(map)) = (id, &mut body) {
        map.insert("id".into(), id);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(value: Value) -> Result<&'static str, (Value, i64)> {
        match classify(value) {
            Ok(Message::Request { .. }) => Ok("request"),
            Ok(Message::Notification { .. }) => Ok("notification"),
            Ok(Message::Response) => Ok("response"),
            Err(Invalid { id, error }) => Err((id, error.code)),
        }
    }

    #[test]
    fn messages_and_non_messages() {
        let cases = [
            (
                json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
                Ok("request"),
            ),
            (
                json!({"jsonrpc": "2.0", "id": "a", "method": "ping"}),
                Ok("request"),
            ),
            (json!({"jsonrpc": "2.0", "method": "x"}), Ok("notification")),
            (
                json!({"jsonrpc": "2.0", "id": 1, "result": {}}),
                Ok("response"),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1, "error": {}}),
                Ok("response"),
            ),
            (json!([]), Err((Value::Null, INVALID_REQUEST))),
            (json!("ping"), Err((Value::Null, INVALID_REQUEST))),
            (
                json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
                Err((Value::Null, INVALID_REQUEST)),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}),
                Err((Value::Null, INVALID_REQUEST)),
            ),
            (
                json!({"jsonrpc": "2.0", "id": [1], "method": "ping"}),
                Err((Value::Null, INVALID_REQUEST)),
            ),
            (
                json!({"jsonrpc": "1.0", "id": 7, "method": "ping"}),
                Err((json!(7), INVALID_REQUEST)),
            ),
            (
                json!({"id": 7, "method": "ping"}),
                Err((json!(7), INVALID_REQUEST)),
            ),
            (
                json!({"jsonrpc": 2.0, "id": 7, "method": "ping"}),
                Err((json!(7), INVALID_REQUEST)),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 7, "method": 1}),
                Err((json!(7), INVALID_REQUEST)),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 7}),
                Err((json!(7), INVALID_REQUEST)),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 7, "result": {}, "error": {}}),
                Err((json!(7), INVALID_REQUEST)),
            ),
            (
                json!({"jsonrpc": "2.0", "result": {}}),
                Err((Value::Null, INVALID_REQUEST)),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 7, "method": "ping", "params": [1]}),
                Err((json!(7), INVALID_PARAMS)),
            ),
        ];
        for (value, want) in cases {
            assert_eq!(kind(value.clone()), want, "{value}");
        }
    }

    #[test]
    fn error_bodies_carry_the_id_only_when_given() {
        let e = RpcError::new(PARSE_ERROR, "parse error");
        assert_eq!(error(Some(Value::Null), &e)["id"], Value::Null);
        assert!(error(Some(Value::Null), &e).get("id").is_some());
        assert!(error(None, &e).get("id").is_none());
        assert_eq!(error(Some(json!(3)), &e)["error"]["code"], PARSE_ERROR);
    }
}
