//! Resource indicators (RFC 8707) and scopes at login and at the OAuth token endpoint
//! (RFC 6749 §3.2, §4.3), what tokens and introspection then say, the RFC 8414 metadata,
//! and the start refused for a bad `--resource` or `--scope`; over real sockets. Tokens are
//! checked with aws-lc against the served JWKS, DPoP proofs written here from RFC 9449.

mod support;

use aws_lc_rs::signature;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::{Client, Dpop, Running, form, start_with_clients, urlencode};

const ISSUER: &str = "http://issuer.test";
const MCP: &str = "http://127.0.0.1:8080/mcp";
const SECRET: &str = "introspection-secret-0123";

/// The issuer at `ISSUER` issuing for the MCP resource, `mcp:tools` to everyone and
/// `mcp:admin` to admins (alice), with a client allowed to introspect.
async fn issuer(extra: &[&str]) -> Running {
    let mut args = vec![
        "--issuer-url",
        ISSUER,
        "--resource",
        MCP,
        "--resource",
        "https://other.example/api",
        "--scope",
        "mcp:tools",
        "--scope",
        "mcp:admin=admin",
    ];
    args.extend_from_slice(extra);
    start_with_clients(
        &args,
        &[Client {
            id: "sidecar",
            secret: Some(SECRET),
            jwks: None,
        }],
    )
    .await
}

async fn login(issuer: &Running, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/auth/login", issuer.base))
        .json(&body)
        .send()
        .await
        .expect("login");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn token_raw(issuer: &Running, body: String, dpop: Option<String>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/auth/token", issuer.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(proof) = dpop {
        request = request.header("dpop", proof);
    }
    request.send().await.expect("token request")
}

async fn token_request(issuer: &Running, params: &[(&str, &str)]) -> (u16, Value) {
    let response = token_raw(issuer, form(params), None).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Verifies an RS256 JWT against the served JWKS with aws-lc; its claims.
async fn claims(issuer: &Running, token: &str) -> Value {
    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", issuer.base))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).expect("base64url");
    let header: Value = serde_json::from_slice(&decode(parts[0])).expect("header");
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("kid published");
    signature::RsaPublicKeyComponents {
        n: decode(jwk["n"].as_str().expect("n")),
        e: decode(jwk["e"].as_str().expect("e")),
    }
    .verify(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &decode(parts[2]),
    )
    .expect("signature verifies");
    serde_json::from_slice(&decode(parts[1])).expect("claims")
}

async fn introspect(issuer: &Running, token: &str) -> Value {
    reqwest::Client::new()
        .post(format!("{}/auth/introspect", issuer.base))
        .basic_auth("sidecar", Some(SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", token)]))
        .send()
        .await
        .expect("introspect")
        .json()
        .await
        .expect("json")
}

fn credentials(user: &str) -> Value {
    json!({"username": user, "password": format!("{user}-password")})
}

fn with(mut body: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn a_login_for_a_resource_gets_it_as_aud_and_the_scopes_its_role_allows() {
    let issuer = issuer(&[]).await;
    let ask = json!({"resource": MCP, "scope": "mcp:tools mcp:admin"});
    let (status, body) = login(&issuer, with(credentials("alice"), ask.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "mcp:tools mcp:admin");
    let alice = claims(&issuer, body["accessToken"].as_str().expect("token")).await;
    assert_eq!(alice["aud"], MCP);
    assert_eq!(alice["scope"], "mcp:tools mcp:admin");
    assert_eq!(alice["iss"], ISSUER);

    // bob (role user) asking for both gets the one his role has, and the response says so
    // (RFC 6749 §5.1).
    let (status, body) = login(&issuer, with(credentials("bob"), ask)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "mcp:tools");
    let bob = claims(&issuer, body["accessToken"].as_str().expect("token")).await;
    assert_eq!(
        (&bob["aud"], &bob["scope"]),
        (&json!(MCP), &json!("mcp:tools"))
    );

    // A resource given as a one-element array is that resource.
    let (status, body) = login(
        &issuer,
        with(credentials("bob"), json!({"resource": [MCP]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("scope").is_none(), "{body}");
    let claims_ = claims(&issuer, body["accessToken"].as_str().expect("token")).await;
    assert_eq!(claims_["aud"], MCP);
    assert!(
        claims_.get("scope").is_none(),
        "no scope asked, none granted"
    );

    // Without a resource: the default audience, as before.
    let (_, body) = login(&issuer, credentials("bob")).await;
    let plain = claims(&issuer, body["accessToken"].as_str().expect("token")).await;
    assert_eq!(plain["aud"], "api-gateway");
    assert!(plain.get("scope").is_none());
}

#[tokio::test]
async fn unknown_or_several_resources_and_ungrantable_scopes_are_refused() {
    let issuer = issuer(&[]).await;
    let long_scope = vec!["mcp:tools"; 200].join(" ");
    for (who, ask, code) in [
        (
            "bob",
            json!({"resource": "http://127.0.0.1:8080/other"}),
            "invalid_target",
        ),
        (
            "bob",
            json!({"resource": format!("{MCP}/")}),
            "invalid_target",
        ),
        (
            "bob",
            json!({"resource": "http://127.0.0.1:8080/mcp#x"}),
            "invalid_target",
        ),
        ("bob", json!({"resource": ""}), "invalid_target"),
        (
            "bob",
            json!({"resource": [MCP, "https://other.example/api"]}),
            "invalid_target",
        ),
        ("bob", json!({"resource": [MCP, MCP]}), "invalid_target"),
        (
            "bob",
            json!({"resource": "x".repeat(3000)}),
            "invalid_target",
        ),
        (
            "bob",
            json!({"resource": MCP, "scope": "mcp:admin"}),
            "invalid_scope",
        ),
        (
            "alice",
            json!({"scope": "mcp:tools mcp:unknown"}),
            "invalid_scope",
        ),
        (
            "alice",
            json!({"scope": "mcp:tools  mcp:admin"}),
            "invalid_scope",
        ),
        ("alice", json!({"scope": "mcp:\"tools\""}), "invalid_scope"),
        ("alice", json!({"scope": long_scope}), "invalid_scope"),
    ] {
        let (status, body) = login(&issuer, with(credentials(who), ask.clone())).await;
        assert_eq!(status, 400, "{ask}: {body}");
        assert_eq!(body["error"], code, "{ask}: {body}");
        assert!(body.get("accessToken").is_none());
    }
    // Wrong types are malformed requests.
    for ask in [json!({"resource": 1}), json!({"scope": ["mcp:tools"]})] {
        let (status, body) = login(&issuer, with(credentials("bob"), ask.clone())).await;
        assert_eq!(
            (status, &body["error"]),
            (400, &json!("invalid_request")),
            "{ask}"
        );
    }
    // No password, no answer about resources or scopes: an unknown one is just bad
    // credentials. Only the shape (several resources, sizes, syntax) is judged first.
    let wrong = json!({"username": "bob", "password": "wrong-password"});
    for ask in [
        json!({"resource": "https://unknown.example/x"}),
        json!({"resource": MCP, "scope": "mcp:admin"}),
        json!({"scope": "nothing:here"}),
    ] {
        let (status, body) = login(&issuer, with(wrong.clone(), ask.clone())).await;
        assert_eq!(
            (status, &body["error"]),
            (401, &json!("invalid_credentials")),
            "{ask}"
        );
    }
    let (status, body) = login(
        &issuer,
        with(
            wrong,
            json!({"resource": [MCP, "https://unknown.example/x"]}),
        ),
    )
    .await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_target")));
}

#[tokio::test]
async fn the_token_endpoint_issues_for_a_resource_per_rfc_6749() {
    let issuer = issuer(&[]).await;
    let response = token_raw(
        &issuer,
        form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-password"),
            ("resource", MCP),
            ("scope", "mcp:admin mcp:tools"),
            ("client_id", "some-public-client"),
        ]),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "mcp:admin mcp:tools");
    let token = body["access_token"].as_str().expect("access_token");
    let claims = claims(&issuer, token).await;
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["scope"], "mcp:admin mcp:tools");
    assert_eq!(claims["username"], "alice");
    assert_eq!(claims["iss"], ISSUER);
    // The issuer's own token for one of its resources is introspected and logged out.
    let answer = introspect(&issuer, token).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(
        (&answer["aud"], &answer["scope"]),
        (&json!(MCP), &json!("mcp:admin mcp:tools"))
    );
    let logout = reqwest::Client::new()
        .post(format!("{}/auth/logout", issuer.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), 204);
    assert_eq!(introspect(&issuer, token).await, json!({"active": false}));

    // bob: the subset, named in the response.
    let (status, body) = token_request(
        &issuer,
        &[
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", "bob-password"),
            ("scope", "mcp:admin mcp:tools"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "mcp:tools");
}

#[tokio::test]
async fn the_token_endpoint_refuses_per_rfc_6749_section_5_2() {
    let issuer = issuer(&[]).await;
    let good = [
        ("grant_type", "password"),
        ("username", "bob"),
        ("password", "bob-password"),
    ];
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("no grant_type", form(&good[1..]), 400, "invalid_request"),
        (
            "empty grant_type",
            format!("grant_type=&{}", form(&good[1..])),
            400,
            "invalid_request",
        ),
        (
            "authorization_code",
            form(&[("grant_type", "authorization_code"), ("code", "x")]),
            400,
            "unsupported_grant_type",
        ),
        (
            "client_credentials",
            form(&[("grant_type", "client_credentials")]),
            400,
            "unsupported_grant_type",
        ),
        ("no password", form(&good[..2]), 400, "invalid_request"),
        (
            "bad password",
            form(&[good[0], good[1], ("password", "nope-nope")]),
            400,
            "invalid_grant",
        ),
        (
            "unknown user",
            form(&[good[0], ("username", "mallory"), ("password", "nope-nope")]),
            400,
            "invalid_grant",
        ),
        (
            "repeated username",
            format!("{}&username=alice", form(&good)),
            400,
            "invalid_request",
        ),
        (
            "repeated grant_type",
            format!("{}&grant_type=password", form(&good)),
            400,
            "invalid_request",
        ),
        (
            "repeated resource",
            format!(
                "{}&resource={}&resource={}",
                form(&good),
                urlencode(MCP),
                urlencode(MCP)
            ),
            400,
            "invalid_target",
        ),
        (
            "unknown resource",
            form(&[
                good[0],
                good[1],
                good[2],
                ("resource", "https://x.example/"),
            ]),
            400,
            "invalid_target",
        ),
        (
            "unknown scope",
            form(&[good[0], good[1], good[2], ("scope", "mcp:tools admin")]),
            400,
            "invalid_scope",
        ),
        (
            "role lacks the scope",
            form(&[good[0], good[1], good[2], ("scope", "mcp:admin")]),
            400,
            "invalid_scope",
        ),
        (
            "malformed escape",
            format!("{}&x=%zz", form(&good)),
            400,
            "invalid_request",
        ),
        (
            "client_secret",
            form(&[
                good[0],
                good[1],
                good[2],
                ("client_id", "sidecar"),
                ("client_secret", SECRET),
            ]),
            401,
            "invalid_client",
        ),
    ];
    for (case, body, status, code) in cases {
        let response = token_raw(&issuer, body, None).await;
        assert_eq!(response.status(), status, "{case}");
        assert_eq!(response.headers()["cache-control"], "no-store", "{case}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["error"], code, "{case}: {answer}");
        assert!(answer["error_description"].is_string(), "{case}");
        assert!(answer.get("access_token").is_none(), "{case}");
    }

    let client = reqwest::Client::new();
    let url = format!("{}/auth/token", issuer.base);
    // Basic client authentication: 401 naming the scheme.
    let response = client
        .post(&url)
        .basic_auth("sidecar", Some(SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&good))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Basic realm=\"issuer\""
    );
    // Wrong content type, oversized body.
    let response = client
        .post(&url)
        .json(&json!({"grant_type": "password", "username": "bob", "password": "bob-password"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 415);
    let big = format!("{}&padding={}", form(&good), "x".repeat(9 * 1024));
    let response = token_raw(&issuer, big, None).await;
    assert_eq!(response.status(), 413);
    // After all that, the right request still works.
    assert_eq!(token_request(&issuer, &good).await.0, 200);
}

#[tokio::test]
async fn a_bad_password_at_the_token_endpoint_counts_like_a_failed_login() {
    let issuer = issuer(&["--login-max-failures-per-user", "2"]).await;
    for _ in 0..2 {
        let (status, body) = token_request(
            &issuer,
            &[
                ("grant_type", "password"),
                ("username", "bob"),
                ("password", "guess-guess"),
            ],
        )
        .await;
        assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
    }
    // Both endpoints now refuse bob, the right password included.
    let (status, body) = login(&issuer, credentials("bob")).await;
    assert_eq!((status, &body["error"]), (429, &json!("too_many_attempts")));
    let response = token_raw(
        &issuer,
        form(&[
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", "bob-password"),
        ]),
        None,
    )
    .await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_some());
    // alice is not affected.
    assert_eq!(login(&issuer, credentials("alice")).await.0, 200);
}

#[tokio::test]
async fn dpop_bound_tokens_for_a_resource_at_both_endpoints() {
    let issuer = issuer(&[]).await;
    let dpop = Dpop::new();
    let params = [
        ("grant_type", "password"),
        ("username", "bob"),
        ("password", "bob-password"),
        ("resource", MCP),
        ("scope", "mcp:tools"),
    ];
    let response = token_raw(
        &issuer,
        form(&params),
        Some(dpop.proof(&format!("{ISSUER}/auth/token"))),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "DPoP");
    let claims_ = claims(&issuer, body["access_token"].as_str().expect("token")).await;
    assert_eq!(claims_["cnf"], json!({"jkt": dpop.jkt()}));
    assert_eq!(
        (&claims_["aud"], &claims_["scope"]),
        (&json!(MCP), &json!("mcp:tools"))
    );
    // A proof for the login endpoint is not one for the token endpoint (htu, RFC 9449 §4.3).
    let response = token_raw(
        &issuer,
        form(&params),
        Some(dpop.proof(&format!("{ISSUER}/auth/login"))),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "invalid_dpop_proof");

    let response = reqwest::Client::new()
        .post(format!("{}/auth/login", issuer.base))
        .header("dpop", dpop.proof(&format!("{ISSUER}/auth/login")))
        .json(&with(
            credentials("bob"),
            json!({"resource": MCP, "scope": "mcp:tools"}),
        ))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["tokenType"], "DPoP");
    let claims_ = claims(&issuer, body["accessToken"].as_str().expect("token")).await;
    assert_eq!(claims_["cnf"], json!({"jkt": dpop.jkt()}));
    assert_eq!(claims_["aud"], MCP);
}

#[tokio::test]
async fn an_opaque_token_for_a_resource_is_introspected_with_its_aud_and_scope() {
    let issuer = issuer(&[]).await;
    let (status, body) = login(
        &issuer,
        with(
            credentials("alice"),
            json!({"token_format": "opaque", "resource": MCP, "scope": "mcp:admin"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "mcp:admin");
    let answer = introspect(&issuer, body["accessToken"].as_str().expect("token")).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["aud"], MCP);
    assert_eq!(answer["scope"], "mcp:admin");
    assert_eq!(answer["username"], "alice");

    let (_, body) = login(
        &issuer,
        with(credentials("bob"), json!({"token_format": "opaque"})),
    )
    .await;
    let answer = introspect(&issuer, body["accessToken"].as_str().expect("token")).await;
    assert_eq!(answer["aud"], "api-gateway");
    assert!(answer.get("scope").is_none(), "{answer}");
}

async fn get_json(url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = reqwest::get(url).await.expect("get");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn rfc_8414_metadata_describes_this_issuer() {
    let issuer = issuer(&[]).await;
    let (status, headers, doc) = get_json(&format!(
        "{}/.well-known/oauth-authorization-server",
        issuer.base
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "public, max-age=3600");
    assert_eq!(doc["issuer"], ISSUER);
    assert_eq!(doc["token_endpoint"], format!("{ISSUER}/auth/token"));
    assert_eq!(doc["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
    assert_eq!(doc["grant_types_supported"], json!(["password"]));
    assert_eq!(doc["response_types_supported"], json!([]));
    assert_eq!(doc["scopes_supported"], json!(["mcp:tools", "mcp:admin"]));
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!(["none"])
    );
    assert_eq!(
        doc["introspection_endpoint"],
        format!("{ISSUER}/auth/introspect")
    );
    assert_eq!(
        doc["introspection_endpoint_auth_methods_supported"],
        json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt"
        ])
    );
    assert!(
        doc["dpop_signing_alg_values_supported"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("ES256")))
    );
    for absent in [
        "authorization_endpoint",
        "revocation_endpoint",
        "registration_endpoint",
    ] {
        assert!(doc.get(absent).is_none(), "{absent}");
    }
    // No other path answers for this issuer (it has none).
    let (status, _, _) = get_json(&format!(
        "{}/.well-known/oauth-authorization-server/tenant",
        issuer.base
    ))
    .await;
    assert_eq!(status, 404);
    // OIDC discovery names the token endpoint and the scopes too.
    let (_, _, oidc) = get_json(&format!("{}/.well-known/openid-configuration", issuer.base)).await;
    assert_eq!(oidc["token_endpoint"], format!("{ISSUER}/auth/token"));
    assert_eq!(oidc["scopes_supported"], json!(["mcp:tools", "mcp:admin"]));
}

#[tokio::test]
async fn rfc_8414_metadata_of_an_issuer_with_a_path_and_without_clients() {
    let issuer = support::start(&["--issuer-url", "http://issuer.test/tenant-1"]).await;
    let (status, _, doc) = get_json(&format!(
        "{}/.well-known/oauth-authorization-server/tenant-1",
        issuer.base
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(doc["issuer"], "http://issuer.test/tenant-1");
    assert_eq!(
        doc["token_endpoint"],
        "http://issuer.test/tenant-1/auth/token"
    );
    assert!(doc.get("scopes_supported").is_none(), "no scope configured");
    assert!(
        doc.get("introspection_endpoint").is_none(),
        "no client configured"
    );
    for other in ["tenant-2", "tenant-1/x", "tenant-1/", "Tenant-1"] {
        let (status, _, _) = get_json(&format!(
            "{}/.well-known/oauth-authorization-server/{other}",
            issuer.base
        ))
        .await;
        assert_eq!(status, 404, "{other}");
    }
}

#[test]
fn a_bad_resource_or_scope_fails_the_start_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_issuer"))
            .args(args)
            .envs(env.iter().copied())
            .env("ISSUER_DB", dir.path().join("users.db"))
            .env("ISSUER_KEY_DIR", dir.path().join("keys"))
            .env("ISSUER_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .output()
            .expect("run");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    for (args, env, flag) in [
        (
            vec!["--resource", "http://mcp.example.com/mcp"],
            vec![],
            "--resource",
        ),
        (
            vec!["--resource", "https://mcp.example.com/mcp#top"],
            vec![],
            "--resource",
        ),
        (
            vec!["--resource", "https://u:p@mcp.example.com/"],
            vec![],
            "--resource",
        ),
        (vec!["--resource", "mcp"], vec![], "--resource"),
        (
            vec![],
            vec![("ISSUER_RESOURCES", "https://a.example/x,ftp://b")],
            "--resource",
        ),
        (vec!["--scope", "mcp tools"], vec![], "--scope"),
        (vec!["--scope", "mcp:admin="], vec![], "--scope"),
        (
            vec![],
            vec![("ISSUER_SCOPES", "mcp:tools;bad\"scope")],
            "--scope",
        ),
        (
            vec!["--resource", MCP, "--resource", MCP],
            vec![],
            "--resource",
        ),
        (
            vec!["--scope", "a", "--scope", "a=admin"],
            vec![],
            "--scope",
        ),
    ] {
        let (ok, stderr) = run(&args, &env);
        assert!(!ok, "{args:?} {env:?} started");
        assert!(stderr.contains(flag), "{args:?} {env:?}: {stderr}");
    }
}
