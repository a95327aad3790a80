use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use serde_json::{Value, json};

use super::*;
use crate::response::Verdict;

const CONFIG: &str = r#"
mode: enforce
identity:
  headers:
    - {claim: sub, header: x-user-id}
rules:
  - name: health
    match: {path: {exact: /healthz}}
    access: public
  - name: blocked
    match: {path: {prefix: /internal/}}
    access: deny
  - name: admin
    match: {path: {prefix: /admin/}}
    access:
      claims: [{claim: role, any_of: [admin]}]
  - name: watched
    match: {path: {prefix: /watched/}}
    mode: shadow
    access: authenticated
  - name: default
    access: authenticated
providers:
  - name: corp
    issuer: https://corp.example
    audiences: [api]
"#;

fn decider(config: &str) -> Decider {
    Decider::new(DecisionConfig::from_yaml(config).expect("config")).expect("rules")
}

/// A caller whose verification hands back fixed claims (or a fixed refusal), counting how
/// often each of its steps ran.
struct Fake {
    verify: Result<Value, Stop>,
    bind: Result<(), Stop>,
    verified: Cell<usize>,
    bound: Cell<usize>,
    tokens: RefCell<Vec<String>>,
}

impl Fake {
    fn claims(claims: Value) -> Self {
        Fake {
            verify: Ok(claims),
            bind: Ok(()),
            verified: Cell::new(0),
            bound: Cell::new(0),
            tokens: RefCell::new(Vec::new()),
        }
    }

    fn refusing(stop: Stop) -> Self {
        Fake {
            verify: Err(stop),
            ..Fake::claims(json!({}))
        }
    }
}

impl Checks for Fake {
    type Note = &'static str;

    async fn verify(&mut self, found: &Found<'_>) -> Result<Verified<Self::Note>, Stop> {
        self.verified.set(self.verified.get() + 1);
        self.tokens.borrow_mut().push(found.token.to_owned());
        let claims = self.verify.clone()?;
        Ok(Verified {
            token: Arc::new(VerifiedToken {
                provider: 0,
                thumbprint: "k".into(),
                claims: claims.as_object().cloned().unwrap_or_default(),
                exp: None,
            }),
            note: "fake",
        })
    }

    async fn bind(&mut self, _: &Found<'_>, _: &Arc<VerifiedToken>) -> Result<(), Stop> {
        self.bound.set(self.bound.get() + 1);
        self.bind.clone()
    }
}

struct Req {
    target: &'static str,
    host: &'static str,
    headers: HashMap<String, String>,
    ext: HashMap<String, String>,
}

fn req(target: &'static str, headers: &[(&str, &str)]) -> Req {
    Req {
        target,
        host: "api.example",
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ext: HashMap::new(),
    }
}

impl Req {
    fn incoming(&self) -> Incoming<'_> {
        Incoming {
            method: "GET",
            target: self.target,
            host: self.host,
            headers: (&self.headers).into(),
            context_extensions: &self.ext,
            scheme: None,
            certificate: None,
        }
    }
}

fn run<'a>(
    d: &'a Decider,
    r: &'a Req,
    checks: &mut Fake,
) -> Option<Decision<'a, 'a, &'static str>> {
    now(d.decide(&r.incoming(), checks, None)).expect("the fake never waits")
}

fn removed(verdict: &Verdict) -> Vec<String> {
    match verdict {
        Verdict::Allow { mutation, .. } => mutation.remove.clone(),
        Verdict::Deny(_) => panic!("denied: {verdict:?}"),
    }
}

fn status(verdict: &Verdict) -> u16 {
    match verdict {
        Verdict::Allow { .. } => 200,
        Verdict::Deny(denial) => denial.status(),
    }
}

const BEARER: (&str, &str) = ("authorization", "Bearer tok");

#[test]
fn a_valid_token_passes_every_step_with_its_identity() {
    let d = decider(CONFIG);
    let r = req("/orders", &[BEARER]);
    let mut fake = Fake::claims(json!({"sub": "u-1", "aud": "api"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert!(out.allowed && out.deny.is_none(), "{out:?}");
    assert_eq!(out.reached, Step::Identity);
    assert_eq!(out.reason(), "verified");
    assert_eq!(out.route.map(|r| r.name), Some("default"));
    assert_eq!(out.verified.as_ref().map(|v| v.note), Some("fake"));
    assert_eq!(*fake.tokens.borrow(), ["tok"]);
    assert_eq!((fake.verified.get(), fake.bound.get()), (1, 1));
    match &out.verdict {
        Verdict::Allow { mutation, .. } => {
            assert_eq!(mutation.set, [("x-user-id".to_owned(), "u-1".to_owned())]);
            assert!(mutation.remove.contains(&"authorization".to_owned()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unreadable_request_is_refused_in_every_mode_before_any_rule() {
    let d = decider(&CONFIG.replace("mode: enforce", "mode: shadow"));
    let r = req("/orders/..%2finternal/x", &[BEARER]);
    let mut fake = Fake::claims(json!({"sub": "u-1", "aud": "api"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert!(!out.allowed);
    assert_eq!(out.reached, Step::Read);
    assert_eq!(out.mode, Mode::Enforce);
    assert_eq!(out.route.map(|r| r.name), None);
    assert_eq!(status(&out.verdict), 400);
    assert_eq!(fake.verified.get(), 0);
}

#[test]
fn a_deny_rule_denies_before_the_token_is_looked_at() {
    let d = decider(CONFIG);
    let r = req("/internal/x", &[BEARER]);
    let mut fake = Fake::claims(json!({"sub": "u-1", "aud": "api"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert_eq!(
        (out.reached, out.deny.clone()),
        (Step::Rule, Some(Deny::DeniedByRule))
    );
    assert_eq!(status(&out.verdict), 403);
    assert_eq!(fake.verified.get(), 0);
    // In shadow mode it is let through, and the token (never looked for before) is still
    // found and stripped.
    let shadow = decider(&CONFIG.replace("mode: enforce", "mode: shadow"));
    let out = run(&shadow, &r, &mut fake).expect("decided");
    assert!(out.shadowed(), "{out:?}");
    assert_eq!(removed(&out.verdict), ["x-user-id", "authorization"]);
}

#[test]
fn no_token_is_public_or_missing_and_nothing_is_verified() {
    let d = decider(CONFIG);
    let mut fake = Fake::claims(json!({}));
    let health = req("/healthz", &[]);
    let out = run(&d, &health, &mut fake).expect("decided");
    assert!(out.allowed);
    assert_eq!((out.reached, out.reason()), (Step::Token, "public"));
    // A forged identity header is removed on a public route too.
    assert_eq!(removed(&out.verdict), ["x-user-id"]);
    let orders = req("/orders", &[]);
    let out = run(&d, &orders, &mut fake).expect("decided");
    assert_eq!(
        (out.reached, out.deny.clone()),
        (Step::Token, Some(Deny::MissingToken))
    );
    assert_eq!(status(&out.verdict), 401);
    assert_eq!(fake.verified.get(), 0);
}

#[test]
fn a_token_for_another_audience_stops_before_the_callers_bind_step() {
    let d = decider(CONFIG);
    let r = req("/orders", &[BEARER]);
    let mut fake = Fake::claims(json!({"sub": "u-1", "aud": "other"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert_eq!(out.reached, Step::Accept);
    assert_eq!(out.deny, Some(Deny::Invalid(VerifyError::WrongAudience)));
    assert_eq!(fake.bound.get(), 0);
}

#[test]
fn a_bind_refusal_comes_before_the_claims_so_shadow_mode_passes_no_identity() {
    let d = decider(CONFIG);
    let r = req("/watched/x", &[BEARER]);
    let mut fake = Fake::claims(json!({"sub": "u-1", "aud": "api"}));
    fake.bind = Err(Stop::Deny(Deny::TokenRevoked));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert_eq!((out.reached, out.mode), (Step::Bind, Mode::Shadow));
    assert!(out.shadowed());
    // Not `insufficient_claims`: no identity header from this token.
    assert_eq!(removed(&out.verdict), ["x-user-id", "authorization"]);
}

#[test]
fn shadow_mode_keeps_the_identity_of_a_token_that_only_lacks_claims() {
    let d = decider(&CONFIG.replace("mode: enforce", "mode: shadow"));
    let r = req("/admin/x", &[BEARER]);
    let mut fake = Fake::claims(json!({"sub": "u-1", "aud": "api", "role": "user"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert_eq!(out.reached, Step::Claims);
    assert_eq!(out.deny, Some(Deny::InsufficientClaims));
    match &out.verdict {
        Verdict::Allow { mutation, .. } => {
            assert_eq!(mutation.set, [("x-user-id".to_owned(), "u-1".to_owned())]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_caller_that_defers_decides_nothing() {
    let d = decider(CONFIG);
    let r = req("/orders", &[BEARER]);
    assert!(run(&d, &r, &mut Fake::refusing(Stop::Defer)).is_none());
    // A refusal from verification is a denial like any other.
    let out = run(
        &d,
        &r,
        &mut Fake::refusing(Stop::Deny(Deny::Invalid(VerifyError::Expired))),
    )
    .expect("decided");
    assert_eq!(out.reached, Step::Verify);
    assert_eq!(status(&out.verdict), 401);
}

#[test]
fn a_dpop_token_takes_its_proof_along_when_stripped() {
    let config = CONFIG.replace(
        "audiences: [api]",
        "audiences: [api]\n    token_sources: [bearer]",
    );
    let d = decider(&config);
    let r = req(
        "/orders",
        &[("authorization", "DPoP tok"), ("dpop", "proof")],
    );
    let mut fake = Fake::claims(json!({"sub": "u-1", "aud": "api"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert_eq!(
        removed(&out.verdict),
        ["x-user-anonymous", "authorization", "dpop"]
    );
}

#[test]
fn shedding_load_keeps_a_routes_enforce_mode() {
    let d = decider(&CONFIG.replace("mode: enforce", "mode: shadow"));
    let r = req("/orders", &[BEARER]);
    let out: Decision<'_, '_, ()> = d.shed(&r.incoming(), Deny::Overloaded, None);
    assert!(out.shadowed());
    let enforced = decider(&CONFIG.replace("mode: shadow", "mode: enforce"));
    let out: Decision<'_, '_, ()> = enforced.shed(&r.incoming(), Deny::Overloaded, None);
    assert!(!out.allowed);
    assert_eq!(status(&out.verdict), 503);
    // Unreadable: refused whatever the mode.
    let garbled = req("/a/..%2fb", &[]);
    let out: Decision<'_, '_, ()> = d.shed(&garbled.incoming(), Deny::Overloaded, None);
    assert!(!out.allowed);
}

#[test]
fn a_future_that_waits_is_not_run_to_an_answer() {
    assert_eq!(now(async { 7 }), Some(7));
    assert_eq!(now(std::future::pending::<()>()), None);
}

/// Shadow mode lets a request through whose token could not be found (two tokens, one too
/// large): every header a token may come in goes, as enforce mode would pass none of them;
/// so does a DPoP token's proof when shadow mode lets a refused one through.
#[test]
fn shadow_mode_strips_the_token_headers_when_no_single_token_is_found() {
    let config = CONFIG.replace("mode: enforce", "mode: shadow").replace(
        "audiences: [api]",
        "audiences: [api]\n    token_sources: [bearer, {header: {name: x-api-token}}]",
    );
    let d = decider(&config);
    let two = req(
        "/orders",
        &[
            ("authorization", "Bearer one"),
            ("x-api-token", "two"),
            ("dpop", "proof"),
        ],
    );
    let mut fake = Fake::claims(json!({"sub": "u-1", "aud": "api"}));
    let out = run(&d, &two, &mut fake).expect("decided");
    assert!(out.shadowed(), "{out:?}");
    let gone = removed(&out.verdict);
    for header in ["authorization", "x-api-token", "dpop", "x-user-id"] {
        assert!(gone.iter().any(|r| r == header), "{header}: {gone:?}");
    }
    assert_eq!(fake.verified.get(), 0, "nothing verified");

    let large = "Bearer ".to_owned() + &"a".repeat(20_000);
    let too_large = req("/orders", &[("authorization", large.as_str())]);
    let out = run(&d, &too_large, &mut fake).expect("decided");
    assert!(out.shadowed());
    assert!(removed(&out.verdict).contains(&"authorization".to_owned()));

    // A DPoP-bound token refused by the bind step: shadow passes it without its proof.
    let mut refused = Fake::claims(json!({"sub": "u-1", "aud": "api"}));
    refused.bind = Err(Stop::Deny(Deny::DpopReplayed));
    let dpop = req(
        "/orders",
        &[("authorization", "DPoP tok"), ("dpop", "proof")],
    );
    let out = run(&d, &dpop, &mut refused).expect("decided");
    assert!(out.shadowed());
    let gone = removed(&out.verdict);
    assert!(gone.contains(&"authorization".to_owned()), "{gone:?}");
    assert!(gone.contains(&"dpop".to_owned()), "{gone:?}");
}

const OPTIONAL: &str = r#"
identity:
  headers:
    - {claim: sub, header: x-user-id}
  strip_authorization: false
rules:
  - name: catalogue
    match: {path: {prefix: /catalogue/}}
    access: optional
  - name: pro
    match: {path: {prefix: /pro/}}
    access:
      optional: [{claim: plan, any_of: [pro]}]
    on_invalid: anonymous
  - name: lenient
    match: {path: {prefix: /lenient/}}
    access: optional
    on_invalid: anonymous
providers:
  - name: corp
    issuer: https://corp.example
    audiences: [api]
    token_sources: [bearer, {header: {name: x-token}}]
"#;

fn set(verdict: &Verdict) -> Vec<(String, String)> {
    match verdict {
        Verdict::Allow { mutation, .. } => mutation.set.clone(),
        Verdict::Deny(_) => panic!("denied: {verdict:?}"),
    }
}

fn anonymous() -> (String, String) {
    ("x-user-anonymous".to_owned(), "true".to_owned())
}

#[test]
fn an_optional_route_without_a_token_goes_on_anonymously() {
    let d = decider(OPTIONAL);
    for path in ["/catalogue/1", "/pro/1", "/lenient/1"] {
        let r = req(path, &[("x-user-id", "forged")]);
        let mut fake = Fake::claims(json!({"sub": "u-1", "aud": "api"}));
        let out = run(&d, &r, &mut fake).expect("decided");
        assert!(
            out.allowed && out.deny.is_none() && out.waived.is_none(),
            "{out:?}"
        );
        assert_eq!((out.reached, out.reason()), (Step::Token, "anonymous"));
        assert_eq!(set(&out.verdict), vec![anonymous()], "{path}");
        assert_eq!(removed(&out.verdict), vec!["x-user-id"], "{path}");
        assert_eq!(fake.verified.get(), 0, "nothing to verify");
    }
}

#[test]
fn an_optional_route_with_a_valid_token_passes_its_identity_and_no_marker() {
    let d = decider(OPTIONAL);
    let r = req("/catalogue/1", &[BEARER, ("x-user-anonymous", "true")]);
    let mut fake = Fake::claims(json!({"sub": "u-1", "aud": "api"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert_eq!(out.reason(), "verified");
    assert_eq!(
        set(&out.verdict),
        vec![("x-user-id".to_owned(), "u-1".to_owned())]
    );
    assert_eq!(removed(&out.verdict), vec!["x-user-anonymous"]);
}

#[test]
fn an_optional_route_denies_an_invalid_token_by_default() {
    let d = decider(OPTIONAL);
    let r = req("/catalogue/1", &[BEARER]);
    let mut fake = Fake::refusing(Deny::Invalid(VerifyError::Expired).into());
    let out = run(&d, &r, &mut fake).expect("decided");
    assert!(!out.allowed && out.waived.is_none());
    assert_eq!((status(&out.verdict), out.reason()), (401, "expired"));
    // Another audience: also the ordinary denial.
    let mut fake = Fake::claims(json!({"sub": "u-1", "aud": "other"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert_eq!(status(&out.verdict), 401);
}

#[test]
fn on_invalid_anonymous_removes_the_refused_token_and_passes_no_identity() {
    let d = decider(OPTIONAL);
    // `strip_authorization: false` above: a valid token would stay, a refused one never.
    for (headers, refusal, header) in [
        (
            vec![BEARER],
            Fake::refusing(Deny::Invalid(VerifyError::BadSignature).into()),
            "authorization",
        ),
        (
            vec![("x-token", "tok")],
            Fake::claims(json!({"sub": "u-1", "aud": "other"})),
            "x-token",
        ),
    ] {
        let mut headers = headers;
        headers.push(("x-user-id", "forged"));
        let r = req("/lenient/1", &headers);
        let mut fake = refusal;
        let out = run(&d, &r, &mut fake).expect("decided");
        assert!(out.allowed && out.deny.is_none(), "{out:?}");
        assert!(out.waived.is_some());
        assert_eq!(out.reason(), "anonymous_invalid");
        assert_eq!(set(&out.verdict), vec![anonymous()]);
        let gone = removed(&out.verdict);
        assert!(
            gone.contains(&header.to_owned()) && gone.contains(&"x-user-id".to_owned()),
            "{gone:?}"
        );
    }
}

#[test]
fn on_invalid_anonymous_takes_off_both_tokens_of_an_ambiguous_request_and_the_proof() {
    let d = decider(OPTIONAL);
    let r = req(
        "/lenient/1",
        &[BEARER, ("x-token", "other"), ("dpop", "proof")],
    );
    let mut fake = Fake::claims(json!({"sub": "u-1", "aud": "api"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert_eq!(out.waived, Some(Deny::MultipleTokens));
    let gone = removed(&out.verdict);
    for header in ["authorization", "x-token", "dpop"] {
        assert!(gone.contains(&header.to_owned()), "{header}: {gone:?}");
    }
    assert_eq!(fake.verified.get(), 0);
}

#[test]
fn optional_claims_apply_only_with_a_token() {
    let d = decider(OPTIONAL);
    // Without a token: anonymous, whatever the requirement.
    let r = req("/pro/1", &[]);
    let out = run(&d, &r, &mut Fake::claims(json!({}))).expect("decided");
    assert_eq!(out.reason(), "anonymous");
    // With one that meets it: identity.
    let r = req("/pro/1", &[BEARER]);
    let mut fake = Fake::claims(json!({"sub": "u-1", "aud": "api", "plan": "pro"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert_eq!(out.reason(), "verified");
    // With one that does not: this rule says anonymous (the token removed)...
    let mut fake = Fake::claims(json!({"sub": "u-2", "aud": "api", "plan": "free"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert_eq!(out.waived, Some(Deny::InsufficientClaims));
    assert_eq!(set(&out.verdict), vec![anonymous()]);
    // ...and a rule without on_invalid answers 403.
    let strict = decider(&OPTIONAL.replace(
        "    on_invalid: anonymous\n  - name: lenient",
        "  - name: lenient",
    ));
    let out = run(&strict, &r, &mut fake).expect("decided");
    assert_eq!(
        (status(&out.verdict), out.reason()),
        (403, "insufficient_claims")
    );
}

#[test]
fn on_invalid_anonymous_never_hides_an_outage_or_a_nonce_challenge() {
    let d = decider(OPTIONAL);
    let r = req("/lenient/1", &[BEARER]);
    for stop in [
        Deny::Invalid(VerifyError::KeysUnavailable),
        Deny::StatusListUnavailable,
        Deny::ReplayStoreUnavailable,
        Deny::SidecarUnavailable,
        Deny::Invalid(VerifyError::IntrospectionUnavailable),
        Deny::Invalid(VerifyError::IntrospectionBusy),
        Deny::Invalid(VerifyError::BadIntrospection),
        Deny::DpopUseNonce("n".into()),
    ] {
        let mut fake = Fake::refusing(stop.clone().into());
        let out = run(&d, &r, &mut fake).expect("decided");
        assert!(!out.allowed && out.waived.is_none(), "{stop:?}: {out:?}");
        assert_eq!(out.deny, Some(stop));
    }
    // A check the caller cannot make here stays undecided (the filter asks the sidecar).
    let mut fake = Fake::refusing(Stop::Defer);
    assert!(run(&d, &r, &mut fake).is_none());
}

#[test]
fn the_anonymous_marker_is_set_on_public_routes_and_refused_in_another_spelling() {
    let d = decider(CONFIG);
    let r = req("/healthz", &[("x-user-anonymous", "false")]);
    let out = run(&d, &r, &mut Fake::claims(json!({}))).expect("decided");
    assert_eq!(out.reason(), "public");
    assert_eq!(set(&out.verdict), vec![anonymous()]);
    let r = req("/healthz", &[("x_user_anonymous", "false")]);
    let out = run(&d, &r, &mut Fake::claims(json!({}))).expect("decided");
    assert_eq!(
        out.deny,
        Some(Deny::LookalikeHeader("x_user_anonymous".into()))
    );
    // Turned off: neither set nor removed.
    let off = decider(&CONFIG.replace("identity:\n", "identity:\n  anonymous_header: null\n"));
    let r = req("/healthz", &[]);
    let out = run(&off, &r, &mut Fake::claims(json!({}))).expect("decided");
    assert_eq!(set(&out.verdict), vec![]);
}

// ---- Protected resources (RFC 9728) ----

const MCP: &str = r#"
resources:
  - name: mcp
    resource: https://mcp.example.com/mcp
    scopes_supported: [mcp:tools, mcp:admin]
  - name: files
    resource: https://files.example.com
    default: true
rules:
  - name: mcp-admin
    resource: mcp
    match: {path: {prefix: /mcp/admin}}
    access:
      claims: [{claim: scope, all_of: [mcp:admin]}]
  - name: mcp
    resource: mcp
    match: {path: {prefix: /mcp}}
    access:
      claims: [{claim: scope, any_of: [mcp:read, mcp:tools]}]
  - name: legacy
    resource: mcp
    match: {path: {prefix: /legacy}}
    audiences: [api, "https://mcp.example.com/mcp"]
    access: authenticated
  - name: mcp-role
    resource: mcp
    match: {path: {prefix: /ops}}
    access:
      claims: [{claim: scope, any_of: [mcp:tools]}, {claim: role, any_of: [ops]}]
providers:
  - name: corp
    issuer: https://corp.example
    audiences: [api]
"#;

fn challenge(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Deny(denial) => denial
            .headers
            .iter()
            .find(|(name, _)| *name == "www-authenticate")
            .map(|(_, value)| value.clone())
            .unwrap_or_default(),
        Verdict::Allow { .. } => panic!("allowed"),
    }
}

#[test]
fn a_401_names_the_resources_metadata_rfc_9728_section_5_1() {
    let d = decider(MCP);
    let r = req("/mcp", &[]);
    let out = run(&d, &r, &mut Fake::claims(json!({}))).expect("decided");
    assert_eq!(status(&out.verdict), 401);
    assert_eq!(
        challenge(&out.verdict),
        r#"Bearer realm="jwt-authz", scope="mcp:read", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#
    );
    // A request no rule matches belongs to the default resource, at the root (§3.1: no
    // path, no suffix).
    let r = req("/elsewhere", &[BEARER]);
    let mut fake = Fake::claims(json!({"sub": "u", "aud": "api"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert_eq!(
        challenge(&out.verdict),
        r#"Bearer realm="jwt-authz", error="invalid_token", error_description="invalid audience", resource_metadata="https://files.example.com/.well-known/oauth-protected-resource""#
    );
}

#[test]
fn a_resources_rules_take_only_tokens_for_it() {
    let d = decider(MCP);
    let r = req("/mcp/tools", &[BEARER]);
    // Issued for this resource (RFC 8707): passes.
    let mut fake = Fake::claims(
        json!({"sub": "u", "aud": "https://mcp.example.com/mcp", "scope": "mcp:tools"}),
    );
    let out = run(&d, &r, &mut fake).expect("decided");
    assert!(out.allowed, "{out:?}");
    // The provider's own audience, another resource, a lookalike, none: refused before the
    // bind step.
    for aud in [
        json!("api"),
        json!("https://files.example.com"),
        json!("https://mcp.example.com/mcp/"),
        json!("https://MCP.example.com/mcp"),
        json!(["https://files.example.com", "api"]),
        Value::Null,
    ] {
        let mut fake = Fake::claims(json!({"sub": "u", "aud": aud, "scope": "mcp:tools"}));
        let out = run(&d, &r, &mut fake).expect("decided");
        assert_eq!(
            out.deny,
            Some(Deny::Invalid(VerifyError::WrongAudience)),
            "aud {aud}"
        );
        assert_eq!(fake.bound.get(), 0);
        assert!(challenge(&out.verdict).contains("resource_metadata="));
    }
    // A rule's own audiences replace the binding, as they replace a provider's (they must
    // name the resource: configuration refuses them otherwise).
    let r = req("/legacy", &[BEARER]);
    let mut fake = Fake::claims(json!({"sub": "u", "aud": "api"}));
    assert!(run(&d, &r, &mut fake).expect("decided").allowed);
    // A resource without a path also takes its identifier with a '/' (WHATWG URL
    // serialisers write it so); nothing else.
    for (aud, allowed) in [
        ("https://files.example.com", true),
        ("https://files.example.com/", true),
        ("https://files.example.com//", false),
        ("https://files.example.com/x", false),
    ] {
        let r = req("/anything", &[BEARER]);
        let mut fake = Fake::claims(json!({"sub": "u", "aud": aud}));
        assert_eq!(
            run(&d, &r, &mut fake).expect("decided").allowed,
            allowed,
            "{aud}"
        );
    }
}

#[test]
fn a_403_names_scopes_only_when_scopes_are_what_the_token_lacks() {
    let d = decider(MCP);
    let aud = "https://mcp.example.com/mcp";
    let r = req("/ops", &[BEARER]);
    // The scope held, the role missing: stepping up scopes would not help.
    let mut fake = Fake::claims(json!({"sub": "u", "aud": aud, "scope": "mcp:tools"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert_eq!(status(&out.verdict), 403);
    assert!(
        !challenge(&out.verdict).contains("scope=\""),
        "{}",
        challenge(&out.verdict)
    );
    // The role held, the scope missing: named.
    let mut fake = Fake::claims(json!({"sub": "u", "aud": aud, "role": "ops"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert!(challenge(&out.verdict).contains(r#"scope="mcp:tools""#));
}

#[test]
fn the_metadata_route_ignores_credentials_and_takes_nothing_else() {
    let d = decider(MCP);
    let path = "/.well-known/oauth-protected-resource/mcp";
    // A token (any: this one would be refused on every route) and a DPoP proof: not
    // looked at, and taken off.
    let r = req(path, &[BEARER, ("dpop", "proof")]);
    let mut fake = Fake::refusing(Stop::Deny(Deny::Invalid(VerifyError::Expired)));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert!(out.allowed, "{out:?}");
    assert_eq!(fake.verified.get(), 0);
    let mut gone = removed(&out.verdict);
    gone.sort();
    assert!(gone.contains(&"authorization".to_owned()) && gone.contains(&"dpop".to_owned()));
    for method in ["HEAD", "GET"] {
        let r = req(path, &[]);
        let incoming = Incoming {
            method,
            ..r.incoming()
        };
        let out = now(d.decide(&incoming, &mut Fake::claims(json!({})), None))
            .expect("ready")
            .expect("decided");
        assert!(out.allowed, "{method}");
    }
    // Only the exact document path: another case, a trailing slash, other methods.
    for (method, target) in [
        ("GET", "/.well-known/oauth-protected-resource/MCP"),
        ("GET", "/.well-known/oauth-protected-resource/mcp/"),
        ("PUT", path),
        ("DELETE", path),
        ("OPTIONS", path),
    ] {
        let r = req(target, &[]);
        let incoming = Incoming {
            method,
            ..r.incoming()
        };
        let out = now(d.decide(&incoming, &mut Fake::claims(json!({})), None))
            .expect("ready")
            .expect("decided");
        assert_eq!(status(&out.verdict), 401, "{method} {target}");
    }
}

#[test]
fn metadata_routes_hold_with_the_path_index_too() {
    // From 16 rules on the policy uses its path index: the metadata rule must be found
    // there as in order.
    let mut config = String::from(
        "resources:\n  - {name: mcp, resource: 'https://mcp.example.com/mcp'}\nrules:\n",
    );
    for i in 0..20 {
        config.push_str(&format!(
            "  - {{match: {{path: {{prefix: /r{i}/}}}}, access: deny}}\n"
        ));
    }
    config.push_str("  - {match: {path: {prefix: /.well-known/}}, access: deny}\n");
    config.push_str(
        "providers:\n  - {name: corp, issuer: 'https://corp.example', audiences: [api]}\n",
    );
    let d = decider(&config);
    let r = req("/.well-known/oauth-protected-resource/mcp", &[]);
    assert!(
        run(&d, &r, &mut Fake::claims(json!({})))
            .expect("decided")
            .allowed
    );
    for other in [
        "/.well-known/oauth-protected-resource/mcp/",
        "/.well-known/oauth-protected-resource/Mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let r = req(other, &[]);
        let out = run(&d, &r, &mut Fake::claims(json!({}))).expect("decided");
        assert_eq!(out.deny, Some(Deny::DeniedByRule), "{other}");
    }
}

#[test]
fn a_403_for_missing_scopes_names_the_scopes_needed() {
    let d = decider(MCP);
    let aud = "https://mcp.example.com/mcp";
    let r = req("/mcp/tools", &[BEARER]);
    // No scope at all: the first alternative (the least privileged, listed first).
    let mut fake = Fake::claims(json!({"sub": "u", "aud": aud}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert_eq!(status(&out.verdict), 403);
    assert_eq!(
        challenge(&out.verdict),
        r#"Bearer realm="jwt-authz", error="insufficient_scope", error_description="token lacks the claims this route requires", scope="mcp:read", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#
    );
    // all_of names every value.
    let r = req("/mcp/admin", &[BEARER]);
    let mut fake = Fake::claims(json!({"sub": "u", "aud": aud, "scope": "mcp:tools"}));
    let out = run(&d, &r, &mut fake).expect("decided");
    assert!(
        challenge(&out.verdict).contains(r#"scope="mcp:admin""#),
        "{}",
        challenge(&out.verdict)
    );
}

#[test]
fn the_metadata_path_is_public_for_get_only_among_common_calls() {
    let d = decider(MCP);
    for target in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let r = req(target, &[]);
        let out = run(&d, &r, &mut Fake::claims(json!({}))).expect("decided");
        assert!(out.allowed, "{target}: {out:?}");
        assert_eq!(out.reason(), "public");
    }
    // Not a metadata path: the default rule.
    let r = req("/.well-known/oauth-protected-resource/mcp/x", &[]);
    assert_eq!(
        status(
            &run(&d, &r, &mut Fake::claims(json!({})))
                .expect("decided")
                .verdict
        ),
        401
    );
    let r = req("/.well-known/oauth-protected-resource/mcp", &[]);
    let post = Incoming {
        method: "POST",
        ..r.incoming()
    };
    let out = now(d.decide(&post, &mut Fake::claims(json!({})), None))
        .expect("ready")
        .expect("decided");
    assert_eq!(status(&out.verdict), 401);
}

#[test]
fn the_metadata_document_follows_rfc_9728_section_3_2() {
    let d = decider(MCP);
    let doc = d
        .resource_document("/.well-known/oauth-protected-resource/mcp", None)
        .expect("published");
    let value: Value = serde_json::from_str(&doc.body).expect("json");
    assert_eq!(
        value,
        json!({
            "resource": "https://mcp.example.com/mcp",
            "authorization_servers": ["https://corp.example"],
            "scopes_supported": ["mcp:tools", "mcp:admin"],
            "bearer_methods_supported": ["header"],
        })
    );
    assert_eq!(doc.max_age, 3600);
    // Without scopes_supported, the scopes its rules ask for; DPoP's algorithms when taken.
    let files = d
        .resource_document("/.well-known/oauth-protected-resource", Some("ES256 EdDSA"))
        .expect("published");
    let value: Value = serde_json::from_str(&files.body).expect("json");
    assert_eq!(
        value,
        json!({
            "resource": "https://files.example.com",
            "authorization_servers": ["https://corp.example"],
            "bearer_methods_supported": ["header"],
            "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
        })
    );
    for other in [
        "/.well-known/oauth-protected-resource/",
        "/.well-known/oauth-protected-resource/MCP",
        "/.well-known/oauth-protected-resource/mcp/",
        "/mcp/.well-known/oauth-protected-resource",
    ] {
        assert!(d.resource_document(other, None).is_none(), "{other}");
    }
}

/// What a decision made elsewhere (the in-proxy filter and module) is told of: the headers
/// the configuration names, in any spelling that could pass for them, whatever their name;
/// never a pseudo-header, the proxy's own `x-envoy-*`, or an ordinary header.
#[test]
fn the_headers_a_decision_reads_include_configured_ones_named_like_the_proxys() {
    let config = CONFIG
        .replace(
            "{claim: sub, header: x-user-id}",
            "{claim: sub, header: x-user-id}\n    - {claim: org, header: x-envoy-org}",
        )
        .replace(
            "audiences: [api]",
            "audiences: [api]\n    token_sources: [bearer, {header: {name: x-envoy-token}}]",
        );
    let d = decider(&config);
    for read in [
        "authorization",
        "dpop",
        "x-user-id",
        "x_user_id",
        "x-user-anonymous",
        "x-envoy-org",
        "x_envoy-org",
        "x_envoy_org",
        "x-envoy-token",
        "traceparent",
    ] {
        assert!(d.reads_header(read), "{read}");
    }
    for unread in [
        ":path",
        ":authority",
        "x-envoy-internal",
        "x-envoy-original-path",
        "accept",
        "user-agent",
    ] {
        assert!(!d.reads_header(unread), "{unread}");
    }
    // The plain configuration reads none of the proxy's own.
    assert!(!decider(CONFIG).reads_header("x-envoy-org"));
}

/// `reads_header` answers names of plain spelling from a list worked out once: the same
/// answers as its rules give, for every configuration's names and their spellings.
#[test]
fn the_headers_read_are_the_same_from_the_list_as_by_the_rules() {
    let odd = CONFIG
        .replace(
            "{claim: sub, header: x-user-id}",
            "{claim: sub, header: x-user-id}\n    - {claim: org, header: x_envoy.org}",
        )
        .replace(
            "audiences: [api]",
            "audiences: [api]\n    token_sources: [bearer, {header: {name: X-Envoy-Token}}, {cookie: session}, {query: access_token}]",
        );
    let mut checked = 0;
    for config in [CONFIG.to_owned(), odd] {
        let d = decider(&config);
        let mut names: Vec<String> = [
            "authorization",
            "dpop",
            "traceparent",
            "tracestate",
            "cookie",
            "x-user-id",
            "x-user-anonymous",
            "x-envoy-org",
            "x-envoy-token",
            "x-envoy-internal",
            "accept",
            "user-agent",
            "x-request-id",
            "access-token",
            "session",
            "",
            "-",
            "x",
            "org",
        ]
        .map(str::to_owned)
        .to_vec();
        names.extend(d.plain_reads.iter().cloned());
        names.extend(d.config.identity.upstream_headers().map(str::to_owned));
        // Each name's other spellings: case, `_` and `.` for `-`, a byte added or removed.
        for name in names.clone() {
            names.push(name.to_ascii_uppercase());
            names.push(name.replace('-', "_"));
            names.push(name.replace('-', "."));
            names.push(format!("{name}1"));
            names.push(format!(":{name}"));
            if let Some(shorter) = name.get(..name.len().saturating_sub(1)) {
                names.push(shorter.to_owned());
            }
        }
        for name in &names {
            let lower = name.to_ascii_lowercase();
            for name in [name, &lower] {
                assert_eq!(
                    d.reads_header(name),
                    d.reads_header_by_rules(name),
                    "{name}"
                );
                checked += 1;
            }
        }
        // Reading anything at all: the list is not empty, nor everything.
        assert!(d.reads_header("authorization"));
        assert!(!d.reads_header("accept"));
    }
    assert!(checked > 300, "{checked}");
}
