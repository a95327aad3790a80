use super::*;

fn denied(response: &CheckResponse) -> &DeniedHttpResponse {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d,
        other => panic!("not a denial: {other:?}"),
    }
}

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
        let response = reason.to_response("r");
        assert_eq!(
            response.status.as_ref().map(|s| s.code),
            Some(a.grpc as i32)
        );
        let d = denied(&response);
        assert_eq!(d.status.as_ref().map(|s| s.code), Some(a.http as i32));
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(body["error"], a.error);
        assert_eq!(body["error_description"], a.description);
        assert!(
            !d.body.contains("secret-claim-name"),
            "details stay in logs"
        );
    }
}

#[test]
fn challenge_follows_rfc_6750() {
    let response = Deny::MissingToken.to_response("realm-x");
    let www: Vec<_> = denied(&response)
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .filter(|h| h.key == "www-authenticate")
        .map(|h| h.value.clone())
        .collect();
    assert_eq!(www, vec!["Bearer realm=\"realm-x\"".to_string()]);

    let response = Deny::Invalid(VerifyError::BadSignature).to_response("r");
    let www = denied(&response)
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == "www-authenticate")
        .map(|h| h.value.clone());
    assert_eq!(
        www.as_deref(),
        Some(
            "Bearer realm=\"r\", error=\"invalid_token\", error_description=\"invalid signature\""
        )
    );
}

#[test]
fn allow_overwrites_and_removes() {
    let response = allow(
        HeaderMutation {
            set: vec![("x-user-id".into(), "u".into())],
            remove: vec!["x-user-role".into()],
        },
        None,
    );
    assert_eq!(response.status.as_ref().map(|s| s.code), Some(0));
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("not OK");
    };
    assert_eq!(ok.headers.len(), 1);
    assert_eq!(
        ok.headers[0].append_action,
        HeaderAppendAction::OverwriteIfExistsOrAdd as i32
    );
    assert_eq!(ok.headers_to_remove, vec!["x-user-role".to_string()]);
    assert!(response.dynamic_metadata.is_none());
}
