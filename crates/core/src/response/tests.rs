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
        Deny::DpopMissingProof,
        Deny::DpopMultipleProofs,
        Deny::DpopInvalidProof(crate::token::DpopError::WrongUri),
        Deny::DpopReplayed,
        Deny::DpopUseNonce("n".into()),
        Deny::DpopKeyMismatch,
        Deny::DpopUnbound,
        Deny::DpopBoundAsBearer,
        Deny::DpopRequired,
        Deny::DpopNotAccepted,
        Deny::ReplayStoreUnavailable,
        Deny::CertificateMissing,
        Deny::CertificateMismatch,
        Deny::CertificateRequired,
    ];
    for reason in reasons {
        let a = reason.answer();
        let expected_grpc = match a.http {
            HttpStatus::Forbidden => GrpcCode::PermissionDenied,
            HttpStatus::ServiceUnavailable => GrpcCode::Unavailable,
            _ => GrpcCode::Unauthenticated,
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

#[test]
fn dpop_challenges_follow_rfc_9449_section_7_1() {
    let algs = Some("ES256 EdDSA");
    let denial = Deny::DpopReplayed.denial_with("r", algs);
    assert_eq!(denial.status(), 401);
    assert_eq!(
        header(&denial, "www-authenticate"),
        [
            "DPoP realm=\"r\", algs=\"ES256 EdDSA\", error=\"invalid_dpop_proof\", error_description=\"DPoP proof already used\""
        ]
    );
    let denial = Deny::DpopBoundAsBearer.denial_with("r", algs);
    assert_eq!(
        header(&denial, "www-authenticate"),
        [
            "DPoP realm=\"r\", algs=\"ES256 EdDSA\", error=\"invalid_token\", error_description=\"DPoP-bound token sent as bearer\""
        ]
    );
    // §9: the nonce to retry with, in its own header.
    let denial = Deny::DpopUseNonce("n-1".into()).denial_with("r", algs);
    assert_eq!(header(&denial, "dpop-nonce"), ["n-1"]);
    assert_eq!(
        header(&denial, "www-authenticate"),
        [
            "DPoP realm=\"r\", algs=\"ES256 EdDSA\", error=\"use_dpop_nonce\", error_description=\"Resource server requires nonce in DPoP proof\""
        ]
    );
    // No token: both schemes offered; without DPoP configured, Bearer only.
    assert_eq!(
        header(
            &Deny::MissingToken.denial_with("r", algs),
            "www-authenticate"
        ),
        ["Bearer realm=\"r\", DPoP realm=\"r\", algs=\"ES256 EdDSA\""]
    );
    assert_eq!(
        header(&Deny::MissingToken.denial("r"), "www-authenticate"),
        ["Bearer realm=\"r\""]
    );
    // A bearer-token problem stays a Bearer challenge.
    assert_eq!(
        header(
            &Deny::Invalid(VerifyError::Expired).denial_with("r", algs),
            "www-authenticate"
        ),
        ["Bearer realm=\"r\", error=\"invalid_token\", error_description=\"token expired\""]
    );
    // The store outage is a 503 with no challenge.
    let denial = Deny::ReplayStoreUnavailable.denial_with("r", algs);
    assert_eq!(denial.status(), 503);
    assert!(header(&denial, "www-authenticate").is_empty());
}
