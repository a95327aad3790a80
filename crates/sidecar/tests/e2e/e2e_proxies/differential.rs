//! The differential matrix: one table of hostile requests, sent as raw bytes through every
//! shipped proxy to an echo upstream that reports the host, path and headers it received.
//!
//! Two things are asserted for every request and proxy:
//!
//! 1. **What reached the upstream is what jwt-authz judged.** Whenever the upstream was
//!    reached, the request it received (its path and `Host`, read by the decision core
//!    exactly as jwt-authz reads a request) must be one jwt-authz's own rules allow for the
//!    token sent; its identity headers are the token's, in their one spelling; and no other
//!    spelling of an identity header (case, `-`/`_`) arrived. A proxy that routed one
//!    spelling and told jwt-authz another would fail here, whatever its status codes.
//! 2. **Every proxy reaches the same decision**: the table's expectation (reached, denied,
//!    or refused as malformed), or a documented difference named in the table (a proxy that
//!    does not route a spelling at all answers 404; nginx turns jwt-authz's 400 into 500 and
//!    drops headers with `_` itself; Caddy removes lookalikes on public routes).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::envoy::echo_upstream;
use crate::support::gateway::{Gateway, jwt_part};
use crate::support::stack::{Front, Options, Stack};
use jwt_authz_core::config::DecisionConfig;
use jwt_authz_core::policy::{AccessKind, Policy};
use jwt_authz_core::request::{RequestInfo, canonical_host, canonical_path};

/// The rules under test, after the demo's (`admin-user-list`: GET /api/users needs role
/// admin; `feed-highlights`: /api/feed/highlights is optional, `on_invalid: anonymous`): an
/// optional rule that denies an invalid token, and a host rule.
const RULES: &str = "  - name: feed-strict\n    match: {path: {prefix: /api/feed/strict}}\n    access: optional\n  - name: admin-host\n    match: {hosts: [admin.example.com]}\n    access:\n      claims:\n        - {claim: role, any_of: [admin]}\n";

/// The anonymous marker the demo's configuration sets (the default).
const MARKER: &str = "x-user-anonymous";

/// What the table expects of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Reaches the upstream.
    Reached,
    /// Denied by a rule or for want of a token: 401 or 403, the upstream not reached.
    Denied,
    /// Refused as unreadable (path, host, lookalike header): 400, the upstream not reached.
    Malformed,
    /// Not routed by this proxy: 404, the upstream not reached.
    NotRouted,
}

/// How a request came out.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Reached(Value),
    Status(u16),
}

impl Seen {
    fn class(&self, front: Front) -> Option<Expect> {
        match self {
            Seen::Reached(_) => Some(Expect::Reached),
            Seen::Status(401 | 403) => Some(Expect::Denied),
            Seen::Status(400) => Some(Expect::Malformed),
            // auth_request passes only 2xx, 401 and 403: nginx answers 500 for jwt-authz's 400.
            Seen::Status(500) if front == Front::Nginx => Some(Expect::Malformed),
            Seen::Status(404) => Some(Expect::NotRouted),
            Seen::Status(_) => None,
        }
    }
}

struct Case {
    name: &'static str,
    /// The request line's target (origin or absolute form).
    target: &'static str,
    /// `Host` headers, in order (none, one, or two).
    hosts: &'static [&'static str],
    with_token: bool,
    /// The token sent is bob's with its signature broken.
    invalid_token: bool,
    headers: &'static [(&'static str, &'static str)],
    expect: Expect,
    /// Documented differences: these proxies answer otherwise, and why is in the module doc.
    except: &'static [(Front, Expect)],
}

const fn case(name: &'static str, target: &'static str, with_token: bool, expect: Expect) -> Case {
    Case {
        name,
        target,
        hosts: &["api.test"],
        with_token,
        invalid_token: false,
        headers: &[],
        expect,
        except: &[],
    }
}

const NGINX_DROPS: &[(Front, Expect)] = &[(Front::Nginx, Expect::Reached)];
/// nginx's `location` and Envoy's route `prefix` match case: `/API/USERS` is routed nowhere
/// and gets their 404 before ext_authz is asked (Caddy's matchers ignore case, Traefik's
/// shipped `(?i)` rules too, and the in-proxy filter decides before routing: there
/// jwt-authz's rule decides).
const CASE_NOT_ROUTED: &[(Front, Expect)] = &[
    (Front::Nginx, Expect::NotRouted),
    (Front::EnvoyGrpc, Expect::NotRouted),
    (Front::EnvoyHttp, Expect::NotRouted),
];
/// Envoy's path normalisation reads `..;` as `..` (as Tomcat does) before anything else sees
/// the path: jwt-authz judges `/api/users`, and its rule denies.
const ENVOY_DOT_DOT: &[(Front, Expect)] = &[
    (Front::EnvoyGrpc, Expect::Denied),
    (Front::EnvoyHttp, Expect::Denied),
    (Front::EnvoyInProxy, Expect::Denied),
    (Front::EnvoyModule, Expect::Denied),
];

fn cases() -> Vec<Case> {
    use Expect::*;
    let mut all = vec![
        case("allowed", "/api/orders", true, Reached),
        case("no token", "/api/orders", false, Denied),
        case("exact rule", "/api/users", true, Denied),
        case("exact rule, trailing slash", "/api/users/", true, Denied),
        Case {
            except: CASE_NOT_ROUTED,
            ..case("exact rule, upper case", "/API/USERS", true, Denied)
        },
        Case {
            except: CASE_NOT_ROUTED,
            ..case(
                "exact rule, mixed case and slash",
                "/Api/Users/",
                true,
                Denied,
            )
        },
        case("dot-segment", "/api/./users", true, Denied),
        case("dot-dot segment", "/api/orders/../users", true, Denied),
        case("escaped unreserved", "/api/%75sers", true, Denied),
        case("merged slashes", "//api//users", true, Denied),
        case("path parameter", "/api/users;x=1", true, Malformed),
        Case {
            except: ENVOY_DOT_DOT,
            ..case(
                "dot-dot with parameter",
                "/api/orders/..;/users",
                true,
                Malformed,
            )
        },
        case("escaped slash", "/api/users%2Fx", true, Malformed),
        Case {
            hosts: &["admin.example.com"],
            ..case("host rule", "/api/orders", true, Denied)
        },
        Case {
            hosts: &["ADMIN.Example.COM."],
            ..case(
                "host rule, case and trailing dot",
                "/api/orders",
                true,
                Denied,
            )
        },
        Case {
            hosts: &["admin.example.com:8443"],
            ..case("host rule, port", "/api/orders", true, Denied)
        },
        Case {
            hosts: &["admin.example.com."],
            ..case(
                "host rule, trailing dot, no token",
                "/api/orders",
                false,
                Denied,
            )
        },
        Case {
            hosts: &["other.test"],
            except: &[(Front::Nginx, Malformed)],
            ..case(
                "absolute form naming the ruled host",
                "http://admin.example.com/api/orders",
                true,
                Denied,
            )
        },
        Case {
            hosts: &["admin.example.com"],
            except: &[(Front::Nginx, Malformed)],
            ..case(
                "absolute form naming another host",
                "http://other.test/api/orders",
                true,
                Reached,
            )
        },
        Case {
            hosts: &["api.test", "admin.example.com"],
            ..case("two Host headers", "/api/orders", true, Malformed)
        },
        Case {
            hosts: &["admin..example.com"],
            ..case("empty label", "/api/orders", true, Malformed)
        },
        Case {
            headers: &[("X-User-Id", "admin-id"), ("x-user-role", "admin")],
            ..case("spoofed identity", "/api/orders", true, Reached)
        },
        Case {
            headers: &[("X-USER-ID", "admin-id")],
            ..case(
                "spoofed identity, no token, public route",
                "/auth/x",
                false,
                Reached,
            )
        },
    ];
    // Optional routes (the demo's on_invalid: anonymous, and feed-strict's deny), with forged
    // identity and a forged marker in every case: what reaches the app is the decision's.
    let forged: &'static [(&'static str, &'static str)] =
        &[("X-User-Id", "admin-id"), ("X-User-Anonymous", "false")];
    let invalid = |case: Case| Case {
        invalid_token: true,
        ..case
    };
    all.extend([
        Case {
            headers: forged,
            ..case("optional, no token", "/api/feed/highlights", false, Reached)
        },
        Case {
            headers: forged,
            ..case(
                "optional, valid token",
                "/api/feed/highlights",
                true,
                Reached,
            )
        },
        Case {
            headers: forged,
            ..invalid(case(
                "optional, invalid token: anonymous",
                "/api/feed/highlights",
                true,
                Reached,
            ))
        },
        Case {
            headers: forged,
            ..case(
                "optional (deny), no token",
                "/api/feed/strict",
                false,
                Reached,
            )
        },
        Case {
            headers: forged,
            ..case(
                "optional (deny), valid token",
                "/api/feed/strict",
                true,
                Reached,
            )
        },
        Case {
            headers: forged,
            ..invalid(case(
                "optional (deny), invalid token: denied",
                "/api/feed/strict",
                true,
                Denied,
            ))
        },
        Case {
            headers: &[("X_User_Anonymous", "true")],
            except: NGINX_DROPS,
            ..case(
                "lookalike anonymous marker",
                "/api/feed/highlights",
                false,
                Malformed,
            )
        },
    ]);
    // Every `-`/`_` spelling of an identity header but its own: on an authenticated route
    // and a claim-protected one with a token, and on a public route without one.
    for name in ["x_user_id", "X-User_Id", "x_USER-role", "X_User_Name"] {
        let headers: &'static [(&'static str, &'static str)] =
            Box::leak(Box::new([(name, "admin")]));
        all.push(Case {
            headers,
            except: NGINX_DROPS,
            ..case("lookalike identity header", "/api/orders", true, Malformed)
        });
        // On the claim-protected route: refused before the rule, except by nginx, which
        // drops the header and lets the rule deny the user's token.
        all.push(Case {
            headers,
            except: &[(Front::Nginx, Denied)],
            ..case(
                "lookalike identity header, claim route",
                "/api/users",
                true,
                Malformed,
            )
        });
        all.push(Case {
            headers,
            except: &[(Front::Nginx, Reached), (Front::Caddy, Reached)],
            ..case(
                "lookalike identity header, public route",
                "/auth/x",
                false,
                Malformed,
            )
        });
    }
    all
}

/// Sends `request` as it is and reads the whole answer (the request says `Connection:
/// close`): the status, and the body when the echo upstream wrote it.
async fn send(port: u16, request: &[u8]) -> Seen {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the proxy");
    stream.write_all(request).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the proxy answers within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    match serde_json::from_str::<Value>(&body) {
        Ok(echo) if status == 200 && echo.get("headers").is_some() => Seen::Reached(echo),
        _ => Seen::Status(status),
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Whether `a` and `b` are one header name to a CGI-style app: case aside, `-` and `_` alike.
fn same_to_cgi(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let fold = |c: u8| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            };
            fold(x) == fold(y)
        })
}

/// Assertion 1 (module doc): what reached the upstream is a request jwt-authz's rules allow
/// for `claims` (`None`: no token), carrying the token's identity and nothing like it.
fn judge_reached(
    echo: &Value,
    config: &DecisionConfig,
    policy: &Policy,
    claims: Option<&Map<String, Value>>,
) -> Result<(), String> {
    let path = echo["path"].as_str().ok_or("no path")?;
    let host = echo["host"].as_str().ok_or("no host")?;
    // An empty header is no header: forward-auth answers carry every identity header and the
    // marker, empty when jwt-authz sets none, and Caddy and Traefik pass them on empty (the
    // documented contract: an empty identity header names no one, and only `true` in the
    // marker says anonymous).
    let received: Vec<(String, String)> = echo["headers"]
        .as_array()
        .ok_or("no headers")?
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap_or_default().to_owned(),
                pair[1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .filter(|(_, value)| !value.is_empty())
        .collect();
    // Public routes skip jwt-authz in every shipped proxy config: nothing to judge there
    // but the identity headers.
    let public = path.starts_with("/auth/");
    if !public {
        let canonical = canonical_path(path, &config.paths)
            .map_err(|e| format!("the upstream got {path:?}, which jwt-authz refuses: {e}"))?;
        let host = canonical_host(host)
            .map_err(|e| format!("the upstream got host {host:?}, which jwt-authz refuses: {e}"))?;
        let ext = HashMap::new();
        let route = policy.route(&RequestInfo::new("GET", &canonical, &host, &ext));
        let allowed = match (route.kind, claims) {
            (AccessKind::Public | AccessKind::Optional, None) => true,
            (AccessKind::Public, _) => true,
            (AccessKind::Deny, _) | (_, None) => false,
            (AccessKind::Authenticated, Some(_)) => true,
            (AccessKind::Claims | AccessKind::Optional, Some(claims)) => {
                route.check_claims(claims).is_ok()
            }
        };
        if !allowed {
            return Err(format!(
                "the upstream got {path:?} on {host:?}, which rule {:?} does not allow for this token",
                route.name
            ));
        }
    }
    // The anonymous marker: exactly when no identity passed, in its one spelling, and never
    // on routes the proxies send past jwt-authz. Nor any token: a refused one is taken off,
    // and a valid one stripped (`identity.strip_authorization`, and the proxies' own lines).
    let markers: Vec<&(String, String)> = received
        .iter()
        .filter(|(name, _)| same_to_cgi(name, MARKER))
        .collect();
    match (markers.as_slice(), public, claims) {
        ([], true, _) | ([], false, Some(_)) => {}
        ([(name, value)], false, None) if name == MARKER && value == "true" => {}
        (got, _, _) => {
            return Err(format!(
                "{MARKER}: the upstream got {got:?} (public route: {public}, token: {})",
                claims.is_some()
            ));
        }
    }
    if let Some((_, value)) = received
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
    {
        return Err(format!("a token reached the upstream: {value:.20}..."));
    }
    for mapping in &config.identity.headers {
        let copies: Vec<&(String, String)> = received
            .iter()
            .filter(|(name, _)| same_to_cgi(name, &mapping.header))
            .collect();
        let want = claims
            .and_then(|c| c.get(&mapping.claim))
            .and_then(Value::as_str)
            .filter(|_| !public);
        match (copies.as_slice(), want) {
            ([], None) => {}
            ([(name, value)], Some(want)) if *name == mapping.header && value == want => {}
            (got, want) => {
                return Err(format!(
                    "{}: the upstream got {got:?}, the token says {want:?}",
                    mapping.header
                ));
            }
        }
    }
    Ok(())
}

pub async fn run(front: Front) {
    let echo = echo_upstream().await;
    let Some(stack) = Stack::start_with(Options {
        front,
        public_upstream: Some(echo),
        services_upstream: Some(echo),
        authz_extra: RULES.to_owned(),
        ..Options::default()
    }) else {
        return;
    };
    let config = DecisionConfig::from_yaml(
        &std::fs::read_to_string(stack.dir.path().join("jwt-authz.yaml")).expect("config"),
    )
    .expect("the stack's config");
    let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    let policy = Policy::new(&config.rules, &config.paths, &names).expect("policy");
    // The proxy's /auth/ goes to the echo upstream here: log in at the issuer itself (its
    // tokens name the proxy's URL as their issuer either way).
    let issuer = Gateway::new(&format!("http://127.0.0.1:{}", stack.issuer_port));
    let bob = issuer.login("bob", "bob-password").await;
    let bob_claims = jwt_part(&bob, 1);
    // Bob's token with its signature broken: one character well inside it changed (the last
    // may carry only padding bits).
    let at = bob.len() - 10;
    let flipped = if &bob[at..=at] == "A" { "B" } else { "A" };
    let broken = format!("{}{flipped}{}", &bob[..at], &bob[at + 1..]);
    let port: u16 = stack
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the proxy's port");

    let mut failures = Vec::new();
    let mut table = String::new();
    for case in cases() {
        let mut request = format!("GET {} HTTP/1.1\r\n", case.target);
        for host in case.hosts {
            request.push_str(&format!("Host: {host}\r\n"));
        }
        if case.with_token {
            let token = if case.invalid_token { &broken } else { &bob };
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in case.headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("Connection: close\r\n\r\n");
        let seen = send(port, request.as_bytes()).await;
        let label = format!(
            "{} ({} {:?} {:?})",
            case.name, case.target, case.hosts, case.headers
        );
        if let Seen::Reached(echo) = &seen {
            let claims = (case.with_token && !case.invalid_token)
                .then(|| bob_claims.as_object())
                .flatten();
            if let Err(why) = judge_reached(echo, &config, &policy, claims) {
                failures.push(format!("{label}: BYPASS: {why}"));
            }
        }
        let expected = case
            .except
            .iter()
            .find(|(f, _)| *f == front)
            .map_or(case.expect, |(_, e)| *e);
        let class = seen.class(front);
        let shown = match &seen {
            Seen::Reached(_) => "reached".to_owned(),
            Seen::Status(s) => s.to_string(),
        };
        table.push_str(&format!("{front:?}\t{shown}\t{label}\n"));
        if class != Some(expected) {
            failures.push(format!("{label}: expected {expected:?}, got {shown}"));
        }
    }
    eprintln!("{table}");
    assert!(failures.is_empty(), "{front:?}:\n{}", failures.join("\n"));
}
