//! Rules match the canonical path, whatever the proxy in front did: the dot-segment,
//! double-slash and escaped forms that used to slip past a rule, through the real gRPC
//! server. (tests/e2e_raw_paths.rs sends the same through a real Envoy that normalises nothing.)

use crate::support::*;

fn user_token(key: &TestKey) -> String {
    key.token(&claims("u1"))
}

/// 400 `invalid_request` with the challenge naming it, before any rule ran.
fn assert_ambiguous(
    response: &envoy_types::pb::envoy::service::auth::v3::CheckResponse,
    what: &str,
) {
    assert_eq!(denied_status(response), Some(400), "{what}: {response:?}");
    let (headers, body) = denial(response);
    assert_eq!(body["error"], "invalid_request", "{what}");
    assert_eq!(
        body["error_description"], "ambiguous request path",
        "{what}"
    );
    assert!(
        headers["www-authenticate"].contains("error=\"invalid_request\""),
        "{what}: {headers:?}"
    );
}

#[tokio::test]
async fn a_public_prefix_does_not_open_what_lies_above_it() {
    let (_jwks, _key, server) = start_with_key(PATH_RULES).await;
    for path in [
        "/public/../api/users",
        "/public/%2e%2e/api/users",
        "/public/.%2E/api/users",
        "/public/x/../../api/orders",
        "/public/./../private",
    ] {
        let response = server.check(request("GET", path, &[])).await;
        assert_eq!(denied_status(&response), Some(401), "{path}: {response:?}");
        assert_eq!(
            denial(&response).1["error_description"],
            "bearer token required"
        );
    }
    for path in [
        "/public/%2F../api/users",
        "/public/%2f..%2fapi/users",
        "/public/..%5Capi/users",
        "/public\\..\\api/users",
        "/public/..;/api/users",
        "/public;x/../api/users",
        "/public/x#/../../api/users",
        "/api//./../public/x",
        "/public/x%00",
        "/public/%C0%AE%C0%AE/api",
        "/public/%zz",
        "/public/../../..",
        "/public//../api",
        "public/x",
    ] {
        assert_ambiguous(&server.check(request("GET", path, &[])).await, path);
    }
}

#[tokio::test]
async fn a_plain_user_cannot_reach_an_admin_route_by_spelling_it_differently() {
    let (_jwks, key, server) = start_with_key(PATH_RULES).await;
    let token = user_token(&key);
    for path in [
        "/api/users",
        "//api/users",
        "/api//users",
        "/api///users?x=1",
        "/api/%75sers",
        "/API/../api/users",
        "/api/./users",
    ] {
        let response = server.check_token(path, &token).await;
        assert_eq!(denied_status(&response), Some(403), "{path}: {response:?}");
    }
    let mut admin = claims("a1");
    admin["role"] = "admin".into();
    let response = server.check_token("/api//users", &key.token(&admin)).await;
    allowed(&response);
}

#[tokio::test]
async fn ordinary_paths_pass_unchanged() {
    let (_jwks, key, server) = start_with_key(PATH_RULES).await;
    for path in [
        "/public/a%20b",
        "/public/~user/caf%C3%A9",
        "/public/caf%c3%a9?q=%2F..%2F",
        "/public/a:b@c,2+3=!",
        "/public/",
    ] {
        let response = server.check(request("GET", path, &[])).await;
        allowed(&response);
    }
    let token = user_token(&key);
    for path in ["/data/%7Euser", "/data/%E2%9C%93/x.json", "/data/a%2Bb"] {
        allowed(&server.check_token(path, &token).await);
    }
}

#[tokio::test]
async fn over_long_paths_are_414() {
    let (_jwks, key, server) = start_with_key("paths: {max_bytes: 64}\n").await;
    allowed(
        &server
            .check_token(&format!("/{}", "a".repeat(63)), &user_token(&key))
            .await,
    );
    let response = server
        .check_token(&format!("/a?{}", "b".repeat(62)), &user_token(&key))
        .await;
    assert_eq!(denied_status(&response), Some(414), "{response:?}");
    assert_eq!(denial(&response).1["error"], "invalid_request");
}

#[tokio::test]
async fn escaped_slashes_can_be_decoded_or_kept() {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let decode = TestServer::start_ready(&config_yaml(
        &jwks.url(),
        &format!("paths: {{escaped_slashes: decode}}\n{PATH_RULES}"),
    ))
    .await;
    // Decoded, %2F separates segments: this is /api/users, which needs a token.
    let response = decode
        .check(request("GET", "/public%2F..%2Fapi%2Fusers", &[]))
        .await;
    assert_eq!(denied_status(&response), Some(401), "{response:?}");
    let response = decode.check_token("/api%2Fusers", &user_token(&key)).await;
    assert_eq!(denied_status(&response), Some(403), "{response:?}");

    let keep = TestServer::start_ready(&config_yaml(
        &jwks.url(),
        &format!("paths: {{escaped_slashes: keep}}\n{PATH_RULES}"),
    ))
    .await;
    // Kept, it is data inside one segment: /public/<one segment>.
    allowed(
        &keep
            .check(request("GET", "/public/..%2Fapi%2Fusers", &[]))
            .await,
    );
    // And /api%2Fusers is not /api/users.
    allowed(&keep.check_token("/api%2Fusers", &user_token(&key)).await);
    // An escaped backslash is refused in every mode.
    for server in [&decode, &keep] {
        assert_ambiguous(
            &server.check(request("GET", "/public/a%5Cb", &[])).await,
            "%5C",
        );
    }
}

#[tokio::test]
async fn query_token_names_are_read_as_the_application_reads_them() {
    let (_jwks, key, server) =
        start_with_key("    token_sources: [bearer, {query: access_token}]\n").await;
    let token = user_token(&key);
    let (set, _) = allowed(
        &server
            .check(request(
                "GET",
                &format!("/data?access%5Ftoken={token}"),
                &[],
            ))
            .await,
    );
    assert_eq!(set["x-user-id"], "u1");
    // Two spellings of one parameter are two tokens.
    let response = server
        .check(request(
            "GET",
            &format!("/data?access_token={token}&access%5ftoken={token}"),
            &[],
        ))
        .await;
    assert_eq!(denied_status(&response), Some(400));
    assert_eq!(
        denial(&response).1["error_description"],
        "more than one token in request"
    );
    // A parameter name that cannot be decoded makes the query unreadable.
    let response = server
        .check(request(
            "GET",
            &format!("/data?a%zz=1&access_token={token}"),
            &[],
        ))
        .await;
    assert_eq!(denied_status(&response), Some(400));
    assert_eq!(
        denial(&response).1["error_description"],
        "malformed query string"
    );
    // A fragment (which no client sends) makes the whole target unreadable.
    let response = server
        .check(request("GET", &format!("/data#?access_token={token}"), &[]))
        .await;
    assert_eq!(denied_status(&response), Some(400));
}
