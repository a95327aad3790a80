//! Protected resources (RFC 9728): the metadata document served on the HTTP port, every
//! front end's 401 naming it, 403s naming the scopes needed, and tokens held to the
//! resource's URI as their audience (RFC 8707).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const RESOURCE: &str = "https://mcp.example.com/mcp";
const METADATA: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";

fn extra() -> String {
    format!(
        r#"
resources:
  - name: mcp
    resource: {RESOURCE}
    resource_name: Example MCP server
    max_age_seconds: 600
rules:
  - name: mcp
    resource: mcp
    match: {{path: {{prefix: /mcp}}}}
    access:
      claims: [{{claim: scope, any_of: ["mcp:tools"]}}]
"#
    )
}

fn token(key: &TestKey, aud: Value, scope: Option<&str>) -> String {
    let mut c = claims("agent-7");
    c["aud"] = aud;
    if let Some(scope) = scope {
        c["scope"] = json!(scope);
    }
    key.token(&c)
}

async fn http(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut builder = reqwest::Client::new().request(
        method.parse().expect("method"),
        format!("http://{}{path}", server.http),
    );
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.send().await.expect("HTTP port answers")
}

fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_metadata_document_is_served_public_and_cacheable() {
    let (_jwks, _key, server) = start_with_key(&extra()).await;
    let path = "/.well-known/oauth-protected-resource/mcp";
    let response = http(&server, "GET", path, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "public, max-age=600");
    assert_eq!(headers["access-control-allow-origin"], "*");
    let doc: Value = response.json().await.expect("JSON");
    // §3.3: `resource` is the identifier the URL was formed from, byte for byte.
    assert_eq!(
        doc,
        json!({
            "resource": RESOURCE,
            "authorization_servers": [ISSUER],
            "scopes_supported": ["mcp:tools"],
            "bearer_methods_supported": ["header"],
            "resource_name": "Example MCP server",
        })
    );
    let head = http(&server, "HEAD", path, &[]).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.text().await.expect("body").is_empty());
    let post = http(&server, "POST", path, &[]).await;
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    // Only the one path: the root form (no resource there), a trailing slash, another
    // spelling, a path under it.
    for other in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp/",
        "/.well-known/oauth-protected-resource/MCP",
        "/.well-known/oauth-protected-resource/mcp/x",
    ] {
        assert_eq!(
            http(&server, "GET", other, &[]).await.status(),
            StatusCode::NOT_FOUND,
            "{other}"
        );
    }
    // Through the decision the path is public: GET without a token is let through (the
    // proxy routes it here), a POST is not.
    let response = server.check(request("GET", path, &[])).await;
    assert_eq!(grpc_code(&response), 0);
    let response = server.check(request("POST", path, &[])).await;
    assert_eq!(denied_status(&response), Some(401));
}

#[tokio::test]
async fn every_front_end_names_the_metadata_and_holds_tokens_to_the_resource() {
    let (_jwks, key, server) = start_with_key(&extra()).await;
    // No token: the metadata, and the scope to ask for (MCP: "SHOULD include scope").
    let expected_401 =
        format!(r#"Bearer realm="test", scope="mcp:tools", resource_metadata="{METADATA}""#);

    // gRPC ext_authz.
    let response = server.check(request("POST", "/mcp", &[])).await;
    assert_eq!(denied_status(&response), Some(401));
    assert_eq!(denial(&response).0["www-authenticate"], expected_401);
    // HTTP ext_authz and forward-auth: the same header.
    let response = http(&server, "POST", "/ext-authz/mcp", &[]).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&response), expected_401);
    let forwarded = [
        ("x-forwarded-method", "POST"),
        ("x-forwarded-uri", "/mcp"),
        ("x-forwarded-host", "mcp.example.com"),
    ];
    let response = http(&server, "GET", "/forward-auth", &forwarded).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&response), expected_401);

    // A token for this resource with the scope: allowed.
    let good = token(&key, json!(RESOURCE), Some("mcp:tools"));
    assert_eq!(grpc_code(&server.check_token("/mcp", &good).await), 0);
    // The provider's own audience, another resource, a near miss: invalid_token, 401.
    for aud in [
        json!(AUDIENCE),
        json!("https://other.example.com/mcp"),
        json!("https://mcp.example.com/mcp/"),
        json!("https://mcp.example.com"),
    ] {
        let response = server
            .check_token("/mcp", &token(&key, aud.clone(), Some("mcp:tools")))
            .await;
        assert_eq!(denied_status(&response), Some(401), "aud {aud}");
        assert_eq!(
            denial(&response).0["www-authenticate"],
            format!(
                r#"Bearer realm="test", error="invalid_token", error_description="invalid audience", resource_metadata="{METADATA}""#
            )
        );
    }
    // The resource's token without the scope: 403 naming what is needed (MCP's step-up).
    let narrow = token(&key, json!(RESOURCE), Some("profile"));
    let response = server.check_token("/mcp", &narrow).await;
    assert_eq!(denied_status(&response), Some(403));
    assert_eq!(
        denial(&response).0["www-authenticate"],
        format!(
            r#"Bearer realm="test", error="insufficient_scope", error_description="token lacks the claims this route requires", scope="mcp:tools", resource_metadata="{METADATA}""#
        )
    );
    // Routes of no resource are as before: no metadata named.
    let response = server.check(request("GET", "/api/orders", &[])).await;
    assert_eq!(
        denial(&response).0["www-authenticate"],
        r#"Bearer realm="test""#
    );
}

#[test]
fn what_the_metadata_says_of_tokens_must_be_true_of_the_providers() {
    let base = config_yaml("https://issuer.test/jwks", "");
    for (extra, field) in [
        (
            format!(
                "resources:\n  - {{name: mcp, resource: '{RESOURCE}', dpop_bound_access_tokens_required: true}}\n"
            ),
            "resources[0].dpop_bound_access_tokens_required",
        ),
        (
            format!(
                "resources:\n  - {{name: mcp, resource: '{RESOURCE}', tls_client_certificate_bound_access_tokens: true}}\n"
            ),
            "resources[0].tls_client_certificate_bound_access_tokens",
        ),
        (
            format!(
                "resources:\n  - {{name: mcp, resource: '{RESOURCE}'}}\nhttp:\n  ext_authz_prefix: /.well-known/oauth-protected-resource/x\n"
            ),
            "http.ext_authz_prefix",
        ),
        (
            format!(
                "resources:\n  - {{name: mcp, resource: '{RESOURCE}'}}\nhttp:\n  ext_authz_prefix: /.well-known\n"
            ),
            "http.ext_authz_prefix",
        ),
        (
            // A provider the resource's rule takes (by naming none) without DPoP.
            format!(
                "resources:\n  - {{name: mcp, resource: '{RESOURCE}', dpop_bound_access_tokens_required: true, authorization_servers: ['{ISSUER}']}}\nrules:\n  - {{resource: mcp, access: authenticated}}\n"
            ),
            "resources[0].dpop_bound_access_tokens_required",
        ),
    ] {
        let error = jwt_authz::Config::from_yaml(&format!("{base}{extra}"))
            .expect_err(field)
            .to_string();
        assert!(error.starts_with(field), "{error}");
    }
}
