//! One table of requests decided three ways, natively (no Envoy, no Wasm toolchain): by the
//! sidecar's runtime, by the in-proxy filter's engine (after the callout that hands it the
//! token's claims, as in Envoy), and by `explain`. Wherever the filter decides a request
//! itself, its verdict (status, body, headers set and removed) must be the sidecar's, and
//! `explain` must report the sidecar's decision; the table also says where the filter is
//! expected to decide locally, so a filter that asked the sidecar about everything would
//! fail here too.

use std::collections::HashMap;
use std::sync::Arc;

use crate::support::{ISSUER, TestKey, claims};
use jwt_authz::config::Config;
use jwt_authz::explain::{self, Request};
use jwt_authz::obs::metrics::Metrics;
use jwt_authz::obs::telemetry::Telemetry;
use jwt_authz::runtime::Runtime;
use jwt_authz_core::in_proxy::{GenerationAnswer, WireVerdict};
use jwt_authz_core::request::Incoming;
use jwt_authz_filter::engine::{Engine, Step};
use serde_json::{Value, json};

const PARTNER: &str = "https://partner.test";

/// The table's configuration; `corp_sources` are where the corp provider reads tokens, and
/// `extra_rules` go before the default rule.
fn config(corp_jwks: &str, partner_jwks: &str, corp_sources: &str, extra_rules: &str) -> String {
    format!(
        r#"
listen:
  grpc: 127.0.0.1:0
  admin: 127.0.0.1:0
realm: test
identity:
  headers:
    - {{claim: sub, header: x-user-id}}
    - {{claim: role, header: x-user-role}}
rules:
  - name: health
    match: {{path: {{exact: /healthz}}}}
    access: public
  - name: internal
    match: {{path: {{prefix: /internal/}}}}
    access: deny
  - name: admin
    match: {{path: {{prefix: /admin/}}}}
    access:
      claims: [{{claim: role, any_of: [admin]}}]
  - name: billing
    match: {{path: {{prefix: /billing/}}}}
    audiences: [billing-api]
    access: authenticated
  - name: partners
    match: {{path: {{prefix: /partners/}}}}
    providers: [partner]
    access: authenticated
  - name: watched
    match: {{path: {{prefix: /watched/}}}}
    mode: shadow
    access:
      claims: [{{claim: role, any_of: [admin]}}]
{extra_rules}  - name: default
    access: authenticated
providers:
  - name: corp
    issuer: {ISSUER}
    audiences: [api]
    jwks: {{file: {corp_jwks}}}
    token_sources: {corp_sources}
  - name: partner
    issuer: {PARTNER}
    audiences: [api]
    jwks: {{file: {partner_jwks}}}
token_cache: {{ttl: 60s}}
in_proxy: {{prefix: /in-proxy}}
"#
    )
}

/// One request of the table, and what is expected of it.
struct Case {
    name: &'static str,
    path: &'static str,
    host: &'static str,
    headers: Vec<(&'static str, String)>,
    /// The status every way of deciding must give.
    status: u16,
    /// Whether the filter decides it itself (after at most one callout that hands it the
    /// token's claims); `false`: every request with it is a callout.
    local: bool,
    /// Whether an allow goes on without identity (the anonymous marker set, no identity
    /// header); every allow is checked.
    anonymous: bool,
    /// Headers that must not reach the upstream on an allow (a refused token).
    removes: Vec<&'static str>,
}

fn case(name: &'static str, path: &'static str, headers: Vec<(&'static str, String)>) -> Case {
    Case {
        name,
        path,
        host: "api.test",
        headers,
        status: 200,
        local: true,
        anonymous: false,
        removes: Vec::new(),
    }
}

impl Case {
    fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    fn host(mut self, host: &'static str) -> Self {
        self.host = host;
        self
    }

    fn callout(mut self) -> Self {
        self.local = false;
        self
    }

    fn anonymous(mut self) -> Self {
        self.anonymous = true;
        self
    }

    fn removes(mut self, header: &'static str) -> Self {
        self.removes.push(header);
        self
    }
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

fn with(sub: &str, extra: Value) -> Value {
    let mut c = claims(sub);
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

fn table(corp: &TestKey, partner: &TestKey) -> Vec<Case> {
    let user = corp.token(&claims("u-1"));
    let admin = corp.token(&with("u-2", json!({"role": "admin"})));
    let expired = corp.token(&with("u-3", json!({"exp": crate::support::now() - 3600})));
    let forged = {
        let mut t = user.clone();
        t.pop();
        t.push(if user.ends_with('A') { 'B' } else { 'A' });
        t
    };
    let partner_token = partner.token(&with("p-1", json!({"iss": PARTNER})));
    let unsafe_claim = corp.token(&with("u-4", json!({"role": "a\r\nx-injected: 1"})));
    let spoof = ("x-user-id", "spoofed".to_owned());
    vec![
        case("public, no token", "/healthz", vec![]).anonymous(),
        case(
            "public, forged identity removed",
            "/healthz",
            vec![spoof.clone()],
        )
        .anonymous(),
        case("public, valid token", "/healthz", vec![bearer(&user)]),
        case(
            "deny rule before the token",
            "/internal/x",
            vec![bearer(&user)],
        )
        .status(403),
        case("no token", "/api/orders", vec![]).status(401),
        case(
            "valid token",
            "/api/orders?page=2",
            vec![bearer(&user), spoof.clone()],
        ),
        case(
            "valid token in the cookie",
            "/api/orders",
            vec![("cookie", format!("theme=dark; session={user}"))],
        ),
        case(
            "two tokens",
            "/api/orders",
            vec![bearer(&user), ("cookie", format!("session={admin}"))],
        )
        .status(400),
        case(
            "token too large",
            "/api/orders",
            vec![bearer(&"a".repeat(9000))],
        )
        .status(400),
        case(
            "case of the path folded",
            "/API/Orders",
            vec![bearer(&user)],
        ),
        case(
            "encoded slash refused",
            "/api/..%2finternal/x",
            vec![bearer(&user)],
        )
        .status(400),
        case(
            "dot segments resolved onto a deny rule",
            "/api/../internal/x",
            vec![bearer(&user)],
        )
        .status(403),
        case(
            "lookalike identity header",
            "/api/orders",
            vec![bearer(&user), ("x_user_id", "admin".to_owned())],
        )
        .status(400),
        case("host read canonically", "/api/orders", vec![bearer(&user)]).host("API.Test.:8080"),
        case("host that is not one", "/api/orders", vec![bearer(&user)])
            .host("api.test@evil")
            .status(400),
        case("claims lacking", "/admin/users", vec![bearer(&user)]).status(403),
        case("claims met", "/admin/users", vec![bearer(&admin)]),
        case("route's own audience", "/billing/1", vec![bearer(&user)]).status(401),
        case(
            "provider the route accepts",
            "/partners/1",
            vec![bearer(&partner_token)],
        ),
        case(
            "provider the route does not accept",
            "/partners/1",
            vec![bearer(&user)],
        )
        .status(401),
        case(
            "partner token where its place is not allowed",
            "/api/orders",
            vec![("cookie", format!("session={partner_token}"))],
        )
        .status(401),
        case(
            "shadow route, claims lacking: identity kept",
            "/watched/1",
            vec![bearer(&user)],
        ),
        case(
            "shadow route, no token: let through anonymous",
            "/watched/1",
            vec![spoof],
        )
        .anonymous(),
        case(
            "claim that cannot be a header",
            "/api/orders",
            vec![bearer(&unsafe_claim)],
        )
        .status(401),
        case("expired token", "/api/orders", vec![bearer(&expired)])
            .status(401)
            .callout(),
        case("bad signature", "/api/orders", vec![bearer(&forged)])
            .status(401)
            .callout(),
    ]
}

fn status(verdict: &WireVerdict) -> u16 {
    match verdict {
        WireVerdict::Allow { .. } => 200,
        WireVerdict::Deny { status, .. } => *status,
    }
}

fn now_ms() -> u64 {
    crate::support::now() * 1000
}

#[tokio::test]
async fn the_sidecar_the_filter_and_explain_decide_every_request_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (corp, partner) = (TestKey::rsa("corp-1"), TestKey::rsa("partner-1"));
    let yaml = config(
        &write_jwks(dir.path(), "corp.json", &corp),
        &write_jwks(dir.path(), "partner.json", &partner),
        "[bearer, {cookie: session}]",
        "",
    );
    let local = decide_alike(&yaml, table(&corp, &partner)).await;
    assert!(
        local >= 20,
        "the filter decided only {local} requests itself"
    );
}

/// Optional routes (`access: optional`), with and without `on_invalid: anonymous`: corp's
/// tokens in the `Authorization` header or `x-token` (a cookie could not be taken off).
#[tokio::test]
async fn optional_routes_are_decided_alike_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (corp, partner) = (TestKey::rsa("corp-1"), TestKey::rsa("partner-1"));
    let rules = "  - name: catalogue\n    match: {path: {prefix: /catalogue/}}\n    access: optional\n  - name: shop\n    match: {path: {prefix: /shop/}}\n    access:\n      optional: [{claim: role, any_of: [admin]}]\n    on_invalid: anonymous\n";
    let yaml = config(
        &write_jwks(dir.path(), "corp.json", &corp),
        &write_jwks(dir.path(), "partner.json", &partner),
        "[bearer, {header: {name: x-token}}]",
        rules,
    );
    let user = corp.token(&claims("u-1"));
    let admin = corp.token(&with("u-2", json!({"role": "admin"})));
    let expired = corp.token(&with("u-3", json!({"exp": crate::support::now() - 3600})));
    let other_audience = corp.token(&with("u-5", json!({"aud": "elsewhere"})));
    let partner_token = partner.token(&with("p-1", json!({"iss": PARTNER})));
    let spoof = ("x-user-id", "spoofed".to_owned());
    let marker = ("x-user-anonymous", "false".to_owned());
    let cases = vec![
        case(
            "optional, no token",
            "/catalogue/1",
            vec![spoof.clone(), marker.clone()],
        )
        .anonymous(),
        case(
            "optional, valid token",
            "/catalogue/1",
            vec![bearer(&user), spoof.clone(), marker.clone()],
        ),
        case(
            "optional, expired token: denied",
            "/catalogue/1",
            vec![bearer(&expired)],
        )
        .status(401)
        .callout(),
        case(
            "optional, other audience: denied",
            "/catalogue/1",
            vec![bearer(&other_audience)],
        )
        .status(401),
        case(
            "optional, two tokens: refused",
            "/catalogue/1",
            vec![bearer(&user), ("x-token", user.clone())],
        )
        .status(400),
        case(
            "anonymous on invalid, no token",
            "/shop/1",
            vec![spoof.clone()],
        )
        .anonymous(),
        case(
            "anonymous on invalid, claims met",
            "/shop/1",
            vec![bearer(&admin), marker.clone()],
        ),
        case(
            "anonymous on invalid, claims lacking",
            "/shop/1",
            vec![bearer(&user), spoof.clone()],
        )
        .anonymous()
        .removes("authorization"),
        case(
            "anonymous on invalid, expired",
            "/shop/1",
            vec![("x-token", expired.clone()), spoof.clone()],
        )
        .anonymous()
        .removes("x-token")
        .callout(),
        case(
            "anonymous on invalid, other audience",
            "/shop/1",
            vec![bearer(&other_audience)],
        )
        .anonymous()
        .removes("authorization"),
        case(
            "anonymous on invalid, garbage",
            "/shop/1",
            vec![bearer("not.a.jwt")],
        )
        .anonymous()
        .removes("authorization")
        .callout(),
        case(
            "anonymous on invalid, two tokens",
            "/shop/1",
            vec![bearer(&user), ("x-token", admin.clone()), spoof.clone()],
        )
        .anonymous()
        .removes("x-token")
        .removes("authorization"),
        case(
            "anonymous on invalid, provider in a place it does not read",
            "/shop/1",
            vec![("x-token", partner_token)],
        )
        .anonymous()
        .removes("x-token"),
        case(
            "anonymous marker in another spelling",
            "/catalogue/1",
            vec![("x_user_anonymous", "false".to_owned())],
        )
        .status(400),
    ];
    let local = decide_alike(&yaml, cases).await;
    assert!(
        local >= 9,
        "the filter decided only {local} requests itself"
    );
}

fn write_jwks(dir: &std::path::Path, name: &str, key: &TestKey) -> String {
    let path = dir.join(name);
    std::fs::write(&path, json!({"keys": [key.jwk()]}).to_string()).expect("jwks");
    path.display().to_string()
}

/// Decides every case by the sidecar, the filter and `explain`, and fails with every
/// disagreement; returns how many cases the filter decided itself.
async fn decide_alike(yaml: &str, cases: Vec<Case>) -> usize {
    let runtime = Runtime::start(
        Config::from_yaml(yaml).expect("config"),
        None,
        reqwest::Client::new(),
        Arc::new(Metrics::new()),
        Telemetry::off(),
    )
    .expect("runtime");
    for _ in 0..100 {
        if runtime.ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(runtime.ready(), "keys read from the files");

    let mut failures = Vec::new();
    let mut local = 0;
    for case in cases {
        // Each case with a filter of its own: what one case's callout hands over must not
        // decide another.
        let mut engine = Engine::from_config(yaml).expect("the same file is a plugin config");
        engine.polled(
            GenerationAnswer {
                generation: runtime.generation(),
                config: Some(runtime.decision_digest().to_owned()),
                dpop_algs: runtime.dpop_algs().map(str::to_owned),
            },
            now_ms(),
        );
        let headers: HashMap<String, String> = case
            .headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let ext = HashMap::new();
        let http = Incoming {
            method: "GET",
            target: case.path,
            host: case.host,
            headers: (&headers).into(),
            context_extensions: &ext,
            scheme: None,
            certificate: None,
        };
        let sidecar = runtime.in_proxy_answer(runtime.check(&http).await);
        let wanted = sidecar.verdict.clone();

        // The filter: decided at once, or after one callout whose answer it applies.
        let mut filter = engine.decide(&http, now_ms()).0;
        if filter == Step::Callout {
            let token = engine.token_of(&http);
            let applied = engine.answered(token.as_deref(), sidecar.clone(), now_ms());
            assert_eq!(
                applied, wanted,
                "{}: the callout's answer is applied",
                case.name
            );
            filter = engine.decide(&http, now_ms()).0;
        }
        match (&filter, case.local) {
            (Step::Decided(verdict), true) => {
                local += 1;
                if verdict != &wanted {
                    failures.push(format!(
                        "{}: filter {verdict:?}\n   sidecar {wanted:?}",
                        case.name
                    ));
                }
            }
            (Step::Callout, false) => {}
            (step, _) => failures.push(format!(
                "{}: the filter {} (expected {})",
                case.name,
                if *step == Step::Callout {
                    "asked the sidecar"
                } else {
                    "decided itself"
                },
                if case.local {
                    "a local decision"
                } else {
                    "a callout"
                },
            )),
        }
        if let WireVerdict::Allow { set, remove, .. } = &wanted {
            let marked = set
                .iter()
                .any(|(k, v)| k == "x-user-anonymous" && v == "true");
            let identity = set
                .iter()
                .any(|(k, _)| k.starts_with("x-user-") && k != "x-user-anonymous");
            let unmarked = remove.iter().any(|k| k == "x-user-anonymous");
            if marked != case.anonymous || identity == case.anonymous || marked == unmarked {
                failures.push(format!(
                    "{}: expected {} but the sidecar sets {set:?} and removes {remove:?}",
                    case.name,
                    if case.anonymous {
                        "anonymous"
                    } else {
                        "an identity"
                    },
                ));
            }
            for header in &case.removes {
                if !remove.iter().any(|k| k == header) {
                    failures.push(format!("{}: {header} not removed: {remove:?}", case.name));
                }
            }
        }
        if status(&wanted) != case.status {
            failures.push(format!(
                "{}: sidecar answered {} (expected {}): {wanted:?}",
                case.name,
                status(&wanted),
                case.status
            ));
        }

        // explain: the same decision, reported.
        let report = explain::explain(
            &runtime,
            &Request {
                method: "GET".to_owned(),
                path: case.path.to_owned(),
                host: case.host.to_owned(),
                headers: headers.clone(),
            },
        )
        .await;
        let d = &report.decision;
        let (set, removed) = match &wanted {
            WireVerdict::Allow { set, remove, .. } => (set.clone(), remove.clone()),
            WireVerdict::Deny { headers, .. } => (headers.clone(), Vec::new()),
        };
        if i32::from(status(&wanted)) != d.http_status
            || d.headers_set != set
            || d.headers_removed != removed
        {
            failures.push(format!(
                "{}: explain says {} {:?} {:?}, the sidecar {wanted:?}",
                case.name, d.http_status, d.headers_set, d.headers_removed
            ));
        }
        let failed: Vec<&str> = report
            .steps
            .iter()
            .filter(|s| s.result == "failed")
            .map(|s| s.step)
            .collect();
        let denied = d.result == "deny" || d.result == "shadow_allow" || d.waived.is_some();
        if denied != (failed.len() == 1) {
            failures.push(format!(
                "{}: explain's steps {:?} for a {} request",
                case.name, report.steps, d.result
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    local
}
