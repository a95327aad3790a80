//! The module's logic against a recorded stream: callouts and their answers, the poll, the
//! held tokens, and every way of not getting an answer failing closed.

use std::time::Duration;

use jwt_authz_core::in_proxy::{CachedToken, CheckAnswer, GenerationAnswer, WireVerdict};
use serde_json::{Value, json};

use super::*;

const CONFIG: &str = r#"
realm: test
providers:
  - name: main
    issuer: https://issuer.test
    audiences: [api]
    jwks: {uri: https://issuer.test/jwks}
rules:
  - name: public
    match: {path: {prefix: /public/}}
    access: public
in_proxy: {cluster: jwt_authz_http, poll_interval: 1s, max_unconfirmed: 30s}
"#;

/// What the filter did to the request, in order.
#[derive(Debug, Default)]
struct Recorded {
    headers: Vec<(String, String)>,
    set: Vec<(String, String)>,
    /// Headers added to a request that did not carry them.
    added: Vec<(String, String)>,
    removed: Vec<String>,
    marked: bool,
    refuse_mark: bool,
    /// Dynamic metadata set: namespace and serialized `Struct`.
    metadata: Vec<(String, Vec<u8>)>,
    refuse_metadata: bool,
    responses: Vec<(u16, String)>,
    callouts: Vec<(String, Vec<(String, String)>)>,
    refuse_callouts: bool,
    continued: usize,
    metrics: Vec<Metric>,
}

impl Stream for Recorded {
    fn request_headers(&self) -> Vec<(&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect()
    }
    fn set_request_header(&mut self, name: &str, value: &str) {
        self.set.push((name.to_owned(), value.to_owned()));
    }
    fn remove_request_header(&mut self, name: &str) {
        self.removed.push(name.to_owned());
    }
    fn add_request_header(&mut self, name: &str, value: &str) {
        self.added.push((name.to_owned(), value.to_owned()));
    }
    fn mark_decided(&mut self) -> bool {
        self.marked = !self.refuse_mark;
        self.marked
    }
    fn decided(&self) -> bool {
        self.marked
    }
    fn set_metadata(&mut self, namespace: &str, fields: &[u8]) -> bool {
        if self.refuse_metadata {
            return false;
        }
        self.metadata.push((namespace.to_owned(), fields.to_vec()));
        true
    }
    fn send_response(&mut self, status: u16, _: &[(&str, &str)], body: &str) {
        self.responses.push((status, body.to_owned()));
    }
    fn callout(&mut self, cluster: &str, headers: &[(&str, &str)], _: Duration) -> Option<u64> {
        if self.refuse_callouts {
            return None;
        }
        self.callouts.push((
            cluster.to_owned(),
            headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        ));
        Some(self.callouts.len() as u64)
    }
    fn continue_request(&mut self) {
        self.continued += 1;
    }
    fn worker(&self) -> u32 {
        0
    }
    fn count(&mut self, metric: Metric) {
        self.metrics.push(metric);
    }
}

fn request(path: &str, token: Option<&str>) -> Recorded {
    let mut headers = vec![
        (":method".to_owned(), "GET".to_owned()),
        (":path".to_owned(), path.to_owned()),
        (":authority".to_owned(), "api.test".to_owned()),
        ("x-envoy-internal".to_owned(), "true".to_owned()),
    ];
    if let Some(token) = token {
        headers.push(("authorization".to_owned(), format!("Bearer {token}")));
    }
    Recorded {
        headers,
        ..Recorded::default()
    }
}

fn path_of(call: &[(String, String)]) -> &str {
    call.iter()
        .find(|(n, _)| n == ":path")
        .map_or("", |(_, v)| v.as_str())
}

fn body(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON")
}

fn digest(config: &Config) -> String {
    jwt_authz_core::config::DecisionConfig::from_yaml(&config.text)
        .expect("config")
        .digest()
}

fn allow(config: &Config, generation: &str, hold: bool) -> CheckAnswer {
    let exp = now_ms() / 1000 + 600;
    let claims: Value =
        json!({"iss": "https://issuer.test", "aud": "api", "sub": "alice", "exp": exp});
    CheckAnswer {
        generation: generation.to_owned(),
        config: Some(digest(config)),
        verdict: WireVerdict::Allow {
            set: vec![("x-user-id".to_owned(), "alice".to_owned())],
            remove: vec!["authorization".to_owned()],
            metadata: None,
        },
        token: hold.then(|| CachedToken {
            provider: "main".to_owned(),
            claims: claims.as_object().cloned().unwrap_or_default(),
            cache_for: 60,
        }),
    }
}

#[test]
fn a_token_not_held_is_asked_of_the_sidecar_and_its_answer_applied() {
    let config = Config::new(CONFIG).expect("config");
    let mut filter = Filter::default();
    let mut stream = request("/api/orders", Some("tok"));
    assert_eq!(filter.on_request_headers(&config, &mut stream), Flow::Stop);
    assert!(filter.pending());
    // The check, to the sidecar's cluster, carrying what the decision reads, not the proxy's
    // own headers.
    assert_eq!(stream.callouts.len(), 1);
    let (cluster, check) = &stream.callouts[0];
    assert_eq!(cluster, "jwt_authz_http");
    assert_eq!(path_of(check), "/in-proxy/check/api/orders");
    assert!(
        check
            .iter()
            .any(|(n, v)| n == "authorization" && v == "Bearer tok")
    );
    assert!(!check.iter().any(|(n, _)| n == "x-envoy-internal"));
    assert!(check.iter().any(|(n, v)| n == METHOD_HEADER && v == "GET"));

    let answer = body(&allow(&config, "g1", false));
    filter.on_callout_done(&config, &mut stream, 1, Some((200, &answer)));
    assert!(!filter.pending());
    assert_eq!(stream.set, [("x-user-id".to_owned(), "alice".to_owned())]);
    assert_eq!(stream.removed, ["authorization"]);
    assert!(stream.marked);
    assert_eq!(stream.continued, 1);
    assert!(stream.responses.is_empty());
}

#[test]
fn a_held_token_is_decided_in_process_once_the_generation_is_confirmed() {
    let config = Config::new(CONFIG).expect("config");
    let call = config.poll_call().expect("due at once");
    assert_eq!(call.path, "/in-proxy/generation");
    assert_eq!(call.cluster, "jwt_authz_http");
    let poll = GenerationAnswer {
        generation: "g1".to_owned(),
        config: Some(digest(&config)),
        dpop_algs: None,
    };
    assert!(config.poll_done(Some((200, &body(&poll))), now_ms()));
    let mut first = Filter::default();
    let mut stream = request("/api/orders", Some("tok"));
    first.on_request_headers(&config, &mut stream);
    let answer = body(&allow(&config, "g1", true));
    first.on_callout_done(&config, &mut stream, 1, Some((200, &answer)));
    assert_eq!(stream.continued, 1);

    // The next request with the token: no callout.
    let mut second = Filter::default();
    let mut stream = request("/api/orders", Some("tok"));
    assert_eq!(
        second.on_request_headers(&config, &mut stream),
        Flow::Continue
    );
    assert!(stream.callouts.is_empty(), "{:?}", stream.callouts);
    assert_eq!(stream.metrics, [Metric::DecidedCached]);
    assert!(stream.marked);
    // Another token still goes to the sidecar.
    let mut third = Filter::default();
    let mut stream = request("/api/orders", Some("other"));
    assert_eq!(third.on_request_headers(&config, &mut stream), Flow::Stop);
    assert_eq!(stream.callouts.len(), 1);
}

#[test]
fn every_way_of_not_getting_an_answer_is_a_503() {
    let config = Config::new(CONFIG).expect("config");
    // The callout cannot be made.
    let mut filter = Filter::default();
    let mut stream = request("/api/orders", Some("tok"));
    stream.refuse_callouts = true;
    assert_eq!(filter.on_request_headers(&config, &mut stream), Flow::Stop);
    assert_eq!(stream.responses[0].0, 503);
    assert!(!stream.marked);
    assert!(stream.metrics.contains(&Metric::CalloutFailures));
    // No answer, another status, an unreadable or oversized body.
    let huge = vec![b' '; MAX_ANSWER_BYTES + 1];
    for answer in [
        None,
        Some((500, &b"{}"[..])),
        Some((200, &b"<html>"[..])),
        Some((200, &b""[..])),
        Some((200, &huge[..])),
    ] {
        let mut filter = Filter::default();
        let mut stream = request("/api/orders", Some("tok"));
        filter.on_request_headers(&config, &mut stream);
        let id = stream.callouts.len() as u64;
        filter.on_callout_done(&config, &mut stream, id, answer);
        assert_eq!(stream.responses.len(), 1, "{answer:?}");
        assert_eq!(stream.responses[0].0, 503);
        assert_eq!(stream.continued, 0);
        assert!(!stream.marked);
    }
    // An answer to another callout id changes nothing.
    let mut filter = Filter::default();
    let mut stream = request("/api/orders", Some("tok"));
    filter.on_request_headers(&config, &mut stream);
    filter.on_callout_done(
        &config,
        &mut stream,
        99,
        Some((200, &body(&allow(&config, "g", false)))),
    );
    assert!(filter.pending() && stream.responses.is_empty() && stream.continued == 0);
}

#[test]
fn an_allow_that_cannot_be_marked_is_refused_here() {
    let config = Config::new(CONFIG).expect("config");
    let mut filter = Filter::default();
    let mut stream = request("/api/orders", Some("tok"));
    stream.refuse_mark = true;
    filter.on_request_headers(&config, &mut stream);
    filter.on_callout_done(
        &config,
        &mut stream,
        1,
        Some((200, &body(&allow(&config, "g", false)))),
    );
    assert_eq!(stream.responses.len(), 1);
    assert_eq!(stream.responses[0].0, 503);
    assert_eq!(stream.continued, 0);
}

#[test]
fn the_guard_lets_through_only_what_the_filter_marked() {
    let config = Config::new(CONFIG).expect("config");
    // A request the filter lets through is marked, and the guard after it lets it go on,
    // untouched.
    let mut passed = request("/api/orders", Some("a.b.c"));
    let allow = WireVerdict::Allow {
        set: vec![],
        remove: vec![],
        metadata: None,
    };
    assert_eq!(apply(&mut passed, allow), Flow::Continue);
    assert!(passed.marked);
    assert_eq!(guard(&mut passed), Flow::Continue);
    assert!(passed.responses.is_empty());
    assert!(!passed.metrics.contains(&Metric::GuardRefused));
    // One the filter never saw, token or not: refused, 403, counted.
    for token in [Some("a.b.c"), None] {
        let mut unseen = request("/api/orders", token);
        assert_eq!(guard(&mut unseen), Flow::Stop);
        assert_eq!(unseen.responses.len(), 1);
        assert_eq!(unseen.responses[0].0, 403);
        assert!(
            unseen.responses[0]
                .1
                .contains("access to this route is denied")
        );
        assert_eq!(unseen.metrics, [Metric::GuardRefused]);
        assert!(unseen.set.is_empty() && unseen.added.is_empty() && !unseen.marked);
    }
    // One the filter paused for a callout is not marked until an answer lets it through.
    let mut paused = request("/api/orders", Some("a.b.c"));
    assert_eq!(
        Filter::default().on_request_headers(&config, &mut paused),
        Flow::Stop
    );
    assert!(!paused.marked);
}

#[test]
fn one_poll_at_a_time_and_again_at_the_next_tick() {
    let config =
        Config::new(&CONFIG.replace("poll_interval: 1s", "poll_interval: 200ms")).expect("config");
    assert!(config.poll_call().is_some(), "due at once");
    // In flight: not again (until answered, or given up after twice the timeout).
    assert!(config.poll_call().is_none());
    // Answered: not again within half an interval (two wake-ups close together)...
    assert!(!config.poll_done(Some((200, b"<html>")), now_ms()));
    assert!(config.poll_call().is_none());
    // ...and due at the timer's next wake-up, one interval after the last start (measured
    // from when it started, not when it was answered: one poll per tick).
    std::thread::sleep(Duration::from_millis(110));
    assert!(config.poll_call().is_some());
}

#[test]
fn an_engine_built_after_a_poll_starts_from_its_answer() {
    let config = Config::new(CONFIG).expect("config");
    let poll = GenerationAnswer {
        generation: "g1".to_owned(),
        config: Some(digest(&config)),
        dpop_algs: None,
    };
    assert!(config.poll_call().is_some());
    assert!(config.poll_done(Some((200, &body(&poll))), now_ms()));
    // Worker 5's engine does not exist yet: built now, it knows the generation, so the
    // sidecar's answer (of that generation) is held and the next request decided here.
    struct Worker5(Recorded);
    impl Stream for Worker5 {
        fn request_headers(&self) -> Vec<(&[u8], &[u8])> {
            self.0.request_headers()
        }
        fn set_request_header(&mut self, n: &str, v: &str) {
            self.0.set_request_header(n, v)
        }
        fn remove_request_header(&mut self, n: &str) {
            self.0.remove_request_header(n)
        }
        fn add_request_header(&mut self, n: &str, v: &str) {
            self.0.add_request_header(n, v)
        }
        fn mark_decided(&mut self) -> bool {
            self.0.mark_decided()
        }
        fn decided(&self) -> bool {
            self.0.decided()
        }
        fn set_metadata(&mut self, n: &str, f: &[u8]) -> bool {
            self.0.set_metadata(n, f)
        }
        fn send_response(&mut self, s: u16, h: &[(&str, &str)], b: &str) {
            self.0.send_response(s, h, b)
        }
        fn callout(&mut self, c: &str, h: &[(&str, &str)], t: Duration) -> Option<u64> {
            self.0.callout(c, h, t)
        }
        fn continue_request(&mut self) {
            self.0.continue_request()
        }
        fn worker(&self) -> u32 {
            5
        }
        fn count(&mut self, m: Metric) {
            self.0.count(m)
        }
    }
    let mut first = Filter::default();
    let mut stream = Worker5(request("/api/orders", Some("tok")));
    first.on_request_headers(&config, &mut stream);
    first.on_callout_done(
        &config,
        &mut stream,
        1,
        Some((200, &body(&allow(&config, "g1", true)))),
    );
    let mut second = Filter::default();
    let mut stream = Worker5(request("/api/orders", Some("tok")));
    assert_eq!(
        second.on_request_headers(&config, &mut stream),
        Flow::Continue
    );
    assert_eq!(stream.0.metrics, [Metric::DecidedCached]);
}

#[test]
fn a_configuration_the_sidecar_would_refuse_is_refused() {
    for bad in [
        "providers: [{name: a}]",
        "not yaml: [",
        "rules: [{access: nope}]\nproviders: []",
    ] {
        assert!(Config::new(bad).is_err(), "{bad}");
    }
}

// ---- Tokens verified in Envoy with the sidecar's published keys ----

fn published(generation: &str, jwk: Value) -> Vec<u8> {
    body(&json!({
        "generation": generation,
        "providers": [{
            "name": "main",
            "profile": {
                "issuer": "https://issuer.test", "algorithms": ["RS256"], "leeway": 5,
                "require_exp": true, "required_claims": [], "max_lifetime": null,
                "token_types": [], "spiffe_trust_domain": null
            },
            "cache_for": 60,
            "keys": [jwk]
        }]
    }))
}

/// The module with the sidecar's generation `generation` polled and its keys (for
/// `keys_generation`) fetched.
fn with_keys(key: &testkit::TestKey, generation: &str, keys_generation: &str) -> Config {
    with_keys_for(CONFIG, key, generation, keys_generation)
}

/// [`with_keys`] for the configuration `text`.
fn with_keys_for(
    text: &str,
    key: &testkit::TestKey,
    generation: &str,
    keys_generation: &str,
) -> Config {
    let config = Config::new(text).expect("config");
    assert!(config.keys_call().is_none(), "no keys before a poll");
    assert!(config.poll_call().is_some());
    let poll = GenerationAnswer {
        generation: generation.to_owned(),
        config: Some(digest(&config)),
        dpop_algs: None,
    };
    assert!(config.poll_done(Some((200, &body(&poll))), now_ms()));
    let call = config.keys_call().expect("a new generation: its keys");
    assert_eq!(call.path, "/in-proxy/keys");
    assert!(config.keys_call().is_none(), "one fetch at a time");
    assert!(config.keys_done(Some((200, &published(keys_generation, key.jwk())))));
    config
}

fn token_claims(sub: &str) -> Value {
    let now = now_ms() / 1000;
    json!({"iss": "https://issuer.test", "aud": "api", "sub": sub, "iat": now, "exp": now + 600})
}

#[test]
fn a_token_not_held_is_verified_in_envoy_with_the_sidecars_keys() {
    let key = testkit::TestKey::rsa("k1");
    let config = with_keys(&key, "g1", "g1");
    assert!(
        config.keys_call().is_none(),
        "keys of the polled generation"
    );
    let token = key.token(&token_claims("alice"));
    let mut filter = Filter::default();
    let mut stream = request("/api/orders", Some(&token));
    assert_eq!(
        filter.on_request_headers(&config, &mut stream),
        Flow::Continue
    );
    assert!(stream.callouts.is_empty(), "{:?}", stream.callouts);
    assert_eq!(stream.metrics, [Metric::DecidedVerified]);
    // The request carried no identity header: `x-user-id` added, nothing replaced, and
    // the other identity headers (claims the token lacks) not looked for.
    assert_eq!(stream.added, [("x-user-id".to_owned(), "alice".to_owned())]);
    assert!(stream.set.is_empty(), "{:?}", stream.set);
    assert_eq!(stream.removed, ["authorization"]);
    assert!(stream.marked);
    // Held from then on.
    let mut again = Filter::default();
    let mut stream = request("/api/orders", Some(&token));
    assert_eq!(
        again.on_request_headers(&config, &mut stream),
        Flow::Continue
    );
    assert_eq!(stream.metrics, [Metric::DecidedCached]);
}

#[test]
fn what_is_not_verified_in_envoy_is_asked_of_the_sidecar() {
    let key = testkit::TestKey::rsa("k1");
    let config = with_keys(&key, "g1", "g1");
    let mut expired = token_claims("alice");
    expired["exp"] = json!(now_ms() / 1000 - 60);
    let mut bound = token_claims("alice");
    bound["cnf"] = json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"});
    let mut other_issuer = token_claims("alice");
    other_issuer["iss"] = json!("https://other.test");
    let mut other_audience = token_claims("alice");
    other_audience["aud"] = json!("elsewhere");
    for (why, token) in [
        ("expired", key.token(&expired)),
        ("bound to a key", key.token(&bound)),
        ("another issuer", key.token(&other_issuer)),
        (
            "another key",
            testkit::TestKey::rsa("k1").token(&token_claims("alice")),
        ),
        ("not a JWT", "opaque-token-value".to_owned()),
    ] {
        let mut filter = Filter::default();
        let mut stream = request("/api/orders", Some(&token));
        assert_eq!(
            filter.on_request_headers(&config, &mut stream),
            Flow::Stop,
            "{why}"
        );
        assert_eq!(stream.callouts.len(), 1, "{why}");
        assert!(!stream.marked, "{why}");
    }
    // Verified, but the route refuses it (another audience): decided here as the sidecar
    // would, with its denial.
    let mut filter = Filter::default();
    let mut stream = request("/api/orders", Some(&key.token(&other_audience)));
    assert_eq!(filter.on_request_headers(&config, &mut stream), Flow::Stop);
    assert!(stream.callouts.is_empty());
    assert_eq!(stream.responses[0].0, 401);
    // A DPoP proof: the sidecar checks every one.
    let mut filter = Filter::default();
    let mut stream = request("/api/orders", Some(&key.token(&token_claims("alice"))));
    stream.headers.push(("dpop".to_owned(), "proof".to_owned()));
    assert_eq!(filter.on_request_headers(&config, &mut stream), Flow::Stop);
    assert_eq!(stream.callouts.len(), 1);
}

#[test]
fn keys_of_another_generation_verify_nothing() {
    let key = testkit::TestKey::rsa("k1");
    // The sidecar's keys changed (g2) after the module fetched them (g1).
    let config = with_keys(&key, "g2", "g1");
    let mut filter = Filter::default();
    let mut stream = request("/api/orders", Some(&key.token(&token_claims("alice"))));
    assert_eq!(filter.on_request_headers(&config, &mut stream), Flow::Stop);
    assert_eq!(stream.callouts.len(), 1);
    // They are asked for again (one fetch at a time), and again after a failed fetch.
    assert!(
        config.keys_call().is_some(),
        "keys of another generation than the poll's"
    );
    assert!(config.keys_call().is_none(), "in flight");
    assert!(!config.keys_done(Some((500, b""))));
    assert!(config.keys_call().is_some());
}

#[test]
fn with_nothing_held_every_token_is_verified_in_envoy() {
    let key = testkit::TestKey::rsa("k1");
    let config = Config::new(&CONFIG.replace(
        "max_unconfirmed: 30s}",
        "max_unconfirmed: 30s, max_cached_tokens: 0}",
    ))
    .expect("config");
    assert!(config.poll_call().is_some());
    let poll = GenerationAnswer {
        generation: "g1".to_owned(),
        config: Some(digest(&config)),
        dpop_algs: None,
    };
    assert!(config.poll_done(Some((200, &body(&poll))), now_ms()));
    assert!(config.keys_call().is_some());
    assert!(config.keys_done(Some((200, &published("g1", key.jwk())))));
    let token = key.token(&token_claims("alice"));
    for _ in 0..2 {
        let mut filter = Filter::default();
        let mut stream = request("/api/orders", Some(&token));
        assert_eq!(
            filter.on_request_headers(&config, &mut stream),
            Flow::Continue
        );
        assert_eq!(stream.metrics, [Metric::DecidedVerified]);
        assert!(stream.callouts.is_empty());
    }
}

#[test]
fn identity_headers_a_client_sent_are_replaced_or_removed_never_kept() {
    let key = testkit::TestKey::rsa("k1");
    let config = with_keys(&key, "g1", "g1");
    let token = key.token(&token_claims("alice"));
    for held in [false, true] {
        let mut stream = request("/api/orders", Some(&token));
        // A forged identity in the spellings a client may send (HTTP/1 names arrive in
        // lowercase from Envoy, but a filter before this one may add any).
        stream
            .headers
            .push(("x-user-id".to_owned(), "admin".to_owned()));
        stream
            .headers
            .push(("X-User-Id".to_owned(), "root".to_owned()));
        stream
            .headers
            .push(("x-user-name".to_owned(), "Admin".to_owned()));
        assert_eq!(
            Filter::default().on_request_headers(&config, &mut stream),
            Flow::Continue,
            "held: {held}"
        );
        let metric = if held {
            Metric::DecidedCached
        } else {
            Metric::DecidedVerified
        };
        assert_eq!(stream.metrics, [metric]);
        // `x-user-id` replaced (every value), `x-user-name` (no such claim) removed, the
        // token removed; `x-user-role`, which the request does not carry, left alone.
        assert_eq!(stream.set, [("x-user-id".to_owned(), "alice".to_owned())]);
        assert!(stream.added.is_empty(), "{:?}", stream.added);
        let mut removed = stream.removed.clone();
        removed.sort();
        assert_eq!(removed, ["authorization", "x-user-name"]);
        assert!(stream.marked);
    }
}

#[test]
fn an_engine_a_panic_left_poisoned_is_replaced_not_trusted() {
    let key = testkit::TestKey::rsa("k1");
    let config = with_keys(&key, "g1", "g1");
    let token = key.token(&token_claims("alice"));
    // Verified in Envoy, then held.
    let mut stream = request("/api/orders", Some(&token));
    Filter::default().on_request_headers(&config, &mut stream);
    let mut stream = request("/api/orders", Some(&token));
    Filter::default().on_request_headers(&config, &mut stream);
    assert_eq!(stream.metrics, [Metric::DecidedCached]);

    // A panic while worker 0's engine is locked.
    let slot = config.engines[0].get().expect("worker 0's engine");
    let panicked = std::panic::catch_unwind(|| {
        let _engine = slot.lock();
        panic!("a hook's panic, with the engine locked");
    });
    assert!(panicked.is_err());
    assert!(slot.is_poisoned());

    // The next request finds a fresh engine: nothing held (the token is verified again),
    // still at the polled generation (decided here, not a configuration mismatch).
    let mut stream = request("/api/orders", Some(&token));
    assert_eq!(
        Filter::default().on_request_headers(&config, &mut stream),
        Flow::Continue
    );
    assert_eq!(stream.metrics, [Metric::DecidedVerified]);
    assert!(!slot.is_poisoned());
    let mut stream = request("/api/orders", Some(&token));
    Filter::default().on_request_headers(&config, &mut stream);
    assert_eq!(stream.metrics, [Metric::DecidedCached]);
}

/// The module's configuration with `identity.dynamic_metadata` on.
fn with_metadata() -> String {
    format!("{CONFIG}identity: {{dynamic_metadata: true}}\n")
}

/// A serialized `Struct` read back as JSON (numbers as doubles).
fn decoded(fields: &[u8]) -> Value {
    fn value(v: &ProtoValue) -> Value {
        match &v.kind {
            Some(Kind::NullValue(_)) | None => Value::Null,
            Some(Kind::BoolValue(b)) => json!(b),
            Some(Kind::NumberValue(n)) => json!(n),
            Some(Kind::StringValue(s)) => json!(s),
            Some(Kind::ListValue(list)) => Value::Array(list.values.iter().map(value).collect()),
            Some(Kind::StructValue(s)) => object(s),
        }
    }
    fn object(s: &Struct) -> Value {
        Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), value(v)))
                .collect(),
        )
    }
    object(&Struct::decode(fields).expect("a serialized Struct"))
}

#[test]
fn claims_become_a_protobuf_struct_as_in_the_ext_authz_answer() {
    let claims = json!({
        "sub": "alice", "n": 3, "ratio": 0.5, "admin": false, "none": null,
        "roles": ["a", "b"], "org": {"id": "o1", "depth": [1, {"x": true}]}
    });
    let metadata = IdentityMetadata {
        provider: "main".to_owned(),
        claims: claims.as_object().cloned().unwrap_or_default(),
    };
    let read = decoded(&metadata_struct(&metadata).expect("shallow claims"));
    assert_eq!(
        read,
        json!({
            "provider": "main",
            "claims": {
                "sub": "alice", "n": 3.0, "ratio": 0.5, "admin": false, "none": null,
                "roles": ["a", "b"], "org": {"id": "o1", "depth": [1.0, {"x": true}]}
            }
        })
    );
}

#[test]
fn identity_metadata_is_set_when_asked_for_verified_or_held() {
    let key = testkit::TestKey::rsa("k1");
    let config = with_keys_for(&with_metadata(), &key, "g1", "g1");
    let token = key.token(&token_claims("alice"));
    for expected in [Metric::DecidedVerified, Metric::DecidedCached] {
        let mut stream = request("/api/orders", Some(&token));
        assert_eq!(
            Filter::default().on_request_headers(&config, &mut stream),
            Flow::Continue
        );
        assert_eq!(stream.metrics, [expected]);
        assert_eq!(stream.metadata.len(), 1, "{expected:?}");
        let (namespace, fields) = &stream.metadata[0];
        assert_eq!(namespace, METADATA_NAMESPACE);
        let read = decoded(fields);
        assert_eq!(read["provider"], "main");
        assert_eq!(read["claims"]["sub"], "alice");
        assert_eq!(read["claims"]["iss"], "https://issuer.test");
        assert!(stream.marked);
    }
    // Not asked for: none.
    let plain = with_keys(&key, "g1", "g1");
    let mut stream = request("/api/orders", Some(&token));
    Filter::default().on_request_headers(&plain, &mut stream);
    assert_eq!(stream.metrics, [Metric::DecidedVerified]);
    assert!(stream.metadata.is_empty());
    // A public route, no token: no identity, no metadata.
    let mut stream = request("/public/x", None);
    Filter::default().on_request_headers(&config, &mut stream);
    assert!(stream.marked);
    assert!(stream.metadata.is_empty());
}

#[test]
fn identity_metadata_that_cannot_be_set_fails_closed() {
    let key = testkit::TestKey::rsa("k1");
    let config = with_keys_for(&with_metadata(), &key, "g1", "g1");
    let token = key.token(&token_claims("alice"));
    let mut stream = request("/api/orders", Some(&token));
    stream.refuse_metadata = true;
    assert_eq!(
        Filter::default().on_request_headers(&config, &mut stream),
        Flow::Stop
    );
    assert_eq!(stream.responses.len(), 1);
    assert_eq!(stream.responses[0].0, 503);
    assert!(!stream.marked);
}

#[test]
fn identity_metadata_from_the_sidecars_answer_is_set() {
    let config = Config::new(&with_metadata()).expect("config");
    let mut filter = Filter::default();
    let mut stream = request("/api/orders", Some("tok"));
    assert_eq!(filter.on_request_headers(&config, &mut stream), Flow::Stop);
    let mut answer = allow(&config, "g1", false);
    if let WireVerdict::Allow { metadata, .. } = &mut answer.verdict {
        *metadata = Some(IdentityMetadata {
            provider: "main".to_owned(),
            claims: json!({"sub": "bob"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        });
    }
    filter.on_callout_done(&config, &mut stream, 1, Some((200, &body(&answer))));
    assert_eq!(stream.continued, 1);
    assert_eq!(stream.metadata.len(), 1);
    assert_eq!(
        decoded(&stream.metadata[0].1),
        json!({"provider": "main", "claims": {"sub": "bob"}})
    );
}

/// The configuration with an identity header and a token header named like Envoy's own.
fn named_like_envoys() -> String {
    let config = CONFIG.replace(
        "audiences: [api]",
        "audiences: [api]\n    token_sources: [bearer, {header: {name: x-envoy-token}}]",
    );
    format!("{config}identity: {{headers: [{{claim: sub, header: x-envoy-user-id}}]}}\n")
}

#[test]
fn headers_named_like_envoys_own_are_read_when_the_configuration_names_them() {
    let key = testkit::TestKey::rsa("k1");
    let config = with_keys_for(&named_like_envoys(), &key, "g1", "g1");
    let token = key.token(&token_claims("alice"));
    // A forged identity in a lookalike spelling: refused (400) whether the token is
    // verified here or held, as the sidecar refuses it.
    for _ in 0..2 {
        let mut stream = request("/api/orders", Some(&token));
        stream
            .headers
            .push(("x-envoy-user_id".to_owned(), "admin".to_owned()));
        assert_eq!(
            Filter::default().on_request_headers(&config, &mut stream),
            Flow::Stop
        );
        assert_eq!(stream.responses.len(), 1, "{:?}", stream.responses);
        assert_eq!(stream.responses[0].0, 400);
        assert!(!stream.marked);
    }
    // A token in the `x-envoy-token` header: found, decided here, and taken off the
    // request; the identity header set.
    let mut stream = request("/api/orders", None);
    stream
        .headers
        .push(("x-envoy-token".to_owned(), token.clone()));
    assert_eq!(
        Filter::default().on_request_headers(&config, &mut stream),
        Flow::Continue
    );
    assert!(stream.callouts.is_empty(), "{:?}", stream.callouts);
    assert_eq!(stream.removed, ["x-envoy-token"]);
    assert_eq!(
        stream.added,
        [("x-envoy-user-id".to_owned(), "alice".to_owned())]
    );
}

/// A claim nested `levels` deep: `{"d": {"d": ... 1}}`.
fn nested(levels: usize) -> Value {
    nested_to(levels, json!(1))
}

fn nested_to(levels: usize, leaf: Value) -> Value {
    (0..levels).fold(leaf, |inner, _| json!({ "d": inner }))
}

#[test]
fn claims_too_deep_for_envoys_metadata_fail_closed() {
    let metadata = |claim: Value| IdentityMetadata {
        provider: "main".to_owned(),
        claims: json!({ "deep": claim })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    let fits = metadata_struct(&metadata(nested(MAX_METADATA_DEPTH - 1))).expect("fits");
    assert_eq!(
        decoded(&fits)["claims"]["deep"]["d"]["d"]["d"],
        nested_to(MAX_METADATA_DEPTH - 4, json!(1.0)),
        "numbers read back as doubles"
    );
    assert!(metadata_struct(&metadata(nested(MAX_METADATA_DEPTH))).is_none());
    assert!(metadata_struct(&metadata(json!([nested(MAX_METADATA_DEPTH - 1)]))).is_none());

    // Such a token, verified in Envoy, with the metadata asked for: 503, not let through
    // without it.
    let key = testkit::TestKey::rsa("k1");
    let config = with_keys_for(&with_metadata(), &key, "g1", "g1");
    let mut claims = token_claims("alice");
    claims["deep"] = nested(MAX_METADATA_DEPTH);
    let mut stream = request("/api/orders", Some(&key.token(&claims)));
    assert_eq!(
        Filter::default().on_request_headers(&config, &mut stream),
        Flow::Stop
    );
    assert_eq!(stream.metrics, [Metric::DecidedVerified]);
    assert_eq!(stream.responses[0].0, 503);
    assert!(stream.metadata.is_empty());
    assert!(!stream.marked);
}
