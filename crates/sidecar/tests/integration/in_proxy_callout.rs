//! The sidecar's side of the in-proxy mode: the Wasm filter's callouts
//! (`<in_proxy.prefix>/check/<path>`) are decided like any other check and answered with
//! the verdict, the token's claims only when claims are all its later requests need, and
//! the key-set generation; the poll (`<prefix>/generation`) changes when keys change.

use crate::support::{PATH_RULES, TestKey, TestServer, claims, config_yaml, start_with_key};
use jwt_authz_core::in_proxy::{CheckAnswer, GenerationAnswer, WireVerdict};
use serde_json::json;

const IN_PROXY: &str = "in_proxy: {prefix: /in-proxy}\n";

async fn ask(server: &TestServer, method: &str, path: &str, token: Option<&str>) -> CheckAnswer {
    let client = reqwest::Client::new();
    let mut request = client
        .request(
            method.parse().expect("method"),
            format!("http://{}/in-proxy/check{path}", server.http),
        )
        .header("host", "api.test")
        .header("x-user-id", "spoofed");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.expect("callout answered");
    assert_eq!(response.status(), 200, "a decided callout is always 200");
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().expect("ascii")),
        Some("no-store")
    );
    response.json().await.expect("a CheckAnswer")
}

async fn generation(server: &TestServer) -> GenerationAnswer {
    let response = reqwest::get(format!("http://{}/in-proxy/generation", server.http))
        .await
        .expect("poll answered");
    assert_eq!(response.status(), 200);
    response.json().await.expect("a GenerationAnswer")
}

fn set(verdict: &WireVerdict) -> Vec<(&str, &str)> {
    match verdict {
        WireVerdict::Allow { set, .. } => {
            set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
        }
        WireVerdict::Deny { status, body, .. } => panic!("denied {status}: {body}"),
    }
}

fn status(verdict: &WireVerdict) -> u16 {
    match verdict {
        WireVerdict::Allow { .. } => 200,
        WireVerdict::Deny { status, .. } => *status,
    }
}

#[tokio::test]
async fn an_allowed_token_comes_back_with_its_claims_bounded_by_exp_and_the_cache_ttl() {
    let (_jwks, key, server) = start_with_key(&format!(
        "{PATH_RULES}token_cache: {{ttl: 120s}}\n{IN_PROXY}"
    ))
    .await;
    let token = key.token(&claims("u-1"));
    let answer = ask(&server, "GET", "/api/orders?x=1", Some(&token)).await;
    assert!(set(&answer.verdict).contains(&("x-user-id", "u-1")));
    let cached = answer.token.expect("claims for the filter");
    assert_eq!(cached.provider, "test");
    assert_eq!(cached.claims["sub"], "u-1");
    assert_eq!(cached.cache_for, 120, "the cache's ttl, shorter than exp");
    assert_eq!(answer.generation.len(), 16);
    assert_eq!(generation(&server).await.generation, answer.generation);
    assert_eq!(generation(&server).await.dpop_algs, None);

    // exp nearer than the ttl bounds it.
    let mut soon = claims("u-2");
    soon["exp"] = json!(crate::support::now() + 30);
    let answer = ask(&server, "GET", "/api/orders", Some(&key.token(&soon))).await;
    let cache_for = answer.token.expect("claims").cache_for;
    assert!((28..=30).contains(&cache_for), "{cache_for}");
}

#[tokio::test]
async fn the_identity_as_metadata_travels_in_the_answer_only_when_asked_for() {
    for wanted in [false, true] {
        let identity = if wanted {
            "identity: {dynamic_metadata: true}\n"
        } else {
            ""
        };
        let (_jwks, key, server) =
            start_with_key(&format!("{PATH_RULES}{identity}{IN_PROXY}")).await;
        let token = key.token(&claims("u-1"));
        let answer = ask(&server, "GET", "/api/orders", Some(&token)).await;
        let WireVerdict::Allow { metadata, .. } = &answer.verdict else {
            panic!("denied: {:?}", answer.verdict);
        };
        match metadata {
            Some(metadata) => {
                assert!(wanted, "metadata not asked for: {metadata:?}");
                assert_eq!(metadata.provider, "test");
                assert_eq!(metadata.claims["sub"], "u-1");
            }
            None => assert!(!wanted, "metadata asked for, none in {answer:?}"),
        }
        // Without a token (a public route), no identity and no metadata.
        let public = ask(&server, "GET", "/public/x", None).await;
        assert!(
            matches!(public.verdict, WireVerdict::Allow { metadata: None, .. }),
            "{public:?}"
        );
    }
}

#[tokio::test]
async fn a_route_level_denial_still_hands_over_the_claims_a_token_level_one_does_not() {
    let (_jwks, key, server) = start_with_key(&format!("{PATH_RULES}{IN_PROXY}")).await;
    // Valid token, but the route wants role admin: denied, and the claims are good for
    // other routes.
    let answer = ask(
        &server,
        "GET",
        "/api/users",
        Some(&key.token(&claims("u-1"))),
    )
    .await;
    assert_eq!(status(&answer.verdict), 403);
    assert!(answer.token.is_some());

    let mut expired = claims("u-1");
    expired["exp"] = json!(crate::support::now() - 600);
    let other = TestKey::rsa("k1");
    let mut wrong_aud = claims("u-1");
    wrong_aud["aud"] = json!("elsewhere");
    for (token, expected) in [
        (key.token(&expired), 401),
        (other.token(&claims("u-1")), 401),
        ("garbage".to_owned(), 401),
    ] {
        let answer = ask(&server, "GET", "/api/orders", Some(&token)).await;
        assert_eq!(status(&answer.verdict), expected);
        assert_eq!(answer.token, None, "nothing unverified is handed over");
    }
    // The wrong audience is the route's decision (audiences can be set per route): the
    // token verified, so its claims come back with the denial.
    let answer = ask(&server, "GET", "/api/orders", Some(&key.token(&wrong_aud))).await;
    assert_eq!(status(&answer.verdict), 401);
    assert!(answer.token.is_some());

    // No token: the same denial as every front end, nothing to cache.
    let answer = ask(&server, "GET", "/api/orders", None).await;
    assert_eq!(status(&answer.verdict), 401);
    assert_eq!(answer.token, None);
    // Public: allowed, the client's identity header removed.
    let answer = ask(&server, "GET", "/public/x", None).await;
    match answer.verdict {
        WireVerdict::Allow { set, remove, .. } => {
            assert_eq!(set, [("x-user-anonymous".to_owned(), "true".to_owned())]);
            assert!(remove.iter().any(|h| h == "x-user-id"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn tokens_needing_more_than_their_claims_are_never_handed_over() {
    // A provider requiring certificate-bound tokens: the binding is checked per request.
    let (_jwks, key, server) = start_with_key(&format!(
        "    certificate_binding: required\n{PATH_RULES}{IN_PROXY}"
    ))
    .await;
    let answer = ask(
        &server,
        "GET",
        "/api/orders",
        Some(&key.token(&claims("u-1"))),
    )
    .await;
    assert_eq!(status(&answer.verdict), 401);
    assert_eq!(answer.token, None);

    // A token with a confirmation claim, and a cache that is off.
    let (_jwks, key, server) =
        start_with_key(&format!("token_cache: {{max_entries: 0}}\n{IN_PROXY}")).await;
    let answer = ask(
        &server,
        "GET",
        "/api/orders",
        Some(&key.token(&claims("u-1"))),
    )
    .await;
    assert_eq!(status(&answer.verdict), 200);
    assert_eq!(
        answer.token, None,
        "token_cache off: nothing cached in-proxy"
    );
    let (_jwks, key, server) = start_with_key(IN_PROXY).await;
    let mut bound = claims("u-1");
    bound["cnf"] = json!({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"});
    let answer = ask(&server, "GET", "/api/orders", Some(&key.token(&bound))).await;
    assert_eq!(answer.token, None);
}

#[tokio::test]
async fn the_generation_changes_when_a_key_is_removed() {
    let (jwks, key, server) = start_with_key(IN_PROXY).await;
    let before = generation(&server).await.generation;
    assert_eq!(generation(&server).await.generation, before, "stable");
    let replacement = TestKey::rsa("k2");
    jwks.set_keys(vec![replacement.jwk()]);
    // The sidecar refreshes its keys (min_ttl 1s in tests); the generation follows.
    let mut changed = None;
    for _ in 0..100 {
        let now = generation(&server).await.generation;
        if now != before {
            changed = Some(now);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let changed = changed.expect("the generation changed within 10 s of the key's removal");
    let answer = ask(
        &server,
        "GET",
        "/api/orders",
        Some(&key.token(&claims("u-1"))),
    )
    .await;
    assert_eq!(status(&answer.verdict), 401, "the removed key's token");
    assert_eq!(answer.generation, changed);
}

#[tokio::test]
async fn the_callout_is_decided_with_the_method_the_filter_names() {
    // Callouts go as GET (a HEAD callout's answer would have no body); the filter names the
    // original method in x-jwt-authz-method, and the sidecar decides with that one.
    let rules = "rules:\n  - name: no-delete\n    match: {methods: [DELETE], path: {prefix: /api/}}\n    access: deny\n";
    let (_jwks, key, server) = start_with_key(&format!("{IN_PROXY}{rules}")).await;
    let token = key.token(&claims("u-1"));
    let named = |method: Option<&'static str>| {
        let token = token.clone();
        let server = &server;
        async move {
            let mut request = reqwest::Client::new()
                .get(format!("http://{}/in-proxy/check/api/orders", server.http))
                .header("host", "api.test")
                .header("authorization", format!("Bearer {token}"));
            if let Some(method) = method {
                request = request.header("x-jwt-authz-method", method);
            }
            let answer: CheckAnswer = request
                .send()
                .await
                .expect("answered")
                .json()
                .await
                .expect("json");
            status(&answer.verdict)
        }
    };
    assert_eq!(named(Some("DELETE")).await, 403);
    assert_eq!(named(Some("HEAD")).await, 200);
    assert_eq!(
        named(None).await,
        200,
        "without the header: the callout's own method"
    );
}

#[tokio::test]
async fn replicas_with_the_same_file_and_keys_answer_the_same_generation() {
    // Two replicas behind one Service: the filter's polls and callouts reach either, so
    // they must agree, or each answer would empty the cache the other's had filled.
    let (jwks, _key, first) = start_with_key(IN_PROXY).await;
    let second = TestServer::start_ready(&config_yaml(&jwks.url(), IN_PROXY)).await;
    let generation_of_first = generation(&first).await.generation;
    assert_eq!(generation(&second).await.generation, generation_of_first);
    // Another rule set (or identity, or provider) is another generation: held claims were
    // decided under the old one.
    let rules = "rules:\n  - name: open\n    match: {path: {prefix: /open/}}\n    access: public\n";
    let other_yaml = config_yaml(&jwks.url(), &format!("{IN_PROXY}{rules}"));
    let other = TestServer::start_ready(&other_yaml).await;
    assert_ne!(generation(&other).await.generation, generation_of_first);

    // Every answer names the digest of the decision configuration, the one a filter given
    // the same file computes (`DecisionConfig::digest`); another rule set, another digest.
    let filter_digest = |yaml: &str| {
        jwt_authz_core::config::DecisionConfig::from_yaml(yaml)
            .expect("the filter reads the file")
            .digest()
    };
    let same = config_yaml(&jwks.url(), IN_PROXY);
    assert_eq!(generation(&first).await.config, Some(filter_digest(&same)));
    assert_eq!(generation(&second).await.config, Some(filter_digest(&same)));
    let answer = ask(&other, "GET", "/open/x", None).await;
    assert_eq!(answer.config, Some(filter_digest(&other_yaml)));
    assert_ne!(answer.config, generation(&first).await.config);
}

#[tokio::test]
async fn without_in_proxy_the_endpoints_do_not_exist_and_ext_authz_cannot_reach_them() {
    let (_jwks, key, server) = start_with_key("").await;
    let token = key.token(&claims("u-1"));
    for path in ["/in-proxy/check/api/orders", "/in-proxy/generation"] {
        let response = reqwest::Client::new()
            .get(format!("http://{}{path}", server.http))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 404, "{path}");
    }
    // With it on, a client's path through Envoy's ext_authz prefix is just a path.
    let (_jwks, key, server) = start_with_key(IN_PROXY).await;
    let response = reqwest::Client::new()
        .get(format!(
            "http://{}/ext-authz/in-proxy/generation",
            server.http
        ))
        .header("host", "api.test")
        .header(
            "authorization",
            format!("Bearer {}", key.token(&claims("u-1"))),
        )
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("x-user-id").is_some(),
        "an ext_authz allow"
    );
    assert!(response.text().await.expect("body").is_empty());
}

#[test]
fn an_in_proxy_prefix_overlapping_another_endpoint_is_refused() {
    for (extra, field) in [
        ("in_proxy: {prefix: /ext-authz}\n", "in_proxy.prefix"),
        ("in_proxy: {prefix: /ext-authz/x}\n", "in_proxy.prefix"),
        ("in_proxy: {prefix: /}\n", "in_proxy.prefix"),
        ("in_proxy: {prefix: /a/}\n", "in_proxy.prefix"),
        ("in_proxy: {prefix: /a/../b}\n", "in_proxy.prefix"),
        ("in_proxy: {cluster: \"\"}\n", "in_proxy.cluster"),
        ("in_proxy: {timeout: 0s}\n", "in_proxy.timeout"),
        (
            "in_proxy: {poll_interval: 5s, max_unconfirmed: 1s}\n",
            "in_proxy.max_unconfirmed",
        ),
    ] {
        let yaml = crate::support::config_yaml("https://issuer.test/jwks", extra);
        let error = jwt_authz::Config::from_yaml(&yaml)
            .expect_err(extra)
            .to_string();
        assert!(error.starts_with(field), "{extra}: {error}");
    }
    let yaml = crate::support::config_yaml(
        "https://issuer.test/jwks",
        "in_proxy: {prefix: /filter, cluster: sidecar, timeout: 250ms}\n",
    );
    let config = jwt_authz::Config::from_yaml(&yaml).expect("valid");
    let in_proxy = config.in_proxy.expect("set");
    assert_eq!(in_proxy.check_path("/a?b"), "/filter/check/a?b");
    assert_eq!(in_proxy.timeout, std::time::Duration::from_millis(250));
}

async fn published_keys(server: &TestServer) -> jwt_authz_jose::verify::PublishedKeys {
    let response = reqwest::get(format!("http://{}/in-proxy/keys", server.http))
        .await
        .expect("keys answered");
    assert_eq!(response.status(), 200);
    response.json().await.expect("PublishedKeys")
}

/// What the dynamic module verifies tokens with in Envoy: each provider whose tokens need
/// nothing but their claims, its rules as the sidecar applies them and the keys it holds,
/// under the generation the poll reports; nothing for a provider whose tokens need more,
/// nor with the token cache off.
#[tokio::test]
async fn the_keys_the_module_verifies_with_are_the_sidecars_own() {
    let (_jwks, key, server) = start_with_key(&format!(
        "    max_lifetime: 1h\n    required_claims: [sub]\n{IN_PROXY}"
    ))
    .await;
    let published = published_keys(&server).await;
    assert_eq!(published.generation, generation(&server).await.generation);
    assert_eq!(published.providers.len(), 1);
    let provider = &published.providers[0];
    assert_eq!(provider.name, "test");
    assert_eq!(provider.profile.issuer, crate::support::ISSUER);
    assert_eq!(provider.profile.leeway, 5);
    assert_eq!(provider.profile.max_lifetime, Some(3600));
    assert_eq!(provider.profile.required_claims, ["sub"]);
    assert_eq!(provider.keys, [key.jwk()]);
    // The same steps with what was published verify the sidecar's tokens, and refuse what
    // the sidecar refuses.
    let view = provider.profile.view();
    let keys: Vec<_> = provider
        .keys
        .iter()
        .map(|k| {
            jwt_authz_jose::verify::VerifyingKey::from_jwk_value(k.clone(), view.algorithms)
                .expect("key")
        })
        .collect();
    let now = crate::support::now();
    let verify = |token: &str| {
        jwt_authz_jose::verify::verify(
            &view,
            &keys,
            jwt_authz_jose::jws::Unverified::parse(token).expect("parse"),
            now,
        )
    };
    assert!(verify(&key.token(&claims("u-1"))).is_ok());
    let mut long = claims("u-1");
    long["exp"] = json!(now + 7200);
    assert!(verify(&key.token(&long)).is_err(), "max_lifetime published");

    for extra in [
        "    dpop: {mode: optional}\n",
        "    status_list: {mode: optional}\n",
        "    certificate_binding: required\n",
    ] {
        let (_jwks, _key, server) = start_with_key(&format!("{extra}{IN_PROXY}")).await;
        assert!(
            published_keys(&server).await.providers.is_empty(),
            "{extra}"
        );
    }
    let (_jwks, _key, server) =
        start_with_key(&format!("token_cache: {{max_entries: 0}}\n{IN_PROXY}")).await;
    assert!(published_keys(&server).await.providers.is_empty());
}
