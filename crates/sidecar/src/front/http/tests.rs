use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

const GOOD: [(&str, &str); 3] = [
    ("x-forwarded-method", "DELETE"),
    ("x-forwarded-uri", "/api/x?y=1"),
    ("x-forwarded-host", "api.test:8443"),
];

#[test]
fn forwarded_request_is_read_from_its_own_family_only() {
    assert_eq!(
        forwarded(&headers(&GOOD), ForwardedHeaders::XForwarded),
        Ok(("DELETE", "/api/x?y=1", "api.test:8443"))
    );
    // The other family's headers are not read, whatever they say.
    let mut both = GOOD.to_vec();
    both.push(("x-original-uri", "/public"));
    assert_eq!(
        forwarded(&headers(&both), ForwardedHeaders::XForwarded).map(|r| r.1),
        Ok("/api/x?y=1")
    );
    assert_eq!(
        forwarded(&headers(&GOOD), ForwardedHeaders::XOriginal),
        Err("x-original-method")
    );
}

#[test]
fn a_missing_repeated_or_malformed_header_is_named() {
    for (drop, expected) in [
        ("x-forwarded-method", "x-forwarded-method"),
        ("x-forwarded-uri", "x-forwarded-uri"),
        ("x-forwarded-host", "x-forwarded-host"),
    ] {
        let some: Vec<_> = GOOD.iter().copied().filter(|(k, _)| *k != drop).collect();
        assert_eq!(
            forwarded(&headers(&some), ForwardedHeaders::XForwarded),
            Err(expected)
        );
    }
    // A client's copy plus the proxy's (a proxy that appends instead of overwriting).
    let mut twice = GOOD.to_vec();
    twice.push(("x-forwarded-uri", "/public"));
    assert_eq!(
        forwarded(&headers(&twice), ForwardedHeaders::XForwarded),
        Err("x-forwarded-uri")
    );
    for (name, bad) in [
        ("x-forwarded-method", ""),
        ("x-forwarded-method", "GET POST"),
        ("x-forwarded-method", &"A".repeat(33)),
        ("x-forwarded-uri", "api/x"),
        ("x-forwarded-uri", "http://evil.test/public"),
        ("x-forwarded-uri", "*"),
        ("x-forwarded-host", ""),
        ("x-forwarded-host", "user@api.test"),
        ("x-forwarded-host", "a.test,b.test"),
        ("x-forwarded-host", "api.test/public"),
        ("x-forwarded-host", &"h".repeat(300)),
    ] {
        let mut some: Vec<_> = GOOD.iter().copied().filter(|(k, _)| *k != name).collect();
        some.push((name, bad));
        assert_eq!(
            forwarded(&headers(&some), ForwardedHeaders::XForwarded),
            Err(name),
            "{name}: {bad:?}"
        );
    }
}

#[test]
fn repeated_headers_are_joined_like_envoy_joins_them() {
    let map = header_map(&headers(&[
        ("authorization", "Bearer a"),
        ("authorization", "Bearer b"),
        ("cookie", "x=1"),
    ]));
    assert_eq!(map["authorization"], "Bearer a,Bearer b");
    assert_eq!(map["cookie"], "x=1");
}

/// An absolute-form target (or HTTP/2 `:authority`) and a `Host` header naming different
/// hosts: which one the proxy routed on is unknown, so neither is decided on. Spellings of
/// one host agree.
#[test]
fn an_authority_that_disagrees_with_host_is_not_a_host() {
    let uri: axum::http::Uri = "http://admin.example.com/x".parse().expect("uri");
    let host = |h: &str| HashMap::from([("host".to_owned(), h.to_owned())]);
    assert_eq!(original_host(&uri, &host("other.test")), "");
    assert_eq!(
        original_host(&uri, &host("Admin.Example.COM.:80")),
        "admin.example.com"
    );
    assert_eq!(original_host(&uri, &HashMap::new()), "admin.example.com");
    let origin_form: axum::http::Uri = "/x".parse().expect("uri");
    assert_eq!(original_host(&origin_form, &host("api.test")), "api.test");
}
