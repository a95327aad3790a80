use super::*;

/// A whole sidecar document: listen, keys, limits and the rest are not the decision's and
/// are passed over.
const SIDECAR: &str = r#"
listen: {grpc: "127.0.0.1:9001", admin: "127.0.0.1:9002", http: "127.0.0.1:9003"}
mode: shadow
realm: corp
max_token_bytes: 4096
paths: {escaped_slashes: decode, max_bytes: 2048}
limits: {check_timeout: 2s}
token_cache: {max_entries: 10}
identity:
  headers: [{claim: sub, header: x-user-id}, {claim: realm_access.roles, header: x-user-roles}]
  strip_authorization: false
providers:
  - name: corp
    issuer: https://corp.test
    audiences: [api]
    jwks: {uri: https://corp.test/jwks}
    algorithms: [RS256]
    dpop: {mode: optional}
  - name: partner
    issuer: https://partner.test
    audiences: [partner-api]
    jwks: {file: /etc/partner.json}
    token_sources: [bearer, {cookie: session}]
    mode: enforce
rules:
  - match: {path: {prefix: /public/}}
    access: public
  - match: {path: {prefix: /admin/}}
    providers: [corp]
    access:
      claims: [{claim: realm_access.roles, any_of: [admin]}]
"#;

#[test]
fn a_sidecar_document_reads_as_the_decisions_part() {
    let config = DecisionConfig::from_yaml(SIDECAR).unwrap();
    assert_eq!(config.mode, Mode::Shadow);
    assert_eq!(config.realm, "corp");
    assert_eq!(config.max_token_bytes, 4096);
    assert_eq!(config.paths.escaped_slashes, EscapedSlashes::Decode);
    assert_eq!(config.paths.max_bytes, 2048);
    assert!(!config.identity.strip_authorization);
    assert_eq!(config.identity.headers.len(), 2);
    assert_eq!(config.rules.len(), 2);
    let names: Vec<_> = config.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["corp", "partner"]);
    assert_eq!(config.providers[0].token_sources, [TokenSource::Bearer]);
    assert_eq!(
        config.providers[1].token_sources,
        [TokenSource::Bearer, TokenSource::Cookie("session".into())]
    );
    assert_eq!(config.providers[1].mode, Some(Mode::Enforce));
}

#[test]
fn defaults_are_the_sidecars() {
    let config = DecisionConfig::from_yaml(
        "providers: [{name: a, issuer: https://a.test, audiences: [x], jwks: {uri: https://a.test/k}}]",
    )
    .unwrap();
    assert_eq!(config.mode, Mode::Enforce);
    assert_eq!(config.realm, "jwt-authz");
    assert_eq!(config.max_token_bytes, 8 * 1024);
    assert_eq!(config.paths, PathConfig::default());
    assert_eq!(config.identity, IdentityConfig::default());
    assert!(config.rules.is_empty());
}

#[test]
fn a_bad_decision_field_is_refused_with_the_field_named() {
    let provider = "providers: [{name: a, issuer: https://a.test, audiences: [x]}]\n";
    for (extra, field, message) in [
        ("realm: 'a\"b'", "realm", "without quotes"),
        ("max_token_bytes: 0", "max_token_bytes", "greater than 0"),
        ("paths: {max_bytes: 0}", "paths.max_bytes", "greater than 0"),
        (
            "identity: {headers: [{claim: sub, header: Authorization}]}",
            "identity.headers[0].header",
            "not a valid lowercase header name",
        ),
        (
            "identity: {headers: [{claim: sub, header: host}]}",
            "identity.headers[0].header",
            "cannot carry identity",
        ),
        (
            "rules: [{providers: [b], access: authenticated}]",
            "rules[0].providers[0]",
            "no provider is named",
        ),
        (
            "rules: [{match: {path: {prefix: /a/../b}}, access: public}]",
            "rules[0].match.path",
            "not a canonical path",
        ),
        (
            "rules: [{match: {path: {regex: '('}}, access: public}]",
            "rules[0].match.path.regex",
            "invalid regex",
        ),
    ] {
        let error = DecisionConfig::from_yaml(&format!("{provider}{extra}")).unwrap_err();
        let LoadError::Invalid(invalid) = &error else {
            panic!("{extra}: {error:?}");
        };
        assert_eq!(invalid.field, field, "{extra}");
        assert!(invalid.message.contains(message), "{extra}: {invalid}");
    }
}

#[test]
fn a_document_of_the_wrong_shape_is_refused_with_its_path() {
    let error = DecisionConfig::from_yaml(
        "providers: [{name: a, issuer: https://a.test, audiences: [x]}]\nrules: [{access: maybe}]",
    )
    .unwrap_err();
    assert!(
        matches!(&error, LoadError::Shape { path, .. } if path.starts_with("rules[0]")),
        "{error:?}"
    );
    // A misspelt field inside a rule is refused here too (rules deny unknown fields).
    let error = DecisionConfig::from_yaml(
        "providers: [{name: a, issuer: https://a.test, audiences: [x]}]\nrules: [{acess: public}]",
    )
    .unwrap_err();
    assert!(matches!(error, LoadError::Shape { .. }), "{error:?}");
    assert!(matches!(
        DecisionConfig::from_yaml("providers: [unclosed"),
        Err(LoadError::Yaml(_))
    ));
    assert!(matches!(
        DecisionConfig::from_yaml("mode: enforce"),
        Err(LoadError::Shape { .. })
    ));
}

/// The settings issue 30 added: `path_parameters`' names (and its old booleans),
/// `case_sensitive` per config and per rule, rule hosts without ports, and identity headers
/// that are not two spellings of one.
#[test]
fn path_host_and_identity_settings_are_read_and_checked() {
    let base = "providers: [{name: p, issuer: https://p.test, audiences: [a]}]\n";
    let read = |extra: &str| DecisionConfig::from_yaml(&format!("{base}{extra}"));
    for (value, want) in [
        ("reject", PathParameters::Reject),
        ("strip", PathParameters::Strip),
        ("keep", PathParameters::Keep),
        ("false", PathParameters::Reject),
        ("true", PathParameters::Keep),
    ] {
        let config = read(&format!("paths: {{path_parameters: {value}}}\n")).unwrap();
        assert_eq!(config.paths.path_parameters, want, "{value}");
    }
    let error = read("paths: {path_parameters: drop}\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("expected reject, strip or keep"), "{error}");
    assert!(!read("").unwrap().paths.case_sensitive);
    let config = read(
        "paths: {case_sensitive: true}\nrules: [{match: {path: {prefix: /a/}}, case_sensitive: false, access: public}]\n",
    )
    .unwrap();
    assert!(config.paths.case_sensitive);
    assert_eq!(config.rules[0].case_sensitive, Some(false));

    for host in ["Admin.Example.COM.", "[::1]", "api.test"] {
        let rules = format!("rules: [{{match: {{hosts: [\"{host}\"]}}, access: deny}}]\n");
        assert!(read(&rules).is_ok(), "{host}");
    }
    for (host, why) in [
        ("api.test:8443", "whatever the port"),
        ("[::1]:80", "whatever the port"),
        ("a..test", "empty label"),
        ("::1", "IPv6 addresses go in brackets"),
    ] {
        let rules = format!("rules: [{{match: {{hosts: [\"{host}\"]}}, access: deny}}]\n");
        let error = read(&rules).unwrap_err().to_string();
        assert!(
            error.starts_with("rules[0].match.hosts[0]"),
            "{host}: {error}"
        );
        assert!(error.contains(why), "{host}: {error}");
    }

    let error = read(
        "identity: {headers: [{claim: sub, header: x-user-id}, {claim: oid, header: x_user_id}]}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(error.starts_with("identity.headers[1].header"), "{error}");
}

#[test]
fn optional_access_reads_both_spellings_and_on_invalid_only_where_it_means_something() {
    let base =
        "providers:\n  - {name: corp, issuer: https://corp.example, audiences: [api]}\nrules:\n";
    let read = |rules: &str| DecisionConfig::from_yaml(&format!("{base}{rules}"));
    let config = read("  - {access: optional}\n  - {access: {optional: [{claim: plan, equals: pro}]}, on_invalid: anonymous}\n").expect("valid");
    assert_eq!(config.rules[0].access, Access::Optional(Vec::new()));
    assert!(matches!(&config.rules[1].access, Access::Optional(reqs) if reqs.len() == 1));
    assert_eq!(config.rules[1].on_invalid, Some(OnInvalid::Anonymous));
    for (rules, wants) in [
        (
            "  - {access: authenticated, on_invalid: anonymous}\n",
            "rules[0].on_invalid: only an optional rule",
        ),
        (
            "  - {access: {optional: [{claim: plan}]}}\n",
            "rules[0].access.optional[0]: exactly one of",
        ),
        (
            "  - {access: {optional: [], claims: []}}\n",
            "access is one map key",
        ),
        ("  - {access: sometimes}\n", "unknown variant `sometimes`"),
        (
            "  - {access: {optional: [{claim: plan, equals: pro, nope: 1}]}}\n",
            "rules[0].access.optional[0].nope: unknown field `nope`",
        ),
    ] {
        let error = read(rules).expect_err(rules).to_string();
        assert!(error.contains(wants), "{rules}: {error}");
    }
    // An invalid token in a cookie cannot be taken off a request passed on anonymously.
    let cookie = "providers:\n  - {name: corp, issuer: https://corp.example, audiences: [api], token_sources: [bearer, {cookie: session}]}\nrules:\n  - {access: optional, on_invalid: anonymous}\n";
    let error = DecisionConfig::from_yaml(cookie)
        .expect_err("cookie")
        .to_string();
    assert!(
        error.starts_with(
            "rules[0].on_invalid: provider \"corp\" reads tokens from the cookie \"session\""
        ),
        "{error}"
    );
    assert!(DecisionConfig::from_yaml(&cookie.replace("anonymous", "deny")).is_ok());
}

#[test]
fn the_anonymous_marker_is_a_header_of_its_own() {
    let read = |identity: &str| {
        DecisionConfig::from_yaml(&format!("providers: []\nidentity:\n{identity}"))
    };
    assert_eq!(
        read("  headers: []\n")
            .expect("default")
            .identity
            .anonymous_header
            .as_deref(),
        Some("x-user-anonymous")
    );
    assert_eq!(
        read("  anonymous_header: null\n")
            .expect("off")
            .identity
            .anonymous_header,
        None
    );
    for (identity, wants) in [
        (
            "  anonymous_header: X-Anon\n",
            "not a valid lowercase header name",
        ),
        (
            "  anonymous_header: authorization\n",
            "cannot carry identity",
        ),
        (
            "  anonymous_header: x_user_id\n",
            "identity header for claim \"sub\"",
        ),
    ] {
        let error = read(identity).expect_err(identity).to_string();
        assert!(
            error.starts_with("identity.anonymous_header") && error.contains(wants),
            "{error}"
        );
    }
}
