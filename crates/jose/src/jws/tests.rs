use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::*;

fn b64(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

fn claims(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("an object"),
    }
}

const NOW: u64 = 1_700_000_000;

fn access(required: &'static [&'static str]) -> Registered<'static> {
    Registered {
        required,
        check_exp: true,
        check_nbf: true,
        leeway: 30,
        issuer: Some("https://issuer.test"),
    }
}

#[test]
fn a_token_is_taken_apart_once_into_header_claims_and_signing_input() {
    let token = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","kid":"k1","typ":"at+jwt"}"#),
        b64(r#"{"iss":"https://issuer.test","sub":"alice"}"#),
        URL_SAFE_NO_PAD.encode([1u8, 2, 3])
    );
    let parsed = Unverified::parse(&token).unwrap();
    assert_eq!(parsed.header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(parsed.header.kid.as_deref(), Some("k1"));
    assert_eq!(parsed.header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(parsed.claims["sub"], "alice");
    assert_eq!(parsed.issuer(), Ok("https://issuer.test"));
    assert_eq!(parsed.signature, vec![1, 2, 3]);
    let (input, _) = token.rsplit_once('.').unwrap();
    assert_eq!(parsed.signing_input, input.as_bytes());
}

#[test]
fn anything_but_a_compact_jws_of_two_json_objects_is_malformed() {
    let header = b64(r#"{"alg":"RS256"}"#);
    let payload = b64(r#"{"iss":"x"}"#);
    for token in [
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        format!("{header}.{payload}"),
        format!("{header}.{payload}.sig.extra"),
        // A JWE: five parts.
        format!("{header}.a.b.c.d"),
        // Padding and the standard alphabet are not base64url (RFC 7515 §2).
        format!("{header}=.{payload}.c2ln"),
        format!("{header}.{payload}.c2l+"),
        format!("{header}.{payload}.c2ln="),
        // JSON that is not an object, and no JSON at all.
        format!("{}.{payload}.c2ln", b64(r#"["RS256"]"#)),
        format!("{header}.{}.c2ln", b64("[1,2]")),
        format!("{header}.{}.c2ln", b64("not json")),
        format!("{header}.{}.c2ln", b64(r#"{"iss":"x"} trailing"#)),
        // No algorithm, `none`, an unknown one.
        format!("{}.{payload}.c2ln", b64(r#"{"typ":"JWT"}"#)),
        format!("{}.{payload}.", b64(r#"{"alg":"none"}"#)),
        format!("{}.{payload}.c2ln", b64(r#"{"alg":"XS256"}"#)),
        // A claim named twice (RFC 7519 §4), and a header parameter named twice (RFC 7515 §4).
        format!(
            "{header}.{}.c2ln",
            b64(r#"{"iss":"a","sub":"b","iss":"c"}"#)
        ),
        format!(
            "{}.{payload}.c2ln",
            b64(r#"{"alg":"RS256","kid":"a","kid":"b"}"#)
        ),
        // Not UTF-8 inside the JSON.
        format!(
            "{header}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(b"{\"iss\":\"\xff\"}")
        ),
    ] {
        assert_eq!(
            Unverified::parse(&token).err(),
            Some(VerifyError::Malformed),
            "{token:?}"
        );
    }
}

#[test]
fn the_issuer_must_be_a_string() {
    for payload in [
        r#"{}"#,
        r#"{"iss":null}"#,
        r#"{"iss":["a"]}"#,
        r#"{"iss":7}"#,
    ] {
        let token = format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(payload));
        let parsed = Unverified::parse(&token).unwrap();
        assert_eq!(parsed.issuer(), Err(VerifyError::Malformed), "{payload}");
    }
}

#[test]
fn registered_claims_are_checked_in_order_with_leeway() {
    let rules = access(&["iss", "aud", "exp"]);
    let ok = |extra: Value| {
        let mut c = claims(json!({"iss": "https://issuer.test", "aud": "api", "exp": NOW + 60}));
        c.extend(claims(extra));
        check_registered(&c, &rules, NOW, None)
    };
    assert_eq!(ok(json!({})), Ok(Some(NOW + 60)));
    // Expired beyond the leeway, and just within it (RFC 7519 §4.1.4: "MUST NOT be accepted
    // on or after" exp, give or take the allowed skew).
    assert_eq!(ok(json!({"exp": NOW - 31})), Err(VerifyError::Expired));
    assert_eq!(ok(json!({"exp": NOW - 30})), Ok(Some(NOW - 30)));
    // A fractional date is past once its whole second is.
    assert_eq!(
        ok(json!({"exp": (NOW - 31) as f64 + 0.9})),
        Err(VerifyError::Expired)
    );
    // Not yet valid beyond the leeway (§4.1.5).
    assert_eq!(ok(json!({"nbf": NOW + 31})), Err(VerifyError::NotYetValid));
    assert_eq!(ok(json!({"nbf": NOW + 30})), Ok(Some(NOW + 60)));
    // Dates that are not NumericDates.
    for bad in [
        json!("soon"),
        json!(-1),
        json!(true),
        json!([NOW]),
        json!({}),
    ] {
        assert_eq!(
            ok(json!({"exp": bad})),
            Err(VerifyError::MissingClaim("exp".into()))
        );
        assert_eq!(
            ok(json!({"nbf": bad})),
            Err(VerifyError::Malformed),
            "{bad}"
        );
    }
    // `aud` a string or an array of strings (§4.1.3).
    assert_eq!(ok(json!({"aud": ["a", "b"]})), Ok(Some(NOW + 60)));
    for bad in [json!(null), json!(7), json!(["a", 7]), json!({"a": 1})] {
        assert_eq!(
            ok(json!({"aud": bad})),
            Err(VerifyError::MissingClaim("aud".into()))
        );
    }
    // Another issuer (the provider was chosen by `iss`, so only a bug could get here).
    assert_eq!(
        ok(json!({"iss": "https://other.test"})),
        Err(VerifyError::WrongIssuer)
    );
    assert_eq!(
        ok(json!({"iss": 7})),
        Err(VerifyError::MissingClaim("iss".into()))
    );
    // Required claims come first: a token without `aud` that is also expired is missing `aud`.
    let c = claims(json!({"iss": "https://issuer.test", "exp": NOW - 100}));
    assert_eq!(
        check_registered(&c, &rules, NOW, None),
        Err(VerifyError::MissingClaim("aud".into()))
    );
    // Without `exp` required, a token without one passes and has no expiry.
    let c = claims(json!({"iss": "https://issuer.test", "aud": "api"}));
    assert_eq!(
        check_registered(&c, &access(&["iss", "aud"]), NOW, None),
        Ok(None)
    );
}

#[test]
fn status_list_rules_leave_exp_to_the_caller_and_need_sub() {
    let rules = Registered {
        required: &["sub"],
        check_exp: false,
        check_nbf: true,
        leeway: 0,
        issuer: Some("https://issuer.test"),
    };
    let c = claims(json!({"sub": "https://issuer.test/status/1", "exp": NOW - 100}));
    assert_eq!(check_registered(&c, &rules, NOW, None), Ok(Some(NOW - 100)));
    let c = claims(json!({"sub": 1}));
    assert_eq!(
        check_registered(&c, &rules, NOW, None),
        Err(VerifyError::MissingClaim("sub".into()))
    );
    let c = claims(json!({"sub": "s", "nbf": NOW + 1}));
    assert_eq!(
        check_registered(&c, &rules, NOW, None),
        Err(VerifyError::NotYetValid)
    );
    // `iss` is optional here, but when present it must be the provider's.
    let c = claims(json!({"sub": "s", "iss": "https://other.test"}));
    assert_eq!(
        check_registered(&c, &rules, NOW, None),
        Err(VerifyError::WrongIssuer)
    );
}

#[test]
fn date_claims_read_as_whole_seconds() {
    let c = claims(json!({"a": 12.9, "b": 12, "c": "12", "d": null}));
    assert_eq!(date_claim(&c, "a"), Ok(Some(12)));
    assert_eq!(date_claim(&c, "b"), Ok(Some(12)));
    assert_eq!(date_claim(&c, "c"), Err(VerifyError::Malformed));
    assert_eq!(date_claim(&c, "d"), Ok(None));
    assert_eq!(date_claim(&c, "e"), Ok(None));
}
