use super::*;

#[test]
fn every_reason_has_a_consistent_answer() {
    let reasons = [
        Deny::MissingToken,
        Deny::MultipleTokens,
        Deny::TokenTooLarge,
        Deny::WrongSource,
        Deny::UnsafeClaim,
        Deny::InsufficientClaims,
        Deny::DeniedByRule,
        Deny::Invalid(VerifyError::Expired),
        Deny::Invalid(VerifyError::MissingClaim("secret-claim-name".into())),
        Deny::Invalid(VerifyError::KeysUnavailable),
    ];
    for reason in reasons {
        let a = reason.answer();
        let expected_grpc = match a.http {
            StatusCode::Forbidden => Code::PermissionDenied,
            StatusCode::ServiceUnavailable => Code::Unavailable,
            _ => Code::Unauthenticated,
        };
        assert_eq!(a.grpc, expected_grpc, "{reason:?}");
        let denial = reason.denial("r");
        assert_eq!(denial.status(), a.http as u16);
        let body: serde_json::Value = serde_json::from_str(&denial.body).unwrap();
        assert_eq!(body["error"], a.error);
        assert_eq!(body["error_description"], a.description);
        assert!(
            !denial.body.contains("secret-claim-name"),
            "details stay in logs"
        );
    }
}

fn header<'d>(denial: &'d Denial, name: &str) -> Vec<&'d str> {
    denial
        .headers
        .iter()
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn challenge_follows_rfc_6750() {
    let denial = Deny::MissingToken.denial("realm-x");
    assert_eq!(
        header(&denial, "www-authenticate"),
        ["Bearer realm=\"realm-x\""]
    );
    let denial = Deny::Invalid(VerifyError::BadSignature).denial("r");
    assert_eq!(
        header(&denial, "www-authenticate"),
        ["Bearer realm=\"r\", error=\"invalid_token\", error_description=\"invalid signature\""]
    );
    // An outage is not a challenge: retry later instead.
    let denial = Deny::Overloaded.denial("r");
    assert!(header(&denial, "www-authenticate").is_empty());
    assert_eq!(header(&denial, "retry-after"), ["5"]);
    assert_eq!(header(&denial, "cache-control"), ["no-store"]);
}
