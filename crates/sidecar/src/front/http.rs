//! The HTTP authorization port (`listen.http`), two kinds of endpoint:
//!
//! - **Envoy / Istio HTTP ext_authz** (`http.ext_authz_prefix`): Envoy's `http_service` sends
//!   the original request's method and headers, with its path appended to the prefix. 200
//!   allows, carrying the identity headers (Envoy copies those in `allowed_upstream_headers`)
//!   and `x-envoy-auth-headers-to-remove` naming the ones the token does not supply; any
//!   other status is a denial Envoy sends to the client as it is (status, headers, body).
//! - **Forward-auth** (`http.forward_auth`): nginx `auth_request`, Traefik `ForwardAuth`,
//!   Caddy `forward_auth`. The endpoint's own method and path say nothing; the original
//!   request is read only from the header family the endpoint is configured with, which the
//!   proxy must overwrite. Each of the three must appear exactly once: a missing or repeated
//!   one (a proxy that appends to a client's copy) is refused, never guessed at.
//!
//! - **In-proxy callouts** (`in_proxy.prefix`, when `in_proxy` is set): the Wasm filter's
//!   questions about requests it cannot decide alone, asked like Envoy's ext_authz (method,
//!   headers, original path after `<prefix>/check`), answered as JSON with the verdict, the
//!   token's claims when the filter may keep them, and the key-set generation (module
//!   `jwt_authz_core::in_proxy`); its poll, `GET <prefix>/generation`; and, for the dynamic
//!   module, the keys it verifies tokens with, `GET <prefix>/keys`
//!   (`jwt_authz_jose::verify::PublishedKeys`).
//!
//! The token is read from the request's own headers in every case (the proxies pass the
//! client's headers through). Nothing here decides anything: it builds an [`Incoming`] and
//! encodes the runtime's verdict.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::FrontEnd;
use crate::config::ForwardedHeaders;
use crate::obs::metrics::Metrics;
use crate::obs::telemetry::{Carrier, Telemetry};
use crate::runtime::Runtime;
use jwt_authz_core::config::resource::WELL_KNOWN;
use jwt_authz_core::decision::Document;
use jwt_authz_core::in_proxy::{GenerationAnswer, METHOD_HEADER};
use jwt_authz_core::request::{self, Incoming};
use jwt_authz_core::response::{Deny, Verdict};

/// Envoy removes the headers this response header names from the request it forwards
/// (ext_authz HTTP service).
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// A forwarded method longer than this is refused (the longest registered method is 17
/// bytes).
const MAX_METHOD_BYTES: usize = 32;
/// A forwarded host longer than this is refused (a DNS name is at most 253 bytes, plus a
/// port).
const MAX_HOST_BYTES: usize = 262;

#[derive(Debug, Clone)]
pub struct HttpState {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub metrics: Arc<Metrics>,
    pub telemetry: Telemetry,
}

/// Every path is handled by one function: which endpoint a request is for depends on the
/// configuration in force, which a reload may change.
pub fn router(state: HttpState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(State(state): State<HttpState>, request: Request) -> Response {
    let started = Instant::now();
    let runtime = state.runtime.load_full();
    let config = &runtime.config().http;
    let (parts, _body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let path = parts.uri.path();
    let headers = header_map(&parts.headers);
    let no_extensions = HashMap::new();
    // The joined map: repeated `tracestate` headers are one list (Trace Context, "tracestate
    // Header Field Values").
    // The proxy's context and the client's come in the same headers here: none is read
    // with `tracing.request_context: ignore`.
    let all: [Carrier<'_>; 1] = [&headers];
    let carriers = state.telemetry.carriers(&all, 0);

    if path.starts_with(WELL_KNOWN)
        && let Some(document) = runtime.resource_document(path)
    {
        return metadata(document, &parts.method);
    }

    if let Some(endpoint) = config.forward_auth.iter().find(|e| e.path == path) {
        let own = Incoming {
            method: parts.method.as_str(),
            target,
            host: "",
            headers: (&headers).into(),
            context_extensions: &no_extensions,
            // An HTTP authorization request carries neither: `dpop.scheme` names the
            // scheme, and certificate-bound tokens need the gRPC front end.
            scheme: None,
            certificate: None,
        };
        let checking = super::Checking::start(
            &state.metrics,
            &state.telemetry,
            FrontEnd::ForwardAuth,
            &runtime,
            carriers,
            started,
        );
        let (outcome, incoming) = match forwarded(&parts.headers, endpoint.headers) {
            Ok((method, target, host)) => {
                let incoming = Incoming {
                    method,
                    target,
                    host,
                    ..own
                };
                (checking.check(&incoming).await, incoming)
            }
            Err(missing) => {
                tracing::debug!(
                    header = missing,
                    endpoint = %endpoint.path,
                    "forward-auth request without exactly one valid header; is the proxy set to overwrite it?"
                );
                (runtime.refuse(Deny::BadForwardedRequest), own)
            }
        };
        checking.record(&incoming, &outcome);
        let identity: Vec<&str> = runtime.config().identity.upstream_headers().collect();
        return encode(
            outcome.verdict,
            Removal::SendEmpty(&identity),
            &parts.method,
        );
    }

    if let Some(prefix) = &config.ext_authz_prefix
        && let Some(original) = target.strip_prefix(prefix.as_str())
        && (original.starts_with('/') || path == prefix)
    {
        // `/ext-authz?x` leaves `?x`, which the path check refuses (not absolute).
        let asked = AsItself {
            state: &state,
            runtime: &runtime,
            method: parts.method.as_str(),
            parts: &parts,
            headers: &headers,
            carriers,
            started,
        };
        let outcome = asked.check(FrontEnd::Http, original).await;
        return encode(outcome.verdict, Removal::EnvoyHeader, &parts.method);
    }

    if let Some(in_proxy) = &runtime.config().in_proxy
        && let Some(rest) = target.strip_prefix(in_proxy.prefix.as_str())
    {
        if let Some(original) = rest.strip_prefix("/check")
            && original.starts_with('/')
        {
            // The filter sends callouts as GET and names the original method.
            let method = headers
                .get(METHOD_HEADER)
                .map_or(parts.method.as_str(), String::as_str);
            let asked = AsItself {
                state: &state,
                runtime: &runtime,
                method,
                parts: &parts,
                headers: &headers,
                carriers,
                started,
            };
            let outcome = asked.check(FrontEnd::InProxy, original).await;
            return json(&runtime.in_proxy_answer(outcome));
        }
        if rest == "/keys" && parts.method == Method::GET {
            return json(&runtime.published_keys());
        }
        if rest == "/generation" && parts.method == Method::GET {
            return json(&GenerationAnswer {
                generation: runtime.generation(),
                config: Some(runtime.decision_digest().to_owned()),
                dpop_algs: runtime.dpop_algs().map(str::to_owned),
            });
        }
    }

    (StatusCode::NOT_FOUND, "no authorization endpoint here\n").into_response()
}

/// A request Envoy (ext_authz) or the in-proxy filter sends as the original one: its own
/// method and headers, `:authority` the original host, the original path after a prefix.
struct AsItself<'a> {
    state: &'a HttpState,
    runtime: &'a Runtime,
    /// The original request's method: the request's own (ext_authz), or the one the
    /// in-proxy filter names in [`METHOD_HEADER`].
    method: &'a str,
    parts: &'a axum::http::request::Parts,
    headers: &'a HashMap<String, String>,
    carriers: &'a [Carrier<'a>],
    started: Instant,
}

impl<'a> AsItself<'a> {
    /// Decides the request whose path (and query) is `original`, counting and logging it
    /// as `front_end`'s.
    async fn check(&self, front_end: FrontEnd, original: &str) -> crate::runtime::Outcome<'a> {
        let no_extensions = HashMap::new();
        let host = original_host(&self.parts.uri, self.headers);
        let incoming = Incoming {
            method: self.method,
            target: original,
            host,
            headers: self.headers.into(),
            context_extensions: &no_extensions,
            // An HTTP authorization request carries neither: `dpop.scheme` names the
            // scheme, and certificate-bound tokens need the gRPC front end.
            scheme: None,
            certificate: None,
        };
        let checking = super::Checking::start(
            &self.state.metrics,
            &self.state.telemetry,
            front_end,
            self.runtime,
            self.carriers,
            self.started,
        );
        // Envoy (and the filter) always send one valid `:authority`; anything else did not
        // come from them.
        let outcome = if valid_host(host) {
            checking.check(&incoming).await
        } else {
            self.runtime.refuse(Deny::BadForwardedRequest)
        };
        checking.record(&incoming, &outcome);
        outcome
    }
}

/// The original request's host: `:authority` in HTTP/2 (or an absolute-form request line),
/// `Host` in HTTP/1.1 (Envoy, and the in-proxy filter, send the original one). When both are
/// there and name different hosts, nothing says which one the proxy routed on: `""`, which
/// is refused.
fn original_host<'h>(uri: &'h axum::http::Uri, headers: &'h HashMap<String, String>) -> &'h str {
    match (uri.authority().map(|a| a.as_str()), headers.get("host")) {
        (Some(authority), Some(host))
            if request::canonical_host(authority) != request::canonical_host(host) =>
        {
            ""
        }
        (Some(authority), _) => authority,
        (None, host) => host.map_or("", String::as_str),
    }
}

/// A protected resource's metadata (RFC 9728 §3.2): public, cacheable JSON (§7.10), to `GET`
/// and `HEAD` only. Every proxy template routes `/.well-known/oauth-protected-resource` here,
/// and the decision lets those two methods through to it without a token.
fn metadata(document: Document, method: &Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(axum::http::header::ALLOW, "GET, HEAD")],
            "GET or HEAD only\n",
        )
            .into_response();
    }
    let cache = format!("public, max-age={}", document.max_age);
    // For HEAD, hyper sends the headers (the length included) and not the body.
    let mut response = Response::new(Body::from(document.body));
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(&cache) {
        headers.insert(axum::http::header::CACHE_CONTROL, value);
    }
    // Public and credential-free: browser-based clients (MCP's among them) may read it from
    // any origin.
    headers.insert(
        axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// An in-proxy answer (module `jwt_authz_core::in_proxy`): 200 with a JSON body, the filter
/// reads nothing else. Claims ride in it: `no-store`.
fn json(answer: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(answer) {
        Ok(body) => (
            [
                (axum::http::header::CONTENT_TYPE, "application/json"),
                (axum::http::header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(_) => internal_error(),
    }
}

/// The request headers as the decision reads them: lowercase names (as `http` keeps
/// them), repeated headers joined with `,` the way Envoy joins them. A value that is not
/// UTF-8 is read with replacement characters: a token in it fails verification.
fn header_map(headers: &HeaderMap) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::with_capacity(headers.keys_len());
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

/// The original (method, URI, host) from a forward-auth request's header family, or the
/// name of the header that is missing, repeated or malformed.
fn forwarded(
    headers: &HeaderMap,
    family: ForwardedHeaders,
) -> Result<(&str, &str, &str), &'static str> {
    let [method_name, uri_name, host_name] = family.names();
    let one = |name: &'static str| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().map_err(|_| name),
            _ => Err(name),
        }
    };
    let method = one(method_name)?;
    if method.is_empty()
        || method.len() > MAX_METHOD_BYTES
        || Method::from_bytes(method.as_bytes()).is_err()
    {
        return Err(method_name);
    }
    // Origin form (RFC 9112 §3.2.1) only; the path checks refuse anything else that slips
    // through, and bound its length.
    let uri = one(uri_name)?;
    if !uri.starts_with('/') {
        return Err(uri_name);
    }
    let host = one(host_name)?;
    if !valid_host(host) {
        return Err(host_name);
    }
    Ok((method, uri, host))
}

/// A host (with an optional port) as a request names it: an authority without userinfo,
/// at most [`MAX_HOST_BYTES`]. Two joined `Host` headers (`a,b`) are not one.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_BYTES
        && !host.contains(['@', ','])
        && host.parse::<axum::http::uri::Authority>().is_ok()
}

/// How an allow says which identity headers the upstream request must not carry.
enum Removal<'a> {
    /// Envoy's HTTP ext_authz: `x-envoy-auth-headers-to-remove` lists them (and the token's
    /// header when `identity.strip_authorization` is on).
    EnvoyHeader,
    /// Forward-auth: every identity header is in the answer, empty when the token does not
    /// supply it. The proxies copy a fixed list of headers and differ on a listed header
    /// that is absent: nginx sends none, Traefik removes the client's copy, Caddy 2.6 sets
    /// it to its placeholder's text. Present and empty, it replaces the client's copy
    /// everywhere (nginx drops an empty header altogether).
    SendEmpty(&'a [&'a str]),
}

/// The HTTP answer for a verdict.
fn encode(verdict: Verdict, removal: Removal<'_>, method: &Method) -> Response {
    match verdict {
        Verdict::Allow { mutation, .. } => {
            let mut response = Response::new(Body::empty());
            let headers = response.headers_mut();
            for (name, value) in &mutation.set {
                // Names come from validated configuration and values were checked for
                // control characters; a failure here is still never an allow with a
                // missing identity: it becomes a 500.
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    (Ok(name), Ok(value)) => {
                        headers.insert(name, value);
                    }
                    _ => return internal_error(),
                }
            }
            match removal {
                Removal::EnvoyHeader if !mutation.remove.is_empty() => {
                    match HeaderValue::from_str(&mutation.remove.join(",")) {
                        Ok(value) => {
                            headers.insert(HEADERS_TO_REMOVE, value);
                        }
                        Err(_) => return internal_error(),
                    }
                }
                Removal::EnvoyHeader => {}
                Removal::SendEmpty(identity) => {
                    for name in identity {
                        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                            headers
                                .entry(name)
                                .or_insert_with(|| HeaderValue::from_static(""));
                        }
                    }
                }
            }
            response
        }
        Verdict::Deny(denial) => {
            let status = StatusCode::from_u16(denial.status()).unwrap_or(StatusCode::FORBIDDEN);
            let body = if method == Method::HEAD {
                Body::empty()
            } else {
                Body::from(denial.body)
            };
            let mut response = Response::new(body);
            *response.status_mut() = status;
            for (name, value) in denial.headers {
                match HeaderValue::from_str(&value) {
                    Ok(value) => {
                        response.headers_mut().insert(name, value);
                    }
                    Err(_) => return internal_error(),
                }
            }
            response
        }
    }
}

fn internal_error() -> Response {
    tracing::error!("could not encode an HTTP authorization answer");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

#[cfg(test)]
mod tests;
