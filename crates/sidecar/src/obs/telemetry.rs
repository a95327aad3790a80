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
use opentelemetry::trace::{
    SpanContext, SpanKind, Status, TraceContextExt, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter,
};

use crate::config::{OtlpTls, RequestContext, TracingConfig};
use crate::obs::metrics::Metrics;

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
/// after them ("Versioning of traceparent"), which are ignored.
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

/// Largest `tracestate` kept: the 512 characters Trace Context ("tracestate Limits") asks
/// every vendor to propagate at least. Beyond it the list is truncated as that section says
/// (whole entries; those over 128 characters first, then from the end): it rides in every
/// span this process exports for the request.
const MAX_TRACESTATE_BYTES: usize = 512;
const MAX_TRACESTATE_ENTRY_BYTES: usize = 128;

/// The trace context carried by `carrier`, if it carries a valid one.
fn extract(carrier: Carrier<'_>) -> Option<Context> {
    let cx = PROPAGATOR.extract(carrier);
    let remote = cx.span().span_context().clone();
    if !remote.is_valid() {
        return None;
    }
    if remote.trace_state().header().len() <= MAX_TRACESTATE_BYTES {
        return Some(cx);
    }
    Some(Context::new().with_remote_span_context(SpanContext::new(
        remote.trace_id(),
        remote.span_id(),
        remote.trace_flags(),
        true,
        truncated(remote.trace_state()),
    )))
}

/// `state` cut to [`MAX_TRACESTATE_BYTES`] by whole entries ("tracestate Limits").
fn truncated(state: &TraceState) -> TraceState {
    let header = state.header();
    let mut entries: Vec<&str> = header
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && e.len() <= MAX_TRACESTATE_ENTRY_BYTES)
        .collect();
    while !entries.is_empty()
        && entries.iter().map(|e| e.len() + 1).sum::<usize>() - 1 > MAX_TRACESTATE_BYTES
    {
        entries.pop();
    }
    entries.join(",").parse().unwrap_or(TraceState::NONE)
}

/// The trace id a request carries (for the decision log), read whether tracing is on or
/// not: the log names the trace the proxy started even when jwt-authz exports nothing.
pub fn trace_id(carriers: &[Carrier<'_>]) -> Option<String> {
    carriers.iter().find_map(|carrier| {
        extract(*carrier).map(|cx| cx.span().span_context().trace_id().to_string())
    })
}

/// HTTP/2 pings on an idle connection to the collector, so a dead one is noticed before an
/// export waits on it.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Largest method and path a check span records (longer ones are cut at a character
/// boundary and end in `…`): they come from the client.
const MAX_ATTRIBUTE_BYTES: usize = 1024;

/// The tracer, when tracing is on. Cheap to clone; outlives configuration reloads.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// `tracing.request_context: follow`.
    follow_request: bool,
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
        // The channel is built here: the exporter's own has no connect timeout, so a
        // collector that never answers the handshake would hold the export thread for the
        // OS's connect timeout instead of `export_timeout`.
        let mut channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .map_err(|e| TelemetryError(format!("otlp_endpoint {endpoint:?}: {e}")))?;
        if let Some(tls) = &config.tls {
            channel = channel
                .tls_config(client_tls(tls)?)
                .map_err(|e| TelemetryError(format!("tracing.tls: {e}")))?;
        }
        let metadata = match &config.headers_file {
            Some(path) => read_headers(path)?,
            None => tonic::metadata::MetadataMap::new(),
        };
        let channel = channel
            .connect_timeout(config.export_timeout)
            .timeout(config.export_timeout)
            .http2_keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(config.export_timeout)
            .connect_lazy();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_channel(channel)
            .with_metadata(metadata)
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
            inner: Some(Arc::new(Inner {
                provider,
                tracer,
                follow_request: config.request_context == RequestContext::Follow,
            })),
        })
    }

    /// The carriers a check's trace context may come from: all of them, or with
    /// `tracing.request_context: ignore` only the first `proxy_own` (the proxy's own call,
    /// which the front end lists first), so the request being decided cannot choose what
    /// is sampled.
    pub fn carriers<'s, 'c>(&self, all: &'s [Carrier<'c>], proxy_own: usize) -> &'s [Carrier<'c>] {
        match &self.inner {
            Some(inner) if !inner.follow_request => &all[..proxy_own.min(all.len())],
            _ => all,
        }
    }

    /// The span of one check, started now, continuing the trace of the first
    /// carrier that holds a trace context (the proxy's own call first, then the request it
    /// asks about). `None` when tracing is off.
    pub fn check_span(
        &self,
        front_end: &'static str,
        carriers: &[Carrier<'_>],
    ) -> Option<CheckSpan> {
        let inner = self.inner.as_ref()?;
        let started = SystemTime::now();
        let parent = carriers.iter().find_map(|carrier| extract(*carrier));
        // B3's `b3: 0` says "do not sample" without naming a trace: no span either.
        if parent.is_none() && carriers.iter().any(|carrier| b3::denies(*carrier)) {
            return None;
        }
        let has_parent = parent.is_some();
        let parent = parent.unwrap_or_default();
        let span = inner
            .tracer
            .span_builder("jwt-authz check")
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .with_attributes([KeyValue::new("jwt_authz.front_end", front_end)])
            .start_with_context(&inner.tracer, &parent);
        Some(CheckSpan {
            cx: parent.with_span(span),
            has_parent,
            finished: false,
        })
    }

    /// A span for a fetch (a client call of jwt-authz's own), the child of the check that
    /// caused it when there is one (the current context), else the root of a trace.
    pub fn fetch_span(&self, name: &'static str, provider: &str, url: &str) -> FetchSpan {
        let url = redact_url(url);
        let Some(inner) = &self.inner else {
            return FetchSpan { cx: None };
        };
        let span = inner
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("jwt_authz.provider", provider.to_owned()),
                KeyValue::new("url.full", url),
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
}

/// The span of one check, and the context the check runs in (its children attach to it).
#[derive(Debug)]
pub struct CheckSpan {
    cx: Context,
    /// The trace came from the request (else it is this span's own, if sampled).
    has_parent: bool,
    finished: bool,
}

/// A check whose future was dropped before it answered (the proxy stopped waiting): its
/// span still ends, saying so.
impl Drop for CheckSpan {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let span = self.cx.span();
        if span.is_recording() {
            span.set_attribute(KeyValue::new("jwt_authz.decision", "abandoned"));
            span.set_status(Status::error("check abandoned before it answered"));
            span.end();
        }
    }
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

    /// The trace id for the decision log: the request's, or this span's own when it is
    /// exported; `None` for an unsampled root (its id names no trace anywhere).
    pub fn trace_id(&self) -> Option<String> {
        let context = self.cx.span().span_context().clone();
        (self.has_parent || context.is_sampled()).then(|| context.trace_id().to_string())
    }

    /// Records the outcome and ends the span. A 5xx answer (jwt-authz could not decide) is
    /// an error; a denial is the check working, not an error (OpenTelemetry's HTTP server
    /// convention for 4xx).
    pub fn finish(mut self, record: CheckRecord<'_>) {
        self.finished = true;
        let span = self.cx.span();
        if !span.is_recording() {
            return;
        }
        let mut attributes = vec![
            KeyValue::new("jwt_authz.decision", record.decision),
            KeyValue::new("jwt_authz.rule", record.rule.to_owned()),
            KeyValue::new("http.request.method", bounded(record.method)),
            KeyValue::new("url.path", bounded(record.path)),
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
            span.set_status(Status::error(redact_urls(&error.to_string())));
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

/// `url` without credentials, query or fragment (a key or list URI may carry a secret in
/// either; a status list URI comes from a token).
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            // Fails only for URLs without an authority, which hold no credentials.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or(url).to_owned(),
    }
}

/// An error's text with every URL in it redacted (reqwest names the URL it failed on).
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let at = match (rest.find("http://"), rest.find("https://")) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => break,
        };
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .map_or(rest.len(), |e| at + e);
        out.push_str(&redact_url(&rest[at..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A client-supplied value as a span records it: at most [`MAX_ATTRIBUTE_BYTES`].
fn bounded(value: &str) -> String {
    if value.len() <= MAX_ATTRIBUTE_BYTES {
        return value.to_owned();
    }
    let mut end = MAX_ATTRIBUTE_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
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

mod b3;

#[cfg(test)]
mod tests;

/// The client side of TLS to the collector: its CAs, the client certificate if any, the
/// name to check. Files are read at start; a missing or unreadable one fails the start.
fn client_tls(tls: &OtlpTls) -> Result<tonic::transport::ClientTlsConfig, TelemetryError> {
    let read = |field: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| TelemetryError(format!("tracing.tls.{field} {}: {e}", path.display())))
    };
    let mut config = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(read("ca_file", &tls.ca_file)?),
    );
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        config = config.identity(tonic::transport::Identity::from_pem(
            read("cert_file", cert)?,
            read("key_file", key)?,
        ));
    }
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name.clone());
    }
    Ok(config)
}

/// The most a `tracing.headers_file` may hold, and the most headers in it.
const MAX_HEADERS_FILE_BYTES: u64 = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// `tracing.headers_file`: `name: value` lines (blank lines and `#` comments skipped), as
/// gRPC metadata. Names are lowercase header names, not gRPC's own (`grpc-*`, pseudo-headers,
/// `content-type`, `te`); values visible ASCII. Errors name the line, never its value.
fn read_headers(path: &std::path::Path) -> Result<tonic::metadata::MetadataMap, TelemetryError> {
    use std::io::Read as _;
    let failed = |message: String| {
        TelemetryError(format!(
            "tracing.headers_file {}: {message}",
            path.display()
        ))
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(|e| failed(e.to_string()))?
        .take(MAX_HEADERS_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| failed(e.to_string()))?;
    if text.len() as u64 > MAX_HEADERS_FILE_BYTES {
        return Err(failed(format!(
            "larger than {MAX_HEADERS_FILE_BYTES} bytes"
        )));
    }
    let mut map = tonic::metadata::MetadataMap::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(failed(format!("line {number}: not `name: value`")));
        };
        let (name, value) = (name.trim(), value.trim());
        let reserved = name.starts_with("grpc-") || matches!(name, "content-type" | "te");
        let key = tonic::metadata::AsciiMetadataKey::from_bytes(name.as_bytes())
            .ok()
            .filter(|_| !reserved && !name.is_empty() && name == name.to_ascii_lowercase());
        let Some(key) = key else {
            return Err(failed(format!(
                "line {number}: {name:?} is not a lowercase header name jwt-authz may send"
            )));
        };
        let value = value
            .parse::<tonic::metadata::AsciiMetadataValue>()
            .ok()
            .filter(|_| !value.is_empty() && value.bytes().all(|b| (0x20..0x7f).contains(&b)));
        let Some(value) = value else {
            return Err(failed(format!(
                "line {number}: the value of {name:?} is empty or not visible ASCII"
            )));
        };
        map.append(key, value);
        if map.len() > MAX_HEADERS {
            return Err(failed(format!("more than {MAX_HEADERS} headers")));
        }
    }
    Ok(map)
}
