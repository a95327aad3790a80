//! An OTLP trace collector on loopback: a tonic server implementing the OTLP trace service
//! from the `opentelemetry-proto` types, keeping every span it receives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// One span as received: ids in lower-case hex, attributes as strings.
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// OTLP `SpanKind`: 2 server, 3 client.
    pub kind: i32,
    pub attributes: HashMap<String, String>,
    /// The W3C `tracestate` the span carries.
    pub trace_state: String,
    /// OTLP status code: 0 unset, 2 error.
    pub status: i32,
    pub status_message: String,
    /// Every string sent with the span (names, attribute values, status): what must never
    /// hold a token.
    pub text: String,
}

impl Span {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }
}

#[derive(Clone, Default)]
struct Received(
    Arc<Mutex<Vec<Span>>>,
    Arc<Mutex<Vec<HashMap<String, String>>>>,
);

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let metadata = request
            .metadata()
            .iter()
            .filter_map(|entry| match entry {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )),
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        self.1.lock().expect("metadata").push(metadata);
        let mut spans = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .map(|r| attributes(&r.attributes))
                .and_then(|a| a.get("service.name").cloned())
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    let attributes = attributes(&span.attributes);
                    let status = span.status.clone().unwrap_or_default();
                    let text = format!("{} {:?} {}", span.name, attributes, status.message);
                    spans.push(Span {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: span.kind,
                        trace_state: span.trace_state,
                        attributes,
                        status: status.code,
                        status_message: status.message,
                        text,
                    });
                }
            }
        }
        self.0.lock().expect("spans").extend(spans);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The collector: `endpoint()` is what jwt-authz (or Envoy) exports to.
pub struct Collector {
    pub port: u16,
    received: Received,
    task: tokio::task::JoinHandle<()>,
    tls: bool,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// A collector behind TLS: its certificate (for `localhost` and `127.0.0.1`) from
    /// `ca`, asking for a client certificate from `client_ca` when given one.
    pub async fn start_tls(
        ca: &crate::tls::TestCa,
        client_ca: Option<&crate::tls::TestCa>,
    ) -> Self {
        let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
        let mut tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key));
        if let Some(client_ca) = client_ca {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(client_ca.pem()));
        }
        Self::serve(Some(tls)).await
    }

    async fn serve(tls: Option<tonic::transport::ServerTlsConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let received = Received::default();
        let service = TraceServiceServer::new(received.clone());
        let tls_on = tls.is_some();
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls).expect("collector TLS");
        }
        let task = tokio::spawn(async move {
            let _ = server
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        Self {
            port,
            received,
            task,
            tls: tls_on,
        }
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The metadata (ASCII headers) of every export received.
    pub fn exports_metadata(&self) -> Vec<HashMap<String, String>> {
        self.received.1.lock().expect("metadata").clone()
    }

    pub fn spans(&self) -> Vec<Span> {
        self.received.0.lock().expect("spans").clone()
    }

    /// The first span `wanted` accepts, waiting up to `within` for it to arrive.
    pub async fn wait_for(&self, within: Duration, wanted: impl Fn(&Span) -> bool) -> Span {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(span) = self.spans().into_iter().find(|s| wanted(s)) {
                return span;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "no such span within {within:?}; received: {:#?}",
                    self.spans()
                        .iter()
                        .map(|s| (&s.service, &s.name, &s.trace_id, &s.attributes))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
