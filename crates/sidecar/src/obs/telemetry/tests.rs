use std::collections::HashMap;

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

// W3C Trace Context §3.2 example: version 00, the trace id and parent id of the spec's
// examples, sampled.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn the_trace_id_comes_from_traceparent() {
    let carrier = headers(&[("traceparent", TRACEPARENT)]);
    assert_eq!(
        trace_id(&[&carrier]).as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
}

#[test]
fn b3_single_and_multi_headers_are_read() {
    let single = headers(&[(
        "b3",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    )]);
    assert_eq!(
        trace_id(&[&single]).as_deref(),
        Some("80f198ee56343ba864fe8b2a57d3eff7")
    );
    let multi = headers(&[
        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-sampled", "1"),
    ]);
    assert_eq!(
        trace_id(&[&multi]).as_deref(),
        Some("463ac35c9f6413ad48485a3953bb6124")
    );
}

#[test]
fn w3c_wins_over_b3_and_the_first_carrier_wins() {
    let both = headers(&[
        ("traceparent", TRACEPARENT),
        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
    ]);
    assert_eq!(
        trace_id(&[&both]).as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let other = headers(&[(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )]);
    assert_eq!(
        trace_id(&[&other, &both]).as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    // A carrier without a context is skipped.
    let none = headers(&[("x-request-id", "abc")]);
    assert_eq!(
        trace_id(&[&none, &other]).as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
}

#[test]
fn malformed_contexts_are_ignored() {
    for value in [
        // All-zero trace id and parent id are invalid (W3C §3.2.2.3, §3.2.2.4).
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        // Version ff is forbidden (§3.2.2.1); upper case hex is not allowed.
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00",
        "garbage",
        "",
    ] {
        let carrier = headers(&[("traceparent", value)]);
        assert_eq!(trace_id(&[&carrier]), None, "{value:?}");
    }
    let carrier = headers(&[("b3", "not-a-b3-header")]);
    assert_eq!(trace_id(&[&carrier]), None);
}

#[test]
fn off_makes_no_spans() {
    let telemetry = Telemetry::off();
    let carrier = headers(&[("traceparent", TRACEPARENT)]);
    assert!(telemetry.check_span("grpc", &[&carrier]).is_none());
    assert!(telemetry.step_span("step").is_none());
    assert!(
        telemetry
            .fetch_span("fetch", "p", "https://x/")
            .cx
            .is_none()
    );
}

#[test]
fn urls_in_spans_lose_credentials_query_and_fragment() {
    assert_eq!(
        redact_url("https://user:pw@idp.example/keys?token=secret#x"),
        "https://idp.example/keys"
    );
    assert_eq!(
        redact_url("https://idp.example/keys"),
        "https://idp.example/keys"
    );
    assert_eq!(redact_url("not a url?secret"), "not a url");
    // reqwest names the URL it failed on; so do discovery errors.
    assert_eq!(
        redact_urls(
            "error sending request for url (http://u:p@127.0.0.1:9/jwks?k=secret): connection refused"
        ),
        "error sending request for url (http://127.0.0.1:9/jwks): connection refused"
    );
    assert_eq!(
        redact_urls("jwks_uri \"https://a.example/k?x=1\" and https://b.example/?y=2 end"),
        "jwks_uri \"https://a.example/k\" and https://b.example/ end"
    );
    assert_eq!(redact_urls("no url here"), "no url here");
}

#[test]
fn client_values_in_spans_are_bounded() {
    assert_eq!(bounded("/short"), "/short");
    let long = "/".to_owned() + &"é".repeat(2000);
    let cut = bounded(&long);
    assert!(cut.len() <= MAX_ATTRIBUTE_BYTES + "…".len());
    assert!(cut.ends_with('…'));
}

#[test]
fn a_long_tracestate_is_truncated_by_whole_entries_and_the_trace_kept() {
    // Trace Context's example value ("tracestate Header Field Values").
    let example = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    let short = headers(&[("traceparent", TRACEPARENT), ("tracestate", example)]);
    let cx = extract(&short).expect("context");
    assert_eq!(cx.span().span_context().trace_state().header(), example);
    // Long entries (over 128 characters) go first, then entries from the end until 512
    // characters are left ("tracestate Limits").
    let mut members: Vec<String> = (0..30)
        .map(|i| format!("v{i:02}={}", "x".repeat(40)))
        .collect();
    members.insert(1, format!("long={}", "y".repeat(200)));
    members.push(format!("last={}", "z".repeat(130)));
    let long = headers(&[
        ("traceparent", TRACEPARENT),
        ("tracestate", &members.join(",")),
    ]);
    let cx = extract(&long).expect("context");
    let kept = cx.span().span_context().trace_state().header();
    assert!(kept.len() <= 512, "{}", kept.len());
    assert!(kept.starts_with("v00=") && !kept.contains("long=") && !kept.contains("last="));
    // Each entry is 44 characters and a comma: 11 fit.
    assert_eq!(kept.split(',').count(), 11);
    assert_eq!(
        cx.span().span_context().trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(cx.span().span_context().is_sampled());
}

#[test]
fn b3_deny_without_ids_is_recognised() {
    assert!(b3::denies(&headers(&[("b3", "0")])));
    assert!(!b3::denies(&headers(&[("b3", "1")])));
    assert!(!b3::denies(&headers(&[])));
}

fn sampled(carrier: &HashMap<String, String>) -> Option<bool> {
    extract(carrier).map(|cx| cx.span().span_context().is_sampled())
}

// The examples of github.com/openzipkin/b3-propagation (README, "Single Header" and
// "Multiple Headers").
#[test]
fn b3_examples_of_the_specification() {
    // Sampled, with a parent span id.
    let single = headers(&[(
        "b3",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    )]);
    assert_eq!(sampled(&single), Some(true));
    // Debug implies sampled.
    let debug = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d")]);
    assert_eq!(sampled(&debug), Some(true));
    // Denied, and the sampling-only form (no ids: nothing to continue).
    let denied = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")]);
    assert_eq!(sampled(&denied), Some(false));
    assert_eq!(sampled(&headers(&[("b3", "0")])), None);
    // A 64-bit trace id is the low half of a 128-bit one.
    let short = headers(&[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7-1")]);
    assert_eq!(
        trace_id(&[&short]).as_deref(),
        Some("0000000000000000a3ce929d0e0e4736")
    );
    // Multiple headers: X-B3-Flags: 1 is debug (sampled), a missing X-B3-Sampled defers
    // (read as not sampled), the older "true" is accepted.
    let base = [
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        headers(&all)
    };
    assert_eq!(sampled(&with(&[("x-b3-sampled", "1")])), Some(true));
    assert_eq!(sampled(&with(&[("x-b3-sampled", "true")])), Some(true));
    assert_eq!(sampled(&with(&[("x-b3-flags", "1")])), Some(true));
    assert_eq!(sampled(&with(&[("x-b3-sampled", "0")])), Some(false));
    assert_eq!(sampled(&with(&[])), Some(false));
    assert_eq!(sampled(&with(&[("x-b3-sampled", "yes")])), None);
}

#[test]
fn malformed_b3_is_ignored() {
    for value in [
        "80f198ee56343ba864fe8b2a57d3eff7",
        "80F198EE56343BA864FE8B2A57D3EFF7-E457B5A2E4D86BD1-1",
        "80f198ee56343ba864fe8b2a57d3eff-e457b5a2e4d86bd1-1",
        "00000000000000000000000000000000-e457b5a2e4d86bd1-1",
        "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-xyz",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-extra",
        "+0f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
    ] {
        assert_eq!(sampled(&headers(&[("b3", value)])), None, "{value:?}");
    }
}

#[test]
fn a_later_version_may_add_fields() {
    // Trace Context, "Versioning of traceparent": parse a higher version as version 00, ignoring what follows.
    let later = headers(&[(
        "traceparent",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
    )]);
    assert_eq!(
        trace_id(&[&later]).as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
}

#[test]
fn the_sampled_flag_of_traceparent_is_read() {
    let not_sampled = headers(&[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    )]);
    assert_eq!(sampled(&not_sampled), Some(false));
    assert_eq!(
        sampled(&headers(&[("traceparent", TRACEPARENT)])),
        Some(true)
    );
}
