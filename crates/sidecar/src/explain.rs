//! `jwt-authz explain`: one request decided by the same runtime the server builds, with the
//! steps that led there (canonical path, rule, provider, verification, claims, headers, the
//! HTTP answer) for people (`render`) or scripts (`--json`). The token is never printed,
//! only its fingerprint; request header values are never echoed.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use std::cmp::Ordering;
use std::sync::Mutex;

use crate::config::ClaimRequirement;
use crate::runtime::Runtime;
use crate::verify::token_cache;
use jwt_authz_core::claims;
use jwt_authz_core::decision::{Decision, Step};
use jwt_authz_core::request::Incoming;
use jwt_authz_core::response::{Deny, Verdict};
use jwt_authz_jose::jws::Check;

/// The request to explain, as a proxy would describe it to jwt-authz.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The `:path`, query included.
    pub path: String,
    pub host: String,
    /// Lowercase names.
    pub headers: HashMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub method: String,
    pub path: String,
    pub host: String,
    /// Names of the request headers given (values are never repeated).
    pub header_names: Vec<String>,
    pub canonical_path: Option<String>,
    pub path_error: Option<String>,
    pub rule: Option<RuleReport>,
    pub token: Option<TokenReport>,
    /// The decision's steps, in order ([`Step`]).
    pub steps: Vec<StepReport>,
    pub decision: DecisionReport,
}

#[derive(Debug, Serialize)]
pub struct StepReport {
    pub step: &'static str,
    /// `ok`, `failed`, `skipped` or `not reached`.
    pub result: &'static str,
}

#[derive(Debug, Serialize)]
pub struct RuleReport {
    pub name: String,
    pub access: &'static str,
    /// Provider names the route accepts (`None`: every provider).
    pub providers: Option<Vec<String>>,
    pub audiences: Option<Vec<String>>,
    pub requirements: Vec<RequirementReport>,
}

#[derive(Debug, Serialize)]
pub struct RequirementReport {
    pub claim: String,
    pub wants: String,
    /// What the token holds for that claim (from its verified claims), if anything.
    pub holds: Option<Value>,
    pub met: bool,
}

#[derive(Debug, Serialize)]
pub struct TokenReport {
    pub fingerprint: String,
    pub alg: Option<String>,
    pub kid: Option<String>,
    pub typ: Option<String>,
    /// The claims as the token states them, before verification.
    pub iss: Option<Value>,
    pub aud: Option<Value>,
    pub sub: Option<Value>,
    pub exp: Option<TimeReport>,
    pub nbf: Option<TimeReport>,
    pub iat: Option<TimeReport>,
    pub provider: Option<String>,
    /// `ok`, or why verification (signature, iss, exp, nbf, type, lifetime) failed.
    pub verification: String,
    /// Each check on its own: passed (`Some(true)`), failed, or not reached (`None`).
    pub checks: Vec<CheckReport>,
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub check: &'static str,
    pub passed: Option<bool>,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct TimeReport {
    pub unix: u64,
    pub utc: String,
    /// Seconds from now (negative: in the past).
    pub from_now: i64,
}

#[derive(Debug, Serialize)]
pub struct DecisionReport {
    /// `allow`, `deny` or `shadow_allow`.
    pub result: &'static str,
    pub reason: &'static str,
    pub would_deny: Option<&'static str>,
    /// Why the token did not pass, on a request an optional rule let through anonymously
    /// (`on_invalid: anonymous`).
    pub waived: Option<&'static str>,
    /// The HTTP status the client gets (for an allow: the upstream's, shown as 200).
    pub http_status: i32,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub headers_set: Vec<(String, String)>,
    pub headers_removed: Vec<String>,
}

/// Decides `req` with `runtime` and reports every step: the steps are the ones the decision
/// took (the core's pipeline, run by [`Runtime::run`]), and the token's checks the ones the
/// verifier made, as it made them. Nothing here decides anything again.
pub async fn explain(runtime: &Runtime, req: &Request) -> Report {
    let ext = HashMap::new();
    let http = Incoming {
        method: &req.method,
        target: &req.path,
        host: &req.host,
        headers: (&req.headers).into(),
        context_extensions: &ext,
        scheme: None,
        certificate: None,
    };
    let config = runtime.config();
    let record = Mutex::new(Vec::new());
    let (outcome, d) = runtime.run(&http, Some(&record)).await;
    let recorded = record.into_inner().unwrap_or_default();

    let token_report = d.found.map(|found| {
        let (header, mut stated) = unverified_parts(found.token);
        // An opaque token states nothing itself: what its provider's introspection answered.
        if let Some(token) = outcome
            .identity
            .as_ref()
            .filter(|t| t.thumbprint == crate::introspection::INTROSPECTED)
        {
            stated.clone_from(&token.claims);
        }
        let text = |name: &str| header.get(name).and_then(Value::as_str).map(str::to_owned);
        let verification = match (&outcome.identity, d.reached, d.refusal()) {
            (Some(_), _, _) => "ok".to_owned(),
            (None, Step::Verify, Some(Deny::Invalid(e))) => e.to_string(),
            (None, Step::Verify, Some(deny)) => deny.answer().description.to_owned(),
            _ => "not reached".to_owned(),
        };
        TokenReport {
            fingerprint: token_cache::fingerprint(&token_cache::token_hash(found.token)),
            alg: text("alg"),
            kid: text("kid"),
            typ: text("typ"),
            iss: stated.get("iss").cloned(),
            aud: stated.get("aud").cloned(),
            sub: stated.get("sub").cloned(),
            exp: time(&stated, "exp"),
            nbf: time(&stated, "nbf"),
            iat: time(&stated, "iat"),
            provider: outcome
                .identity
                .as_ref()
                .and_then(|token| config.providers.get(token.provider))
                .map(|p| p.name.clone()),
            verification,
            checks: token_checks(&d, recorded),
        }
    });

    let verified_claims = outcome.identity.as_ref().map(|token| &token.claims);
    let rule = d.route.map(|route| RuleReport {
        name: route.name.to_owned(),
        access: route.access_name(),
        providers: route.providers.map(|ids| {
            ids.iter()
                .filter_map(|i| config.providers.get(*i))
                .map(|p| p.name.clone())
                .collect()
        }),
        audiences: route.audiences.map(<[String]>::to_vec),
        requirements: route
            .requirements()
            .iter()
            .map(|req| requirement(req, verified_claims))
            .collect(),
    });
    let path_error = match (&d.read, d.refusal()) {
        (None, Some(Deny::InvalidPath(e))) => Some(e.to_string()),
        (None, Some(Deny::InvalidHost(e))) => Some(format!("host: {e}")),
        (None, Some(deny)) => Some(deny.answer().description.to_owned()),
        _ => None,
    };
    Report {
        method: req.method.clone(),
        path: req.path.clone(),
        host: req.host.clone(),
        header_names: {
            let mut names: Vec<_> = req.headers.keys().cloned().collect();
            names.sort();
            names
        },
        canonical_path: d.read.as_ref().map(|r| r.path.clone().into_owned()),
        path_error,
        rule,
        token: token_report,
        steps: steps(&d),
        decision: decision(
            &outcome.verdict,
            outcome.result(),
            outcome.reason,
            outcome.would_deny,
            d.waived.as_ref().map(|deny| deny.answer().reason),
        ),
    }
}

/// Each step of the pipeline: passed, failed (the last one taken, when it denied, or when
/// `on_invalid: anonymous` waived its denial), skipped (after a request allowed without a
/// token) or not reached.
fn steps(d: &Decision<'_, '_, bool>) -> Vec<StepReport> {
    Step::ALL
        .iter()
        .map(|&step| {
            let result = match (d.refusal(), step.cmp(&d.reached)) {
                (_, Ordering::Less) => "ok",
                (Some(_), Ordering::Equal) => "failed",
                (None, Ordering::Equal) => "ok",
                (Some(_), Ordering::Greater) => "not reached",
                (None, Ordering::Greater) => "skipped",
            };
            StepReport {
                step: step.name(),
                result,
            }
        })
        .collect()
}

/// The checks the verifier recorded as it made them, and the pipeline's own check of the
/// token for the route (`aud`: the route's audiences, or the provider's). A check after the
/// one that failed was not made.
fn token_checks(d: &Decision<'_, '_, bool>, recorded: Vec<Check>) -> Vec<CheckReport> {
    let mut out: Vec<CheckReport> = recorded
        .into_iter()
        .map(|c| CheckReport {
            check: c.check,
            passed: Some(c.passed),
            detail: c.detail,
        })
        .collect();
    if !out.iter().any(|c| c.check == "signature") {
        out.push(CheckReport {
            check: "signature",
            passed: None,
            detail: String::new(),
        });
    }
    if let (Some(route), Some(provider)) = (d.route, d.provider) {
        let accepted = route.audiences.unwrap_or(provider.audiences);
        let passed = match d.reached.cmp(&Step::Accept) {
            Ordering::Less => None,
            Ordering::Equal => Some(d.refusal().is_none()),
            Ordering::Greater => Some(true),
        };
        out.push(CheckReport {
            check: "aud",
            passed,
            detail: format!("accepted here: {accepted:?}"),
        });
    }
    out
}

fn requirement(
    req: &ClaimRequirement,
    claims_held: Option<&Map<String, Value>>,
) -> RequirementReport {
    let wants = match (&req.any_of, &req.all_of, &req.equals, &req.path_prefix) {
        (Some(any), ..) => format!("any of {any:?}"),
        (_, Some(all), ..) => format!("all of {all:?}"),
        (_, _, Some(value), _) => format!("equals {value}"),
        (.., Some(prefixes)) => format!("at or under {prefixes:?}"),
        _ => String::new(),
    };
    let holds = claims_held
        .and_then(|c| claims::lookup(c, &req.claim))
        .cloned();
    let met = claims_held.is_some_and(|c| jwt_authz_core::policy::requirement_met(req, c));
    RequirementReport {
        claim: req.claim.clone(),
        wants,
        holds,
        met,
    }
}

/// The JOSE header and the claims a token states, decoded without any verification (only
/// for display).
fn unverified_parts(token: &str) -> (Map<String, Value>, Map<String, Value>) {
    use base64::Engine;
    let part = |i: usize| {
        token
            .split('.')
            .nth(i)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
            .unwrap_or_default()
    };
    (part(0), part(1))
}

fn time(claims: &Map<String, Value>, name: &str) -> Option<TimeReport> {
    let unix = claims.get(name)?.as_f64().filter(|t| *t >= 0.0)? as u64;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(unix))?;
    Some(TimeReport {
        unix,
        utc: humantime::format_rfc3339_seconds(at).to_string(),
        from_now: i64::try_from(unix).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(0),
    })
}

fn decision(
    verdict: &Verdict,
    result: &'static str,
    reason: &'static str,
    would_deny: Option<&'static str>,
    waived: Option<&'static str>,
) -> DecisionReport {
    let mut out = DecisionReport {
        result,
        reason,
        would_deny,
        waived,
        http_status: 200,
        error: None,
        error_description: None,
        headers_set: Vec::new(),
        headers_removed: Vec::new(),
    };
    match verdict {
        Verdict::Allow { mutation, .. } => {
            out.headers_set = mutation.set.clone();
            out.headers_removed = mutation.remove.clone();
        }
        Verdict::Deny(denial) => {
            out.http_status = i32::from(denial.status());
            out.headers_set = denial
                .headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            out.error = Some(denial.answer.error.to_owned());
            out.error_description = Some(denial.answer.description.to_owned());
        }
    }
    out
}

/// The report for people.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let mut line = |label: &str, text: String| out.push_str(&format!("{label:<13}{text}\n"));
    line(
        "request",
        format!("{} {:?} host {:?}", report.method, report.path, report.host),
    );
    if !report.header_names.is_empty() {
        line("headers", report.header_names.join(", "));
    }
    match (&report.canonical_path, &report.path_error) {
        (Some(p), _) => line("path", format!("canonical {p:?}")),
        (None, Some(e)) => line("path", format!("refused: {e}")),
        _ => {}
    }
    if let Some(rule) = &report.rule {
        let mut text = format!("{} ({})", rule.name, rule.access);
        if let Some(p) = &rule.providers {
            text.push_str(&format!(", providers {p:?}"));
        }
        if let Some(a) = &rule.audiences {
            text.push_str(&format!(", audiences {a:?}"));
        }
        line("rule", text);
        for req in &rule.requirements {
            let holds = req
                .holds
                .as_ref()
                .map_or_else(|| "nothing".to_owned(), Value::to_string);
            let verdict = if req.met { "met" } else { "NOT met" };
            line(
                "  claim",
                format!("{} {}: holds {holds}: {verdict}", req.claim, req.wants),
            );
        }
    }
    match &report.token {
        None => line("token", "none found".to_owned()),
        Some(t) => {
            line("token", format!("fingerprint {}", t.fingerprint));
            let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            line(
                "  header",
                format!(
                    "alg {}, kid {}, typ {}",
                    show(&t.alg),
                    show(&t.kid),
                    show(&t.typ)
                ),
            );
            let json = |v: &Option<Value>| v.as_ref().map_or("-".to_owned(), Value::to_string);
            line("  iss", json(&t.iss));
            line("  aud", json(&t.aud));
            line("  sub", json(&t.sub));
            for (name, time) in [("  exp", &t.exp), ("  nbf", &t.nbf), ("  iat", &t.iat)] {
                if let Some(time) = time {
                    line(
                        name,
                        format!("{} ({:+} s from now)", time.utc, time.from_now),
                    );
                }
            }
            line(
                "  provider",
                t.provider.clone().unwrap_or_else(|| "-".to_owned()),
            );
            line("  verified", t.verification.clone());
            for check in &t.checks {
                let verdict = match check.passed {
                    Some(true) => "ok",
                    Some(false) => "FAILED",
                    None => "not reached",
                };
                line(
                    "  check",
                    format!("{} {verdict}: {}", check.check, check.detail),
                );
            }
        }
    }
    let steps: Vec<String> = report
        .steps
        .iter()
        .map(|s| match s.result {
            "ok" => s.step.to_owned(),
            "failed" => format!("{} FAILED", s.step),
            other => format!("{} ({other})", s.step),
        })
        .collect();
    line("steps", steps.join(" > "));
    let d = &report.decision;
    let mut verdict = format!("{} ({}), HTTP {}", d.result, d.reason, d.http_status);
    if let (Some(e), Some(desc)) = (&d.error, &d.error_description) {
        verdict.push_str(&format!(": {e}: {desc}"));
    }
    if let Some(would) = d.would_deny {
        verdict.push_str(&format!("; enforce mode would deny: {would}"));
    }
    if let Some(waived) = d.waived {
        verdict.push_str(&format!(
            "; the token did not pass ({waived}) and was removed: anonymous (on_invalid: anonymous)"
        ));
    }
    line("decision", verdict);
    for (k, v) in &d.headers_set {
        line("  set", format!("{k}: {v}"));
    }
    for k in &d.headers_removed {
        line("  remove", k.clone());
    }
    out
}
