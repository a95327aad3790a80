//! What a client sees. Every denial reason maps to its HTTP status, gRPC code and RFC 6750
//! error in [`Deny::answer`], the one table of client-visible outcomes; details stay in logs.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc::Status;
use serde_json::{Map, Value};
use tonic::Code;

use crate::identity::HeaderMutation;
use crate::request::PathError;
use crate::verify::VerifyError;

/// Why a request was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deny {
    /// The path is ambiguous (or too long); refused before any rule ran.
    InvalidPath(PathError),
    /// The query string cannot be read unambiguously (invalid percent-encoding).
    InvalidQuery,
    MissingToken,
    MultipleTokens,
    TokenTooLarge,
    /// The token came from a place its provider does not accept tokens from.
    WrongSource,
    Invalid(VerifyError),
    /// A claim mapped to an identity header holds characters a header cannot carry.
    UnsafeClaim,
    /// A route rule's claim requirement was not met.
    InsufficientClaims,
    /// A route rule denies every request.
    DeniedByRule,
    /// The route accepts tokens only from other providers.
    ProviderNotAccepted,
    /// More checks in flight than `limits.max_concurrent_checks`.
    Overloaded,
    /// Not decided within `limits.check_timeout`.
    TimedOut,
}

/// The client-visible shape of a denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub http: StatusCode,
    pub grpc: Code,
    /// RFC 6750 `error`, also added to `WWW-Authenticate` when `challenge_error` is set.
    pub error: &'static str,
    pub description: &'static str,
    pub challenge_error: bool,
    /// Metric label and log field.
    pub reason: &'static str,
}

impl Deny {
    pub fn answer(&self) -> Answer {
        use StatusCode::{BadRequest, Forbidden, ServiceUnavailable, Unauthorized, UriTooLong};
        let (http, grpc, error, description, challenge_error, reason) = match self {
            Deny::InvalidPath(PathError::TooLong) => (
                UriTooLong,
                Code::InvalidArgument,
                "invalid_request",
                "request path too long",
                true,
                "path_too_long",
            ),
            Deny::InvalidQuery => (
                BadRequest,
                Code::InvalidArgument,
                "invalid_request",
                "malformed query string",
                true,
                "invalid_query",
            ),
            Deny::InvalidPath(_) => (
                BadRequest,
                Code::InvalidArgument,
                "invalid_request",
                "ambiguous request path",
                true,
                "invalid_path",
            ),
            Deny::MissingToken => (
                Unauthorized,
                Code::Unauthenticated,
                "invalid_request",
                "bearer token required",
                false,
                "missing_token",
            ),
            Deny::MultipleTokens => (
                BadRequest,
                Code::Unauthenticated,
                "invalid_request",
                "more than one token in request",
                true,
                "multiple_tokens",
            ),
            Deny::TokenTooLarge => (
                BadRequest,
                Code::Unauthenticated,
                "invalid_request",
                "token too large",
                true,
                "token_too_large",
            ),
            Deny::WrongSource => (
                Unauthorized,
                Code::Unauthenticated,
                "invalid_token",
                "token not accepted from this location",
                true,
                "wrong_source",
            ),
            Deny::ProviderNotAccepted => (
                Unauthorized,
                Code::Unauthenticated,
                "invalid_token",
                "token not accepted on this route",
                true,
                "provider_not_accepted",
            ),
            Deny::UnsafeClaim => (
                Unauthorized,
                Code::Unauthenticated,
                "invalid_token",
                "token claims not usable",
                true,
                "unsafe_claim",
            ),
            Deny::InsufficientClaims => (
                Forbidden,
                Code::PermissionDenied,
                "insufficient_scope",
                "token lacks the claims this route requires",
                true,
                "insufficient_claims",
            ),
            Deny::DeniedByRule => (
                Forbidden,
                Code::PermissionDenied,
                "insufficient_scope",
                "access to this route is denied",
                true,
                "denied_by_rule",
            ),
            Deny::Overloaded => (
                ServiceUnavailable,
                Code::Unavailable,
                "temporarily_unavailable",
                "server busy, retry later",
                false,
                "overloaded",
            ),
            Deny::TimedOut => (
                ServiceUnavailable,
                Code::Unavailable,
                "temporarily_unavailable",
                "check timed out, retry later",
                false,
                "timeout",
            ),
            Deny::Invalid(VerifyError::KeyFetchBusy) => (
                ServiceUnavailable,
                Code::Unavailable,
                "temporarily_unavailable",
                "signing keys being fetched, retry later",
                false,
                "key_fetch_busy",
            ),
            Deny::Invalid(VerifyError::KeysUnavailable) => (
                ServiceUnavailable,
                Code::Unavailable,
                "temporarily_unavailable",
                "signing keys unavailable, retry later",
                false,
                "keys_unavailable",
            ),
            Deny::Invalid(e) => {
                let (description, reason) = match e {
                    VerifyError::Malformed => ("malformed token", "malformed"),
                    VerifyError::UnsupportedHeader => {
                        ("unsupported token header", "unsupported_header")
                    }
                    VerifyError::UnknownIssuer => ("unknown issuer", "unknown_issuer"),
                    VerifyError::AlgorithmNotAllowed => {
                        ("algorithm not allowed", "algorithm_not_allowed")
                    }
                    VerifyError::UnknownKey => ("unknown signing key", "unknown_key"),
                    VerifyError::BadSignature => ("invalid signature", "bad_signature"),
                    VerifyError::Expired => ("token expired", "expired"),
                    VerifyError::NotYetValid => ("token not yet valid", "not_yet_valid"),
                    VerifyError::WrongAudience => ("invalid audience", "wrong_audience"),
                    VerifyError::WrongIssuer => ("invalid issuer", "wrong_issuer"),
                    VerifyError::MissingClaim(_) => ("missing required claim", "missing_claim"),
                    VerifyError::WrongTokenType => ("token type not accepted", "wrong_token_type"),
                    VerifyError::LifetimeTooLong => {
                        ("token lifetime too long", "lifetime_too_long")
                    }
                    VerifyError::IssuedInFuture => {
                        ("token issued in the future", "issued_in_future")
                    }
                    VerifyError::KeysUnavailable | VerifyError::KeyFetchBusy => {
                        ("signing keys unavailable", "keys_unavailable")
                    }
                };
                (
                    Unauthorized,
                    Code::Unauthenticated,
                    "invalid_token",
                    description,
                    true,
                    reason,
                )
            }
        };
        Answer {
            http,
            grpc,
            error,
            description,
            challenge_error,
            reason,
        }
    }

    /// The denied `CheckResponse` for this reason.
    pub fn to_response(&self, realm: &str) -> CheckResponse {
        let answer = self.answer();
        let mut headers = vec![
            header("content-type", "application/json"),
            header("cache-control", "no-store"),
        ];
        if answer.http != StatusCode::ServiceUnavailable {
            let challenge = if answer.challenge_error {
                format!(
                    "Bearer realm=\"{realm}\", error=\"{}\", error_description=\"{}\"",
                    answer.error, answer.description
                )
            } else {
                format!("Bearer realm=\"{realm}\"")
            };
            headers.push(header("www-authenticate", &challenge));
        } else {
            headers.push(header("retry-after", "5"));
        }
        let body = serde_json::json!({
            "error": answer.error,
            "error_description": answer.description,
        })
        .to_string();
        CheckResponse {
            status: Some(Status {
                code: answer.grpc as i32,
                message: answer.description.to_owned(),
                details: Vec::new(),
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: answer.http as i32,
                }),
                headers,
                body,
            })),
            dynamic_metadata: None,
        }
    }
}

/// The OK `CheckResponse`: identity headers set and removed, optionally the claims as
/// dynamic metadata.
pub fn allow(
    mutation: HeaderMutation,
    metadata: Option<(&str, &Map<String, Value>)>,
) -> CheckResponse {
    let headers = mutation.set.iter().map(|(k, v)| header(k, v)).collect();
    CheckResponse {
        status: Some(Status {
            code: Code::Ok as i32,
            message: String::new(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove: mutation.remove,
            ..Default::default()
        })),
        dynamic_metadata: metadata.map(|(provider, claims)| Struct {
            fields: HashMap::from([
                ("provider".to_owned(), string_value(provider)),
                (
                    "claims".to_owned(),
                    PbValue {
                        kind: Some(Kind::StructValue(to_struct(claims))),
                    },
                ),
            ]),
        }),
    }
}

/// A header that replaces any value the request already has: the deprecated `append` field
/// stays unset so that `append_action` alone decides.
fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn string_value(s: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

fn to_struct(map: &Map<String, Value>) -> Struct {
    Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

fn to_value(value: &Value) -> PbValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    PbValue { kind: Some(kind) }
}

#[cfg(test)]
mod tests;
