//! Route rule matching as the rule count grows: `cargo bench --bench rules`.
//!
//! `rules/<n>/last` finds the last of `n` rules (a third each exact, prefix and regex, in
//! that order), `rules/<n>/none` a path no rule matches (the default route), both as
//! `Policy::route` answers (`route`: through the index from 16 rules on, in order below)
//! and with every rule tried in order (`linear`, the reference).

use std::collections::HashMap;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use jwt_authz::Config;
use jwt_authz::policy::Policy;
use jwt_authz::request::RequestInfo;

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

criterion_group!(benches, bench);
criterion_main!(benches);
