use std::collections::HashMap;

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn all_sources() -> Vec<TokenSource> {
    vec![
        TokenSource::Bearer,
        TokenSource::Header {
            name: "x-api-token".into(),
            prefix: Some("Token ".into()),
        },
        TokenSource::Cookie("session".into()),
        TokenSource::Query("access_token".into()),
    ]
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    let sources = vec![TokenSource::Bearer];
    for value in ["Bearer abc", "bearer abc", "BEARER   abc", "bEaReR\tabc"] {
        let h = headers(&[("authorization", value)]);
        let found = extract(&h, "/", &sources, 100).unwrap().unwrap();
        assert_eq!(found.token, "abc", "{value}");
        assert_eq!(found.header(), Some("authorization"));
    }
}

#[test]
fn other_schemes_and_lookalikes_are_not_tokens() {
    let sources = vec![TokenSource::Bearer];
    for value in ["Basic dXNlcjpwYXNz", "Bearerabc", "Token abc"] {
        let h = headers(&[("authorization", value)]);
        assert_eq!(extract(&h, "/", &sources, 100).unwrap(), None, "{value}");
    }
}

#[test]
fn no_token_is_none() {
    let h = headers(&[("accept", "*/*")]);
    assert_eq!(extract(&h, "/x?y=1", &all_sources(), 100).unwrap(), None);
}

#[test]
fn repeated_authorization_headers_are_two_tokens() {
    let h = headers(&[("authorization", "Bearer a,Bearer b")]);
    assert_eq!(
        extract(&h, "/", &all_sources(), 100),
        Err(ExtractError::Multiple)
    );
}

#[test]
fn tokens_in_two_places_are_rejected_even_when_equal() {
    let h = headers(&[("authorization", "Bearer a"), ("cookie", "session=a")]);
    assert_eq!(
        extract(&h, "/", &all_sources(), 100),
        Err(ExtractError::Multiple)
    );
    let h = headers(&[("authorization", "Bearer a")]);
    assert_eq!(
        extract(&h, "/p?access_token=a", &all_sources(), 100),
        Err(ExtractError::Multiple)
    );
}

#[test]
fn oversized_token_is_rejected() {
    let big = format!("Bearer {}", "a".repeat(101));
    let h = headers(&[("authorization", big.as_str())]);
    assert_eq!(
        extract(&h, "/", &all_sources(), 100),
        Err(ExtractError::TooLarge)
    );
    let exact = format!("Bearer {}", "a".repeat(100));
    let h = headers(&[("authorization", exact.as_str())]);
    assert!(extract(&h, "/", &all_sources(), 100).unwrap().is_some());
}

#[test]
fn custom_header_needs_its_prefix() {
    let sources = all_sources();
    let h = headers(&[("x-api-token", "Token abc")]);
    let found = extract(&h, "/", &sources, 100).unwrap().unwrap();
    assert_eq!(found.token, "abc");
    assert_eq!(found.header(), Some("x-api-token"));
    let h = headers(&[("x-api-token", "abc")]);
    assert_eq!(extract(&h, "/", &sources, 100).unwrap(), None);
}

#[test]
fn cookie_and_query_sources() {
    let sources = all_sources();
    let h = headers(&[("cookie", "theme=dark; session=tok; lang=en")]);
    let found = extract(&h, "/", &sources, 100).unwrap().unwrap();
    assert_eq!(found.token, "tok");
    assert_eq!(found.source, &TokenSource::Cookie("session".into()));
    assert_eq!(found.header(), None);

    let h = headers(&[]);
    let found = extract(&h, "/p?x=1&access_token=q.t.s&y=2", &sources, 100)
        .unwrap()
        .unwrap();
    assert_eq!(found.token, "q.t.s");
    assert_eq!(found.source, &TokenSource::Query("access_token".into()));
}

#[test]
fn sources_not_configured_are_not_read() {
    let sources = vec![TokenSource::Bearer];
    let h = headers(&[("cookie", "session=tok")]);
    assert_eq!(
        extract(&h, "/?access_token=x", &sources, 100).unwrap(),
        None
    );
}

#[test]
fn dpop_scheme_is_read_from_authorization_and_counts_as_a_token() {
    let sources = vec![TokenSource::Bearer];
    for value in ["DPoP abc", "dpop abc", "DPOP\tabc"] {
        let h = headers(&[("authorization", value)]);
        let found = extract(&h, "/", &sources, 100).unwrap().unwrap();
        assert_eq!(
            (found.token, found.scheme),
            ("abc", Scheme::Dpop),
            "{value}"
        );
    }
    let bearer = headers(&[("authorization", "Bearer abc")]);
    let found = extract(&bearer, "/", &sources, 100).unwrap().unwrap();
    assert_eq!(found.scheme, Scheme::Bearer);
    // The same token sent both ways (two Authorization headers, joined) is two tokens.
    let both = headers(&[("authorization", "Bearer abc, DPoP abc")]);
    assert_eq!(
        extract(&both, "/", &sources, 100),
        Err(ExtractError::Multiple)
    );
    // `DPoPx` is not the scheme.
    let lookalike = headers(&[("authorization", "DPoPabc")]);
    assert_eq!(extract(&lookalike, "/", &sources, 100).unwrap(), None);
}

proptest::proptest! {
    /// `list_items` is `split(',')`: the same items, empty ones and multi-byte characters
    /// included.
    #[test]
    fn list_items_split_as_split_does(value in "[a ,é.\t]{0,40}") {
        let ours: Vec<&str> = list_items(&value).collect();
        let split: Vec<&str> = value.split(',').collect();
        proptest::prop_assert_eq!(ours, split);
    }
}
