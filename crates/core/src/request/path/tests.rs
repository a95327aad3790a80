use proptest::prelude::*;

use super::*;

fn config(escaped_slashes: EscapedSlashes) -> PathConfig {
    PathConfig {
        escaped_slashes,
        ..PathConfig::default()
    }
}

fn canon(path: &str) -> Result<String, PathError> {
    canonical_path(path, &PathConfig::default()).map(Cow::into_owned)
}

/// With `paths.path_parameters: keep`, which the RFC's `;x` examples need.
fn canon_with_parameters(path: &str) -> Result<String, PathError> {
    canon_parameters(path, PathParameters::Keep)
}

fn canon_parameters(path: &str, path_parameters: PathParameters) -> Result<String, PathError> {
    let config = PathConfig {
        path_parameters,
        ..PathConfig::default()
    };
    canonical_path(path, &config).map(Cow::into_owned)
}

/// RFC 3986 §5.4.1 and §5.4.2, resolved against the base `http://a/b/c/d;p?q`: a relative
/// reference `R` merges with the base path into `/b/c/R` (§5.2.3), and removing the
/// dot-segments of that must give the path of the RFC's target URI. References whose target
/// takes the base's path or authority (`""`, `?y`, `#s`, `//g`, `g:h`) have no path to check.
/// A fragment is never part of a request target, so references with `#` are refused whole
/// (checked below); `;` needs `paths.path_parameters`.
#[test]
fn rfc3986_section_5_4_examples() {
    let examples = [
        // §5.4.1 normal examples
        ("g", "/b/c/g"),
        ("./g", "/b/c/g"),
        ("g/", "/b/c/g/"),
        ("g?y", "/b/c/g"),
        (";x", "/b/c/;x"),
        ("g;x", "/b/c/g;x"),
        (".", "/b/c/"),
        ("./", "/b/c/"),
        ("..", "/b/"),
        ("../", "/b/"),
        ("../g", "/b/g"),
        ("../..", "/"),
        ("../../", "/"),
        ("../../g", "/g"),
        // §5.4.2 abnormal examples that stay inside the root
        ("g.", "/b/c/g."),
        (".g", "/b/c/.g"),
        ("g..", "/b/c/g.."),
        ("..g", "/b/c/..g"),
        ("./../g", "/b/g"),
        ("./g/.", "/b/c/g/"),
        ("g/./h", "/b/c/g/h"),
        ("g/../h", "/b/c/h"),
        ("g;x=1/./y", "/b/c/g;x=1/y"),
        ("g;x=1/../y", "/b/c/y"),
        // The query and fragment are not part of the path: their dots stay theirs.
        ("g?y/./x", "/b/c/g"),
        ("g?y/../x", "/b/c/g"),
    ];
    for (reference, want) in examples {
        assert_eq!(
            canon_with_parameters(&format!("/b/c/{reference}")).as_deref(),
            Ok(want),
            "{reference}"
        );
    }
    for reference in ["g#s", "g?y#s", "g;x?y#s", "g#s/./x", "g#s/../x"] {
        assert_eq!(
            canon_with_parameters(&format!("/b/c/{reference}")),
            Err(PathError::Fragment),
            "{reference}"
        );
    }
    // Absolute-path references (§5.4.1 "/g", §5.4.2 "/./g").
    assert_eq!(canon("/g").as_deref(), Ok("/g"));
    assert_eq!(canon("/./g").as_deref(), Ok("/g"));
}

/// §5.4.2's references that climb above the root resolve to `/g` by the RFC's algorithm,
/// which silently drops the extra `..`. A request that asks for that is refused instead.
#[test]
fn rfc3986_examples_above_the_root_are_refused() {
    for reference in ["../../../g", "../../../../g"] {
        assert_eq!(
            canon(&format!("/b/c/{reference}")),
            Err(PathError::AboveRoot),
            "{reference}"
        );
    }
    assert_eq!(canon("/../g"), Err(PathError::AboveRoot));
    assert_eq!(canon("/.."), Err(PathError::AboveRoot));
    assert_eq!(canon("/%2e%2e/g"), Err(PathError::AboveRoot));
}

#[test]
fn equivalent_spellings_give_one_path() {
    let cases = [
        // §6.2.2.2: escaped unreserved characters are the characters.
        ("/api/%75sers", "/api/users"),
        ("/%7Euser/%2d%2E%5f", "/~user/-._"),
        // §6.2.2.1: hex digits of the escapes that stay are upper-cased.
        ("/caf%c3%a9", "/caf%C3%A9"),
        // Raw characters that may not appear in a path are escaped.
        ("/caf\u{e9}", "/caf%C3%A9"),
        ("/a b", "/a%20b"),
        ("/a\"<>^`{|}", "/a%22%3C%3E%5E%60%7B%7C%7D"),
        // Escaped reserved characters are not the characters (§2.2) and stay escaped.
        ("/a%3Bb", "/a%3Bb"),
        ("/a%25", "/a%25"),
        ("/a%3f", "/a%3F"),
        // Slashes merge; dot-segments go, encoded or not.
        ("//api///users//", "/api/users/"),
        ("/public/../admin", "/admin"),
        ("/public/%2e%2E/admin", "/admin"),
        ("/public/.%2e/admin", "/admin"),
        ("/a/./b/.", "/a/b/"),
        ("/a/b/..", "/a/"),
        // Query and fragment dropped.
        ("/a?b=/../c", "/a"),
        ("/", "/"),
        ("/?", "/"),
    ];
    for (raw, want) in cases {
        assert_eq!(canon(raw).as_deref(), Ok(want), "{raw:?}");
    }
}

#[test]
fn ordinary_paths_are_borrowed_unchanged() {
    for path in [
        "/",
        "/api/users",
        "/api/users/",
        "/~user/a-b_c.d",
        "/a:b@c!$&'()*+,=",
        "/a%20b",
        "/caf%C3%A9",
        "/.well-known/jwks.json",
        "/a/...",
        "/a/.b/..c",
    ] {
        let result = canonical_path(path, &PathConfig::default());
        assert!(
            matches!(result, Ok(Cow::Borrowed(p)) if p == path) || {
                // Escapes are canonical but take the slow path: same string, owned.
                matches!(&result, Ok(p) if p == path) && path.contains('%')
            },
            "{path:?}: {result:?}"
        );
    }
    // The query is cut off without copying.
    assert!(matches!(
        canonical_path("/api/users?x=1", &PathConfig::default()),
        Ok(Cow::Borrowed("/api/users"))
    ));
}

#[test]
fn hostile_paths_are_refused() {
    let cases = [
        ("/public/%2F../admin", PathError::EscapedSlash),
        ("/public%2fadmin", PathError::EscapedSlash),
        ("/public%5Cadmin", PathError::EscapedSlash),
        ("/public%5c..%5cadmin", PathError::EscapedSlash),
        ("/public\\..\\admin", PathError::Backslash),
        ("/a%00b", PathError::ControlCharacter),
        ("/a%0Ab", PathError::ControlCharacter),
        ("/a%7f", PathError::ControlCharacter),
        ("/a\u{1}b", PathError::ControlCharacter),
        ("/a\tb", PathError::ControlCharacter),
        ("/a%", PathError::BadEscape),
        ("/a%2", PathError::BadEscape),
        ("/a%zz", PathError::BadEscape),
        ("/a%%41", PathError::BadEscape),
        ("/a%+1", PathError::BadEscape),
        // Overlong UTF-8 for '/' and '.', and a lone continuation byte.
        ("/a%C0%AFb", PathError::NotUtf8),
        ("/%C0%AE%C0%AE/admin", PathError::NotUtf8),
        ("/a%80", PathError::NotUtf8),
        ("/a%C3", PathError::NotUtf8),
        ("/..", PathError::AboveRoot),
        ("/a/../..", PathError::AboveRoot),
        ("/a/../../b", PathError::AboveRoot),
        // RFC 3986 gives /a/b; servers that merge slashes first give /b.
        ("/a//../b", PathError::AmbiguousDotSegment),
        ("//../a", PathError::AmbiguousDotSegment),
        ("/admin//./../public", PathError::AmbiguousDotSegment),
        ("/a//%2e/../b", PathError::AmbiguousDotSegment),
        // Java servers strip path parameters before routing.
        ("/admin;x/secret", PathError::PathParameter),
        ("/public/..;/admin", PathError::PathParameter),
        ("/a;", PathError::PathParameter),
        // A fragment hides the rest of the target.
        ("/public#/../admin", PathError::Fragment),
        ("/a?x=1#f", PathError::Fragment),
        ("", PathError::NotAbsolute),
        ("api/users", PathError::NotAbsolute),
        ("*", PathError::NotAbsolute),
        ("http://evil/admin", PathError::NotAbsolute),
        ("?x=/admin", PathError::NotAbsolute),
    ];
    for (raw, want) in cases {
        assert_eq!(canon(raw), Err(want), "{raw:?}");
    }
}

#[test]
fn path_parameters_when_allowed_are_data_but_never_hide_a_dot_segment() {
    for (raw, want) in [
        ("/a;v=1/b", Ok("/a;v=1/b".to_owned())),
        ("/a;x/../b", Ok("/b".to_owned())),
        ("/public/..;/admin", Err(PathError::AmbiguousDotSegment)),
        ("/public/.;x/admin", Err(PathError::AmbiguousDotSegment)),
        ("/public/%2e%2e;/admin", Err(PathError::AmbiguousDotSegment)),
    ] {
        assert_eq!(canon_with_parameters(raw), want, "{raw:?}");
    }
}

/// `strip` reads a path as Tomcat, Jetty and Spring route it: every segment without its
/// `;params` (the Servlet specification's path parameters), so a rule for `/admin/users`
/// holds for every spelling those servers send to the same handler.
#[test]
fn stripped_path_parameters_match_what_java_servers_route() {
    for (raw, want) in [
        ("/admin;x/users", Ok("/admin/users")),
        ("/admin/users;jsessionid=ABC", Ok("/admin/users")),
        ("/admin;a=1;b=2/users;c", Ok("/admin/users")),
        ("/admin;x%2F..%2F/users", Ok("/admin/users")),
        ("/;x/admin", Ok("/admin")),
        ("/admin/;x", Ok("/admin/")),
        ("/a;x/../b", Ok("/b")),
        ("/public/..;/admin", Err(PathError::AmbiguousDotSegment)),
        ("/public/.;x/admin", Err(PathError::AmbiguousDotSegment)),
        ("/public/%2e%2e;/admin", Err(PathError::AmbiguousDotSegment)),
        ("/admin;x\\y/users", Err(PathError::Backslash)),
        ("/admin;\x01/users", Err(PathError::ControlCharacter)),
    ] {
        assert_eq!(
            canon_parameters(raw, PathParameters::Strip),
            want.map(str::to_owned),
            "{raw:?}"
        );
    }
    // Refused by default; kept as data only when asked.
    assert_eq!(canon("/admin;x/users"), Err(PathError::PathParameter));
    assert_eq!(
        canon_parameters("/admin;x/users", PathParameters::Keep).as_deref(),
        Ok("/admin;x/users")
    );
}

#[test]
fn escaped_slash_modes() {
    let decode = config(EscapedSlashes::Decode);
    let keep = config(EscapedSlashes::Keep);
    assert_eq!(
        canonical_path("/repos/a%2Fb/x", &decode).as_deref(),
        Ok("/repos/a/b/x")
    );
    // Decoded slashes separate segments, so dot-segments between them go too.
    assert_eq!(
        canonical_path("/public%2F..%2Fadmin", &decode).as_deref(),
        Ok("/admin")
    );
    assert_eq!(
        canonical_path("/repos/a%2fb/x", &keep).as_deref(),
        Ok("/repos/a%2Fb/x")
    );
    // Kept, `%2F..%2F` is data inside one segment, not a dot-segment.
    assert_eq!(
        canonical_path("/public/a%2F..%2Fadmin", &keep).as_deref(),
        Ok("/public/a%2F..%2Fadmin")
    );
    // An escaped backslash is refused whatever the mode.
    for mode in [&decode, &keep] {
        assert_eq!(canonical_path("/a%5Cb", mode), Err(PathError::EscapedSlash));
    }
}

#[test]
fn the_length_limit_counts_the_query() {
    let config = PathConfig {
        max_bytes: 16,
        ..PathConfig::default()
    };
    assert!(canonical_path("/0123456789abcde", &config).is_ok());
    assert_eq!(
        canonical_path("/a?0123456789abcd", &config),
        Err(PathError::TooLong)
    );
}

/// Pieces that exercise every branch: separators, dots raw and escaped, escapes valid and
/// not, reserved and non-ASCII characters, parameters.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/", "//", ".", "..", "%2e", "%2E%2e", "a", "Z9", "~", "%41", "%7e", "%2F", "%2f", "%5C",
        "%", "%4", "%zz", "%00", "%20", " ", "%C3%A9", "\u{e9}", "%C3", ";", ";x", "=", "?", "#",
        "\\", "%3B", "+", "@", ":",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Whatever comes in, what comes out is canonical: canonicalising it again changes
    /// nothing, and it holds no `//`, `/./` or `/../` (nor ends in `/.` or `/..`).
    #[test]
    fn canonical_paths_are_fixed_points(
        pieces in prop::collection::vec(piece(), 0..12),
        mode in prop::sample::select(vec![
            EscapedSlashes::Reject, EscapedSlashes::Decode, EscapedSlashes::Keep,
        ]),
        path_parameters in prop::sample::select(vec![
            PathParameters::Reject, PathParameters::Strip, PathParameters::Keep,
        ]),
    ) {
        let raw = format!("/{}", pieces.concat());
        let config = PathConfig { path_parameters, ..config(mode) };
        if let Ok(path) = canonical_path(&raw, &config) {
            prop_assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
            prop_assert!(!path.contains("//"), "{raw:?} -> {path:?}");
            prop_assert!(!path.contains("/./"), "{raw:?} -> {path:?}");
            prop_assert!(!path.contains("/../"), "{raw:?} -> {path:?}");
            prop_assert!(!path.ends_with("/.") && !path.ends_with("/.."), "{raw:?} -> {path:?}");
            prop_assert!(!path.contains(['?', '#', '\\']), "{raw:?} -> {path:?}");
            let again = canonical_path(&path, &config);
            prop_assert_eq!(again.as_deref(), Ok(path.as_ref()), "{:?}", raw);
        }
    }

    /// Any path made of ordinary segments is accepted as it is.
    #[test]
    fn plain_paths_are_unchanged(segments in prop::collection::vec("[a-zA-Z0-9._~-]{1,8}", 1..6)) {
        prop_assume!(segments.iter().all(|s| s != "." && s != ".."));
        let path = format!("/{}", segments.join("/"));
        let canonical = canon(&path);
        prop_assert_eq!(canonical.as_deref(), Ok(path.as_str()));
    }
}
