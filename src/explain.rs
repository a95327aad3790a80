//! `jwt-authz explain`: one request decided by the same runtime the server builds, with the
//! steps that led there (canonical path, rule, provider, verification, claims, headers, the
//! HTTP answer) for people (`render`) or scripts (`--json`). The token is never printed,
//! only its fingerprint; request header values are never echoed.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::authz::Runtime;
use crate::claims;
use crate::config::ClaimRequirement;
use crate::request::{self, Incoming};
use crate::response::Verdict;
use crate::token_cache;
use crate::verify::VerifyError;

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
    pub decision: Decision,
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
pub struct Decision {
    /// `allow`, `deny` or `shadow_allow`.
    pub result: &'static str,
    pub reason: &'static str,
    pub would_deny: Option<&'static str>,
    /// The HTTP status the client gets (for an allow: the upstream's, shown as 200).
    pub http_status: i32,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub headers_set: Vec<(String, String)>,
    pub headers_removed: Vec<String>,
}

/// Decides `req` with `runtime` and reports every step.
pub async fn explain(runtime: &Runtime, req: &Request) -> Report {
    let ext = HashMap::new();
    let http = Incoming {
        method: &req.method,
        target: &req.path,
        host: &req.host,
        headers: &req.headers,
        context_extensions: &ext,
        scheme: None,
        certificate: None,
    };
    let config = runtime.config();
    let (canonical_path, path_error) = match request::canonical_path(&req.path, &config.paths) {
        Ok(p) => (Some(p.into_owned()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    // A host that cannot be read has no rule, as a path that cannot: the decision below
    // says why it is refused.
    let canonical_host = request::canonical_host(&req.host).ok();
    let route = canonical_path
        .as_deref()
        .zip(canonical_host.as_deref())
        .map(|(p, h)| runtime.route(&request::RequestInfo::new(&req.method, p, h, &ext)));
    let token = runtime.token_in(&http).map(|t| t.to_owned());
    let route_audiences = route.and_then(|r| r.audiences).map(<[String]>::to_vec);

    let mut token_report = None;
    let mut verified_claims = None;
    if let Some(token) = &token {
        let (header, stated) = unverified_parts(token);
        let verification = runtime.verify_token(token).await;
        let provider = verification
            .as_ref()
            .ok()
            .and_then(|v| config.providers.get(v.provider))
            .map(|p| p.name.clone());
        let text = |name: &str| header.get(name).and_then(Value::as_str).map(str::to_owned);
        token_report = Some(TokenReport {
            fingerprint: token_cache::fingerprint(&token_cache::token_hash(token)),
            alg: text("alg"),
            kid: text("kid"),
            typ: text("typ"),
            iss: stated.get("iss").cloned(),
            aud: stated.get("aud").cloned(),
            sub: stated.get("sub").cloned(),
            exp: time(&stated, "exp"),
            nbf: time(&stated, "nbf"),
            iat: time(&stated, "iat"),
            checks: checks(
                config,
                route_audiences.as_deref(),
                &stated,
                verification.as_ref().err(),
            ),
            provider,
            verification: match &verification {
                Ok(_) => "ok".to_owned(),
                Err(e) => e.to_string(),
            },
        });
        verified_claims = verification.ok().map(|v| v.claims);
    }

    let rule = route.map(|route| RuleReport {
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
            .map(|req| requirement(req, verified_claims.as_ref()))
            .collect(),
    });

    let outcome = runtime.check(&http).await;
    let decision = decision(
        &outcome.verdict,
        outcome.result(),
        outcome.reason,
        outcome.would_deny,
    );
    Report {
        method: req.method.clone(),
        path: req.path.clone(),
        host: req.host.clone(),
        header_names: {
            let mut names: Vec<_> = req.headers.keys().cloned().collect();
            names.sort();
            names
        },
        canonical_path,
        path_error,
        rule,
        token: token_report,
        decision,
    }
}

/// The checks a token goes through, one line each. The signature check comes first (a
/// failure there means the claims were never checked); the claim checks are judged on the
/// claims as the token states them, against the provider whose `iss` they name.
fn checks(
    config: &crate::config::Config,
    route_audiences: Option<&[String]>,
    stated: &Map<String, Value>,
    failure: Option<&VerifyError>,
) -> Vec<CheckReport> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let iss = stated.get("iss").and_then(Value::as_str);
    let provider = config
        .providers
        .iter()
        .find(|p| Some(p.issuer.as_str()) == iss);
    let mut out = Vec::new();
    let mut push = |check, passed, detail: String| {
        out.push(CheckReport {
            check,
            passed,
            detail,
        })
    };
    push(
        "iss",
        Some(provider.is_some()),
        match provider {
            Some(p) => format!("provider {}", p.name),
            None => "no provider has this issuer".to_owned(),
        },
    );
    let signature = match failure {
        None => Some(true),
        Some(VerifyError::BadSignature) => Some(false),
        // These stop verification before the signature is checked.
        Some(
            VerifyError::Malformed
            | VerifyError::UnsupportedHeader
            | VerifyError::UnknownIssuer
            | VerifyError::AlgorithmNotAllowed
            | VerifyError::WrongTokenType
            | VerifyError::UnknownKey
            | VerifyError::KeysUnavailable
            | VerifyError::KeyFetchBusy
            | VerifyError::VerifyBusy,
        ) => None,
        // Claim checks run only on a good signature.
        Some(_) => Some(true),
    };
    push(
        "signature",
        signature,
        match (signature, failure) {
            (Some(true), _) => "valid".to_owned(),
            (_, Some(e)) => e.to_string(),
            _ => String::new(),
        },
    );
    let Some(provider) = provider else {
        return out;
    };
    let leeway = provider.leeway.as_secs();
    let accepted = route_audiences.unwrap_or(&provider.audiences);
    push(
        "aud",
        Some(crate::verify::audience_matches(stated, accepted)),
        format!("accepted here: {accepted:?}"),
    );
    let seconds = |name| {
        stated
            .get(name)
            .and_then(Value::as_f64)
            .filter(|t| *t >= 0.0)
            .map(|t| t as i64)
    };
    let (now, leeway) = (now as i64, leeway as i64);
    match seconds("exp") {
        Some(exp) => push(
            "exp",
            Some(exp + leeway > now),
            format!("{:+} s from now, leeway {leeway} s", exp - now),
        ),
        None => push("exp", Some(!provider.require_exp), "absent".to_owned()),
    }
    if let Some(nbf) = seconds("nbf") {
        push(
            "nbf",
            Some(nbf <= now + leeway),
            format!("{:+} s from now, leeway {leeway} s", nbf - now),
        );
    }
    if let Some(iat) = seconds("iat") {
        push(
            "iat",
            Some(iat <= now + leeway),
            format!("{:+} s from now", iat - now),
        );
    }
    out
}

fn requirement(
    req: &ClaimRequirement,
    claims_held: Option<&Map<String, Value>>,
) -> RequirementReport {
    let wants = match (&req.any_of, &req.all_of, &req.equals) {
        (Some(any), _, _) => format!("any of {any:?}"),
        (_, Some(all), _) => format!("all of {all:?}"),
        (_, _, Some(value)) => format!("equals {value}"),
        _ => String::new(),
    };
    let holds = claims_held
        .and_then(|c| claims::lookup(c, &req.claim))
        .cloned();
    let met = claims_held.is_some_and(|c| crate::policy::requirement_met(req, c));
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
) -> Decision {
    let mut out = Decision {
        result,
        reason,
        would_deny,
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
    let d = &report.decision;
    let mut verdict = format!("{} ({}), HTTP {}", d.result, d.reason, d.http_status);
    if let (Some(e), Some(desc)) = (&d.error, &d.error_description) {
        verdict.push_str(&format!(": {e}: {desc}"));
    }
    if let Some(would) = d.would_deny {
        verdict.push_str(&format!("; enforce mode would deny: {would}"));
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
