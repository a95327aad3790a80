//! An MCP client's whole discovery through the real proxies (issue 34): the 401 names the
//! protected resource's metadata (RFC 9728 §5.1), which names the issuer (§2), whose RFC
//! 8414 metadata names its token endpoint; a token asked for this resource (RFC 8707) lists
//! the sample MCP server's tools; a token for anything else is refused, one without the
//! scope gets 403 naming it. Through every shipped proxy: Envoy (gRPC and HTTP ext_authz,
//! the in-proxy Wasm filter), nginx, Caddy and Traefik (forward-auth).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::stack::{Front, Options, Stack};

/// Another resource the issuer mints tokens for (a loopback URI no one serves).
const OTHER: &str = "http://127.0.0.1:9/other-mcp";

/// The value of `name` in a `WWW-Authenticate` challenge (quoted-string auth-params, RFC
/// 9110 §11.2), as a client reads it.
fn auth_param(challenge: &str, name: &str) -> Option<String> {
    let at = challenge.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &challenge[at..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// `application/x-www-form-urlencoded` for one value: every byte but the unreserved ones
/// percent-encoded.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A JSON-RPC request to the MCP endpoint, as an MCP client sends it (Streamable HTTP).
    async fn mcp(&self, token: Option<&str>, body: Value) -> (StatusCode, String, Value) {
        let mut request = self
            .http
            .post(format!("{}/mcp", self.base))
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("MCP answered");
        let status = response.status();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, challenge, body)
    }

    async fn get_json(&self, url: &str) -> Value {
        let response = self.http.get(url).send().await.expect("GET answered");
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        response.json().await.expect("JSON")
    }

    async fn token(&self, endpoint: &str, resource: &str, scope: &str) -> String {
        let form: Vec<String> = [
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", "bob-password"),
            ("scope", scope),
            ("resource", resource),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
        let response = self
            .http
            .post(endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.join("&"))
            .send()
            .await
            .expect("token endpoint answered");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("JSON");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }
}

async fn discovery_walk(stack: &Stack, front: Front) {
    let client = Client {
        http: reqwest::Client::new(),
        base: stack.base.clone(),
    };
    let resource = format!("{}/mcp", stack.base);
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "e2e", "version": "1"}}});

    // 1. No token: 401 naming the metadata.
    let (status, challenge, _) = client.mcp(None, initialize.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{front:?}");
    let metadata_url = auth_param(&challenge, "resource_metadata")
        .unwrap_or_else(|| panic!("{front:?}: no resource_metadata in {challenge:?}"));
    assert_eq!(
        metadata_url,
        format!("{}/.well-known/oauth-protected-resource/mcp", stack.base)
    );
    // 2. The metadata: its resource is the URL called (RFC 9728 §3.3), and names the issuer.
    let metadata = client.get_json(&metadata_url).await;
    assert_eq!(metadata["resource"], resource.as_str(), "{front:?}");
    assert_eq!(
        metadata["scopes_supported"],
        json!(["mcp:tools", "mcp:admin"])
    );
    let issuer = metadata["authorization_servers"][0]
        .as_str()
        .expect("an authorization server")
        .to_owned();
    // 3. The issuer's metadata (RFC 8414 §3; its issuer must be the one asked, §3.3).
    let server = client
        .get_json(&format!("{issuer}/.well-known/oauth-authorization-server"))
        .await;
    assert_eq!(server["issuer"], issuer.as_str());
    let endpoint = server["token_endpoint"].as_str().expect("token_endpoint");
    // 4. A token for this resource, with the scope.
    let token = client.token(endpoint, &resource, "mcp:tools").await;
    // The metadata stays readable with the token on the request (nothing verifies it there).
    let response = client
        .http
        .get(&metadata_url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("answered");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{front:?}: metadata with a token"
    );
    // 5. The MCP session's first calls pass, the caller known to the server.
    let (status, _, body) = client.mcp(Some(&token), initialize).await;
    assert_eq!(status, StatusCode::OK, "{front:?}: {body}");
    assert_eq!(body["result"]["serverInfo"]["name"], "jwt-authz-sample-mcp");
    let (status, _, body) = client
        .mcp(
            Some(&token),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tools: Vec<&str> = body["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(tools.contains(&"whoami"), "{tools:?}");
    let (status, _, body) = client
        .mcp(
            Some(&token),
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                   "params": {"name": "whoami", "arguments": {}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("bob"), "{text}");

    // A token for another resource, or for the issuer's default audience: 401 invalid_token.
    let other = client.token(endpoint, OTHER, "mcp:tools").await;
    let gw = stack.gateway();
    let plain = gw.login("bob", "bob-password").await;
    for (why, token) in [("another resource", &other), ("no resource", &plain)] {
        let (status, challenge, _) = client
            .mcp(
                Some(token),
                json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{front:?}: {why}");
        assert_eq!(
            auth_param(&challenge, "error").as_deref(),
            Some("invalid_token"),
            "{why}"
        );
        assert_eq!(
            auth_param(&challenge, "resource_metadata"),
            Some(metadata_url.clone())
        );
    }
    // This resource without the scope: 403 naming it (MCP's step-up).
    let narrow = client.token(endpoint, &resource, "").await;
    let (status, challenge, _) = client
        .mcp(
            Some(&narrow),
            json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{front:?}");
    assert_eq!(
        auth_param(&challenge, "error").as_deref(),
        Some("insufficient_scope")
    );
    assert_eq!(
        auth_param(&challenge, "scope").as_deref(),
        Some("mcp:tools")
    );
    assert_eq!(
        auth_param(&challenge, "resource_metadata"),
        Some(metadata_url)
    );
    // The metadata path is public for GET only: a POST there is decided like any request.
    let response = client
        .http
        .post(format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            stack.base
        ))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{front:?}");
}

fn options(front: Front) -> Options {
    Options {
        front,
        issuer_args: vec!["--resource".into(), OTHER.into()],
        ..Options::default()
    }
}

/// The walk through `front`; nothing when its proxy is unavailable (the stack says why).
async fn through(front: Front) {
    let Some(stack) = Stack::start_with(options(front)) else {
        return;
    };
    discovery_walk(&stack, front).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_clients_discovery_walk_through_envoy_grpc() {
    through(Front::EnvoyGrpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_clients_discovery_walk_through_envoy_http() {
    through(Front::EnvoyHttp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_clients_discovery_walk_through_the_in_proxy_filter() {
    through(Front::EnvoyInProxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_clients_discovery_walk_through_the_dynamic_module() {
    through(Front::EnvoyModule).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_clients_discovery_walk_through_nginx() {
    through(Front::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_clients_discovery_walk_through_caddy() {
    through(Front::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_clients_discovery_walk_through_traefik() {
    through(Front::Traefik).await;
}
