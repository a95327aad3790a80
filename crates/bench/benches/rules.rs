//! Route rule matching as the rule count grows: `cargo bench --bench rules`.
//!
//! `rules/<n>/last` finds the last of `n` rules (a third each exact, prefix and regex, in
//! that order), `rules/<n>/none` a path no rule matches (the default route), both as
//! `Policy::route` answers (`route`: through the index from 16 rules on, in order below)
//! and with every rule tried in order (`linear`, the reference).
//!
//! `read/*`: the first step of every decision on a request of 12 headers, as the sidecar and
//! the filter run it (`decision::read`: canonical path and host, no lookalike identity
//! header), against the canonical path alone (all that step did before hosts and header
//! spellings were read too).

use std::collections::HashMap;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use jwt_authz::Config;
use jwt_authz_core::policy::Policy;
use jwt_authz_core::request::RequestInfo;

fn policy(n: usize) -> Policy {
    let mut yaml = String::from(
        "providers:\n  - {name: p, issuer: https://p.test, audiences: [api], jwks: {uri: https://p.test/jwks}}\nrules:\n",
    );
    for i in 0..n {
        let path = match i % 3 {
            0 => format!("{{exact: /svc{i}/items}}"),
            1 => format!("{{prefix: /svc{i}/}}"),
            _ => format!("{{regex: \"/svc{i}/[0-9]+\"}}"),
        };
        yaml.push_str(&format!(
            "  - {{name: r{i}, match: {{path: {path}, methods: [GET]}}, access: public}}\n"
        ));
    }
    let config = Config::from_yaml(&yaml).expect("config");
    Policy::new(&config.rules, &config.paths, &config.provider_names()).expect("policy")
}

/// A path the rule `i` of [`policy`] matches.
fn path_for(i: usize) -> String {
    match i % 3 {
        0 => format!("/svc{i}/items"),
        1 => format!("/svc{i}/anything"),
        _ => format!("/svc{i}/42"),
    }
}

fn bench(c: &mut Criterion) {
    let ext = HashMap::new();
    let mut group = c.benchmark_group("rules");
    for n in [1, 10, 100, 1000] {
        let policy = policy(n);
        let last = path_for(n - 1);
        let last = RequestInfo::new("GET", &last, "api.test", &ext);
        let none = RequestInfo::new("GET", "/nothing/here", "api.test", &ext);
        assert_eq!(policy.route(&last).name, format!("r{}", n - 1));
        assert_eq!(policy.route(&none).name, "default");
        group.bench_with_input(BenchmarkId::new("last/route", n), &n, |b, _| {
            b.iter(|| policy.route(std::hint::black_box(&last)).name.len())
        });
        group.bench_with_input(BenchmarkId::new("last/linear", n), &n, |b, _| {
            b.iter(|| policy.route_linear(std::hint::black_box(&last)).name.len())
        });
        group.bench_with_input(BenchmarkId::new("none/route", n), &n, |b, _| {
            b.iter(|| policy.route(std::hint::black_box(&none)).name.len())
        });
        group.bench_with_input(BenchmarkId::new("none/linear", n), &n, |b, _| {
            b.iter(|| policy.route_linear(std::hint::black_box(&none)).name.len())
        });
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    use jwt_authz::config::{IdentityConfig, PathConfig};
    use jwt_authz_core::decision;
    use jwt_authz_core::request::{Incoming, canonical_path};
    let headers: HashMap<String, String> = [
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig"),
        ("cache-control", "no-cache"),
        ("content-type", "application/json"),
        ("cookie", "session=abc; theme=dark"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "9f1c2a4e-7d3b-4c8a-9e21-5b6f0a1d2c3e"),
        ("x-user-id", "spoofed"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let ext = HashMap::new();
    let paths = PathConfig::default();
    let identity = IdentityConfig::default();
    let mut group = c.benchmark_group("read");
    for (name, host) in [
        ("canonical-host", "api.example.com"),
        ("ported-host", "API.example.com.:8443"),
    ] {
        let http = Incoming {
            method: "GET",
            target: "/api/orders/42?page=2",
            host,
            headers: (&headers).into(),
            context_extensions: &ext,
            scheme: None,
            certificate: None,
        };
        assert!(decision::read(&http, &paths, &identity).is_ok());
        group.bench_function(format!("decision/{name}"), |b| {
            b.iter(|| decision::read(std::hint::black_box(&http), &paths, &identity).is_ok())
        });
    }
    group.bench_function("path-only", |b| {
        b.iter(|| canonical_path(std::hint::black_box("/api/orders/42?page=2"), &paths).is_ok())
    });
    group.finish();
}

criterion_group!(benches, bench, read);
criterion_main!(benches);
