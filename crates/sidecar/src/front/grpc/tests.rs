use super::*;
use crate::verify::VerifyError;
use jwt_authz_core::identity::HeaderMutation;
use jwt_authz_core::response::Deny;

#[test]
fn a_denial_is_an_ok_rpc_carrying_the_http_answer() {
    for deny in [
        Deny::MissingToken,
        Deny::InsufficientClaims,
        Deny::Invalid(VerifyError::Expired),
        Deny::Overloaded,
    ] {
        let denial = deny.denial("r");
        let response = check_response(Verdict::Deny(denial.clone()));
        assert_eq!(
            response.status.as_ref().map(|s| s.code),
            Some(denial.answer.grpc as i32)
        );
        let Some(HttpResponse::DeniedResponse(d)) = &response.http_response else {
            panic!("not a denial: {response:?}");
        };
        assert_eq!(
            d.status.as_ref().map(|s| s.code),
            Some(denial.answer.http as i32)
        );
        assert_eq!(d.body, denial.body);
        let headers: Vec<_> = d
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.as_str(), h.value.as_str()))
            .collect();
        let expected: Vec<_> = denial
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        assert_eq!(headers, expected);
    }
}

#[test]
fn allow_overwrites_and_removes() {
    let response = check_response(Verdict::Allow {
        mutation: HeaderMutation {
            set: vec![("x-user-id".into(), "u".into())],
            remove: vec!["x-user-role".into()],
        },
        metadata: None,
    });
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

/// The decision core numbers its statuses itself (it knows neither Envoy's protos nor
/// tonic); on the wire they must be Envoy's and gRPC's own numbers.
#[test]
fn core_status_numbers_are_envoys_and_grpcs() {
    use envoy_types::pb::envoy::r#type::v3::StatusCode;
    use jwt_authz_core::response::{GrpcCode, HttpStatus};
    for (ours, envoy) in [
        (HttpStatus::BadRequest, StatusCode::BadRequest),
        (HttpStatus::Unauthorized, StatusCode::Unauthorized),
        (HttpStatus::Forbidden, StatusCode::Forbidden),
        (HttpStatus::UriTooLong, StatusCode::UriTooLong),
        (
            HttpStatus::ServiceUnavailable,
            StatusCode::ServiceUnavailable,
        ),
    ] {
        assert_eq!(ours as i32, envoy as i32, "{ours:?}");
    }
    for (ours, grpc) in [
        (GrpcCode::InvalidArgument, Code::InvalidArgument),
        (GrpcCode::PermissionDenied, Code::PermissionDenied),
        (GrpcCode::Unavailable, Code::Unavailable),
        (GrpcCode::Unauthenticated, Code::Unauthenticated),
    ] {
        assert_eq!(ours as i32, grpc as i32, "{ours:?}");
    }
}
