//! The filter as Envoy runs it: proxy-wasm contexts around the [`Engine`]. One root context
//! per worker holds the engine and polls the sidecar's generation on every tick; one HTTP
//! context per request decides it, or pauses it for a callout and resumes it with the
//! sidecar's answer. Every failure to get an answer is a 503 (fail closed).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use jwt_authz_core::in_proxy::{
    CheckAnswer, GenerationAnswer, MAX_ANSWER_BYTES, METHOD_HEADER, WireVerdict,
};
use jwt_authz_core::response::{Deny, Verdict};
use log::{debug, error, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

use crate::engine::{Counter, Engine, RequestHeaders, Step};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root::default()));
}}

/// The filter state (`wasm.jwt_authz_decided` in Envoy's filter state, value `1`) set on
/// every request this filter lets through. Envoy skips a Wasm filter whose VM could not be
/// started on a worker, whatever its `failure_policy` (the request then goes on as if the
/// filter were not configured: fail open); the shipped configurations therefore put an RBAC
/// filter after this one that lets through only requests carrying this mark, which no client
/// can set. See `envoy/envoy-in-proxy.yaml.tmpl`.
const DECIDED: &str = "jwt_authz_decided";

/// The filter's counters, as Envoy reports them (`wasmcustom.jwt_authz_filter_*`).
#[derive(Debug, Clone, Copy, Default)]
struct Metrics {
    in_proxy_cached: Option<u32>,
    in_proxy_no_token: Option<u32>,
    callouts: Option<u32>,
    callout_failures: Option<u32>,
    poll_failures: Option<u32>,
    config_mismatch: Option<u32>,
}

impl Metrics {
    fn define() -> Self {
        let counter =
            |name: &str| proxy_wasm::hostcalls::define_metric(MetricType::Counter, name).ok();
        Metrics {
            in_proxy_cached: counter("jwt_authz_filter_decided_cached"),
            in_proxy_no_token: counter("jwt_authz_filter_decided_no_token"),
            callouts: counter("jwt_authz_filter_callouts"),
            callout_failures: counter("jwt_authz_filter_callout_failures"),
            poll_failures: counter("jwt_authz_filter_poll_failures"),
            config_mismatch: counter("jwt_authz_filter_config_mismatch_callouts"),
        }
    }

    fn count(id: Option<u32>) {
        if let Some(id) = id {
            let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
        }
    }

    fn decided(&self, counter: Option<Counter>) {
        match counter {
            Some(Counter::CacheHit) => Self::count(self.in_proxy_cached),
            Some(Counter::NoToken) => Self::count(self.in_proxy_no_token),
            Some(Counter::ConfigMismatch) => Self::count(self.config_mismatch),
            // The Wasm filter verifies nothing itself.
            Some(Counter::Verified) | None => {}
        }
    }
}

/// Envoy's clock in Unix ms; 0 when it cannot be read, which confirms nothing (the engine
/// takes a clock behind its last confirmation as unconfirmed).
fn now_ms() -> u64 {
    proxy_wasm::hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// The worker's engine, shared by the root context and every request's context.
type Shared = Rc<RefCell<Engine>>;

/// Hands the engine an answer of the sidecar's, saying once (a log line) when the sidecar's
/// decision configuration turns out not to be the filter's own.
fn hear<R>(engine: &Shared, apply: impl FnOnce(&mut Engine) -> R) -> R {
    let mut engine = engine.borrow_mut();
    let result = apply(&mut engine);
    if engine.newly_disagreeing() {
        let (own, sidecar) = engine.digests();
        warn!(
            "jwt-authz filter: the sidecar's decision configuration ({}) is not this filter's ({own}): every request is asked of the sidecar until they agree",
            sidecar.unwrap_or("not named")
        );
    }
    result
}

#[derive(Default)]
struct Root {
    engine: Option<Shared>,
    metrics: Metrics,
    /// The poll in flight, if any (one at a time).
    polling: Option<u32>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        if self.polling != Some(token_id) {
            return;
        }
        self.polling = None;
        let answer = (self.get_http_call_response_header(":status").as_deref() == Some("200"))
            .then(|| self.read_answer::<GenerationAnswer>(body_size))
            .flatten();
        match (answer, &self.engine) {
            (Some(answer), Some(engine)) => hear(engine, |e| e.polled(answer, now_ms())),
            _ => {
                Metrics::count(self.metrics.poll_failures);
                debug!("jwt-authz sidecar did not answer the generation poll");
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            error!("jwt-authz filter: no plugin configuration (the sidecar's YAML is expected)");
            return false;
        };
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => {
                error!("jwt-authz filter: the plugin configuration is not UTF-8");
                return false;
            }
        };
        let engine = match Engine::from_config(&text) {
            Ok(engine) => engine,
            Err(e) => {
                error!("jwt-authz filter: invalid configuration: {e}");
                return false;
            }
        };
        if engine.wants_metadata() {
            warn!(
                "jwt-authz filter: identity.dynamic_metadata cannot be set from Wasm; upstream gets the identity headers only"
            );
        }
        self.set_tick_period(engine.in_proxy().poll_interval);
        self.metrics = Metrics::define();
        self.engine = Some(Rc::new(RefCell::new(engine)));
        self.poll();
        true
    }

    fn on_tick(&mut self) {
        self.poll();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a configuration Envoy does not create contexts; if it did, the request
        // gets a context with no engine, which denies.
        Some(Box::new(Request {
            engine: self.engine.clone(),
            metrics: self.metrics,
            token: None,
            pending: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Root {
    fn poll(&mut self) {
        let Some(engine) = &self.engine else { return };
        if self.polling.is_some() {
            return;
        }
        let (cluster, path, timeout) = {
            let engine = engine.borrow();
            let in_proxy = engine.in_proxy();
            (
                in_proxy.cluster.clone(),
                in_proxy.generation_path(),
                in_proxy.timeout,
            )
        };
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", "jwt-authz"),
        ];
        match self.dispatch_http_call(&cluster, headers, None, vec![], timeout) {
            Ok(id) => self.polling = Some(id),
            Err(status) => {
                Metrics::count(self.metrics.poll_failures);
                debug!("jwt-authz filter: cannot poll cluster {cluster}: {status:?}");
            }
        }
    }
}

/// Reads a callout's JSON answer, refusing one longer than [`MAX_ANSWER_BYTES`].
trait ReadAnswer: Context {
    fn read_answer<T: serde::de::DeserializeOwned>(&self, body_size: usize) -> Option<T> {
        if body_size == 0 || body_size > MAX_ANSWER_BYTES {
            return None;
        }
        let body = self.get_http_call_response_body(0, body_size)?;
        serde_json::from_slice(&body).ok()
    }
}

impl<C: Context> ReadAnswer for C {}

struct Request {
    engine: Option<Shared>,
    metrics: Metrics,
    /// The request's token, while its callout is in flight (never logged).
    token: Option<String>,
    /// A callout is in flight: the request waits for its answer.
    pending: bool,
}

impl Context for Request {
    fn on_http_call_response(&mut self, _: u32, _: usize, body_size: usize, _: usize) {
        let answer = (self.get_http_call_response_header(":status").as_deref() == Some("200"))
            .then(|| self.read_answer::<CheckAnswer>(body_size))
            .flatten();
        let verdict = match (answer, &self.engine) {
            (Some(answer), Some(engine)) => {
                let token = self.token.as_deref();
                hear(engine, |e| e.answered(token, answer, now_ms()))
            }
            (None, Some(engine)) => {
                Metrics::count(self.metrics.callout_failures);
                debug!("jwt-authz sidecar gave no usable answer: 503");
                engine.borrow().unavailable()
            }
            (_, None) => unconfigured(),
        };
        self.token = None;
        self.pending = false;
        if self.apply(verdict) {
            self.resume_http_request();
        }
    }
}

impl HttpContext for Request {
    // While a callout is in flight nothing of the request goes on: Envoy already stops at a
    // paused header callback, and these say so again should a body or trailers arrive.
    fn on_http_request_body(&mut self, _: usize, _: bool) -> Action {
        if self.pending {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        if self.pending {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(engine) = self.engine.clone() else {
            self.apply(unconfigured());
            return Action::Pause;
        };
        // Values as bytes: Envoy passes bytes 0x80-0xFF through, and proxy-wasm's `String`
        // reader panics on them, which would take this worker's filter down for every later
        // request. A value that is not UTF-8 is read with U+FFFD in place of what is not: no
        // token is, so it cannot pass for one, and the callout forwards it so.
        let pairs: Vec<(String, String)> = self
            .get_http_request_headers_bytes()
            .into_iter()
            .map(|(name, value)| {
                let value = String::from_utf8(value)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                (name, value)
            })
            .collect();
        let read = RequestHeaders::read(&pairs);
        let incoming = read.incoming();
        let (step, counter) = engine.borrow_mut().decide(&incoming, now_ms());
        self.metrics.decided(counter);
        match step {
            Step::Decided(verdict) => {
                if self.apply(verdict) {
                    Action::Continue
                } else {
                    Action::Pause
                }
            }
            Step::Callout => {
                let (cluster, path, timeout) = {
                    let engine = engine.borrow();
                    let in_proxy = engine.in_proxy();
                    (
                        in_proxy.cluster.clone(),
                        in_proxy.check_path(incoming.target),
                        in_proxy.timeout,
                    )
                };
                let token = engine.borrow().token_of(&incoming);
                let original = Original {
                    method: incoming.method,
                    host: incoming.host,
                    headers: &pairs,
                };
                self.callout(&engine, &cluster, &path, timeout, &original, token)
            }
        }
    }
}

/// What a callout copies from the original request.
struct Original<'r> {
    method: &'r str,
    host: &'r str,
    headers: &'r [(String, String)],
}

impl Request {
    /// Asks the sidecar about the request (`path`: the callout's own), pausing it until
    /// the answer; a call that cannot be made is a 503.
    fn callout(
        &mut self,
        engine: &Shared,
        cluster: &str,
        path: &str,
        timeout: Duration,
        original: &Original<'_>,
        token: Option<String>,
    ) -> Action {
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(original.headers.len() + 4);
        headers.push((":method", "GET"));
        headers.push((":path", path));
        headers.push((":authority", original.host));
        headers.push((METHOD_HEADER, original.method));
        // Only what the decision reads (an allowlist: not the proxy's `x-envoy-*`, not what
        // a client adds); never a copy of the method header, which is the filter's own.
        let engine_ref = engine.borrow();
        headers.extend(
            original
                .headers
                .iter()
                .filter(|(n, _)| {
                    let name = n.to_ascii_lowercase();
                    engine_ref.forwards(&name) && name != METHOD_HEADER
                })
                .map(|(n, v)| (n.as_str(), v.as_str())),
        );
        drop(engine_ref);
        Metrics::count(self.metrics.callouts);
        match self.dispatch_http_call(cluster, headers, None, vec![], timeout) {
            Ok(_) => {
                self.token = token;
                self.pending = true;
                Action::Pause
            }
            Err(status) => {
                Metrics::count(self.metrics.callout_failures);
                debug!("jwt-authz filter: cannot call cluster {cluster}: {status:?}: 503");
                let verdict = engine.borrow().unavailable();
                if self.apply(verdict) {
                    Action::Continue
                } else {
                    Action::Pause
                }
            }
        }
    }

    /// Applies a verdict to the request: header changes (then `true`: let it go on), or the
    /// denial sent to the client (`false`).
    fn apply(&self, verdict: WireVerdict) -> bool {
        match verdict {
            WireVerdict::Allow { set, remove, .. } => {
                for name in &remove {
                    self.set_http_request_header(name, None);
                }
                for (name, value) in &set {
                    self.set_http_request_header(name, Some(value));
                }
                // The mark the guard after this filter lets through (see [`DECIDED`]); a
                // request that cannot carry it is refused here rather than there.
                if proxy_wasm::hostcalls::set_property(vec![DECIDED], Some(b"1")).is_err() {
                    error!("jwt-authz filter: cannot mark the request as decided: 503");
                    let verdict = match &self.engine {
                        Some(engine) => engine.borrow().unavailable(),
                        None => unconfigured(),
                    };
                    return self.apply(verdict);
                }
                true
            }
            WireVerdict::Deny {
                status,
                headers,
                body,
            } => {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                // Envoy leaves the body out of a local reply to HEAD.
                self.send_http_response(u32::from(status), headers, Some(body.as_bytes()));
                false
            }
        }
    }
}

/// A request that reached a filter without a usable configuration (Envoy does not create
/// contexts then; this is only the fail-closed answer if it ever did).
fn unconfigured() -> WireVerdict {
    Verdict::Deny(Deny::SidecarUnavailable.denial("jwt-authz")).into()
}
