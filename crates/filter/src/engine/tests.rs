use std::collections::HashMap;

use jwt_authz_core::in_proxy::{CachedToken, CheckAnswer, GenerationAnswer, WireVerdict};
use jwt_authz_core::request::Incoming;
use serde_json::{Map, Value, json};

use super::{Counter, Engine, RequestHeaders, Step};

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
  - name: admin
    match: {path: {prefix: /admin/}}
    access:
      claims:
        - {claim: role, any_of: [admin]}
  - name: closed
    match: {path: {prefix: /closed/}}
    access: deny
in_proxy: {max_cached_tokens: 2, poll_interval: 1s, max_unconfirmed: 5s}
"#;

const T0: u64 = 1_800_000_000_000;

fn engine(extra: &str) -> Engine {
    Engine::from_config(&format!("{CONFIG}{extra}")).expect("valid configuration")
}

struct Req {
    method: &'static str,
    target: String,
    headers: HashMap<String, String>,
}

fn get(target: &str, token: Option<&str>) -> Req {
    let mut headers = HashMap::new();
    if let Some(token) = token {
        headers.insert("authorization".to_owned(), format!("Bearer {token}"));
    }
    Req {
        method: "GET",
        target: target.to_owned(),
        headers,
    }
}

fn decide(engine: &mut Engine, req: &Req, now: u64) -> (Step, Option<Counter>) {
    let none = HashMap::new();
    let incoming = Incoming {
        method: req.method,
        target: &req.target,
        host: "api.test",
        headers: (&req.headers).into(),
        context_extensions: &none,
        scheme: None,
        certificate: None,
    };
    engine.decide(&incoming, now)
}

fn claims(sub: &str, role: &str) -> Map<String, Value> {
    json!({"iss": "https://issuer.test", "aud": "api", "sub": sub, "role": role,
           "exp": T0 / 1000 + 3600})
    .as_object()
    .expect("object")
    .clone()
}

fn allow_answer(generation: &str, claims: Map<String, Value>, cache_for: u64) -> CheckAnswer {
    CheckAnswer {
        generation: generation.to_owned(),
        config: None,
        verdict: WireVerdict::Allow {
            set: vec![],
            remove: vec![],
            metadata: None,
        },
        token: Some(CachedToken {
            provider: "main".to_owned(),
            claims,
            cache_for,
        }),
    }
}

/// The sidecar's answer under this engine's own decision configuration (its digest).
fn answered(
    engine: &mut Engine,
    token: Option<&str>,
    mut answer: CheckAnswer,
    now: u64,
) -> WireVerdict {
    answer.config = Some(engine.digests().0.to_owned());
    engine.answered(token, answer, now)
}

/// A poll answered by a sidecar whose decision configuration is this engine's.
fn poll(engine: &mut Engine, generation: &str, now: u64) {
    let config = Some(engine.digests().0.to_owned());
    engine.polled(
        GenerationAnswer {
            generation: generation.to_owned(),
            config,
            dpop_algs: None,
        },
        now,
    );
}

fn status(step: &Step) -> u16 {
    match step {
        Step::Decided(WireVerdict::Allow { .. }) => 200,
        Step::Decided(WireVerdict::Deny { status, .. }) => *status,
        Step::Callout => 0,
    }
}

/// An engine that has polled generation "g1" and holds `tok-alice` (role user).
fn holding_alice() -> Engine {
    let mut e = engine("");
    poll(&mut e, "g1", T0);
    answered(
        &mut e,
        Some("tok-alice"),
        allow_answer("g1", claims("alice", "user"), 300),
        T0,
    );
    e
}

#[test]
fn a_held_token_is_decided_here_with_the_same_identity_headers_and_denials() {
    let mut e = holding_alice();
    let (step, counter) = decide(&mut e, &get("/api/x", Some("tok-alice")), T0 + 1);
    assert_eq!(counter, Some(Counter::CacheHit));
    let Step::Decided(WireVerdict::Allow { set, remove, .. }) = step else {
        panic!("{step:?}");
    };
    assert!(
        set.contains(&("x-user-id".to_owned(), "alice".to_owned())),
        "{set:?}"
    );
    // The token's header goes (identity.strip_authorization is on by default), and every
    // identity header the token does not supply.
    assert!(remove.contains(&"authorization".to_owned()), "{remove:?}");
    assert!(remove.contains(&"x-user-name".to_owned()), "{remove:?}");
    // The route wants role admin: 403 with the core's denial.
    let (step, _) = decide(&mut e, &get("/admin/x", Some("tok-alice")), T0 + 1);
    let Step::Decided(WireVerdict::Deny {
        status, headers, ..
    }) = step
    else {
        panic!("{step:?}");
    };
    assert_eq!(status, 403);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "www-authenticate" && v.contains("error=\"insufficient_scope\""))
    );
    // Dot-segments resolve before rules: /public/../admin/x is the admin route.
    assert_eq!(
        status_of(&mut e, "/public/../admin/x", Some("tok-alice")),
        403
    );
}

fn status_of(e: &mut Engine, target: &str, token: Option<&str>) -> u16 {
    status(&decide(e, &get(target, Some(token).flatten()), T0 + 1).0)
}

#[test]
fn only_the_exact_token_is_a_hit() {
    let mut e = holding_alice();
    assert_eq!(status_of(&mut e, "/api/x", Some("tok-alic")), 0);
    assert_eq!(status_of(&mut e, "/api/x", Some("tok-alicf")), 0);
    assert_eq!(status_of(&mut e, "/api/x", Some("tok-alice")), 200);
}

#[test]
fn what_needs_the_sidecar_is_a_callout() {
    let mut e = engine("");
    // Not yet told that the sidecar's configuration is this one: nothing is decided here.
    for (target, token) in [
        ("/api/x", Some("tok")),
        ("/api/x", None),
        ("/public/x", None),
        ("/closed/x", Some("tok")),
        ("/api%2Fx", None),
    ] {
        assert_eq!(
            decide(&mut e, &get(target, token), T0),
            (Step::Callout, None),
            "{target}"
        );
    }
    // Once polled, decided without the sidecar: public, deny rules, refused paths, and a
    // request without a token.
    poll(&mut e, "g1", T0);
    assert_eq!(status_of(&mut e, "/public/x", None), 200);
    assert_eq!(status_of(&mut e, "/closed/x", Some("tok")), 403);
    assert_eq!(status_of(&mut e, "/api%2Fx", None), 400);
    let (step, counter) = decide(&mut e, &get("/api/x", None), T0 + 1);
    assert_eq!((status(&step), counter), (401, Some(Counter::NoToken)));

    // A held token with a DPoP proof, or under the DPoP scheme: the sidecar checks proofs.
    let mut e = holding_alice();
    let mut req = get("/api/x", Some("tok-alice"));
    req.headers.insert("dpop".to_owned(), "proof".to_owned());
    assert_eq!(status(&decide(&mut e, &req, T0 + 1).0), 0);
    let mut req = get("/api/x", None);
    req.headers
        .insert("authorization".to_owned(), "DPoP tok-alice".to_owned());
    assert_eq!(status(&decide(&mut e, &req, T0 + 1).0), 0);
}

#[test]
fn held_claims_end_with_their_bounds() {
    // cache_for (the sidecar confirming all along).
    let mut e = holding_alice();
    poll(&mut e, "g1", T0 + 299_000);
    assert_eq!(
        status(&decide(&mut e, &get("/api/x", Some("tok-alice")), T0 + 299_999).0),
        200
    );
    poll(&mut e, "g1", T0 + 299_999);
    assert_eq!(
        status(&decide(&mut e, &get("/api/x", Some("tok-alice")), T0 + 300_000).0),
        0
    );
    // exp, when nearer than cache_for.
    let mut e = engine("");
    poll(&mut e, "g1", T0);
    let mut c = claims("bob", "user");
    c["exp"] = json!(T0 / 1000 + 2);
    answered(&mut e, Some("tok-bob"), allow_answer("g1", c, 300), T0);
    assert_eq!(
        status(&decide(&mut e, &get("/api/x", Some("tok-bob")), T0 + 1_999).0),
        200
    );
    assert_eq!(
        status(&decide(&mut e, &get("/api/x", Some("tok-bob")), T0 + 2_000).0),
        0
    );
    // The sidecar's confirmation: past max_unconfirmed (5 s) without a poll, nothing held
    // is used; a poll that answers again brings it back.
    let mut e = holding_alice();
    assert_eq!(
        status(&decide(&mut e, &get("/api/x", Some("tok-alice")), T0 + 5_000).0),
        200
    );
    assert_eq!(
        status(&decide(&mut e, &get("/api/x", Some("tok-alice")), T0 + 5_001).0),
        0
    );
    poll(&mut e, "g1", T0 + 6_000);
    assert_eq!(
        status(&decide(&mut e, &get("/api/x", Some("tok-alice")), T0 + 6_001).0),
        200
    );
}

#[test]
fn another_generation_empties_the_cache() {
    let mut e = holding_alice();
    assert_eq!(e.held(), 1);
    poll(&mut e, "g2", T0 + 10);
    assert_eq!(e.held(), 0);
    assert_eq!(
        status(&decide(&mut e, &get("/api/x", Some("tok-alice")), T0 + 11).0),
        0
    );
    // An answer under the polled generation is held.
    answered(
        &mut e,
        Some("tok-a"),
        allow_answer("g2", claims("a", "user"), 60),
        T0 + 12,
    );
    assert_eq!(e.held(), 1);
    // One under another generation empties the cache and holds nothing: the sidecar's keys
    // changed since the poll, or the answer was sent before it (a late answer from before a
    // key's removal must not bring back a token of the removed key). Its verdict applies.
    let verdict = answered(
        &mut e,
        Some("tok-b"),
        allow_answer("g1", claims("b", "user"), 60),
        T0 + 13,
    );
    assert!(matches!(verdict, WireVerdict::Allow { .. }));
    assert_eq!(e.held(), 0);
    assert_eq!(
        decide(&mut e, &get("/api/x", Some("tok-b")), T0 + 14).0,
        Step::Callout
    );
    // Until the next poll says which generation is current.
    poll(&mut e, "g3", T0 + 15);
    answered(
        &mut e,
        Some("tok-b"),
        allow_answer("g3", claims("b", "user"), 60),
        T0 + 16,
    );
    assert_eq!(
        status(&decide(&mut e, &get("/api/x", Some("tok-b")), T0 + 17).0),
        200
    );
}

#[test]
fn the_cache_is_bounded_and_answers_without_claims_hold_nothing() {
    let mut e = holding_alice();
    for (token, sub) in [("tok-b", "b"), ("tok-c", "c")] {
        answered(
            &mut e,
            Some(token),
            allow_answer("g1", claims(sub, "user"), 60),
            T0,
        );
    }
    assert_eq!(e.held(), 2, "max_cached_tokens: 2");
    assert_eq!(
        status_of(&mut e, "/api/x", Some("tok-alice")),
        0,
        "the oldest went"
    );
    // No claims handed over, a provider that does not exist, or nothing to keep.
    let mut e = engine("");
    poll(&mut e, "g1", T0);
    let mut answer = allow_answer("g1", claims("d", "user"), 60);
    answer.token = None;
    answered(&mut e, Some("tok-d"), answer, T0);
    let mut answer = allow_answer("g1", claims("e", "user"), 60);
    answer.token.as_mut().expect("token").provider = "elsewhere".to_owned();
    answered(&mut e, Some("tok-e"), answer, T0);
    answered(
        &mut e,
        Some("tok-f"),
        allow_answer("g1", claims("f", "user"), 0),
        T0,
    );
    assert_eq!(e.held(), 0);
    // max_cached_tokens: 0 holds nothing at all.
    let mut e =
        Engine::from_config(&CONFIG.replace("max_cached_tokens: 2", "max_cached_tokens: 0"))
            .expect("valid");
    poll(&mut e, "g1", T0);
    answered(
        &mut e,
        Some("tok-a"),
        allow_answer("g1", claims("a", "user"), 60),
        T0,
    );
    assert_eq!(e.held(), 0);
}

#[test]
fn shadow_mode_lets_denials_through_as_the_sidecar_does() {
    let mut e = engine("mode: shadow\n");
    poll(&mut e, "g1", T0);
    answered(
        &mut e,
        Some("tok-alice"),
        allow_answer("g1", claims("alice", "user"), 300),
        T0,
    );
    // Valid token short of claims: through, with its identity.
    let (step, _) = decide(&mut e, &get("/admin/x", Some("tok-alice")), T0 + 1);
    let Step::Decided(WireVerdict::Allow { set, .. }) = step else {
        panic!("{step:?}");
    };
    assert!(set.contains(&("x-user-id".to_owned(), "alice".to_owned())));
    // No token: through, anonymous.
    let (step, _) = decide(&mut e, &get("/api/x", None), T0 + 1);
    let Step::Decided(WireVerdict::Allow { set, .. }) = step else {
        panic!("{step:?}");
    };
    assert_eq!(set, [("x-user-anonymous".to_owned(), "true".to_owned())]);
}

#[test]
fn a_configuration_the_sidecar_would_refuse_is_refused() {
    for bad in [
        "providers: [",
        "providers: []\nrules: [{name: r, match: {path: {regex: '('}}, access: public}]\n",
        "providers: []\nin_proxy: {prefix: /}\n",
        "providers: []\nin_proxy: {max_cached_tokens: 100000000}\n",
    ] {
        assert!(Engine::from_config(bad).is_err(), "{bad}");
    }
    // The same document as JSON (Istio's pluginConfig arrives so).
    let json = r#"{"providers":[{"name":"m","issuer":"https://i","audiences":["a"],"jwks":{"uri":"https://i/j"}}]}"#;
    let e = Engine::from_config(json).expect("JSON is YAML");
    assert_eq!(e.in_proxy().cluster, "jwt_authz_http");
}

#[test]
fn the_failed_callout_answer_is_a_503_from_the_denial_table() {
    let e = engine("");
    let WireVerdict::Deny { status, body, .. } = e.unavailable() else {
        panic!("not a denial");
    };
    assert_eq!(status, 503);
    assert!(body.contains("temporarily_unavailable"));
}

#[test]
fn a_clock_gone_back_confirms_nothing() {
    let mut e = holding_alice();
    let held = get("/api/x", Some("tok-alice"));
    assert_eq!(status(&decide(&mut e, &held, T0 + 1).0), 200);
    // Envoy's clock stepped back (or could not be read, which the glue turns into 0): the
    // held claims wait for the sidecar instead of living on.
    assert_eq!(decide(&mut e, &held, T0 - 60_000).0, Step::Callout);
    assert_eq!(decide(&mut e, &held, 0).0, Step::Callout);
    // The clock back in step: held again, within the bound.
    assert_eq!(status(&decide(&mut e, &held, T0 + 2).0), 200);
}

/// A sidecar running another decision configuration (a rule changed there and not in the
/// plugin configuration): nothing is decided here, held claims are dropped, and it is said
/// once; when the two agree again, deciding here resumes.
#[test]
fn a_sidecar_with_another_configuration_decides_everything() {
    let mut e = holding_alice();
    assert_eq!(status_of(&mut e, "/api/x", Some("tok-alice")), 200);
    assert_eq!(status_of(&mut e, "/public/x", None), 200);
    assert!(e.config_agrees());
    assert!(!e.newly_disagreeing());

    let other = engine("mode: shadow\n").digests().0.to_owned();
    assert_ne!(
        other,
        e.digests().0,
        "another configuration, another digest"
    );
    e.polled(
        GenerationAnswer {
            generation: "g1".to_owned(),
            config: Some(other.clone()),
            dpop_algs: None,
        },
        T0 + 1,
    );
    assert!(!e.config_agrees());
    assert!(e.newly_disagreeing(), "said once");
    assert!(!e.newly_disagreeing());
    assert_eq!(e.held(), 0);
    for (target, token) in [
        ("/api/x", Some("tok-alice")),
        ("/public/x", None),
        ("/closed/x", None),
        ("/api%2Fx", None),
    ] {
        assert_eq!(
            decide(&mut e, &get(target, token), T0 + 2),
            (Step::Callout, Some(Counter::ConfigMismatch)),
            "{target}"
        );
    }
    // Its answers hold nothing while the configurations differ.
    let mut mismatched = allow_answer("g1", claims("alice", "user"), 300);
    mismatched.config = Some(other.clone());
    e.answered(Some("tok-alice"), mismatched, T0 + 3);
    assert_eq!(e.held(), 0);
    assert!(!e.newly_disagreeing(), "the same digest again is not news");
    // A sidecar that names no digest (an older one) is not known to agree either.
    let mut unnamed = allow_answer("g1", claims("alice", "user"), 300);
    unnamed.config = None;
    e.answered(Some("tok-alice"), unnamed, T0 + 4);
    assert_eq!(e.held(), 0);
    assert!(e.newly_disagreeing());
    assert_eq!(
        decide(&mut e, &get("/public/x", None), T0 + 5).1,
        Some(Counter::ConfigMismatch)
    );

    // The plugin configuration catches up (or the sidecar is rolled back): decided here.
    poll(&mut e, "g1", T0 + 6);
    assert!(e.config_agrees());
    assert_eq!(status_of(&mut e, "/public/x", None), 200);
    answered(
        &mut e,
        Some("tok-alice"),
        allow_answer("g1", claims("alice", "user"), 300),
        T0 + 7,
    );
    let (step, counter) = decide(&mut e, &get("/api/x", Some("tok-alice")), T0 + 8);
    assert_eq!((status(&step), counter), (200, Some(Counter::CacheHit)));
}

/// Held tokens are bounded by bytes as well as by count: large claims push the least
/// recently used out before the count bound is reached, an entry larger than the whole
/// bound is not held, and the count of bytes follows every removal.
#[test]
fn the_cache_is_bounded_by_bytes_too() {
    // 1 MiB (the least accepted) and room for 100 tokens.
    let config = CONFIG.replace(
        "max_cached_tokens: 2",
        "max_cached_tokens: 100, max_cached_bytes: 1048576",
    );
    let mut e = Engine::from_config(&config).expect("valid");
    poll(&mut e, "g1", T0);
    let big = |sub: &str, kib: usize| {
        let mut c = claims(sub, "user");
        c.insert("blob".into(), json!("x".repeat(kib * 1024)));
        c
    };
    for i in 0..5 {
        answered(
            &mut e,
            Some(&format!("tok-{i}")),
            allow_answer("g1", big(&format!("u{i}"), 300), 60),
            T0,
        );
    }
    // Three of 300 KiB fit in 1 MiB, a fourth does not: the two oldest went.
    assert_eq!(e.held(), 3);
    assert!(e.held_bytes() <= 1 << 20, "{}", e.held_bytes());
    assert_eq!(status_of(&mut e, "/api/x", Some("tok-0")), 0);
    assert_eq!(status_of(&mut e, "/api/x", Some("tok-1")), 0);
    assert_eq!(status_of(&mut e, "/api/x", Some("tok-4")), 200);
    // Larger than the whole bound: not held, and nothing else dropped for it.
    answered(
        &mut e,
        Some("tok-huge"),
        allow_answer("g1", big("huge", 1100), 60),
        T0,
    );
    assert_eq!(e.held(), 3);
    assert_eq!(status_of(&mut e, "/api/x", Some("tok-huge")), 0);
    // Another generation empties the cache, bytes included.
    poll(&mut e, "g2", T0);
    assert_eq!((e.held(), e.held_bytes()), (0, 0));
    // The bound is checked.
    for bad in ["max_cached_bytes: 1000", "max_cached_bytes: 2147483648"] {
        let config = CONFIG.replace("max_cached_tokens: 2", bad);
        assert!(Engine::from_config(&config).is_err(), "{bad}");
    }
}

/// A callout carries only what the decision reads: token sources, the proof, the trace
/// context, and names that may spell an identity header; not Envoy's `x-envoy-*`, not
/// pseudo-headers, not what a client adds.
#[test]
fn a_callout_forwards_only_what_the_decision_reads() {
    let mut e = engine("identity:\n  headers:\n    - {claim: sub, header: x-user-id}\n");
    // Until the sidecar says its configuration is this one, what it reads is not known
    // (another token source, an identity header only it has): everything goes but Envoy's
    // own, pseudo- and hop-by-hop headers.
    for name in ["x-client-junk", "cookie", "x-tenant", "user-agent"] {
        assert!(e.forwards(name), "{name}");
    }
    for name in ["x-envoy-retry-on", ":path", "connection", "content-length"] {
        assert!(!e.forwards(name), "{name}");
    }
    poll(&mut e, "g1", T0);
    assert!(e.config_agrees());
    for name in [
        "authorization",
        "dpop",
        "traceparent",
        "tracestate",
        "x-user-id",
        "x_user_id",
        "x.user.id",
        "x-odd_name",
    ] {
        assert!(e.forwards(name), "{name}");
    }
    for name in [
        "x-envoy-retry-on",
        "x-envoy-upstream-rq-timeout-ms",
        "x-envoy-odd_name",
        ":path",
        "cookie",
        "x-client-junk",
        "x-forwarded-for",
        "content-length",
        "connection",
        "user-agent",
    ] {
        assert!(!e.forwards(name), "{name}");
    }
    // A provider that reads a cookie, or its own header, gets those too.
    let mut e = Engine::from_config(&CONFIG.replace(
        "    jwks: {uri: https://issuer.test/jwks}\n",
        "    jwks: {uri: https://issuer.test/jwks}\n    token_sources: [bearer, {cookie: session}, {header: {name: x-api-token}}]\n",
    ))
    .expect("valid");
    poll(&mut e, "g1", T0);
    assert!(e.forwards("cookie"));
    assert!(e.forwards("x-api-token"));
}

/// Rolling upgrades in both orders. A newer sidecar's answer (with top-level members this
/// filter does not know) is applied as the same answer without them; an older sidecar's (without the
/// configuration digest) is applied too, and the filter then decides nothing itself (slower,
/// never wrong) until a sidecar names its configuration.
#[test]
fn answers_from_a_newer_or_an_older_sidecar_are_applied() {
    let mut e = engine("");
    poll(&mut e, "g1", T0);
    let digest = e.digests().0.to_owned();
    let newer = format!(
        r#"{{"generation":"g1","config":"{digest}","reason":"allowed","verdict":{{"allow":{{"set":[["x-user-id","alice"]],"remove":[]}}}},"token":{{"provider":"main","claims":{claims},"cache_for":60}}}}"#,
        claims = serde_json::to_string(&claims("alice", "user")).expect("json")
    );
    let answer: CheckAnswer = serde_json::from_str(&newer).expect("a newer answer reads");
    let verdict = e.answered(Some("tok-alice"), answer, T0);
    assert!(matches!(verdict, WireVerdict::Allow { .. }), "{verdict:?}");
    assert_eq!(status_of(&mut e, "/api/x", Some("tok-alice")), 200, "held");

    let older = r#"{"generation":"g1","verdict":{"deny":{"status":401,"headers":[["www-authenticate","Bearer realm=\"test\""]],"body":"{}"}}}"#;
    let answer: CheckAnswer = serde_json::from_str(older).expect("an older answer reads");
    let verdict = e.answered(Some("tok-bob"), answer, T0 + 1);
    assert!(
        matches!(verdict, WireVerdict::Deny { status: 401, .. }),
        "{verdict:?}"
    );
    assert!(!e.config_agrees());
    assert_eq!(
        decide(&mut e, &get("/api/x", Some("tok-alice")), T0 + 2),
        (Step::Callout, Some(Counter::ConfigMismatch))
    );
    let older_poll: GenerationAnswer =
        serde_json::from_str(r#"{"generation":"g1"}"#).expect("an older poll reads");
    e.polled(older_poll, T0 + 3);
    assert!(!e.config_agrees());
}

#[test]
fn request_headers_are_read_as_the_sidecars_front_ends_read_them() {
    let pairs = [
        (":method", "POST"),
        (":path", "/api/x?y=1"),
        (":authority", "api.test"),
        (":scheme", "https"),
        ("Authorization", "Bearer a"),
        ("x-user-id", "one"),
        ("X-User-Id", "two"),
        ("accept", "*/*"),
    ];
    let all = RequestHeaders::read(&pairs);
    assert_eq!(
        (&*all.method, &*all.target, &*all.host),
        ("POST", "/api/x?y=1", "api.test")
    );
    // Lowercase names, repeats joined in order, no pseudo-header among them.
    assert_eq!(all.headers.len(), 3, "{:?}", all.headers);
    assert_eq!(all.headers.get("authorization"), Some("Bearer a"));
    assert_eq!(all.headers.get("x-user-id"), Some("one,two"));
    assert_eq!(all.incoming().headers.len(), 3);
    // Only what `keep` takes (by lowercase name); the pseudo-headers still read.
    let some = RequestHeaders::read_only(&pairs, |name| name == "x-user-id");
    assert_eq!(some.method, "POST");
    assert_eq!(some.host, "api.test");
    assert_eq!(some.headers.len(), 1);
    assert_eq!(some.headers.get("x-user-id"), Some("one,two"));
    assert_eq!(some.headers.get("authorization"), None);
}

/// Bytes that are not UTF-8 (Envoy passes 0x80-0xFF through in values) are read with U+FFFD
/// in their place: such a value is never a token, and such a name is never the name of a
/// header the decision reads (`reads_header` takes it as a lookalike's).
#[test]
fn request_headers_that_are_not_utf8_are_read_lossily() {
    let pairs: [(&[u8], &[u8]); 4] = [
        (b":path", b"/a\xff"),
        (b"authorization", b"Bearer \xc3\x28abc"),
        (b"x-user\xffid", b"admin"),
        (b"accept", b"*/*"),
    ];
    let read = RequestHeaders::read(&pairs);
    assert_eq!(read.target, "/a\u{fffd}");
    assert_eq!(
        read.headers.get("authorization"),
        Some("Bearer \u{fffd}(abc")
    );
    assert_eq!(read.headers.get("x-user\u{fffd}id"), Some("admin"));
    assert_eq!(read.headers.get("accept"), Some("*/*"));
}

/// A held token that decides a request becomes the most recently used: at the count bound
/// (2 here), the one not used since goes first.
#[test]
fn a_token_used_is_the_last_to_go() {
    let mut e = Engine::from_config(CONFIG).expect("valid");
    poll(&mut e, "g1", T0);
    for sub in ["a", "b"] {
        let token = format!("tok-{sub}");
        answered(
            &mut e,
            Some(&token),
            allow_answer("g1", claims(sub, "user"), 60),
            T0,
        );
    }
    // tok-a, held first, is used: tok-b is now the least recently used.
    assert_eq!(status_of(&mut e, "/api/x", Some("tok-a")), 200);
    answered(
        &mut e,
        Some("tok-c"),
        allow_answer("g1", claims("c", "user"), 60),
        T0,
    );
    assert_eq!(e.held(), 2);
    assert_eq!(status_of(&mut e, "/api/x", Some("tok-b")), 0, "evicted");
    assert_eq!(status_of(&mut e, "/api/x", Some("tok-a")), 200);
    assert_eq!(status_of(&mut e, "/api/x", Some("tok-c")), 200);
}
