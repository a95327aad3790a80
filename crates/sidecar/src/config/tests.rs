use super::*;
use jsonwebtoken::Algorithm;

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
    assert_eq!(p.jwks_cache.max_ttl, Duration::from_secs(3600));
    assert_eq!(p.jwks_cache.max_stale, Duration::from_secs(4 * 3600));
    assert_eq!(p.jwks_cache.unknown_kid_interval, Duration::from_secs(10));
    assert_eq!(config.max_token_bytes, 8192);
    assert_eq!(config.identity.headers[0].header, "x-user-id");
    assert!(config.identity.strip_authorization);
    assert_eq!(config.listen.admin, "127.0.0.1:9002".parse().unwrap());
    assert!(!p.allow_insecure_http);
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
    let text = include_str!("../../../../config/example.yaml");
    let config = Config::from_yaml(text).unwrap();
    assert_eq!(config.providers.len(), 1);
    assert!(!config.rules.is_empty());
}

/// The example's commented-out `introspection` block, uncommented with a secret file that
/// exists, is a valid configuration with the documented defaults.
#[test]
fn example_introspection_block_is_valid_once_uncommented() {
    let text = include_str!("../../../../config/example.yaml");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a-secret-of-some-length\n").unwrap();
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line == "    # introspection:" {
            inside = true;
        } else if inside && !line.starts_with("    #   ") {
            inside = false;
        }
        let line = match line.strip_prefix("    # ") {
            Some(rest) if inside && !rest.trim_start().starts_with('#') => format!("    {rest}"),
            _ => line.to_owned(),
        };
        out.push_str(&line.replace("/run/secrets/introspection", &secret.display().to_string()));
        out.push('\n');
    }
    let config = Config::from_yaml(&out).unwrap();
    let introspection = config.providers[0].introspection.as_ref().unwrap();
    assert_eq!(introspection.client_id, "jwt-authz");
    assert_eq!(introspection.cache, IntrospectionCacheConfig::default());
    assert_eq!(introspection.timeout, Duration::from_secs(1));
}

#[test]
fn new_trust_options_name_the_field() {
    let with =
        |extra: &str| MINIMAL.replace("audiences: [api]", &format!("audiences: [api]\n{extra}"));
    let cases = [
        (
            with("    token_types: [\"\"]"),
            "providers[0].token_types[0]",
        ),
        (
            with("    token_types: [text/jwt]"),
            "providers[0].token_types[0]",
        ),
        (
            with("    token_types: [\"at+jwt x\"]"),
            "providers[0].token_types[0]",
        ),
        (with("    max_lifetime: 0s"), "providers[0].max_lifetime"),
        (
            with("    jwks_http: {bearer_token_file: /nonexistent/token}"),
            "providers[0].jwks_http.bearer_token_file",
        ),
        (
            with("    jwks_http: {ca_file: /nonexistent/ca.pem}"),
            "providers[0].jwks_http.ca_file",
        ),
        (with("    jwks_http: {cafile: x}"), "providers[0].jwks_http"),
        (
            format!("{MINIMAL}rules:\n  - providers: [nobody]\n    access: authenticated\n"),
            "rules[0].providers[0]",
        ),
        (
            format!("{MINIMAL}rules:\n  - providers: []\n    access: authenticated\n"),
            "rules[0].providers",
        ),
        (
            format!("{MINIMAL}rules:\n  - audiences: [\"\"]\n    access: authenticated\n"),
            "rules[0].audiences",
        ),
        (
            format!("{MINIMAL}rules:\n  - providers: [demo]\n    access: deny\n"),
            "rules[0].access",
        ),
        (
            format!(
                "{MINIMAL}rules:\n  - match: {{path: {{prefix: /a//b}}}}\n    access: public\n"
            ),
            "rules[0].match.path",
        ),
        (
            format!(
                "{MINIMAL}rules:\n  - match: {{path: {{exact: /a/../b}}}}\n    access: public\n"
            ),
            "rules[0].match.path",
        ),
        (
            format!(
                "{MINIMAL}rules:\n  - match: {{path: {{prefix: \"/caf\u{e9}\"}}}}\n    access: public\n"
            ),
            "rules[0].match.path",
        ),
        (
            format!("{MINIMAL}paths: {{max_bytes: 0}}\n"),
            "paths.max_bytes",
        ),
        (
            format!("{MINIMAL}paths: {{escaped_slashes: maybe}}\n"),
            "paths.escaped_slashes",
        ),
    ];
    for (yaml, field) in cases {
        let message = error_of(&yaml);
        assert!(
            message.starts_with(field),
            "{message:?} should name {field}"
        );
    }
    // The suggestion in the message is the canonical spelling.
    let message = error_of(&format!(
        "{MINIMAL}rules:\n  - match: {{path: {{prefix: \"/caf\u{e9}\"}}}}\n    access: public\n"
    ));
    assert!(message.contains("\"/caf%C3%A9\""), "{message}");
}

#[test]
fn private_jwks_settings_are_checked_against_the_files_and_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&token, "abc.def.ghi\n").unwrap();
    std::fs::write(&not_pem, "hello").unwrap();
    let with = |jwks: &str, http: &str| {
        MINIMAL
            .replace("jwks: {uri: \"https://issuer.test/jwks.json\"}", jwks)
            .replace(
                "audiences: [api]",
                &format!("audiences: [api]\n    jwks_http: {http}"),
            )
    };
    let token_http = format!("{{bearer_token_file: {}}}", token.display());
    // A token file that can be read, over https: accepted, for a URI or discovery.
    Config::from_yaml(&with(
        "jwks: {uri: \"https://issuer.test/jwks.json\"}",
        &token_http,
    ))
    .unwrap();
    Config::from_yaml(&with("jwks: discovery", &token_http)).unwrap();
    let cases = [
        // The token is never sent over plain http, not even to loopback.
        (
            with("jwks: {uri: \"http://127.0.0.1/jwks.json\"}", &token_http),
            "providers[0].jwks_http.bearer_token_file",
        ),
        (
            with("jwks: {file: /etc/jwks.json}", &token_http),
            "providers[0].jwks_http",
        ),
        (
            with(
                "jwks: {uri: \"https://issuer.test/jwks.json\"}",
                &format!("{{ca_file: {}}}", not_pem.display()),
            ),
            "providers[0].jwks_http.ca_file",
        ),
    ];
    for (yaml, field) in cases {
        let message = error_of(&yaml);
        assert!(
            message.starts_with(field),
            "{message:?} should name {field}"
        );
    }
    // Empty, oversized or multi-word token files are refused, and the message never quotes
    // what the file holds.
    for content in ["", "  \n", "two words", &"x".repeat(20_000)] {
        std::fs::write(&token, content).unwrap();
        let message = error_of(&with(
            "jwks: {uri: \"https://issuer.test/jwks.json\"}",
            &token_http,
        ));
        assert!(
            message.starts_with("providers[0].jwks_http.bearer_token_file"),
            "{message}"
        );
        assert!(
            !message.contains("words") && !message.contains("xxxx"),
            "{message}"
        );
    }
}

#[test]
fn token_types_compare_as_media_types() {
    let config = Config::from_yaml(&MINIMAL.replace(
        "audiences: [api]",
        "audiences: [api]\n    token_types: [at+jwt, application/JWT]",
    ))
    .unwrap();
    let p = &config.providers[0];
    for accepted in [
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
        "Application/At+Jwt",
        "jwt",
        "JWT",
    ] {
        assert!(p.accepts_type(Some(accepted)), "{accepted}");
    }
    for refused in [
        "id+jwt",
        "text/at+jwt",
        "application/",
        "at+jwt ",
        "",
        "JOSE",
    ] {
        assert!(!p.accepts_type(Some(refused)), "{refused}");
    }
    assert!(!p.accepts_type(None));
    // Unset: every type, and none, is accepted.
    assert!(Config::from_yaml(MINIMAL).unwrap().providers[0].accepts_type(None));
}

#[test]
fn keys_come_over_https_unless_loopback_or_explicitly_allowed() {
    let jwks = |uri: &str| MINIMAL.replace("https://issuer.test/jwks.json", uri);
    for refused in [
        "http://issuer.test/jwks.json",
        "http://10.0.0.1/jwks",
        "http://127.0.0.1.nip.io/jwks",
    ] {
        assert!(
            error_of(&jwks(refused)).starts_with("providers[0].jwks.uri"),
            "{refused}"
        );
    }
    for allowed in [
        "https://issuer.test/jwks.json",
        "http://127.0.0.1:8080/jwks",
        "http://127.3.4.5/jwks",
        "http://[::1]:8080/jwks",
        "http://localhost:8080/jwks",
    ] {
        Config::from_yaml(&jwks(allowed)).unwrap_or_else(|e| panic!("{allowed}: {e}"));
    }
    let explicit = jwks("http://issuer:8080/jwks").replace(
        "audiences: [api]",
        "audiences: [api]\n    allow_insecure_http: true",
    );
    assert!(Config::from_yaml(&explicit).unwrap().providers[0].allow_insecure_http);
    let discovery = MINIMAL
        .replace("https://issuer.test\n", "http://issuer.test\n")
        .replace(
            "jwks: {uri: \"https://issuer.test/jwks.json\"}",
            "jwks: discovery",
        );
    assert!(error_of(&discovery).starts_with("providers[0].issuer"));
}

#[test]
fn http_port_is_off_by_default_and_its_endpoints_are_checked() {
    let config = Config::from_yaml(MINIMAL).unwrap();
    assert_eq!(config.listen.http, None);
    assert_eq!(config.http.ext_authz_prefix.as_deref(), Some("/ext-authz"));
    assert_eq!(
        config
            .http
            .forward_auth
            .iter()
            .map(|e| (e.path.as_str(), e.headers))
            .collect::<Vec<_>>(),
        [
            ("/forward-auth", ForwardedHeaders::XForwarded),
            ("/auth-request", ForwardedHeaders::XOriginal),
        ]
    );
    for (http, field) in [
        ("ext_authz_prefix: /authz/", "http.ext_authz_prefix"),
        ("ext_authz_prefix: authz", "http.ext_authz_prefix"),
        ("ext_authz_prefix: /a/../b", "http.ext_authz_prefix"),
        ("ext_authz_prefix: /a%2Fb", "http.ext_authz_prefix"),
        (
            "forward_auth: [{path: /a?x, headers: x-forwarded}]",
            "http.forward_auth[0].path",
        ),
        (
            "forward_auth: [{path: /a, headers: x-forwarded}, {path: /a, headers: x-original}]",
            "http.forward_auth[1].path",
        ),
        // Overlaps: a client's own path must never select a forward-auth endpoint.
        (
            "ext_authz_prefix: /check\n  forward_auth: [{path: /check/fa, headers: x-forwarded}]",
            "http.forward_auth[0].path",
        ),
        (
            "ext_authz_prefix: /check/envoy\n  forward_auth: [{path: /check, headers: x-forwarded}]",
            "http.forward_auth[0].path",
        ),
    ] {
        let error = error_of(&format!("{MINIMAL}http:\n  {http}\n"));
        assert!(error.contains(field), "{http}: {error}");
    }
    assert!(
        error_of(&format!(
            "{MINIMAL}http:\n  forward_auth: [{{path: /a, headers: x-real}}]\n"
        ))
        .contains("http.forward_auth[0].headers")
    );
    // Apart is fine, including a name that merely starts the same way.
    let config = Config::from_yaml(&format!(
        "{MINIMAL}listen: {{http: 127.0.0.1:9191}}\nhttp:\n  ext_authz_prefix: /check\n  forward_auth: [{{path: /checks, headers: x-original}}]\n"
    ))
    .unwrap();
    assert_eq!(config.listen.http, Some("127.0.0.1:9191".parse().unwrap()));
}

#[test]
fn dpop_and_certificate_binding_parse_with_safe_defaults() {
    let config = Config::from_yaml(MINIMAL).unwrap();
    let p = &config.providers[0];
    assert_eq!(p.dpop.mode, DpopMode::Off);
    assert_eq!(p.certificate_binding, CertificateBinding::Optional);
    assert_eq!(
        config.dpop.replay_store,
        ReplayStoreConfig::Memory {
            max_entries: 1_000_000
        }
    );
    let yaml = format!(
        "{MINIMAL}    dpop: {{mode: required, algorithms: [ES256], max_age: 30s, leeway: 2s}}\n    certificate_binding: required\ndpop:\n  scheme: https\n  replay_store:\n    redis: {{url: \"redis://:secret@127.0.0.1:6379/0\"}}\n"
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let p = &config.providers[0];
    assert_eq!(p.dpop.mode, DpopMode::Required);
    assert_eq!(p.dpop.replay_window(), Duration::from_secs(34));
    assert_eq!(p.certificate_binding, CertificateBinding::Required);
    assert_eq!(config.dpop.scheme.as_deref(), Some("https"));
    assert!(matches!(
        &config.dpop.replay_store,
        ReplayStoreConfig::Redis { key_prefix, timeout, .. }
            if key_prefix == "jwt-authz:dpop:" && *timeout == Duration::from_millis(250)
    ));
}

#[test]
fn dpop_settings_are_validated() {
    for (extra, field) in [
        (
            "    dpop: {mode: optional, algorithms: [HS256]}\n",
            "providers[0].dpop.algorithms",
        ),
        (
            "    dpop: {mode: optional, algorithms: []}\n",
            "providers[0].dpop.algorithms",
        ),
        (
            "    dpop: {mode: optional, max_age: 0s}\n",
            "providers[0].dpop.max_age",
        ),
        (
            "    dpop: {mode: optional, max_age: 2h}\n",
            "providers[0].dpop.max_age",
        ),
        (
            "    dpop: {mode: optional, leeway: 1h}\n",
            "providers[0].dpop.leeway",
        ),
        ("dpop: {scheme: ftp}\n", "dpop.scheme"),
        (
            "dpop: {replay_store: {redis: {url: \"http://127.0.0.1\"}}}\n",
            "dpop.replay_store.redis.url",
        ),
        (
            "dpop: {replay_store: {redis: {url: \"redis://h\", timeout: 0s}}}\n",
            "dpop.replay_store.redis.timeout",
        ),
        (
            "dpop: {replay_store: {memory: {max_entries: 0}}}\n",
            "dpop.replay_store.memory.max_entries",
        ),
        (
            "dpop: {nonce: {secret_file: /s, lifetime: 1s}}\n",
            "dpop.nonce.lifetime",
        ),
    ] {
        let error = error_of(&format!("{MINIMAL}{extra}"));
        assert!(error.contains(field), "{extra}: {error}");
    }
    assert!(error_of(&format!("{MINIMAL}    dpop: {{mode: sometimes}}\n")).contains("mode"));
}

#[test]
fn status_lists_default_to_the_providers_own_origins() {
    let config = Config::from_yaml(MINIMAL).unwrap();
    assert_eq!(config.providers[0].status_list.mode, StatusListMode::Off);
    let yaml = format!(
        "{MINIMAL}    jwks_cache: {{}}\n    status_list: {{mode: required, max_stale: 30s}}\n"
    )
    .replace(
        "https://issuer.test/jwks.json",
        "https://keys.test:8443/jwks.json",
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let p = &config.providers[0];
    assert_eq!(p.status_list.mode, StatusListMode::Required);
    assert_eq!(p.status_list.max_stale, Duration::from_secs(30));
    assert_eq!(p.status_list.max_bytes, 4 * 1024 * 1024);
    assert_eq!(
        p.status_list.origins(p),
        vec!["https://issuer.test", "https://keys.test:8443"]
    );
    let named = format!(
        "{MINIMAL}    status_list: {{mode: optional, allowed_origins: [\"https://status.test\"]}}\n"
    );
    let config = Config::from_yaml(&named).unwrap();
    let p = &config.providers[0];
    assert_eq!(p.status_list.origins(p), vec!["https://status.test"]);
}

#[test]
fn status_list_settings_are_validated() {
    for (extra, field) in [
        (
            "    status_list: {mode: optional, allowed_origins: [\"https://s.test/lists\"]}\n",
            "providers[0].status_list.allowed_origins[0]",
        ),
        (
            "    status_list: {mode: optional, allowed_origins: [\"http://s.test\"]}\n",
            "providers[0].status_list.allowed_origins[0]",
        ),
        (
            "    status_list: {mode: optional, allowed_origins: [\"https://u:p@s.test\"]}\n",
            "providers[0].status_list.allowed_origins[0]",
        ),
        (
            "    status_list: {mode: optional, max_stale: 0s}\n",
            "providers[0].status_list.max_stale",
        ),
        (
            "    status_list: {mode: optional, min_ttl: 10m, max_ttl: 1m}\n",
            "providers[0].status_list.min_ttl",
        ),
        (
            "    status_list: {mode: optional, min_ttl: 100ms}\n",
            "providers[0].status_list.min_ttl",
        ),
        (
            "    status_list: {mode: optional, max_bytes: 1073741824}\n",
            "providers[0].status_list.max_bytes",
        ),
        (
            "    status_list: {mode: optional, max_lists: 0}\n",
            "providers[0].status_list.max_lists",
        ),
    ] {
        let error = error_of(&format!("{MINIMAL}{extra}"));
        assert!(error.contains(field), "{extra}: {error}");
    }
    assert!(error_of(&format!("{MINIMAL}    status_list: {{mode: always}}\n")).contains("mode"));
    // A file JWKS and a non-URL issuer leave no origin to default to.
    let file = "providers:\n  - name: f\n    issuer: urn:example\n    audiences: [api]\n    jwks: {file: /k.json}\n    status_list: {mode: optional}\n";
    assert!(error_of(file).contains("providers[0].status_list.allowed_origins"));
}

#[test]
fn tracing_is_off_by_default_with_bounded_export() {
    let config = Config::from_yaml(MINIMAL).unwrap();
    assert!(!config.tracing.enabled());
    assert_eq!(config.tracing.service_name, "jwt-authz");
    assert_eq!(config.tracing.root_sample_ratio, 1.0);
    assert_eq!(config.tracing.max_queue_size, 2048);
    let on = Config::from_yaml(&format!(
        "{MINIMAL}tracing: {{otlp_endpoint: \"http://otel-collector:4317\", root_sample_ratio: 0.25}}\n"
    ))
    .unwrap();
    assert!(on.tracing.enabled());
    assert_eq!(on.tracing.root_sample_ratio, 0.25);
    let tls = Config::from_yaml(&format!(
        "{MINIMAL}tracing:\n  otlp_endpoint: \"https://collector.example:4317\"\n  tls: {{ca_file: /etc/ca.pem, cert_file: /etc/c.pem, key_file: /etc/k.pem}}\n  headers_file: /etc/otlp-headers\n  request_context: ignore\n"
    ))
    .unwrap();
    assert_eq!(
        tls.tracing.request_context,
        crate::config::RequestContext::Ignore
    );
    assert!(tls.tracing.tls.is_some() && tls.tracing.headers_file.is_some());
}

#[test]
fn tracing_settings_are_validated() {
    for (extra, field) in [
        (
            "tracing: {otlp_endpoint: \"https://c:4317\"}",
            "needs tls.ca_file",
        ),
        (
            "tracing: {otlp_endpoint: \"http://c:4317\", tls: {ca_file: /ca.pem}}",
            "plain http:// otlp_endpoint",
        ),
        (
            "tracing: {otlp_endpoint: \"https://c:4317\", tls: {ca_file: /ca.pem, cert_file: /c.pem}}",
            "cert_file and key_file go together",
        ),
        (
            "tracing: {otlp_endpoint: \"https://c:4317\", tls: {ca_file: /ca.pem, server_name: \"\"}}",
            "tracing.tls.server_name",
        ),
        ("tracing: {request_context: sometimes}", "request_context"),
        (
            "tracing: {otlp_endpoint: \"http://collector.example:4317\", headers_file: /h}",
            "would be sent in the clear",
        ),
        (
            "tracing: {otlp_endpoint: \"http://c:4317/v1/traces\"}",
            "no path",
        ),
        (
            "tracing: {otlp_endpoint: \"http://u:p@c:4317\"}",
            "no path, credentials",
        ),
        (
            "tracing: {otlp_endpoint: \"http://c:4317?x=1\"}",
            "tracing.otlp_endpoint",
        ),
        (
            "tracing: {otlp_endpoint: \"grpc://c:4317\"}",
            "tracing.otlp_endpoint",
        ),
        (
            "tracing: {otlp_endpoint: \"c:4317\"}",
            "tracing.otlp_endpoint",
        ),
        (
            "tracing: {root_sample_ratio: 1.5}",
            "tracing.root_sample_ratio",
        ),
        (
            "tracing: {root_sample_ratio: -0.1}",
            "tracing.root_sample_ratio",
        ),
        (
            "tracing: {root_sample_ratio: .nan}",
            "tracing.root_sample_ratio",
        ),
        ("tracing: {service_name: \"\"}", "tracing.service_name"),
        ("tracing: {service_name: \"a\\nb\"}", "tracing.service_name"),
        ("tracing: {export_interval: 0s}", "tracing.export_interval"),
        ("tracing: {export_timeout: 0s}", "tracing.export_timeout"),
        ("tracing: {max_queue_size: 0}", "tracing.max_queue_size"),
        (
            "tracing: {max_queue_size: 100000000}",
            "tracing.max_queue_size",
        ),
        (
            "tracing: {max_queue_size: 10, max_export_batch_size: 11}",
            "tracing.max_export_batch_size",
        ),
        ("tracing: {otlp: x}", "otlp"),
    ] {
        let error = error_of(&format!("{MINIMAL}{extra}\n"));
        assert!(error.contains(field), "{extra}: {error}");
    }
}

#[test]
fn verification_threads_and_their_queue_are_bounded() {
    let config = Config::from_yaml(MINIMAL).unwrap();
    assert_eq!(config.limits.verify_threads, None);
    assert!(config.limits.verify_threads() >= 1);
    assert_eq!(config.limits.max_queued_verifications, 1024);
    assert_eq!(config.limits.verify_nice, 19);
    assert_eq!(config.limits.isolate_after_refusals, 32);
    let with = |limits: &str| format!("{MINIMAL}limits: {limits}\n");
    let set = Config::from_yaml(&with(
        "{verify_threads: 3, max_queued_verifications: 7, verify_nice: 0}",
    ))
    .unwrap();
    assert_eq!(set.limits.verify_threads(), 3);
    assert_eq!(set.limits.max_queued_verifications, 7);
    let inline = Config::from_yaml(&with("{verify_threads: 0}")).unwrap();
    assert_eq!(inline.limits.verify_threads(), 0);
    let always = Config::from_yaml(&with("{isolate_after_refusals: 0}")).unwrap();
    assert_eq!(always.limits.isolate_after_refusals, 0);
    assert!(Config::from_yaml(&with("{isolate_after_refusals: -1}")).is_err());
    for (limits, field) in [
        ("{verify_threads: 257}", "limits.verify_threads"),
        (
            "{max_queued_verifications: 0}",
            "limits.max_queued_verifications",
        ),
        (
            "{max_queued_verifications: 1048577}",
            "limits.max_queued_verifications",
        ),
        ("{verify_nice: -1}", "limits.verify_nice"),
        ("{verify_nice: 20}", "limits.verify_nice"),
        (
            "{isolate_after_refusals: 1000001}",
            "limits.isolate_after_refusals",
        ),
    ] {
        let error = error_of(&with(limits));
        assert!(error.contains(field), "{limits}: {error}");
    }
}

/// The sidecar and the in-proxy filter read the same file and must compute the same decision
/// digest from it (the filter decides nothing while they differ); a change to a rule changes
/// it, a change to what only the sidecar or only the filter's holding reads does not.
#[test]
fn the_decision_digest_is_the_filters_for_the_same_file() {
    for text in [
        include_str!("../../../../config/example.yaml"),
        include_str!("../../../../deploy/kubernetes/config.yaml"),
    ] {
        let sidecar = Config::from_yaml(text).unwrap().decision().digest();
        let filter = DecisionConfig::from_yaml(text).unwrap().digest();
        assert_eq!(sidecar, filter);
    }
    let text = include_str!("../../../../config/example.yaml");
    let digest = |text: &str| Config::from_yaml(text).unwrap().decision().digest();
    let base = digest(text);
    let rule_changed = text.replace("any_of: [admin]", "any_of: [admin, ops]");
    assert_ne!(text, rule_changed);
    assert_ne!(digest(&rule_changed), base);
    let limits_changed = text.replace(
        "max_queued_verifications: 1024",
        "max_queued_verifications: 7",
    );
    assert_ne!(text, limits_changed);
    assert_eq!(digest(&limits_changed), base);
}
