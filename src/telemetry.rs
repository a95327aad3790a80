//! OpenTelemetry tracing: a span per check that continues the trace the proxy started, spans
//! for key and status-list fetches, exported over OTLP/gRPC (`tracing` in the
//! configuration).
//!
//! Off unless `tracing.otlp_endpoint` is set, and then nothing here runs on a check: the
//! front ends ask [`Telemetry::check_span`], which answers `None` after one branch.
//!
//! The trace context is read with the W3C Trace Context propagator (`traceparent`,
//! `tracestate`) and the B3 propagator (the single `b3` header and the `x-b3-*` headers,
//! which Envoy's Zipkin tracer and Istio send); when a request carries both, W3C wins.
//! Sampling follows the parent's decision; only requests without a trace context (and
//! background fetches) are sampled at `root_sample_ratio`.
//!
//! What a span says is chosen here, once: decision, reason, rule, provider, whether the
//! token cache answered, the token's fingerprint. Never the token, its claims, or the
//! query string (a token may ride in it).

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter,
};

use crate::config::TracingConfig;
use crate::metrics::Metrics;

/// Where a trace context may be read from: request headers, or gRPC metadata.
pub type Carrier<'a> = &'a (dyn Extractor + Sync);

/// The propagators, in the order they are tried: later ones win, so W3C `traceparent` wins
/// over B3 when a request carries both.
static PROPAGATOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(|| {
    TextMapCompositePropagator::new(vec![
        Box::new(b3::B3),
        Box::new(W3c(TraceContextPropagator::new())),
    ])
});

/// The W3C Trace Context propagator, behind the header's exact shape: the SDK's parser
/// takes ids of the wrong length (a 31-digit trace id), which Trace Context §3.2.2.3 says to
/// ignore. Version 00 has exactly four fields (§3.2.2.1); a later version may add fields
/// after them (§4.3), which are ignored.
#[derive(Debug)]
struct W3c(TraceContextPropagator);

impl TextMapPropagator for W3c {
    fn inject_context(
        &self,
        cx: &Context,
        injector: &mut dyn opentelemetry::propagation::Injector,
    ) {
        self.0.inject_context(cx, injector);
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match extractor.get("traceparent") {
            Some(value) if traceparent_shape(value.trim()) => {
                self.0.extract_with_context(cx, extractor)
            }
            _ => cx.clone(),
        }
    }

    fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
        self.0.fields()
    }
}

/// `version-traceid-parentid-flags`: 2, 32, 16 and 2 lower-case hex digits.
fn traceparent_shape(value: &str) -> bool {
    let mut fields = value.splitn(5, '-');
    let shaped = [2, 32, 16, 2].iter().all(|width| {
        fields.next().is_some_and(|f| {
            f.len() == *width && f.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    });
    shaped && (!value.starts_with("00-") || fields.next().is_none())
}

/// The trace context carried by `carrier`, if it carries a valid one.
fn extract(carrier: Carrier<'_>) -> Option<Context> {
    let cx = PROPAGATOR.extract(carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The trace id a request carries (for the decision log), read whether tracing is on or
/// not: the log names the trace the proxy started even when jwt-authz exports nothing.
pub fn trace_id(carriers: &[Carrier<'_>]) -> Option<String> {
    carriers.iter().find_map(|carrier| {
        extract(*carrier).map(|cx| cx.span().span_context().trace_id().to_string())
    })
}

/// The tracer, when tracing is on. Cheap to clone; outlives configuration reloads.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start tracing: {0}")]
pub struct TelemetryError(String);

impl Telemetry {
    /// No spans.
    pub fn off() -> Self {
        Self::default()
    }

    /// The tracer `config` asks for (off when it names no endpoint). Must run inside a Tokio
    /// runtime: the exporter's gRPC channel lives there. Nothing is sent until a span ends,
    /// and a collector that is down costs only the bounded export queue.
    pub fn start(config: &TracingConfig, metrics: Arc<Metrics>) -> Result<Self, TelemetryError> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(Self::off());
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| TelemetryError(e.to_string()))?;
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(config.max_queue_size)
            .with_max_export_batch_size(config.max_export_batch_size)
            .with_scheduled_delay(config.export_interval)
            .build();
        let processor = BatchSpanProcessor::builder(Counted {
            inner: exporter,
            metrics,
        })
        .with_batch_config(batches)
        .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.root_sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("jwt-authz");
        Ok(Self {
            inner: Some(Arc::new(Inner { provider, tracer })),
        })
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The span of one check, started at `started`, continuing the trace of the first
    /// carrier that holds a trace context (the proxy's own call first, then the request it
    /// asks about). `None` when tracing is off.
    pub fn check_span(
        &self,
        front_end: &'static str,
        carriers: &[Carrier<'_>],
        started: SystemTime,
    ) -> Option<CheckSpan> {
        let inner = self.inner.as_ref()?;
        let parent = carriers
            .iter()
            .find_map(|carrier| extract(*carrier))
            .unwrap_or_default();
        let span = inner
            .tracer
            .span_builder("jwt-authz check")
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .with_attributes([KeyValue::new("jwt_authz.front_end", front_end)])
            .start_with_context(&inner.tracer, &parent);
        Some(CheckSpan {
            cx: parent.with_span(span),
        })
    }

    /// A span for a fetch (a client call of jwt-authz's own), the child of the check that
    /// caused it when there is one (the current context), else the root of a trace.
    pub fn fetch_span(&self, name: &'static str, provider: &str, url: &str) -> FetchSpan {
        let Some(inner) = &self.inner else {
            return FetchSpan { cx: None };
        };
        let span = inner
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("jwt_authz.provider", provider.to_owned()),
                KeyValue::new("url.full", without_query(url).to_owned()),
            ])
            .start_with_context(&inner.tracer, &Context::current());
        FetchSpan {
            cx: Some(Context::current().with_span(span)),
        }
    }

    /// A child span of the current context around a step of a check (`None` when off).
    pub fn step_span(&self, name: &'static str) -> Option<Context> {
        let inner = self.inner.as_ref()?;
        let current = Context::current();
        if !current.has_active_span() {
            return None;
        }
        let span = inner.tracer.start_with_context(name, &current);
        Some(current.with_span(span))
    }

    /// Sends what is queued and stops exporting (at shutdown). Blocks up to `timeout`.
    pub fn shutdown(&self, timeout: Duration) {
        if let Some(inner) = &self.inner
            && let Err(error) = inner.provider.shutdown_with_timeout(timeout)
        {
            tracing::warn!(%error, "trace export did not finish at shutdown");
        }
    }

    /// Sends what is queued now (tests, and before a restart).
    pub fn flush(&self) {
        if let Some(inner) = &self.inner
            && let Err(error) = inner.provider.force_flush()
        {
            tracing::warn!(%error, "trace export failed");
        }
    }
}

/// The span of one check, and the context the check runs in (its children attach to it).
#[derive(Debug)]
pub struct CheckSpan {
    cx: Context,
}

/// What a check span records when it ends.
#[derive(Debug)]
pub struct CheckRecord<'a> {
    pub decision: &'static str,
    pub reason: &'static str,
    pub would_deny: Option<&'static str>,
    pub rule: &'a str,
    pub provider: Option<&'a str>,
    pub cache_hit: Option<bool>,
    pub fingerprint: Option<String>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
}

impl CheckSpan {
    /// The context to run the check in.
    pub fn context(&self) -> Context {
        self.cx.clone()
    }

    /// The trace id, for the decision log.
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    /// Records the outcome and ends the span. A 5xx answer (jwt-authz could not decide) is
    /// an error; a denial is the check working, not an error (OpenTelemetry's HTTP server
    /// convention for 4xx).
    pub fn finish(self, record: CheckRecord<'_>) {
        let span = self.cx.span();
        if !span.is_recording() {
            return;
        }
        let mut attributes = vec![
            KeyValue::new("jwt_authz.decision", record.decision),
            KeyValue::new("jwt_authz.rule", record.rule.to_owned()),
            KeyValue::new("http.request.method", record.method.to_owned()),
            KeyValue::new("url.path", record.path.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(record.status)),
        ];
        if !record.reason.is_empty() {
            attributes.push(KeyValue::new("jwt_authz.reason", record.reason));
        }
        if let Some(would_deny) = record.would_deny {
            attributes.push(KeyValue::new("jwt_authz.would_deny", would_deny));
        }
        if let Some(provider) = record.provider {
            attributes.push(KeyValue::new("jwt_authz.provider", provider.to_owned()));
        }
        if let Some(hit) = record.cache_hit {
            attributes.push(KeyValue::new("jwt_authz.token_cache_hit", hit));
        }
        if let Some(fingerprint) = record.fingerprint {
            attributes.push(KeyValue::new("jwt_authz.token_fingerprint", fingerprint));
        }
        span.set_attributes(attributes);
        if record.status >= 500 {
            span.set_status(Status::error(record.reason));
        }
        span.end();
    }
}

/// A fetch's span; a no-op when tracing is off.
#[derive(Debug)]
pub struct FetchSpan {
    cx: Option<Context>,
}

impl FetchSpan {
    /// The context to run the fetch in (the current one when tracing is off).
    pub fn context(&self) -> Context {
        self.cx.clone().unwrap_or_else(Context::current)
    }

    /// Ends the span with the fetch's outcome; an error's text becomes the span's status.
    pub fn finish(self, outcome: &'static str, error: Option<&dyn std::fmt::Display>) {
        let Some(cx) = self.cx else {
            return;
        };
        let span = cx.span();
        span.set_attribute(KeyValue::new("jwt_authz.fetch_outcome", outcome));
        if let Some(error) = error {
            span.set_status(Status::error(error.to_string()));
        }
        span.end();
    }
}

/// Ends a step span (see [`Telemetry::step_span`]).
pub fn end_step(step: Option<Context>, error: Option<&dyn std::fmt::Display>) {
    if let Some(cx) = step {
        let span = cx.span();
        if let Some(error) = error {
            span.set_status(Status::error(error.to_string()));
        }
        span.end();
    }
}

fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// The exporter, counting what it sends (`jwt_authz_trace_spans_exported_total`).
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    metrics: Arc<Metrics>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.metrics.record_trace_export(result.is_ok(), spans);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Tonic's request metadata as a carrier (the proxy's own call: Envoy puts the context of
/// its ext_authz client span there).
pub struct GrpcMetadata<'a>(pub &'a tonic::metadata::MetadataMap);

impl Extractor for GrpcMetadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// HTTP request headers as a carrier.
pub struct HttpHeaders<'a>(pub &'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

mod b3;

#[cfg(test)]
mod tests;
