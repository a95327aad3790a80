//! The in-proxy mode as an Envoy dynamic module (libjwt_authz_module.so, issue 35) in the
//! real Envoy 1.40: held tokens decided in the module, every way of not deciding failing
//! closed (the sidecar down, a panic in a hook, a route that leaves the module out), and a
//! configuration Envoy must refuse when the module is missing, broken or misconfigured.
//! (The differential matrix and the MCP walk run through the module too: e2e_proxies.rs,
//! e2e_mcp.rs.)

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use reqwest::header::HeaderValue;

use crate::support::bins::{envoy_binary, module_library, module_library_with_panic_probe};
use crate::support::envoy::envoy_stat;
use crate::support::stack::{Front, Options, Stack};

const STAT: &str = "dynamicmodulescustom";

fn module_stack(options: Options) -> Stack {
    Stack::start_with(Options {
        front: Front::EnvoyModule,
        ..options
    })
    .expect("Envoy is always available")
}

/// The demo provider without DPoP: the sidecar hands over a token's claims only when they
/// are all later requests need (no proof, certificate or status list to check each time).
fn claims_suffice(config: String) -> String {
    let dpop = "dpop: {mode: optional}";
    assert!(config.contains(dpop), "the demo provider's dpop line");
    config.replace(dpop, "dpop: {mode: off}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_tokens_are_decided_in_the_module() {
    let stack = module_stack(Options {
        status_list: Some("{mode: off}".into()),
        authz_edit: Some(claims_suffice),
        ..Options::default()
    });
    let gw = stack.gateway();
    let bob = gw.login("bob", "bob-password").await;
    for _ in 0..6 {
        let (status, _, me) = gw.get("/api/users/me", Some(&bob), &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["username"], "bob");
    }
    let cached = envoy_stat(
        stack.proxy_admin,
        &format!("{STAT}.jwt_authz_module_decided_cached"),
    )
    .await;
    let callouts = envoy_stat(
        stack.proxy_admin,
        &format!("{STAT}.jwt_authz_module_callouts"),
    )
    .await;
    let verified = envoy_stat(
        stack.proxy_admin,
        &format!("{STAT}.jwt_authz_module_decided_verified"),
    )
    .await;
    // The first requests are asked of the sidecar, or verified in Envoy once its keys are
    // in (both only once its generation is confirmed); the rest are decided in Envoy from
    // the claims held.
    assert!(
        cached >= 3,
        "held: {cached}, verified {verified}, callouts {callouts}"
    );
    assert_eq!(cached + verified + callouts, 6);
    // The sidecar saw only the callouts.
    let sidecar = crate::support::admin_metric(
        stack.authz_admin,
        "jwt_authz_checks_total",
        &[("front_end", "in_proxy")],
    )
    .await;
    assert_eq!(sidecar, callouts);
    // No token: decided in the module with the sidecar's challenge.
    let (status, headers, _) = gw.get("/api/orders", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get("www-authenticate").is_some());

    // Bytes that are not UTF-8 (Envoy passes 0x80-0xFF through in values): in a header the
    // decision does not read they change nothing (still decided from the claims held); in
    // the token they make it another token (read with U+FFFD in their place), refused with
    // a 401, never a 5xx or bob's identity.
    let client = reqwest::Client::new();
    let url = format!("{}/api/users/me", stack.base);
    let admin = stack.proxy_admin;
    let held = move || async move {
        envoy_stat(admin, &format!("{STAT}.jwt_authz_module_decided_cached")).await
    };
    let before = held().await;
    let latin1 = HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is a header value");
    let response = client
        .get(&url)
        .bearer_auth(&bob)
        .header("x-note", latin1)
        .send()
        .await
        .expect("Envoy answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(held().await, before + 1);
    for forged in [format!("Bearer {bob}\u{ff}"), format!("Bearer {bob}")] {
        // The first in Latin-1 (one 0xFF byte after the token), the second with one
        // byte of the token's signature made 0xE9.
        let mut bytes: Vec<u8> = forged.chars().map(|c| c as u32 as u8).collect();
        if !forged.ends_with('\u{ff}') {
            let last = bytes.len() - 2;
            bytes[last] = 0xe9;
        }
        let value = HeaderValue::from_bytes(&bytes).expect("obs-text is a header value");
        let response = client
            .get(&url)
            .header("authorization", value)
            .send()
            .await
            .expect("Envoy answers");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{forged:.20}");
    }
}

/// A token the module has never seen is verified in Envoy with the keys the sidecar
/// published (once its first poll and key fetch are done): no callout at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_not_held_are_verified_in_the_module() {
    let stack = module_stack(Options {
        status_list: Some("{mode: off}".into()),
        authz_edit: Some(claims_suffice),
        ..Options::default()
    });
    let gw = stack.gateway();
    let admin = stack.proxy_admin;
    let stat = move |name: &'static str| async move {
        envoy_stat(admin, &format!("{STAT}.jwt_authz_module_{name}")).await
    };
    // Until the keys are in: a fresh token each time, until one is verified in Envoy.
    let started = std::time::Instant::now();
    loop {
        let token = gw.login("bob", "bob-password").await;
        let (status, _, _) = gw.get("/api/users/me", Some(&token), &[]).await;
        assert_eq!(status, StatusCode::OK);
        if stat("decided_verified").await > 0 {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 10,
            "never verified in the module"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let callouts = stat("callouts").await;
    let verified = stat("decided_verified").await;
    for user in ["alice", "bob", "alice"] {
        let token = gw.login(user, &format!("{user}-password")).await;
        let (status, _, me) = gw.get("/api/users/me", Some(&token), &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["username"], user);
        // Its next request: held.
        let (status, _, _) = gw.get("/api/users/me", Some(&token), &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        stat("callouts").await,
        callouts,
        "no callout for fresh tokens"
    );
    assert_eq!(stat("decided_verified").await, verified + 3);
    // A route the token does not satisfy is refused in Envoy with the sidecar's denial.
    let bob = gw.login("bob", "bob-password").await;
    let (status, headers, _) = gw.get("/api/users", Some(&bob), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get("www-authenticate").is_some());
    assert_eq!(stat("callouts").await, callouts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sidecar_down_a_token_not_held_gets_503() {
    let mut stack = module_stack(Options::default());
    let gw = stack.gateway();
    let bob = gw.login("bob", "bob-password").await;
    stack.terminate("jwt-authz");
    let (status, _, _) = gw.get("/api/orders", Some(&bob), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        envoy_stat(
            stack.proxy_admin,
            &format!("{STAT}.jwt_authz_module_callout_failures")
        )
        .await
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_hook_is_caught_counted_and_answered_503() {
    let stack = module_stack(Options {
        module: Some(module_library_with_panic_probe()),
        ..Options::default()
    });
    let gw = stack.gateway();
    let bob = gw.login("bob", "bob-password").await;
    let (status, _, _) = gw
        .get(
            "/api/orders",
            Some(&bob),
            &[("x-jwt-authz-panic-probe", "1")],
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        envoy_stat(
            stack.proxy_admin,
            &format!("{STAT}.jwt_authz_module_panics")
        )
        .await,
        1
    );
    // Envoy and the module go on: the next request is decided as ever.
    let (status, _, _) = gw.get("/api/orders", Some(&bob), &[]).await;
    assert_eq!(status, StatusCode::OK);
}

/// The orders route with the module turned off for it, as a hand-edited configuration
/// might: the guard after the module still refuses what the module never saw.
fn orders_without_the_module(config: String) -> String {
    let route = "              - match: {prefix: \"/api/orders\"}\n                route: {cluster: orders}\n";
    assert!(config.contains(route), "the orders route");
    config.replacen(
        route,
        &format!(
            "{route}                typed_per_filter_config:\n                  envoy.filters.http.dynamic_modules:\n                    \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n                    disabled: true\n"
        ),
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_leaves_the_module_out_is_refused_by_the_guard() {
    let stack = module_stack(Options {
        envoy_edit: Some(orders_without_the_module),
        ..Options::default()
    });
    let gw = stack.gateway();
    let bob = gw.login("bob", "bob-password").await;
    let refused = || async {
        envoy_stat(
            stack.proxy_admin,
            &format!("{STAT}.jwt_authz_module_guard_refused"),
        )
        .await
    };
    let before = refused().await;
    // With a valid token, and with none: the module never ran, nothing passes.
    for token in [Some(bob.as_str()), None] {
        let (status, _, body) = gw.get("/api/orders", token, &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"], "insufficient_scope", "{body}");
    }
    // Elsewhere the module decides as ever, and the guard lets its requests through.
    let (status, _, _) = gw.get("/api/users/me", Some(&bob), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(refused().await, before + 2, "counted, only the two refused");
}

/// `envoy --mode validate` on the module template with `module` as the library path and
/// `config` as the filter configuration: whether Envoy accepts it, and its output.
fn validate(dir: &Path, module: &Path, config: &str) -> (bool, String) {
    validate_edited(dir, module, config, |t| t)
}

/// [`validate`] of the template after `edit`.
fn validate_edited(
    dir: &Path,
    module: &Path,
    config: &str,
    edit: impl Fn(String) -> String,
) -> (bool, String) {
    let template = edit(
        std::fs::read_to_string(
            Path::new(crate::support::bins::WORKSPACE).join("envoy/envoy-module.yaml.tmpl"),
        )
        .expect("template"),
    );
    let vars: Vec<(&str, String)> = [
        ("ENVOY_LISTEN_ADDRESS", "127.0.0.1"),
        ("ENVOY_LISTEN_PORT", "1"),
        ("ENVOY_ADMIN_PORT", "1"),
        ("JWT_AUTHZ_HOST", "127.0.0.1"),
        ("JWT_AUTHZ_HTTP_PORT", "1"),
        ("ISSUER_HOST", "127.0.0.1"),
        ("ISSUER_PORT", "1"),
        ("USERS_HOST", "127.0.0.1"),
        ("USERS_PORT", "1"),
        ("ORDERS_HOST", "127.0.0.1"),
        ("ORDERS_PORT", "1"),
        ("FEED_HOST", "127.0.0.1"),
        ("FEED_PORT", "1"),
        ("MCP_HOST", "127.0.0.1"),
        ("MCP_PORT", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .chain([
        ("JWT_AUTHZ_MODULE", module.display().to_string()),
        (
            "JWT_AUTHZ_CONFIG_JSON",
            serde_json::to_string(config).expect("a string"),
        ),
    ])
    .collect();
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, crate::support::stack::render(&template, &vars)).expect("write");
    let out = Command::new(envoy_binary())
        .arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("envoy runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn envoy_refuses_a_configuration_whose_module_is_missing_broken_or_misconfigured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = "providers:\n  - {name: p, issuer: 'https://issuer.test', audiences: [api], jwks: {uri: 'https://issuer.test/jwks'}}\nin_proxy: {cluster: jwt_authz_http}\n";
    let module = module_library();
    // The control: the module and a good configuration are accepted.
    let (ok, out) = validate(dir.path(), &module, good);
    assert!(ok, "{out}");
    // No library at the path, a file that is no library, a configuration the sidecar would
    // refuse: Envoy's configuration fails (no listener without the module).
    let not_elf = dir.path().join("libnot.so");
    std::fs::write(&not_elf, "not a shared library").expect("write");
    for (why, module, config) in [
        ("missing", dir.path().join("libnone.so"), good),
        ("not a library", not_elf, good),
        (
            "invalid configuration",
            module.clone(),
            "providers: [{name: p}]",
        ),
        ("not YAML", module.clone(), "rules: ["),
    ] {
        let (ok, out) = validate(dir.path(), &module, config);
        assert!(!ok, "{why}: accepted\n{out}");
    }
    // The guard given a configuration (one meant for the module): refused too.
    let guard = "              filter_name: jwt_authz_guard\n";
    let (ok, out) = validate_edited(dir.path(), &module, good, |template| {
        assert!(template.contains(guard), "the template's guard");
        template.replace(
            guard,
            &format!(
                "{guard}              filter_config:\n                \"@type\": type.googleapis.com/google.protobuf.StringValue\n                value: ${{JWT_AUTHZ_CONFIG_JSON}}\n"
            ),
        )
    });
    assert!(!ok, "a guard with a configuration: accepted\n{out}");
    assert!(out.contains("takes no filter_config"), "{out}");
}

#[test]
fn the_module_binds_envoys_callbacks_at_load() {
    // Immediate binding: an Envoy without one of the callbacks the module calls refuses to
    // load it, rather than aborting at the first request that reaches that callback.
    let out = Command::new("readelf")
        .arg("-d")
        .arg(module_library())
        .output()
        .expect("readelf (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("BIND_NOW") || text.contains("Flags: NOW"),
        "{text}"
    );
}

/// [`claims_suffice`], with the identity asked for as dynamic metadata.
fn claims_as_metadata(config: String) -> String {
    let config = claims_suffice(config);
    assert!(
        !config.contains("\nidentity:"),
        "no identity section to merge with"
    );
    config + "identity: {dynamic_metadata: true}\n"
}

/// The users route copies the module's dynamic metadata into headers (Envoy's formatter,
/// after every filter has run) for the upstream to echo.
fn metadata_into_headers(config: String) -> String {
    let route = "              - match: {prefix: \"/api/users\"}\n                route: {cluster: users}\n";
    assert!(config.contains(route), "the users route");
    let add = |name: &str, path: &str| {
        format!(
            "                - header: {{key: {name}, value: \"%DYNAMIC_METADATA({path})%\"}}\n                  append_action: OVERWRITE_IF_EXISTS_OR_ADD\n"
        )
    };
    config.replacen(
        route,
        &format!(
            "{route}                request_headers_to_add:\n{}{}{}",
            add("x-metadata-provider", "jwt_authz:provider"),
            add("x-metadata-sub", "jwt_authz:claims:sub"),
            add("x-metadata-iss", "jwt_authz:claims:iss"),
        ),
        1,
    )
}

/// `identity.dynamic_metadata: true`: every request the module lets through with a token
/// carries `{provider, claims}` under `jwt_authz`, whether the sidecar answered it, or it
/// was verified or held in Envoy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_is_set_as_dynamic_metadata_when_asked_for() {
    let echo = crate::support::envoy::echo_upstream().await;
    let stack = module_stack(Options {
        status_list: Some("{mode: off}".into()),
        authz_edit: Some(claims_as_metadata),
        envoy_edit: Some(metadata_into_headers),
        services_upstream: Some(echo),
        ..Options::default()
    });
    let gw = stack.gateway();
    let admin = stack.proxy_admin;
    let stat = move |name: &'static str| async move {
        envoy_stat(admin, &format!("{STAT}.jwt_authz_module_{name}")).await
    };
    let header = |echoed: &serde_json::Value, name: &str| {
        echoed["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|pair| pair[0] == name)
            .map(|pair| pair[1].as_str().unwrap_or_default().to_owned())
    };
    let mut requests = 0;
    let started = std::time::Instant::now();
    // Fresh tokens until one is verified in Envoy, then that one again (held).
    loop {
        let token = gw.login("bob", "bob-password").await;
        for _ in 0..2 {
            let (status, _, echoed) = gw.get("/api/users/me", Some(&token), &[]).await;
            requests += 1;
            assert_eq!(status, StatusCode::OK, "{echoed}");
            let user = echoed["user"].as_str().expect("x-user-id").to_owned();
            assert_eq!(header(&echoed, "x-metadata-sub"), Some(user), "{echoed}");
            assert_eq!(
                header(&echoed, "x-metadata-provider").as_deref(),
                Some("demo-issuer")
            );
            assert!(
                header(&echoed, "x-metadata-iss").is_some_and(|iss| iss.starts_with("http")),
                "{echoed}"
            );
        }
        if stat("decided_verified").await > 0 && stat("decided_cached").await > 0 {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 10,
            "never verified and held in the module"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let decided =
        stat("callouts").await + stat("decided_verified").await + stat("decided_cached").await;
    assert_eq!(decided, requests);
}
