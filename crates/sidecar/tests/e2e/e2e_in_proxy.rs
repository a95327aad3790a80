//! In-proxy mode end to end: the real Envoy 1.40 with jwt-authz's Wasm filter (V8), the
//! sidecar answering its callouts, an upstream that echoes what it received. The same
//! allow/deny/spoof/public/path answers as through ext_authz; a token the filter holds is
//! decided inside Envoy (its counters say so, and it keeps working with the sidecar gone,
//! within the bound); key removal reaches the filter's cache; no answer fails closed.

use std::time::{Duration, Instant};

use crate::support::bins::free_port;
use crate::support::envoy::{
    Envoy, echo_upstream, envoy_stat, filter_wasm, in_proxy_config, in_proxy_guard,
};
use crate::support::{PATH_RULES, TestKey, TestServer, claims, config_yaml, now};
use serde_json::json;

/// Fast polls and a short confirmation bound, so the bounds can be watched in a test.
const IN_PROXY: &str = "in_proxy: {poll_interval: 200ms, max_unconfirmed: 2s, timeout: 1s}\n";

const CACHED: &str = "wasmcustom.jwt_authz_filter_decided_cached";
const CALLOUTS: &str = "wasmcustom.jwt_authz_filter_callouts";
const MISMATCH: &str = "wasmcustom.jwt_authz_filter_config_mismatch_callouts";

struct InProxy {
    jwks: crate::support::JwksServer,
    key: TestKey,
    sidecar: Option<TestServer>,
    envoy: Envoy,
    admin: u16,
}

/// The sidecar (in this process), and Envoy with the filter given the sidecar's own YAML;
/// `None` when no filter could be built (the reason is printed).
async fn start(extra: &str) -> Option<InProxy> {
    let wasm = filter_wasm()?;
    let key = TestKey::rsa("k1");
    let jwks = crate::support::JwksServer::start(vec![key.jwk()]).await;
    let yaml = config_yaml(&jwks.url(), &format!("{PATH_RULES}{extra}{IN_PROXY}"));
    let sidecar = TestServer::start_ready(&yaml).await;
    let upstream = echo_upstream().await;
    let ports = (free_port(), free_port());
    let config = in_proxy_config(ports, sidecar.http.port(), upstream, &wasm, &yaml);
    let envoy = Envoy::start_config(ports, &config);
    let proxy = InProxy {
        jwks,
        key,
        sidecar: Some(sidecar),
        envoy,
        admin: ports.1,
    };
    // The filter's first poll confirms the sidecar's key sets.
    proxy.eventually_decided_in_proxy().await;
    Some(proxy)
}

impl InProxy {
    async fn stat(&self, name: &str) -> u64 {
        envoy_stat(self.admin, name).await
    }

    /// Waits until a held token is decided inside Envoy (the first poll has answered).
    async fn eventually_decided_in_proxy(&self) {
        let token = self.key.token(&claims("warm-up"));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let before = self.stat(CACHED).await;
            let (status, _) = self.envoy.get("/api/orders", Some(&token)).await;
            assert_eq!(status, 200);
            if self.stat(CACHED).await > before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the filter never decided a held token in-proxy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envoy_matrix_answers_the_same_in_proxy() {
    let Some(p) = start("").await else { return };
    let user = p.key.token(&claims("u-1"));
    let mut admin_claims = claims("u-2");
    admin_claims["role"] = json!("admin");
    let admin = p.key.token(&admin_claims);
    let mut expired = claims("u-1");
    expired["exp"] = json!(now() - 600);
    let expired = p.key.token(&expired);
    let forged = TestKey::rsa("k1").token(&claims("u-1"));

    // Twice each: the first may be a callout, the second is decided with held claims; the
    // answers must not differ.
    for round in 0..2 {
        let (status, body) = p.envoy.get("/api/orders", Some(&user)).await;
        assert_eq!(status, 200, "round {round}");
        assert_eq!(
            body["user"], "u-1",
            "identity from the token, forged one gone"
        );
        assert_eq!(body["role"], "user");
        let (status, body) = p.envoy.get("/api/users", Some(&user)).await;
        assert_eq!(status, 403, "round {round}: role admin required: {body}");
        assert_eq!(body["error"], "insufficient_scope");
        let (status, body) = p.envoy.get("/api/users", Some(&admin)).await;
        assert_eq!((status, &body["role"]), (200, &json!("admin")));
        // Dot-segments are resolved before rules match: not public.
        let (status, _) = p.envoy.get("/public/../api/users", Some(&user)).await;
        assert_eq!(status, 403, "round {round}");
        let (status, _) = p.envoy.get("/public/%2e%2e/api/users", Some(&user)).await;
        assert_eq!(status, 403, "round {round}");
        let (status, _) = p.envoy.get("/api/orders%2Fx", Some(&user)).await;
        assert_eq!(status, 400, "an escaped slash is refused");
        // Public: no token needed, every forged identity header removed.
        let (status, body) = p.envoy.get("/public/doc", None).await;
        assert_eq!(
            (status, &body["user"], &body["role"]),
            (200, &json!(null), &json!(null))
        );
        // Denials.
        let (status, body) = p.envoy.get("/api/orders", None).await;
        assert_eq!((status, &body["error"]), (401, &json!("invalid_request")));
        for bad in [&expired, &forged, &"not.a.token".to_owned()] {
            let (status, body) = p.envoy.get("/api/orders", Some(bad)).await;
            assert_eq!((status, &body["error"]), (401, &json!("invalid_token")));
        }
    }
    // The second round's token requests were decided in-proxy: one callout per distinct
    // token at most (plus the never-held invalid ones, asked each time).
    let callouts = p.stat(CALLOUTS).await;
    let cached = p.stat(CACHED).await;
    assert!(cached >= 8, "held tokens decided in-proxy: {cached}");
    assert!(callouts <= 2 + 3 * 2 + 1, "callouts {callouts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_gone_held_tokens_last_only_within_the_bound_others_fail_closed() {
    let Some(mut p) = start("").await else { return };
    let held = p.key.token(&claims("held"));
    assert_eq!(p.envoy.get("/api/orders", Some(&held)).await.0, 200);
    p.sidecar.take().expect("sidecar").shutdown().await;
    let stopped = Instant::now();

    // A new token cannot be verified: 503, never let through.
    let fresh = p.key.token(&claims("fresh"));
    let (status, body) = p.envoy.get("/api/orders", Some(&fresh)).await;
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("temporarily_unavailable"))
    );
    // The held one works in-proxy while the last confirmation is recent (2 s)...
    let (status, body) = p.envoy.get("/api/orders", Some(&held)).await;
    if stopped.elapsed() < Duration::from_millis(1500) {
        assert_eq!((status, &body["user"]), (200, &json!("held")));
    }
    // ...and not past it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, _) = p.envoy.get("/api/orders", Some(&held)).await;
    assert_eq!(status, 503, "held claims past max_unconfirmed");
    // What needs no sidecar still works: a public path.
    assert_eq!(p.envoy.get("/public/doc", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_keys_held_tokens_stop_working_within_the_bound() {
    let Some(p) = start("").await else { return };
    let held = p.key.token(&claims("held"));
    for _ in 0..2 {
        assert_eq!(p.envoy.get("/api/orders", Some(&held)).await.0, 200);
    }
    let before = p.stat(CACHED).await;
    assert_eq!(p.envoy.get("/api/orders", Some(&held)).await.0, 200);
    assert!(p.stat(CACHED).await > before, "held in-proxy");

    let next = TestKey::rsa("k2");
    p.jwks.set_keys(vec![next.jwk()]);
    let removed = Instant::now();
    // The sidecar refetches within its min_ttl (1 s in tests); the filter's poll (200 ms)
    // sees the new generation and drops what it holds.
    let mut status = 200;
    while status == 200 && removed.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = p.envoy.get("/api/orders", Some(&held)).await.0;
    }
    assert_eq!(status, 401, "the removed key's token refused");
    let took = removed.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The new key's tokens work, held again after one callout.
    let fresh = next.token(&claims("fresh"));
    assert_eq!(p.envoy.get("/api/orders", Some(&fresh)).await.0, 200);
    assert_eq!(p.envoy.get("/api/orders", Some(&fresh)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_every_valid_token_working_and_empties_the_cache_once() {
    let Some(p) = start("").await else { return };
    let old = p.key.token(&claims("old"));
    for _ in 0..2 {
        assert_eq!(p.envoy.get("/api/orders", Some(&old)).await.0, 200);
    }
    // A second key published beside the first: the generation changes, the filter drops
    // what it holds, and the old key's token is verified again (one callout), then held.
    let next = TestKey::rsa("k2");
    p.jwks.set_keys(vec![p.key.jwk(), next.jwk()]);
    let new = next.token(&claims("new"));
    let started = Instant::now();
    loop {
        let (status, _) = p.envoy.get("/api/orders", Some(&new)).await;
        if status == 200 {
            break;
        }
        assert_eq!(
            status, 401,
            "the new key's token before the sidecar has the key"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "new key never used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Throughout and after, the old token never fails.
    for _ in 0..20 {
        let (status, body) = p.envoy.get("/api/orders", Some(&old)).await;
        assert_eq!((status, &body["user"]), (200, &json!("old")));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An answer is held only under the generation the last poll gave: the new token's first
    // answers may have come before the poll caught up, so one more round holds it.
    for token in [&new, &old] {
        assert_eq!(p.envoy.get("/api/orders", Some(token)).await.0, 200);
    }
    let before = p.stat(CACHED).await;
    assert_eq!(p.envoy.get("/api/orders", Some(&new)).await.0, 200);
    assert_eq!(p.envoy.get("/api/orders", Some(&old)).await.0, 200);
    assert!(p.stat(CACHED).await >= before + 2, "both held again");
}

/// A rule changed in the sidecar only (its configuration reloaded; the filter's plugin
/// configuration, which Envoy holds, not): from the filter's next poll on (at most
/// `poll_interval`, 200 ms here), every request is decided by the sidecar's new rule, the
/// token the filter held included, and stays so: while the two configurations differ the
/// filter holds nothing and decides nothing itself, and says so in its counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_changed_in_the_sidecar_only_is_enforced_through_the_filter() {
    let Some(p) = start("").await else { return };
    let token = p.key.token(&claims("u-1"));
    for _ in 0..2 {
        assert_eq!(p.envoy.get("/api/orders", Some(&token)).await.0, 200);
    }
    let before = p.stat(CACHED).await;
    assert_eq!(p.envoy.get("/api/orders", Some(&token)).await.0, 200);
    assert!(p.stat(CACHED).await > before, "held and decided in Envoy");
    assert_eq!(p.stat(MISMATCH).await, 0, "the configurations agree");

    let orders_for_admins = "  - name: orders-admin\n    match: {path: {prefix: /api/orders}}\n    access:\n      claims:\n        - {claim: role, any_of: [admin]}\n";
    let yaml = config_yaml(
        &p.jwks.url(),
        &format!("{PATH_RULES}{orders_for_admins}{IN_PROXY}"),
    );
    let sidecar = p.sidecar.as_ref().expect("sidecar");
    sidecar
        .server
        .reload(jwt_authz::Config::from_yaml(&yaml).expect("valid"))
        .await
        .expect("reloaded");
    let reloaded = Instant::now();
    loop {
        let (status, _) = p.envoy.get("/api/orders", Some(&token)).await;
        if status == 403 {
            break;
        }
        assert_eq!(status, 200, "the old rule, until the filter's next poll");
        assert!(
            reloaded.elapsed() < Duration::from_secs(2),
            "the sidecar's new rule never reached the filter"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cached = p.stat(CACHED).await;
    // Over five polls and more: never the old rule again, never decided in Envoy.
    for _ in 0..25 {
        assert_eq!(p.envoy.get("/api/orders", Some(&token)).await.0, 403);
        assert_eq!(p.envoy.get("/public/doc", None).await.0, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        p.stat(CACHED).await,
        cached,
        "nothing decided from held claims"
    );
    assert!(p.stat(MISMATCH).await >= 50, "{}", p.stat(MISMATCH).await);
}

/// What Envoy logs when a worker's copy of a Wasm VM cannot be started.
const WORKER_VM_FAILED: &str = "Failed to create new Wasm instance";

/// Envoy 1.40 leaves a Wasm filter out of a worker's requests when that worker's copy of the
/// VM cannot be started, whatever `failure_policy` says: the requests go on as if the filter
/// were not configured. The shipped configurations follow the filter with a guard (an RBAC
/// filter letting through only requests the filter marked as decided). Here the worker's VM
/// fails as on a host short of memory: Envoy's address space is limited (`ulimit -v`) to
/// leave room for the main thread's VM but not the worker's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_filter_could_not_start_lets_nothing_through() {
    let Some(wasm) = filter_wasm() else { return };
    let key = TestKey::rsa("k1");
    let jwks = crate::support::JwksServer::start(vec![key.jwk()]).await;
    let yaml = config_yaml(&jwks.url(), &format!("{PATH_RULES}{IN_PROXY}"));
    let sidecar = TestServer::start_ready(&yaml).await;
    let upstream = echo_upstream().await;
    let token = key.token(&claims("someone"));
    let config = |ports| in_proxy_config(ports, sidecar.http.port(), upstream, &wasm, &yaml);

    // V8 reserves several GiB of address space per VM; the window where the main thread's
    // fits and the worker's does not is a few GiB wide (22-28 GiB on our machines).
    let failed_worker = |guarded: bool, gib: u64| {
        let ports = (free_port(), free_port());
        let mut text = config(ports);
        if !guarded {
            text = text.replace(&in_proxy_guard(), "");
        }
        let envoy = Envoy::start_config_limited(ports, &text, gib << 20)?;
        std::thread::sleep(Duration::from_millis(500));
        envoy.log().contains(WORKER_VM_FAILED).then_some(envoy)
    };
    let Some((gib, guarded)) = [25, 24, 26, 23, 27, 22, 28]
        .into_iter()
        .find_map(|gib| failed_worker(true, gib).map(|envoy| (gib, envoy)))
    else {
        panic!("no address-space limit made the worker's Wasm VM fail with Envoy still up");
    };
    for (path, token) in [
        ("/api/orders", Some(&token)),
        ("/api/orders", None),
        ("/public/doc", None),
    ] {
        let (status, body) = guarded.get(path, token.map(String::as_str)).await;
        assert_eq!(status, 403, "{path} with the filter left out: {body}");
    }
    drop(guarded);

    // Why the guard is there: the same Envoy without it lets the request through to the
    // upstream unchecked, the client's own identity headers with it.
    let unguarded = failed_worker(false, gib).expect("the same limit fails the same way");
    let (status, body) = unguarded.get("/api/orders", None).await;
    assert_eq!(
        (status, &body["user"]),
        (200, &json!("forged")),
        "Envoy's own behaviour changed: {body}"
    );
}

/// Sends `raw` to Envoy as it is and returns the response's status.
async fn raw_status(port: u16, raw: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to envoy");
    stream.write_all(raw).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text}"))
}

/// Envoy passes header bytes 0x80-0xFF through (a Latin-1 cookie sent by accident). The
/// filter reads them instead of crashing, which would leave that worker answering 503 to
/// every later request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_that_is_not_utf8_does_not_take_the_filter_down() {
    let Some(p) = start("").await else { return };
    let public = b"GET /public/doc HTTP/1.1\r\nhost: api.test\r\nx-note: caf\xe9\r\nconnection: close\r\n\r\n";
    assert_eq!(raw_status(p.envoy.port, public).await, 200);
    // In the token's own header it is a malformed token like any other.
    let token = b"GET /api/orders HTTP/1.1\r\nhost: api.test\r\nauthorization: Bearer caf\xe9\r\nconnection: close\r\n\r\n";
    assert_eq!(raw_status(p.envoy.port, token).await, 401);
    // A request needing the sidecar, with the byte forwarded in its callout.
    let fresh = p.key.token(&claims("latin"));
    let callout = format!(
        "GET /api/orders HTTP/1.1\r\nhost: api.test\r\nauthorization: Bearer {fresh}\r\nx-note: caf"
    );
    let mut raw = callout.into_bytes();
    raw.extend_from_slice(b"\xe9\r\nconnection: close\r\n\r\n");
    assert_eq!(raw_status(p.envoy.port, &raw).await, 200);
    // The worker's filter still decides.
    let (status, body) = p.envoy.get("/api/orders", Some(&fresh)).await;
    assert_eq!((status, &body["user"]), (200, &json!("latin")));
    assert_eq!(p.envoy.get("/api/orders", None).await.0, 401);
}

/// A HEAD request whose token the filter does not hold is asked of the sidecar like any other
/// (the callout goes as GET and names the method: a HEAD callout's answer would come back
/// without its body, and the request would get 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_request_needing_the_sidecar_is_decided() {
    let Some(p) = start("").await else { return };
    let head = |token: Option<String>| {
        let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        format!("HEAD /api/orders HTTP/1.1\r\nhost: api.test\r\n{auth}connection: close\r\n\r\n")
    };
    let fresh = p.key.token(&claims("head"));
    assert_eq!(
        raw_status(p.envoy.port, head(Some(fresh)).as_bytes()).await,
        200
    );
    let mut expired = claims("head");
    expired["exp"] = json!(now() - 600);
    let expired = p.key.token(&expired);
    assert_eq!(
        raw_status(p.envoy.port, head(Some(expired)).as_bytes()).await,
        401
    );
}

/// A request with a body whose token needs a callout waits for the answer, then goes on
/// with its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_waits_for_its_callout() {
    let Some(p) = start("").await else { return };
    let body = "x".repeat(64 * 1024);
    let post = |token: &str| {
        format!(
            "POST /api/orders HTTP/1.1\r\nhost: api.test\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let fresh = p.key.token(&claims("poster"));
    assert_eq!(raw_status(p.envoy.port, post(&fresh).as_bytes()).await, 200);
    let mut expired = claims("poster");
    expired["exp"] = json!(now() - 600);
    let expired = p.key.token(&expired);
    assert_eq!(
        raw_status(p.envoy.port, post(&expired).as_bytes()).await,
        401
    );
}

/// Between Envoy and the sidecar, a recorder: every callout's headers are kept, and the
/// callout is passed on to the sidecar's HTTP port as it came.
async fn recording_proxy(
    sidecar_http: u16,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>) {
    use axum::body::Body;
    use axum::http::Request;
    let seen: std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>> = Default::default();
    let kept = std::sync::Arc::clone(&seen);
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |request: Request<Body>| {
        let (kept, client) = (std::sync::Arc::clone(&kept), client.clone());
        async move {
            let path = request
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            if path.contains("/check/") {
                let names = request
                    .headers()
                    .keys()
                    .map(|n| n.as_str().to_owned())
                    .collect();
                kept.lock().expect("lock").push(names);
            }
            let mut forwarded = client.get(format!("http://127.0.0.1:{sidecar_http}{path}"));
            for (name, value) in request.headers() {
                forwarded = forwarded.header(name, value);
            }
            let answer = forwarded.send().await.expect("sidecar answers");
            let status = answer.status().as_u16();
            let body = answer.bytes().await.expect("body");
            axum::http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .expect("response")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, seen)
}

/// A callout carries what the decision reads, and nothing else a client sent: not Envoy's
/// `x-envoy-*` (which Envoy itself would act on), not arbitrary headers, not cookies when no
/// provider reads one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callout_carries_only_what_the_decision_reads() {
    let Some(wasm) = filter_wasm() else { return };
    let key = TestKey::rsa("k1");
    let jwks = crate::support::JwksServer::start(vec![key.jwk()]).await;
    let yaml = config_yaml(&jwks.url(), &format!("{PATH_RULES}{IN_PROXY}"));
    let sidecar = TestServer::start_ready(&yaml).await;
    let (recorder, seen) = recording_proxy(sidecar.http.port()).await;
    let upstream = echo_upstream().await;
    let ports = (free_port(), free_port());
    let envoy = Envoy::start_config(
        ports,
        &in_proxy_config(ports, recorder, upstream, &wasm, &yaml),
    );
    // Once the filter has heard the sidecar's configuration is its own (a held token is
    // decided in Envoy), it forwards only what that configuration reads.
    let warm = key.token(&claims("warm-up"));
    let started = Instant::now();
    loop {
        let before = envoy_stat(ports.1, CACHED).await;
        assert_eq!(envoy.get("/api/orders", Some(&warm)).await.0, 200);
        if envoy_stat(ports.1, CACHED).await > before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never decided in Envoy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = key.token(&claims("u-allowlist"));
    let sent = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("x-envoy-retry-on", "5xx"),
        ("x-envoy-upstream-rq-timeout-ms", "1"),
        ("x-client-junk", "1"),
        ("cookie", "session=abc"),
        ("x-forwarded-for", "203.0.113.9"),
    ];
    let (status, _) = envoy.get_with("/api/orders", Some(&token), &sent).await;
    assert_eq!(status, 200);
    let callouts = seen.lock().expect("lock").clone();
    let names = callouts.last().expect("a callout was made");
    for wanted in ["authorization", "traceparent", "x-jwt-authz-method"] {
        assert!(names.iter().any(|n| n == wanted), "{wanted}: {names:?}");
    }
    for unwanted in [
        "x-envoy-retry-on",
        "x-envoy-upstream-rq-timeout-ms",
        "x-client-junk",
        "cookie",
    ] {
        assert!(
            !names.iter().any(|n| n == unwanted),
            "{unwanted}: {names:?}"
        );
    }
    drop(sidecar);
}
