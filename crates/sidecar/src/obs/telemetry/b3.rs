//! B3 propagation (github.com/openzipkin/b3-propagation), the headers Envoy's Zipkin
//! tracer and Istio send: the single `b3` header and the `x-b3-*` headers.
//!
//! Written here because the only packaged B3 propagator for this OpenTelemetry version
//! lives in `opentelemetry-zipkin`, which is deprecated as a whole; the format is a few
//! fixed-width hex fields.

use std::sync::LazyLock;

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

const SINGLE: &str = "b3";
const TRACE_ID: &str = "x-b3-traceid";
const SPAN_ID: &str = "x-b3-spanid";
const SAMPLED: &str = "x-b3-sampled";
const FLAGS: &str = "x-b3-flags";

static FIELDS: LazyLock<[String; 5]> =
    LazyLock::new(|| [SINGLE, TRACE_ID, SPAN_ID, SAMPLED, FLAGS].map(str::to_owned));

#[derive(Debug)]
pub(super) struct B3;

impl TextMapPropagator for B3 {
    /// Writes the single `b3` header (jwt-authz never calls this: it only continues traces).
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let context = span.span_context();
        if context.is_valid() {
            let sampled = if context.is_sampled() { "1" } else { "0" };
            injector.set(
                SINGLE,
                format!("{}-{}-{sampled}", context.trace_id(), context.span_id()),
            );
        }
    }

    /// The single header first; the multiple headers when it is absent or malformed.
    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let found = extractor
            .get(SINGLE)
            .and_then(single)
            .or_else(|| multiple(extractor));
        match found {
            Some(remote) => cx.with_remote_span_context(remote),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&*FIELDS)
    }
}

/// `{TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`. A header holding only a
/// sampling state carries no context.
fn single(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let trace_id = trace_id(parts.next()?)?;
    let span_id = span_id(parts.next()?)?;
    let flags = match parts.next() {
        None => TraceFlags::default(),
        Some("1" | "d") => TraceFlags::SAMPLED,
        Some("0") => TraceFlags::default(),
        Some(_) => return None,
    };
    if let Some(parent) = parts.next() {
        span_id_valid(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(remote(trace_id, span_id, flags))
}

/// `X-B3-TraceId` and `X-B3-SpanId`, with `X-B3-Sampled` (`1`, or the older `true`) or
/// `X-B3-Flags: 1` (debug, which implies sampled). Without either the decision is deferred
/// ("Sampling State"); jwt-authz then does not sample (Envoy and Istio always send one).
fn multiple(extractor: &dyn Extractor) -> Option<SpanContext> {
    let trace_id = trace_id(extractor.get(TRACE_ID)?.trim())?;
    let span_id = span_id(extractor.get(SPAN_ID)?.trim())?;
    let debug = extractor.get(FLAGS).is_some_and(|v| v.trim() == "1");
    let sampled = match extractor.get(SAMPLED).map(str::trim) {
        Some("1" | "true") => true,
        None | Some("0" | "false") => false,
        Some(_) => return None,
    };
    let flags = if debug || sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Some(remote(trace_id, span_id, flags))
}

fn remote(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> SpanContext {
    SpanContext::new(trace_id, span_id, flags, true, TraceState::NONE)
}

/// 32 or 16 lower-case hex digits (a 64-bit id is the low half of a 128-bit one); zero is
/// not an id.
fn trace_id(hex: &str) -> Option<TraceId> {
    if !matches!(hex.len(), 16 | 32) || !lower_hex(hex) {
        return None;
    }
    let id = u128::from_str_radix(hex, 16).ok()?;
    (id != 0).then(|| TraceId::from_bytes(id.to_be_bytes()))
}

fn span_id(hex: &str) -> Option<SpanId> {
    span_id_valid(hex)?;
    let id = u64::from_str_radix(hex, 16).ok()?;
    (id != 0).then(|| SpanId::from_bytes(id.to_be_bytes()))
}

fn span_id_valid(hex: &str) -> Option<()> {
    (hex.len() == 16 && lower_hex(hex)).then_some(())
}

fn lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `b3: 0`: the caller decided not to sample and names no trace to continue ("Single
/// Header": a sampling state alone). `1` or `d` alone starts a trace like no header would.
pub(super) fn denies(carrier: &dyn Extractor) -> bool {
    carrier.get(SINGLE).is_some_and(|v| v.trim() == "0")
}
