//! The shipped proxy configurations agree with jwt-authz's own: the endpoints they call,
//! the identity headers they copy and strip, the settings that make them safe. Every one of
//! them is also run for real by tests/e2e_proxies.rs (Traefik's binary refuses a dynamic
//! configuration it cannot read: that test checks every router came up enabled).

use std::path::Path;

use jwt_authz::config::ForwardedHeaders;
use serde_json::{Value, json};

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(WORKSPACE).join(path)).expect(path)
}

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&read(path)).expect(path)
}

/// The configuration the Kubernetes manifests (and so Istio and Traefik) run with.
fn cluster_config() -> jwt_authz::Config {
    jwt_authz::Config::from_yaml(&read("deploy/kubernetes/config.yaml")).expect("valid")
}

/// The identity headers and the anonymous marker: every header jwt-authz sets or removes on
/// an allow, which a proxy must copy from its answer (and strip from a client).
fn identity_headers(config: &jwt_authz::Config) -> Vec<String> {
    config
        .identity
        .upstream_headers()
        .map(str::to_owned)
        .collect()
}

fn lowercase(values: &Value) -> Vec<String> {
    values
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_str().expect("string").to_ascii_lowercase())
        .collect()
}

#[test]
fn traefik_strips_identity_on_every_router_and_copies_it_from_jwt_authz() {
    let config = cluster_config();
    let identity = identity_headers(&config);
    let dynamic = yaml("deploy/traefik/dynamic.yml");
    let middlewares = &dynamic["http"]["middlewares"];

    let forward = &middlewares["jwt-authz"]["forwardAuth"];
    assert_eq!(forward["trustForwardHeader"], false);
    assert_eq!(lowercase(&forward["authResponseHeaders"]), identity);
    let address = forward["address"].as_str().expect("address");
    let port = config
        .listen
        .http
        .expect("the cluster config serves HTTP")
        .port();
    let endpoint = config
        .http
        .forward_auth
        .iter()
        .find(|e| address == format!("http://jwt-authz:{port}{}", e.path))
        .unwrap_or_else(|| panic!("{address} is not a forward-auth endpoint of the config"));
    assert_eq!(endpoint.headers, ForwardedHeaders::XForwarded);

    let mut stripped: Vec<String> =
        middlewares["strip-identity"]["headers"]["customRequestHeaders"]
            .as_object()
            .expect("headers")
            .iter()
            .inspect(|(_, v)| assert_eq!(**v, json!(""), "an empty value deletes the header"))
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect();
    // Traefik matches the names ignoring case; other spellings are the entry point's. (A
    // JSON map: its keys come sorted.)
    stripped.sort();
    let mut sorted = identity.clone();
    sorted.sort();
    assert_eq!(stripped, sorted);

    let routers = dynamic["http"]["routers"].as_object().expect("routers");
    assert!(routers.len() >= 4);
    for (name, router) in routers {
        let chain: Vec<&str> = router["middlewares"]
            .as_array()
            .expect("middlewares")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(chain.first(), Some(&"strip-identity"), "{name}");
        let public = router["rule"]
            .as_str()
            .is_some_and(|r| r.contains("/auth/"));
        assert_eq!(chain.contains(&"jwt-authz"), !public, "{name}");
    }
    let statics = yaml("deploy/traefik/traefik.yml");
    for (name, entry) in statics["entryPoints"].as_object().expect("entry points") {
        assert!(
            entry["forwardedHeaders"].is_null(),
            "{name}: trusting forwarded headers lets clients set X-Forwarded-Uri"
        );
        let strategy = entry["http"]["aliasHeadersStrategy"].as_str();
        assert!(
            matches!(strategy, Some("reject" | "delete")),
            "{name}: aliasHeadersStrategy {strategy:?} passes X_User_Id on to the app"
        );
    }
}

#[test]
fn istio_http_provider_matches_the_service_and_config() {
    let config = cluster_config();
    let docs: Vec<Value> =
        serde_norway::Deserializer::from_str(&read("deploy/istio/mesh-config.yaml"))
            .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("yaml"))
            .collect();
    let providers = docs[0]["spec"]["meshConfig"]["extensionProviders"]
        .as_array()
        .expect("providers");
    let http = providers
        .iter()
        .find_map(|p| p.get("envoyExtAuthzHttp"))
        .expect("an envoyExtAuthzHttp provider");
    assert_eq!(
        http["port"].as_u64(),
        config.listen.http.map(|a| u64::from(a.port()))
    );
    assert_eq!(
        http["pathPrefix"].as_str(),
        config.http.ext_authz_prefix.as_deref()
    );
    assert_eq!(http["failOpen"], false);
    assert_eq!(
        lowercase(&http["headersToUpstreamOnAllow"]),
        identity_headers(&config)
    );
    let deny = lowercase(&http["headersToDownstreamOnDeny"]);
    for needed in ["www-authenticate", "content-type", "retry-after"] {
        assert!(deny.iter().any(|h| h == needed), "{needed}");
    }
    let service: Value =
        serde_norway::from_str(&read("deploy/kubernetes/service.yaml")).expect("yaml");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["port"] == http["port"] && p["targetPort"] == "http-authz"),
        "the Service exposes the HTTP authorization port"
    );
}

/// Envoy's HTTP variant, nginx and Caddy name the same identity headers as jwt-authz's
/// defaults (the end-to-end tests run them with the demo config).
#[test]
fn proxy_templates_name_every_identity_header() {
    let identity = identity_headers(&cluster_config());
    for (file, spelling) in [
        ("envoy/envoy-http.yaml.tmpl", "{exact: @}"),
        ("deploy/nginx/jwt-authz.conf.tmpl", "proxy_set_header @ "),
        ("deploy/caddy/Caddyfile.tmpl", "request_header -@"),
    ] {
        let text = read(file).to_ascii_lowercase();
        for header in &identity {
            let needle = spelling.replace('@', header);
            assert!(text.contains(&needle), "{file}: no {needle:?}");
        }
    }
}
