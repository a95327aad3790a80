//! The test kit every test binary shares: keys and tokens signed here with aws-lc directly
//! (independently of the verifier under test), a JWKS server on loopback, Check requests and
//! how to read their answers, DPoP proofs, and the launchers of the real components (Envoy,
//! nginx, Caddy, Traefik, Redis, an OTLP sink, the workspace's own binaries and images) with
//! their configurations rendered from the shipped templates.
//!
//! - here: keys, tokens, the JWKS server, Check requests and answers, metrics;
//! - [`stack`]: a whole stack (sidecar, issuer, services, a proxy) as processes;
//! - [`envoy`]: Envoy started from a bootstrap written for one test;
//! - [`gateway`], [`redis`], [`otlp`], [`tls`], [`docker`]: the other components;
//! - [`dpop`]: a DPoP client (proofs for requests and logins).
//!
//! It depends on none of the crates it tests (only the health probe), so that they may use
//! it without a dependency loop.

pub mod bins;
pub mod docker;
pub mod dpop;
pub mod envoy;
pub mod gateway;
pub mod jws;
pub mod otlp;
pub mod redis;
pub mod stack;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self, KeyPair as _};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const ISSUER: &str = "https://issuer.test";
/// The demo stack's answer to a request without a token: a Bearer and a DPoP challenge
/// (its provider takes DPoP optionally, with the default proof algorithms).
pub const DEMO_CHALLENGE: &str = "Bearer realm=\"jwt-authz-demo\", DPoP realm=\"jwt-authz-demo\", algs=\"ES256 RS256 PS256 EdDSA\"";
pub const AUDIENCE: &str = "api";

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Standard claims for a token that should be accepted.
pub fn claims(sub: &str) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "username": format!("{sub}-name"),
        "role": "user",
        "iat": now(),
        "nbf": now(),
        "exp": now() + 600,
    })
}

enum Signer {
    Rsa(signature::RsaKeyPair),
    Ec256(signature::EcdsaKeyPair),
    Ed25519(signature::Ed25519KeyPair),
}

/// A signing key with its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: &'static str,
    signer: Signer,
}

impl TestKey {
    pub fn rsa(kid: &str) -> Self {
        let pair = signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("generate RSA key");
        Self {
            kid: kid.to_owned(),
            alg: "RS256",
            signer: Signer::Rsa(pair),
        }
    }

    /// The same RSA key used for PS256.
    pub fn rsa_pss(kid: &str) -> Self {
        Self {
            alg: "PS256",
            ..Self::rsa(kid)
        }
    }

    pub fn ec256(kid: &str) -> Self {
        let pair = signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .expect("generate EC key");
        Self {
            kid: kid.to_owned(),
            alg: "ES256",
            signer: Signer::Ec256(pair),
        }
    }

    pub fn ed25519(kid: &str) -> Self {
        let pair = signature::Ed25519KeyPair::generate().expect("generate Ed25519 key");
        Self {
            kid: kid.to_owned(),
            alg: "EdDSA",
            signer: Signer::Ed25519(pair),
        }
    }

    /// The public JWK, with `kid` and `alg`.
    pub fn jwk(&self) -> Value {
        let public = match &self.signer {
            Signer::Rsa(pair) => jws::rsa_public_jwk(pair),
            Signer::Ec256(pair) => jws::p256_public_jwk(pair),
            Signer::Ed25519(pair) => jws::ed25519_public_jwk(pair),
        };
        jws::published(public, &self.kid, self.alg)
    }

    /// The RSA public key as DER (PKCS#1), the "secret" of the HS256 confusion attack.
    pub fn public_key_der(&self) -> Vec<u8> {
        match &self.signer {
            Signer::Rsa(pair) => pair.public_key().as_ref().to_vec(),
            Signer::Ec256(pair) => pair.public_key().as_ref().to_vec(),
            Signer::Ed25519(pair) => pair.public_key().as_ref().to_vec(),
        }
    }

    pub fn sign_raw(&self, message: &[u8]) -> Vec<u8> {
        match &self.signer {
            Signer::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match self.alg {
                    "PS256" => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                jws::rsa_sign(pair, padding, message)
            }
            Signer::Ec256(pair) => jws::es256_sign(pair, message),
            Signer::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
        }
    }

    /// A compact JWS over `header` and `claims`, signed with this key whatever `header` says.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        jws::compact(header, claims, |message| self.sign_raw(message))
    }

    /// A token with the usual header (`alg`, `kid`, `typ`).
    pub fn token(&self, claims: &Value) -> String {
        self.sign(
            &json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }
}

/// A token signed with HMAC-SHA256 under `secret`.
pub fn hs256_token(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, message.as_bytes());
    format!("{message}.{}", b64(tag.as_ref()))
}

#[derive(Default)]
struct JwksState {
    keys: Vec<Value>,
    /// Documents served at `/status/{name}`: body and ETag.
    documents: HashMap<String, (String, Option<String>)>,
    document_fetches: HashMap<String, usize>,
    cache_control: Option<String>,
    failing: bool,
    delay: Duration,
}

/// A JWKS (and OIDC discovery) server on loopback whose keys and health tests control.
pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<JwksState>>,
    fetches: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), keys).await
    }

    pub async fn start_on(addr: SocketAddr, keys: Vec<Value>) -> Self {
        let state = Arc::new(Mutex::new(JwksState {
            keys,
            ..Default::default()
        }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let listener = TcpListener::bind(addr).await.expect("bind JWKS server");
        let addr = listener.local_addr().expect("local addr");
        let discovery = json!({
            "issuer": format!("http://{addr}"),
            "jwks_uri": format!("http://{addr}/jwks.json"),
        })
        .to_string();
        let app = Router::new()
            .route("/jwks.json", get(serve_jwks))
            .route("/status/{name}", get(serve_document))
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { discovery }),
            )
            .with_state((Arc::clone(&state), Arc::clone(&fetches)));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            state,
            fetches,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// The issuer named by this server's OIDC discovery document.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        self.state.lock().expect("lock").keys = keys;
    }

    pub fn set_cache_control(&self, value: &str) {
        self.state.lock().expect("lock").cache_control = Some(value.to_owned());
    }

    /// Answer every fetch only after `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().expect("lock").delay = delay;
    }

    /// Answer 500 to every fetch (the server stays up).
    pub fn set_failing(&self, failing: bool) {
        self.state.lock().expect("lock").failing = failing;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// The URL of the document `name` (see [`JwksServer::set_document`]).
    pub fn document_url(&self, name: &str) -> String {
        format!("http://{}/status/{name}", self.addr)
    }

    /// Serves `body` at `/status/{name}` as a Status List Token, with an ETag when given
    /// (a matching `If-None-Match` gets 304). `REDIRECT <url>` answers 302 to `url`, and
    /// `NOT_MODIFIED` answers 304 to every request.
    pub fn set_document(&self, name: &str, body: &str, etag: Option<&str>) {
        self.state
            .lock()
            .expect("lock")
            .documents
            .insert(name.to_owned(), (body.to_owned(), etag.map(str::to_owned)));
    }

    /// How many times `/status/{name}` was requested.
    pub fn document_fetches(&self, name: &str) -> usize {
        let state = self.state.lock().expect("lock");
        state.document_fetches.get(name).copied().unwrap_or(0)
    }

    /// Stops listening (new connections are refused); a pooled connection that outlives the
    /// listener gets 500s, so the JWKS is unreachable either way.
    pub fn stop(&self) {
        self.set_failing(true);
        self.task.abort();
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type JwksShared = (Arc<Mutex<JwksState>>, Arc<AtomicUsize>);

async fn serve_jwks(State((state, fetches)): State<JwksShared>) -> Response {
    fetches.fetch_add(1, Ordering::SeqCst);
    let delay = state.lock().expect("lock").delay;
    tokio::time::sleep(delay).await;
    let state = state.lock().expect("lock");
    if state.failing {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(cc) = &state.cache_control {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_str(cc).expect("cache-control"),
        );
    }
    (headers, json!({"keys": state.keys}).to_string()).into_response()
}

async fn serve_document(
    State((state, _)): State<JwksShared>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let delay = {
        let mut state = state.lock().expect("lock");
        *state.document_fetches.entry(name.clone()).or_default() += 1;
        state.delay
    };
    tokio::time::sleep(delay).await;
    let state = state.lock().expect("lock");
    if state.failing {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let Some((body, etag)) = state.documents.get(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Misbehaving servers: a redirect, or 304 whatever was asked.
    if let Some(location) = body.strip_prefix("REDIRECT ") {
        return (
            StatusCode::FOUND,
            [(
                header::LOCATION,
                HeaderValue::from_str(location).expect("location"),
            )],
        )
            .into_response();
    }
    if body == "NOT_MODIFIED" {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mut out = HeaderMap::new();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/statuslist+jwt"),
    );
    if let Some(etag) = etag {
        if headers
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == etag.as_bytes())
        {
            return (StatusCode::NOT_MODIFIED, out).into_response();
        }
        out.insert(header::ETAG, HeaderValue::from_str(etag).expect("etag"));
    }
    (out, body.clone()).into_response()
}

/// A config document for one provider whose JWKS is at `jwks_url`, with short intervals so
/// that tests run fast; `extra` is appended verbatim (rules, identity, ...).
pub fn config_yaml(jwks_url: &str, extra: &str) -> String {
    format!(
        r#"
listen:
  grpc: 127.0.0.1:0
  admin: 127.0.0.1:0
realm: test
providers:
  - name: test
    issuer: {ISSUER}
    audiences: [{AUDIENCE}, other-api]
    jwks:
      uri: {jwks_url}
    algorithms: [RS256, PS256, ES256, EdDSA]
    leeway: 5s
    jwks_cache:
      min_ttl: 1s
      max_ttl: 1h
      unknown_kid_interval: 1s
      fetch_timeout: 2s
      max_retry_interval: 1s
{extra}
"#
    )
}

/// The value of the first sample of metric `name` (OpenMetrics text) whose labels include
/// every `labels` pair; 0 when there is none.
pub fn metric(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// [`metric`] as the jwt-authz whose admin port is `admin` reports it now.
pub async fn admin_metric(admin: u16, name: &str, labels: &[(&str, &str)]) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    metric(&text, name, labels)
}

/// A Status List Token for `uri` signed by `key`: `sub`, `iat` (now), `exp` (in 10 min),
/// `ttl` 1 s and `list`; `extra` claims are merged over those (`null` removes one).
pub fn list_token(key: &TestKey, uri: &str, list: &Value, extra: Value) -> String {
    let mut claims = json!({
        "sub": uri,
        "iat": now(),
        "exp": now() + 600,
        "ttl": 1,
        "status_list": list,
    });
    merge(&mut claims, extra);
    key.sign(
        &json!({"alg": key.alg, "kid": key.kid, "typ": "statuslist+jwt"}),
        &claims,
    )
}

fn merge(claims: &mut Value, extra: Value) {
    if let (Some(claims), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        for (name, value) in extra {
            if value.is_null() {
                claims.remove(&name);
            } else {
                claims.insert(name, value);
            }
        }
    }
}

/// Rules for the path tests: a public prefix and an admin-only exact path, the pair that
/// crafted paths used to play against each other.
pub const PATH_RULES: &str = r#"
rules:
  - name: public
    match: {path: {prefix: /public/}}
    access: public
  - name: admin
    match: {path: {exact: /api/users}}
    access:
      claims:
        - {claim: role, any_of: [admin]}
"#;

/// A Check request as Envoy sends it (lowercase header names).
pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    request_with(method, path, "api.test", headers, HashMap::new())
}

pub fn request_with(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    context_extensions: HashMap<String, String>,
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    host: host.to_owned(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ..Default::default()
                }),
            }),
            context_extensions,
            ..Default::default()
        }),
    }
}

/// `request` as Envoy describes it for a client that used `scheme` (`http.scheme`, which
/// the DPoP `htu` check reads).
pub fn with_scheme(mut request: CheckRequest, scheme: &str) -> CheckRequest {
    if let Some(http) = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.scheme = scheme.to_owned();
    }
    request
}

/// The gRPC code in the response's status (0 = OK).
pub fn grpc_code(response: &CheckResponse) -> i32 {
    response.status.as_ref().map_or(-1, |s| s.code)
}

/// The HTTP status of a denial, or `None` for an OK answer.
pub fn denied_status(response: &CheckResponse) -> Option<i32> {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map(|s| s.code),
        _ => None,
    }
}

/// The denial's headers and body.
pub fn denial(response: &CheckResponse) -> (HashMap<String, String>, Value) {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => (
            d.headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            serde_json::from_str(&d.body).expect("JSON body"),
        ),
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// Headers set and removed by an OK answer.
pub fn allowed(response: &CheckResponse) -> (HashMap<String, String>, Vec<String>) {
    assert_eq!(grpc_code(response), 0, "expected OK, got {response:?}");
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            for h in &ok.headers {
                assert_eq!(
                    h.append_action, 2,
                    "identity headers must overwrite (OVERWRITE_IF_EXISTS_OR_ADD)"
                );
            }
            (
                ok.headers
                    .iter()
                    .filter_map(|h| h.header.as_ref())
                    .map(|h| (h.key.clone(), h.value.clone()))
                    .collect(),
                ok.headers_to_remove.clone(),
            )
        }
        other => panic!("expected an OK response, got {other:?}"),
    }
}

/// Asserts a 401 `invalid_token` denial with this description.
pub fn assert_invalid_token(response: &CheckResponse, description: &str) {
    assert_eq!(denied_status(response), Some(401), "{response:?}");
    assert_eq!(grpc_code(response), 16, "UNAUTHENTICATED");
    let (headers, body) = denial(response);
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["error_description"], description);
    assert_eq!(
        headers.get("www-authenticate").map(String::as_str),
        Some(
            format!(
                "Bearer realm=\"test\", error=\"invalid_token\", error_description=\"{description}\""
            )
            .as_str()
        )
    );
}
