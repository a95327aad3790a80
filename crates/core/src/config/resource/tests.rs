use serde_json::json;

use super::*;
use crate::config::{DecisionConfig, LoadError};

fn paths() -> PathConfig {
    PathConfig::default()
}

#[test]
fn the_rfc_9728_section_3_1_example_gives_its_well_known_url() {
    // §3.1: "https://resource.example.com/resource1" →
    // "https://resource.example.com/.well-known/oauth-protected-resource/resource1".
    let uri = ResourceUri::parse("https://resource.example.com/resource1", &paths()).expect("read");
    assert_eq!(
        uri.metadata_url(),
        "https://resource.example.com/.well-known/oauth-protected-resource/resource1"
    );
    // No path: the suffix alone (§3.1's first example).
    let uri = ResourceUri::parse("https://resource.example.com", &paths()).expect("read");
    assert_eq!(
        uri.metadata_url(),
        "https://resource.example.com/.well-known/oauth-protected-resource"
    );
    let uri = ResourceUri::parse("https://mcp.example.com:8443/a/b", &paths()).expect("read");
    assert_eq!(
        uri.metadata_url(),
        "https://mcp.example.com:8443/.well-known/oauth-protected-resource/a/b"
    );
    // Loopback http, for local development.
    for local in [
        "http://127.0.0.1:8080/mcp",
        "http://localhost:3000",
        "http://[::1]:8080/mcp",
    ] {
        assert!(ResourceUri::parse(local, &paths()).is_ok(), "{local}");
    }
}

#[test]
fn resource_identifiers_that_cannot_be_one_are_refused() {
    for (uri, why) in [
        ("https://mcp.example.com/mcp#x", "fragment"),
        ("https://mcp.example.com/mcp?tenant=a", "query"),
        ("http://mcp.example.com/mcp", "https is required"),
        ("ftp://mcp.example.com/mcp", "https is required"),
        ("mcp.example.com/mcp", "absolute"),
        ("https://user@mcp.example.com/mcp", "userinfo"),
        ("https://MCP.example.com/mcp", "lowercase"),
        ("https://mcp.example.com./mcp", "lowercase"),
        ("https://mcp.example.com/mcp/", "trailing"),
        ("https://mcp.example.com/", "trailing"),
        ("https://mcp.example.com/a/../mcp", "canonical"),
        ("https://mcp.example.com/a//b", "canonical"),
        ("https:///mcp", "host"),
        ("https://mcp.example.com:99999/mcp", "host"),
        ("HTTPS://mcp.example.com/mcp", "https is required"),
        ("http://127.evil.example/mcp", "https is required"),
        ("http://localhost.evil.example/mcp", "https is required"),
        ("https://mcp.example.com:/mcp", "port"),
        ("https://mcp.example.com:443/mcp", "port"),
        ("http://127.0.0.1:80/mcp", "port"),
        ("https://mcp.example.com:08443/mcp", "port"),
    ] {
        let err = ResourceUri::parse(uri, &paths()).expect_err(uri);
        assert!(err.contains(why), "{uri}: {err}");
    }
    // Nothing that could end a header parameter or line: a raw quote, backslash, space,
    // CR or LF is refused (their percent-encoded forms are ordinary path bytes).
    for raw in ["/m\"cp", "/m\\cp", "/m cp", "/m\rcp", "/m\ncp"] {
        let uri = format!("https://mcp.example.com{raw}");
        assert!(ResourceUri::parse(&uri, &paths()).is_err(), "{uri:?}");
    }
    let long = format!("https://mcp.example.com/{}", "a".repeat(MAX_URI_BYTES));
    assert!(ResourceUri::parse(&long, &paths()).is_err());
}

fn load(resources: &str, rules: &str) -> Result<DecisionConfig, LoadError> {
    DecisionConfig::from_yaml(&format!(
        "resources:\n{resources}\nrules:\n{rules}\nproviders:\n  - {{name: corp, issuer: 'https://corp.example', audiences: [api]}}\n  - {{name: dev, issuer: 'http://127.0.0.1:8000', audiences: [api]}}\n"
    ))
}

fn refused(resources: &str, rules: &str) -> String {
    match load(resources, rules) {
        Err(LoadError::Invalid(e)) => e.to_string(),
        other => panic!("accepted or not validated: {other:?}"),
    }
}

#[test]
fn a_configuration_of_resources_is_checked_field_by_field() {
    let ok = "  - {name: mcp, resource: 'https://mcp.example.com/mcp'}";
    let rule = "  - {resource: mcp, access: authenticated}";
    assert!(load(ok, rule).is_ok());
    for (resources, rules, message) in [
        (
            ok,
            "  - {resource: nope, access: authenticated}",
            "rules[0].resource: no resource is named \"nope\"",
        ),
        (
            "  - {name: mcp, resource: 'https://mcp.example.com/mcp'}\n  - {name: mcp, resource: 'https://b.example.com/x'}",
            rule,
            "resources[1].name",
        ),
        (
            "  - {name: a, resource: 'https://a.example.com/mcp'}\n  - {name: b, resource: 'https://b.example.com/mcp'}",
            rule,
            "as resources[0]'s is",
        ),
        (
            "  - {name: a, resource: 'https://a.example.com/a', default: true}\n  - {name: b, resource: 'https://b.example.com/b', default: true}",
            "  []",
            "resources[1].default",
        ),
        (
            "  - {name: mcp, resource: 'https://mcp.example.com/mcp', authorization_servers: ['https://other.example']}",
            rule,
            "no provider's issuer",
        ),
        (
            "  - {name: mcp, resource: 'https://mcp.example.com/mcp', authorization_servers: []}",
            rule,
            "at least one",
        ),
        (
            "  - {name: mcp, resource: 'https://mcp.example.com/mcp', scopes_supported: ['a b']}",
            rule,
            "scopes_supported[0]",
        ),
        (
            "  - {name: mcp, resource: 'https://mcp.example.com/mcp', scopes_supported: ['say\"hi']}",
            rule,
            "not a scope token",
        ),
        (
            "  - {name: mcp, resource: 'https://mcp.example.com/mcp', resource_documentation: 'javascript:alert(1)'}",
            rule,
            "resource_documentation",
        ),
        (
            "  - {name: mcp, resource: 'https://mcp.example.com/mcp', max_age_seconds: 100000}",
            rule,
            "max_age_seconds",
        ),
        (
            "  - {name: mcp, resource: 'https://mcp.example.com/mcp?x=1'}",
            rule,
            "resources[0].resource",
        ),
    ] {
        let message_got = refused(resources, rules);
        assert!(message_got.contains(message), "{message_got}");
    }
    // An unknown field is a shape error at its path.
    match load(
        "  - {name: mcp, resource: 'https://mcp.example.com/mcp', scope: [a]}",
        rule,
    ) {
        Err(LoadError::Shape { path, .. }) => assert_eq!(path, "resources[0].scope"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn metadata_leaves_out_what_is_empty_and_names_what_is_set() {
    let r: ResourceConfig = serde_json::from_value(json!({
        "name": "mcp",
        "resource": "https://mcp.example.com/mcp",
        "authorization_servers": ["https://corp.example"],
        "resource_name": "Example MCP",
        "resource_documentation": "https://mcp.example.com/docs",
        "resource_policy_uri": "https://mcp.example.com/policy",
        "resource_tos_uri": "https://mcp.example.com/tos",
        "dpop_bound_access_tokens_required": true,
        "tls_client_certificate_bound_access_tokens": true,
    }))
    .expect("config");
    let cookie = [TokenSource::Cookie("session".into())];
    let doc = r.metadata(Published {
        issuers: &["https://corp.example"],
        token_sources: &[&cookie],
        rule_scopes: &[],
        dpop_algs: Some("ES256"),
    });
    // §3.2: "parameters with zero elements MUST be omitted": no scopes, and no bearer
    // method (a cookie is none of RFC 6750's).
    assert_eq!(
        doc,
        json!({
            "resource": "https://mcp.example.com/mcp",
            "authorization_servers": ["https://corp.example"],
            "resource_name": "Example MCP",
            "resource_documentation": "https://mcp.example.com/docs",
            "resource_policy_uri": "https://mcp.example.com/policy",
            "resource_tos_uri": "https://mcp.example.com/tos",
            "tls_client_certificate_bound_access_tokens": true,
            "dpop_signing_alg_values_supported": ["ES256"],
            "dpop_bound_access_tokens_required": true,
        })
    );
}

#[test]
fn the_rfc_9728_section_3_2_example_is_what_its_configuration_publishes() {
    // §3.2's example response, less `bearer_methods_supported: ["header", "body"]`: a
    // sidecar never reads the body, so it publishes ["header"] (and "query" only for an
    // `access_token` parameter source).
    let r: ResourceConfig = serde_json::from_value(json!({
        "name": "r",
        "resource": "https://resource.example.com",
        "authorization_servers": ["https://as1.example.com", "https://as2.example.net"],
        "scopes_supported": ["profile", "email", "phone"],
        "resource_documentation": "https://resource.example.com/resource_documentation.html",
    }))
    .expect("config");
    let query = [
        TokenSource::Bearer,
        TokenSource::Query("access_token".into()),
    ];
    let doc = r.metadata(Published {
        issuers: &["https://as1.example.com", "https://as2.example.net"],
        token_sources: &[&query],
        rule_scopes: &[],
        dpop_algs: None,
    });
    assert_eq!(
        doc,
        json!({
            "resource": "https://resource.example.com",
            "authorization_servers": ["https://as1.example.com", "https://as2.example.net"],
            "bearer_methods_supported": ["header", "query"],
            "scopes_supported": ["profile", "email", "phone"],
            "resource_documentation": "https://resource.example.com/resource_documentation.html",
        })
    );
}
