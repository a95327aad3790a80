//! Cost curves: how the CPU cost of one check of a cached token grows with the
//! configuration, measured in-process (no network, so the figures are the decision's own).
//! Prints one JSON object; `make bench` charts it (docs/curve-*.svg).
//!
//! For each point a `Runtime` is built from a generated configuration, the token is checked
//! once (verified and cached), then `Runtime::check` runs in batches; the figure is the
//! fastest batch's nanoseconds per check. Dimensions:
//! - `rules`: 1..1,000 route rules (a third each exact, prefix, regex), the request matching
//!   the last; beside the whole check, the route lookup alone through the index
//!   (`Policy::route`) and trying every rule in order (`Policy::route_linear`).
//! - `providers`: 1..100 providers (chosen by `iss`), the token from the last.
//! - `keys`: 1..100 keys in the JWKS, the token signed by the last.
//! - `cached_tokens`: 1..1,000,000 entries in the verified-token cache, the cost of the
//!   lookup a cache hit does (entries inserted directly: verifying a million tokens would
//!   take minutes and measure the verification, not the cache).
//! - `identity_headers`: 3..30 claims mapped to headers, the token carrying all of them.
//! - `miss_path` (one point, not a curve): what a cache miss adds to a check, apart from the
//!   network: a whole check of a 2,048-bit RS256 token with the cache on (`cached_ns`) and
//!   off (`uncached_ns`, verified every time), and its signature check alone in aws-lc with
//!   the key prepared as a fetch prepares it (`signature_ns`). The miss path's own work is
//!   `uncached - cached - signature`: splitting, decoding and parsing the token, choosing
//!   provider and key, validating the claims, the check's timeout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::Ed25519KeyPair;
use clap::Parser;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use jwt_authz::Config;
use jwt_authz::obs::metrics::Metrics;
use jwt_authz::runtime::Runtime;
use jwt_authz::verify::token_cache::{TokenCache, token_hash};
use jwt_authz_bench::check_request;
use jwt_authz_core::request::{Incoming, RequestInfo};
use jwt_authz_core::token::VerifiedToken;
use serde_json::{Value, json};

#[derive(Parser)]
struct Cli {
    /// Where the generated JWKS files go.
    #[arg(long)]
    dir: PathBuf,
    /// Time spent measuring each point.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "400ms")]
    per_point: Duration,
}

const ROUNDS: usize = 15;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _guard = rt.enter();
    let bench = Bench { cli: &cli, rt: &rt };
    let mut points: Vec<Point<'_>> = Vec::new();
    for n in [1, 10, 100, 1000] {
        points.push(bench.rules(n)?);
    }
    for n in [1, 10, 100] {
        points.push(bench.providers(n)?);
    }
    for n in [1, 10, 100] {
        points.push(bench.keys(n)?);
    }
    for n in [3, 10, 30] {
        points.push(bench.identity_headers(n)?);
    }
    for n in [1, 1_000, 100_000, 1_000_000] {
        points.push(bench.cached_tokens(n));
    }
    points.push(bench.miss_path()?);
    // Every series is calibrated, then measured in interleaved rounds, so that drift on the
    // machine hits every point alike; each keeps its fastest batch.
    let mut best: Vec<Vec<f64>> = points
        .iter()
        .map(|p| vec![f64::INFINITY; p.series.len()])
        .collect();
    let mut sizes: Vec<Vec<u64>> = Vec::new();
    for point in &mut points {
        sizes.push(
            point
                .series
                .iter_mut()
                .map(|(_, f)| batch_size(cli.per_point / ROUNDS as u32, f))
                .collect(),
        );
    }
    for _ in 0..ROUNDS {
        for (p, point) in points.iter_mut().enumerate() {
            for (s, (_, f)) in point.series.iter_mut().enumerate() {
                let start = Instant::now();
                for _ in 0..sizes[p][s] {
                    f();
                }
                let ns = start.elapsed().as_nanos() as f64 / sizes[p][s] as f64;
                best[p][s] = best[p][s].min(ns);
            }
        }
    }
    let mut report = serde_json::Map::new();
    report.insert(
        "unit".into(),
        json!(format!(
            "ns per call, fastest of {ROUNDS} interleaved batches, one thread"
        )),
    );
    for (p, point) in points.iter().enumerate() {
        let mut row = serde_json::Map::new();
        row.insert("n".into(), json!(point.n));
        for (s, (name, _)) in point.series.iter().enumerate() {
            row.insert((*name).into(), json!(best[p][s]));
        }
        report
            .entry(point.dimension)
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .ok_or("not an array")?
            .push(Value::Object(row));
    }
    println!("{}", Value::Object(report));
    Ok(())
}

/// One point of one curve: its series (name, one call to time).
struct Point<'a> {
    dimension: &'static str,
    n: u64,
    series: Vec<(&'static str, Call<'a>)>,
}

/// One call to time.
type Call<'a> = Box<dyn FnMut() + 'a>;

/// Calls of `f` that take about `target`.
fn batch_size(target: Duration, f: &mut dyn FnMut()) -> u64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < target / 4 {
        f();
        calls += 1;
    }
    (calls * 4).max(1)
}

struct Bench<'a> {
    cli: &'a Cli,
    rt: &'a tokio::runtime::Runtime,
}

type PointResult<'a> = Result<Point<'a>, Box<dyn std::error::Error>>;

fn ed_key() -> Ed25519KeyPair {
    Ed25519KeyPair::generate().expect("Ed25519 key")
}

fn ed_jwk(key: &Ed25519KeyPair, kid: &str) -> Value {
    jwt_authz_bench::ed_jwk_as(key, kid)
}

fn sign(key: &Ed25519KeyPair, kid: &str, claims: &Value) -> String {
    jwt_authz_bench::sign_ed25519_as(key, kid, claims)
}

fn claims_for(issuer: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    json!({"iss": issuer, "aud": "bench", "sub": "user-1", "iat": now, "exp": now + 86_400})
}

fn provider_yaml(name: &str, issuer: &str, jwks: &Path) -> String {
    format!(
        "  - {{name: {name}, issuer: \"{issuer}\", audiences: [bench], algorithms: [EdDSA], jwks: {{file: {}}}}}\n",
        jwks.display()
    )
}

impl<'a> Bench<'a> {
    fn write_jwks(&self, name: &str, keys: Vec<Value>) -> std::io::Result<PathBuf> {
        let path = self.cli.dir.join(format!("curve-{name}.json"));
        std::fs::write(&path, json!({ "keys": keys }).to_string())?;
        Ok(path)
    }

    fn runtime(&self, yaml: &str) -> Result<Runtime, Box<dyn std::error::Error>> {
        let config = Config::from_yaml(yaml)?;
        let runtime = Runtime::start(
            config,
            None,
            reqwest::Client::new(),
            Arc::new(Metrics::new()),
            jwt_authz::obs::telemetry::Telemetry::off(),
        )?;
        self.rt.block_on(async {
            while !runtime.ready() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Ok(runtime)
    }

    /// One `Runtime::check` of `token` at `path` (checked once here, which caches it).
    fn check_call(&self, runtime: Runtime, token: &str, path: &str) -> Result<Call<'a>, String> {
        let mut request = check_request(Some(token))
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .ok_or("no http attributes")?;
        request.path = path.to_owned();
        let ext = HashMap::new();
        if !self.rt.block_on(check(&runtime, &request, &ext)) {
            return Err(format!("the benchmark token was denied at {path}"));
        }
        let rt = self.rt;
        Ok(Box::new(move || {
            std::hint::black_box(rt.block_on(check(&runtime, &request, &ext)));
        }))
    }

    fn rules(&self, n: usize) -> PointResult<'a> {
        let key = ed_key();
        let jwks = self.write_jwks("rules", vec![ed_jwk(&key, "k0")])?;
        let mut yaml = format!(
            "providers:\n{}rules:\n",
            provider_yaml("p", "https://p.test", &jwks)
        );
        for i in 0..n {
            let path = match i % 3 {
                0 => format!("{{exact: /svc{i}/items}}"),
                1 => format!("{{prefix: /svc{i}/}}"),
                _ => format!("{{regex: \"/svc{i}/[0-9]+\"}}"),
            };
            yaml.push_str(&format!(
                "  - {{name: r{i}, match: {{path: {path}, methods: [GET]}}, access: authenticated}}\n"
            ));
        }
        let last = match (n - 1) % 3 {
            0 => format!("/svc{}/items", n - 1),
            1 => format!("/svc{}/anything", n - 1),
            _ => format!("/svc{}/42", n - 1),
        };
        let runtime = self.runtime(&yaml)?;
        let token = sign(&key, "k0", &claims_for("https://p.test"));
        let check = self.check_call(runtime, &token, &last)?;
        let config = Config::from_yaml(&yaml)?;
        let policy = Arc::new(jwt_authz_core::policy::Policy::new(
            &config.rules,
            &config.paths,
            &config.provider_names(),
        )?);
        let ext = Arc::new(HashMap::new());
        let expected = format!("r{}", n - 1);
        if policy
            .route(&RequestInfo::new("GET", &last, "bench.test", &ext))
            .name
            != expected
        {
            return Err("the request does not match the last rule".into());
        }
        let route = {
            let (policy, ext, last) = (Arc::clone(&policy), Arc::clone(&ext), last.clone());
            Box::new(move || {
                let request = RequestInfo::new("GET", &last, "bench.test", &ext);
                std::hint::black_box(policy.route(std::hint::black_box(&request)).name.len());
            })
        };
        let linear = Box::new(move || {
            let request = RequestInfo::new("GET", &last, "bench.test", &ext);
            std::hint::black_box(
                policy
                    .route_linear(std::hint::black_box(&request))
                    .name
                    .len(),
            );
        });
        Ok(Point {
            dimension: "rules",
            n: n as u64,
            series: vec![
                ("check_ns", check),
                ("route_ns", route),
                ("route_linear_ns", linear),
            ],
        })
    }

    fn providers(&self, n: usize) -> PointResult<'a> {
        let mut yaml = String::from("providers:\n");
        let mut last = None;
        for i in 0..n {
            let key = ed_key();
            let jwks = self.write_jwks(&format!("providers-{i}"), vec![ed_jwk(&key, "k0")])?;
            let issuer = format!("https://p{i}.test");
            yaml.push_str(&provider_yaml(&format!("p{i}"), &issuer, &jwks));
            last = Some((key, issuer));
        }
        let (key, issuer) = last.ok_or("no provider")?;
        let runtime = self.runtime(&yaml)?;
        let token = sign(&key, "k0", &claims_for(&issuer));
        Ok(Point {
            dimension: "providers",
            n: n as u64,
            series: vec![("check_ns", self.check_call(runtime, &token, "/bench")?)],
        })
    }

    fn keys(&self, n: usize) -> PointResult<'a> {
        let keys: Vec<Ed25519KeyPair> = (0..n).map(|_| ed_key()).collect();
        let jwks = self.write_jwks(
            "keys",
            keys.iter()
                .enumerate()
                .map(|(i, k)| ed_jwk(k, &format!("k{i}")))
                .collect(),
        )?;
        let yaml = format!(
            "providers:\n{}",
            provider_yaml("p", "https://p.test", &jwks)
        );
        let runtime = self.runtime(&yaml)?;
        let last = keys.last().ok_or("no key")?;
        let token = sign(last, &format!("k{}", n - 1), &claims_for("https://p.test"));
        Ok(Point {
            dimension: "keys",
            n: n as u64,
            series: vec![("check_ns", self.check_call(runtime, &token, "/bench")?)],
        })
    }

    /// A cache miss against a hit, with the same RS256 token, and its signature check alone.
    fn miss_path(&self) -> PointResult<'a> {
        let key = aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|_| "cannot generate an RSA key")?;
        let jwk = jwt_authz_bench::rsa_jwk(&key);
        let jwks = self.write_jwks("miss", vec![jwk.clone()])?;
        let token = jwt_authz_bench::sign_rs256(&key, &jwt_authz_bench::claims(1));
        let provider = format!(
            "providers:\n  - name: bench\n    issuer: {}\n    audiences: [{}]\n    jwks: {{file: {}}}\n",
            jwt_authz_bench::ISSUER,
            jwt_authz_bench::AUDIENCE,
            jwks.display()
        );
        let cached = self.runtime(&provider)?;
        let uncached = self.runtime(&format!("{provider}token_cache: {{max_entries: 0}}\n"))?;
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk)?;
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk)?;
        let prepared =
            jwt_authz_jose::crypto::prepare(&decoding, &[jsonwebtoken::Algorithm::RS256]);
        let prepared = prepared.into_iter().next().ok_or("RSA key not prepared")?;
        let (message, signature) = token.rsplit_once('.').ok_or("not a JWS")?;
        let message = message.as_bytes().to_vec();
        let signature =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)?;
        if !prepared.verify(&message, &signature) {
            return Err("the benchmark signature does not verify".into());
        }
        Ok(Point {
            dimension: "miss_path",
            n: 1,
            series: vec![
                ("cached_ns", self.check_call(cached, &token, "/bench")?),
                ("uncached_ns", self.check_call(uncached, &token, "/bench")?),
                (
                    "signature_ns",
                    Box::new(move || {
                        std::hint::black_box(prepared.verify(&message, &signature));
                    }),
                ),
            ],
        })
    }

    fn identity_headers(&self, n: usize) -> PointResult<'a> {
        let key = ed_key();
        let jwks = self.write_jwks("identity", vec![ed_jwk(&key, "k0")])?;
        let mut yaml = format!(
            "providers:\n{}identity:\n  headers:\n",
            provider_yaml("p", "https://p.test", &jwks)
        );
        let mut claims = claims_for("https://p.test");
        for i in 0..n {
            yaml.push_str(&format!("    - {{claim: c{i}, header: x-claim-{i}}}\n"));
            claims[format!("c{i}")] = json!(format!("value-{i}"));
        }
        let runtime = self.runtime(&yaml)?;
        let token = sign(&key, "k0", &claims);
        Ok(Point {
            dimension: "identity_headers",
            n: n as u64,
            series: vec![("check_ns", self.check_call(runtime, &token, "/bench")?)],
        })
    }

    fn cached_tokens(&self, n: u64) -> Point<'a> {
        let cache = TokenCache::new(&jwt_authz::config::TokenCacheConfig {
            max_entries: 2_000_000,
            max_bytes: 4 << 30,
            ttl: Duration::from_secs(3600),
        });
        let entry = |i: u64| {
            let mut claims = serde_json::Map::new();
            claims.insert("sub".into(), json!(format!("user-{i}")));
            Arc::new(VerifiedToken {
                provider: 0,
                thumbprint: "bench".into(),
                claims,
                exp: None,
            })
        };
        let probe = token_hash(&format!("token-{}", n / 2));
        self.rt.block_on(async {
            for i in 0..n {
                cache
                    .insert(token_hash(&format!("token-{i}")), entry(i))
                    .await;
            }
        });
        let rt = self.rt;
        Point {
            dimension: "cached_tokens",
            n,
            series: vec![(
                "lookup_ns",
                Box::new(move || {
                    std::hint::black_box(rt.block_on(cache.get(&probe)).is_some());
                }),
            )],
        }
    }
}

/// One check as the gRPC front end runs it; whether it was allowed.
async fn check(runtime: &Runtime, http: &HttpRequest, ext: &HashMap<String, String>) -> bool {
    runtime
        .check(&Incoming {
            method: &http.method,
            target: &http.path,
            host: &http.host,
            headers: (&http.headers).into(),
            context_extensions: ext,
            scheme: Some(&http.scheme),
            certificate: None,
        })
        .await
        .allowed
}
