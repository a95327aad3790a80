use base64::engine::general_purpose::STANDARD;

use super::*;
use crate::clients::with_secret;

const SECRET: &str = "s3cret:with&odd+chars";

fn expected() -> Expected<'static> {
    Expected {
        audiences: &["http://issuer.test/auth/introspect", "http://issuer.test"],
        now: 1_000_000,
    }
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

#[test]
fn basic_credentials_are_form_decoded_before_comparison() {
    let clients = with_secret("side car", SECRET);
    let assertions = Assertions::default();
    // RFC 6749 §2.3.1: both parts form-urlencoded, then base64.
    let header = basic("side+car", "s3cret%3Awith%26odd%2Bchars");
    let presented = Presented {
        authorization: Some(&header),
        ..Presented::default()
    };
    assert_eq!(
        authenticate(&clients, &assertions, &presented, &expected()),
        Ok(("side car".into(), Method::SecretBasic))
    );
    // The raw secret is not its encoding: `+` decodes to a space.
    let header = basic("side+car", SECRET);
    let presented = Presented {
        authorization: Some(&header),
        ..Presented::default()
    };
    assert_eq!(
        authenticate(&clients, &assertions, &presented, &expected()),
        Err(AuthError::WrongSecret)
    );
}

#[test]
fn malformed_or_foreign_authorization_is_refused() {
    let clients = with_secret("sidecar", SECRET);
    let assertions = Assertions::default();
    let long = format!("Basic {}", "A".repeat(MAX_BASIC + 4));
    for (value, error) in [
        ("Bearer abc", AuthError::UnsupportedScheme),
        ("Basic", AuthError::UnsupportedScheme),
        ("Basic !!!", AuthError::MalformedBasic),
        ("Basic c2lkZWNhcg", AuthError::MalformedBasic),
        ("Basic OnNlY3JldA==", AuthError::WrongSecret),
        ("Basic c2lkZWNhcjolWlo=", AuthError::MalformedBasic),
        (long.as_str(), AuthError::MalformedBasic),
    ] {
        let presented = Presented {
            authorization: Some(value),
            ..Presented::default()
        };
        assert_eq!(
            authenticate(&clients, &assertions, &presented, &expected()),
            Err(error),
            "{value}"
        );
    }
}

#[test]
fn one_method_exactly_and_a_matching_client_id() {
    let clients = with_secret("sidecar", SECRET);
    let assertions = Assertions::default();
    let header = basic("sidecar", "s3cret%3Awith%26odd%2Bchars");
    let none = Presented::default();
    assert_eq!(
        authenticate(&clients, &assertions, &none, &expected()),
        Err(AuthError::Missing)
    );
    let both = Presented {
        authorization: Some(&header),
        client_id: Some("sidecar"),
        client_secret: Some(SECRET),
        ..Presented::default()
    };
    assert_eq!(
        authenticate(&clients, &assertions, &both, &expected()),
        Err(AuthError::SeveralMethods)
    );
    let secret_and_assertion = Presented {
        client_id: Some("sidecar"),
        client_secret: Some(SECRET),
        client_assertion_type: Some(JWT_BEARER),
        ..Presented::default()
    };
    assert_eq!(
        authenticate(&clients, &assertions, &secret_and_assertion, &expected()),
        Err(AuthError::SeveralMethods)
    );
    let post = Presented {
        client_id: Some("sidecar"),
        client_secret: Some(SECRET),
        ..Presented::default()
    };
    assert_eq!(
        authenticate(&clients, &assertions, &post, &expected()),
        Ok(("sidecar".into(), Method::SecretPost))
    );
    let post_without_id = Presented {
        client_secret: Some(SECRET),
        ..Presented::default()
    };
    assert_eq!(
        authenticate(&clients, &assertions, &post_without_id, &expected()),
        Err(AuthError::WrongSecret)
    );
    let basic_other_id = Presented {
        authorization: Some(&header),
        client_id: Some("someone-else"),
        ..Presented::default()
    };
    assert_eq!(
        authenticate(&clients, &assertions, &basic_other_id, &expected()),
        Err(AuthError::ClientIdMismatch)
    );
    let wrong_type = Presented {
        client_assertion_type: Some("urn:other"),
        client_assertion: Some("a.b.c"),
        ..Presented::default()
    };
    assert_eq!(
        authenticate(&clients, &assertions, &wrong_type, &expected()),
        Err(AuthError::AssertionType)
    );
    let garbage = Presented {
        client_assertion_type: Some(JWT_BEARER),
        client_assertion: Some("not-a-jwt"),
        ..Presented::default()
    };
    assert_eq!(
        authenticate(&clients, &assertions, &garbage, &expected()),
        Err(AuthError::BadAssertion("malformed"))
    );
}

#[test]
fn a_jti_is_accepted_once_until_it_expires() {
    let assertions = Assertions::default();
    assert_eq!(assertions.first_use("a", "j1", 100, 50), Ok(true));
    assert_eq!(assertions.first_use("a", "j1", 100, 60), Ok(false));
    // Another client's jti of the same value is another assertion.
    assert_eq!(assertions.first_use("b", "j1", 100, 60), Ok(true));
    // Once expired it could not be accepted anyway; remembering stops.
    assert_eq!(assertions.first_use("a", "j1", 200, 101), Ok(true));
}
