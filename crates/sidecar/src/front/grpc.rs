//! The `envoy.service.auth.v3.Authorization` gRPC front end: unpacks Envoy's `CheckRequest`,
//! asks the runtime in force, and encodes the verdict as a `CheckResponse`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc::Status;
use serde_json::{Map, Value};
use tonic::{Code, Request, Response};

use super::FrontEnd;
use crate::obs::metrics::Metrics;
use crate::obs::telemetry::{Carrier, GrpcMetadata, Telemetry};
use crate::runtime::Runtime;
use jwt_authz_core::request::Incoming;
use jwt_authz_core::response::{Denial, Verdict};

#[derive(Debug, Clone)]
pub struct AuthorizationService {
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
    telemetry: Telemetry,
}

impl AuthorizationService {
    pub fn new(
        runtime: Arc<ArcSwap<Runtime>>,
        metrics: Arc<Metrics>,
        telemetry: Telemetry,
    ) -> Self {
        Self {
            runtime,
            metrics,
            telemetry,
        }
    }
}

#[tonic::async_trait]
impl Authorization for AuthorizationService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, tonic::Status> {
        let started = Instant::now();
        let (metadata, _, message) = request.into_parts();
        let attributes = message.attributes.unwrap_or_default();
        let certificate = attributes
            .source
            .map(|peer| peer.certificate)
            .filter(|pem| !pem.is_empty());
        let Some(http) = attributes.request.and_then(|r| r.http) else {
            return Err(tonic::Status::invalid_argument(
                "no HTTP request attributes",
            ));
        };
        let incoming = Incoming {
            method: &http.method,
            target: &http.path,
            host: &http.host,
            headers: (&http.headers).into(),
            context_extensions: &attributes.context_extensions,
            scheme: Some(http.scheme.as_str()).filter(|s| !s.is_empty()),
            certificate: certificate.as_deref(),
        };
        // Envoy's own call first (its ext_authz span), then the request it asks about (not
        // read with `tracing.request_context: ignore`).
        let both: [Carrier<'_>; 2] = [&GrpcMetadata(&metadata), &http.headers];
        let carriers = self.telemetry.carriers(&both, 1);
        let runtime = self.runtime.load_full();
        let checking = super::Checking::start(
            &self.metrics,
            &self.telemetry,
            FrontEnd::Grpc,
            &runtime,
            carriers,
            started,
        );
        let outcome = checking.check(&incoming).await;
        checking.record(&incoming, &outcome);
        Ok(Response::new(check_response(outcome.verdict)))
    }
}

/// The `CheckResponse` for a verdict. A denial is an `Ok` gRPC answer whose status is not
/// OK, carrying the HTTP response Envoy sends the client.
pub fn check_response(verdict: Verdict) -> CheckResponse {
    match verdict {
        Verdict::Allow { mutation, metadata } => CheckResponse {
            status: Some(Status {
                code: Code::Ok as i32,
                message: String::new(),
                details: Vec::new(),
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: mutation.set.into_iter().map(header).collect(),
                headers_to_remove: mutation.remove,
                ..Default::default()
            })),
            dynamic_metadata: metadata.map(|(provider, token)| Struct {
                fields: HashMap::from([
                    ("provider".to_owned(), string_value(&provider)),
                    (
                        "claims".to_owned(),
                        PbValue {
                            kind: Some(Kind::StructValue(to_struct(&token.claims))),
                        },
                    ),
                ]),
            }),
        },
        Verdict::Deny(denial) => denied(denial),
    }
}

fn denied(denial: Denial) -> CheckResponse {
    CheckResponse {
        status: Some(Status {
            code: denial.answer.grpc as i32,
            message: denial.answer.description.to_owned(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: denial.answer.http as i32,
            }),
            headers: denial
                .headers
                .into_iter()
                .map(|(k, v)| header((k.to_owned(), v)))
                .collect(),
            body: denial.body,
        })),
        dynamic_metadata: None,
    }
}

/// A header that replaces any value the request already has: the deprecated `append` field
/// stays unset so that `append_action` alone decides.
/// The strings are moved, not copied: this runs for every header of every answer.
fn header((key, value): (String, String)) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key,
            value,
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
