use super::*;

#[test]
fn resources_are_absolute_https_or_loopback_http_without_fragment_query_or_userinfo() {
    for good in [
        "https://mcp.example.com/mcp",
        "https://mcp.example.com",
        "https://mcp.example.com:8443/a/b%20c",
        "http://127.0.0.1:8080/mcp",
        "http://[::1]:8080/mcp",
        "http://localhost/mcp",
        "https://[2001:db8::1]/x",
    ] {
        assert_eq!(parse_resource(good).as_deref(), Ok(good), "{good}");
    }
    let long = format!("https://a.example/{}", "x".repeat(MAX_RESOURCE));
    for bad in [
        "",
        long.as_str(),
        "mcp",
        "/mcp",
        "urn:example:mcp",
        "ftp://example.com/x",
        "HTTPS://example.com/x",
        "https://example.com/mcp#frag",
        "https://example.com/mcp?x=1",
        "https://user:pass@example.com/mcp",
        "https://user@example.com/mcp",
        "https:///mcp",
        "https://:443/mcp",
        "https://[::1/mcp",
        "https://example.com:0/x",
        "https://example.com:99999/x",
        "https://example.com:+80/x",
        "https://example.com:80:80/x",
        "https://exa mple.com/x",
        "https://example.com/\u{e9}",
        "https://example.com/a\tb",
        "https://example.com/<x>",
        "http://example.com/mcp",
        "http://127.0.0.1.example.com/mcp",
        "http://localhost.example.com/mcp",
        "http://10.0.0.1/mcp",
    ] {
        assert!(parse_resource(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn scope_rules_name_a_scope_token_and_optionally_roles() {
    assert_eq!(
        parse_scope_rule("mcp:tools"),
        Ok(ScopeRule {
            name: "mcp:tools".into(),
            roles: None
        })
    );
    assert_eq!(
        parse_scope_rule("mcp:admin=admin,ops"),
        Ok(ScopeRule {
            name: "mcp:admin".into(),
            roles: Some(vec!["admin".into(), "ops".into()])
        })
    );
    let long = "s".repeat(MAX_SCOPE_NAME + 1);
    let many = format!("s={}", vec!["r"; MAX_ROLES + 1].join(","));
    for bad in [
        "",
        "=admin",
        "a b",
        "a\"b",
        "a\\b",
        "a,b",
        "caf\u{e9}",
        long.as_str(),
        "s=",
        "s=admin,",
        "s=ad min",
        "s=a=b",
        many.as_str(),
    ] {
        assert!(parse_scope_rule(bad).is_err(), "{bad:?} accepted");
    }
    assert!(parse_scope_rule(&"s".repeat(MAX_SCOPE_NAME)).is_ok());
}

fn grants() -> Grants {
    Grants::new(
        &["http://127.0.0.1:8080/mcp".into()],
        &[
            parse_scope_rule("mcp:tools").unwrap(),
            parse_scope_rule("mcp:admin=admin").unwrap(),
        ],
    )
    .unwrap()
}

fn asking(resources: &[&str], scope: Option<&str>) -> Requested {
    Requested {
        resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        scope: scope.map(str::to_owned),
    }
}

#[test]
fn duplicates_and_too_many_are_refused_at_start() {
    let r = "https://a.example/x".to_owned();
    assert!(Grants::new(&[r.clone(), r.clone()], &[]).is_err());
    let s = parse_scope_rule("a").unwrap();
    let t = parse_scope_rule("a=admin").unwrap();
    assert!(Grants::new(&[], &[s, t]).is_err());
    let many: Vec<String> = (0..=MAX_CONFIGURED)
        .map(|i| format!("https://a.example/{i}"))
        .collect();
    assert!(Grants::new(&many, &[]).is_err());
}

#[test]
fn the_shape_is_checked_without_the_configuration() {
    assert_eq!(asking(&[], None).check_shape(), Ok(()));
    assert_eq!(
        asking(&["a", "b"], None).check_shape(),
        Err(GrantError::SeveralResources)
    );
    let long = "x".repeat(MAX_RESOURCE + 1);
    assert_eq!(
        asking(&[&long], None).check_shape(),
        Err(GrantError::ResourceTooLong)
    );
    let big = vec!["a"; MAX_SCOPE_PARAM / 2 + 1].join(" ");
    assert_eq!(
        asking(&[], Some(&big)).check_shape(),
        Err(GrantError::ScopeTooLong)
    );
    for bad in [" a", "a ", "a  b", "a\tb", "a\"b", "caf\u{e9}"] {
        assert_eq!(
            asking(&[], Some(bad)).check_shape(),
            Err(GrantError::MalformedScope),
            "{bad:?}"
        );
    }
    assert_eq!(asking(&[], Some("unknown:x y")).check_shape(), Ok(()));
}

#[test]
fn a_known_resource_becomes_the_audience_and_scopes_are_granted_by_role() {
    let g = grants();
    let mcp = "http://127.0.0.1:8080/mcp";
    assert_eq!(
        g.grant(&asking(&[], None), "user", "api"),
        Ok(Granted {
            audience: "api".into(),
            scope: None
        })
    );
    assert_eq!(
        g.grant(&asking(&[mcp], Some("mcp:tools mcp:admin")), "admin", "api"),
        Ok(Granted {
            audience: mcp.into(),
            scope: Some("mcp:tools mcp:admin".into())
        })
    );
    // Fewer than asked (RFC 6749 §3.3), in the order asked, each once.
    assert_eq!(
        g.grant(
            &asking(&[mcp], Some("mcp:admin mcp:tools mcp:tools")),
            "user",
            "api"
        )
        .map(|g| g.scope),
        Ok(Some("mcp:tools".into()))
    );
    assert_eq!(
        g.grant(&asking(&[mcp], Some("mcp:admin")), "user", "api"),
        Err(GrantError::ScopeNotGranted)
    );
    assert_eq!(
        g.grant(&asking(&[mcp], Some("mcp:tools other")), "admin", "api"),
        Err(GrantError::UnknownScope)
    );
    // Exactly as configured: no normalisation, no prefix match.
    for other in [
        "http://127.0.0.1:8080/mcp/",
        "http://127.0.0.1:8080/MCP",
        "http://127.0.0.1:8080",
        "http://localhost:8080/mcp",
        "",
    ] {
        assert_eq!(
            g.grant(&asking(&[other], None), "admin", "api"),
            Err(GrantError::UnknownResource),
            "{other:?}"
        );
    }
    assert_eq!(
        g.grant(&asking(&[mcp, mcp], None), "admin", "api"),
        Err(GrantError::SeveralResources)
    );
    assert_eq!(GrantError::UnknownResource.code(), "invalid_target");
    assert_eq!(GrantError::ScopeNotGranted.code(), "invalid_scope");
}
