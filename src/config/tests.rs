use super::*;

const MINIMAL: &str = r#"
providers:
  - name: demo
    issuer: https://issuer.test
    audiences: [api]
    jwks: {uri: "https://issuer.test/jwks.json"}
"#;

fn error_of(yaml: &str) -> String {
    match Config::from_yaml(yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn minimal_config_gets_safe_defaults() {
    let config = Config::from_yaml(MINIMAL).unwrap();
    let p = &config.providers[0];
    assert_eq!(p.algorithms, vec![Algorithm::RS256]);
    assert_eq!(p.leeway, Duration::from_secs(60));
    assert!(p.require_exp);
    assert_eq!(p.token_sources, vec![TokenSource::Bearer]);
    assert_eq!(p.jwks_cache.min_ttl, Duration::from_secs(300));
    assert_eq!(p.jwks_cache.max_ttl, Duration::from_secs(86400));
    assert_eq!(p.jwks_cache.unknown_kid_interval, Duration::from_secs(10));
    assert_eq!(config.max_token_bytes, 8192);
    assert_eq!(config.identity.headers[0].header, "x-user-id");
    assert!(!config.identity.strip_authorization);
    assert!(config.rules.is_empty());
    assert_eq!(config.log.format, LogFormat::Human);
}

#[test]
fn every_source_and_access_form_parses() {
    let yaml = format!(
        "{MINIMAL}    token_sources:\n      - bearer\n      - header: {{name: x-tok, prefix: \"T \"}}\n      - cookie: s\n      - query: t\n\
rules:\n  - match: {{path: {{regex: \"/a/[0-9]+\"}}}}\n    access: authenticated\n  - access: deny\n  - access: public\n  - access:\n      claims:\n        - {{claim: n, equals: 3}}\n"
    );
    let config = Config::from_yaml(&yaml).unwrap();
    assert_eq!(config.providers[0].token_sources.len(), 4);
    assert_eq!(config.rules.len(), 4);
    assert_eq!(config.rules[1].access, Access::Deny);
    let discovery = MINIMAL.replace(
        "jwks: {uri: \"https://issuer.test/jwks.json\"}",
        "jwks: discovery",
    );
    assert_eq!(
        Config::from_yaml(&discovery).unwrap().providers[0].jwks,
        JwksSource::Discovery
    );
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (MINIMAL.replace("[api]", "[]"), "providers[0].audiences"),
        (
            MINIMAL.replace(
                "audiences: [api]",
                "audiences: [api]\n    algorithms: [RS256, HS256]",
            ),
            "providers[0].algorithms[1]",
        ),
        (
            MINIMAL.replace("https://issuer.test/jwks.json", "ftp://x/jwks"),
            "providers[0].jwks.uri",
        ),
        (MINIMAL.replace("audiences:", "audiencez:"), "providers[0]"),
        (
            format!("{MINIMAL}rules:\n  - match: {{path: {{regex: \"(\"}}}}\n    access: public\n"),
            "rules[0].match.path.regex",
        ),
        (
            format!(
                "{MINIMAL}rules:\n  - access: {{claims: [{{claim: r, any_of: [a], equals: b}}]}}\n"
            ),
            "rules[0].access.claims[0]",
        ),
        (
            format!("{MINIMAL}identity:\n  headers:\n    - {{claim: sub, header: X-User}}\n"),
            "identity.headers[0].header",
        ),
        (
            format!(
                "{MINIMAL}identity:\n  headers:\n    - {{claim: sub, header: authorization}}\n"
            ),
            "identity.headers[0].header",
        ),
        (
            MINIMAL.replace("audiences: [api]", "audiences: [api]\n    leeway: soon"),
            "providers[0].leeway",
        ),
        (
            MINIMAL.replace(
                "audiences: [api]",
                "audiences: [api]\n    jwks_cache: {min_ttl: 10m, max_ttl: 1m}",
            ),
            "providers[0].jwks_cache.max_ttl",
        ),
        ("providers: []".to_owned(), "providers"),
        (format!("{MINIMAL}realm: 'a\"b'\n"), "realm"),
    ];
    for (yaml, field) in cases {
        let message = error_of(&yaml);
        assert!(
            message.starts_with(field),
            "{message:?} should name {field}"
        );
    }
}

#[test]
fn duplicate_providers_are_rejected() {
    let twice = format!(
        "{MINIMAL}{}",
        MINIMAL
            .replace("providers:\n", "")
            .replace("name: demo", "name: other")
    );
    assert!(error_of(&twice).starts_with("providers[1].issuer"));
}

#[test]
fn example_config_is_valid() {
    let text = include_str!("../../config/example.yaml");
    let config = Config::from_yaml(text).unwrap();
    assert_eq!(config.providers.len(), 1);
    assert!(!config.rules.is_empty());
}
