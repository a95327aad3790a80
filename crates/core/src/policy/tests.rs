use super::*;
use serde_json::json;

use std::borrow::Cow;
use std::collections::HashMap;

use crate::config::PathConfig;
use crate::request::canonical_path;

fn policy(yaml: &str) -> Policy {
    let rules: Vec<RuleConfig> = serde_path_to_error::deserialize(
        serde_norway::from_str::<serde_json::Value>(yaml).unwrap(),
    )
    .unwrap();
    Policy::new(&rules, &PathConfig::default(), &[]).unwrap()
}

/// The request as the decision builds it: the path in canonical form (these tests use paths
/// that are canonical apart from a query, so the canonical path borrows from `path`).
fn info<'a>(
    method: &'a str,
    path: &'a str,
    host: &'a str,
    ext: &'a HashMap<String, String>,
) -> RequestInfo<'a> {
    match canonical_path(path, &PathConfig::default()) {
        Ok(Cow::Borrowed(path)) => RequestInfo::new(method, path, host, ext),
        other => panic!("{path:?} is not canonical here: {other:?}"),
    }
}

#[test]
fn rules_name_providers_by_index_and_carry_their_audiences() {
    let rules: Vec<RuleConfig> = serde_path_to_error::deserialize(
        serde_norway::from_str::<serde_json::Value>(
            r#"
- name: billing
  match: {path: {prefix: /billing/}}
  providers: [partner]
  audiences: [billing-api]
  access: authenticated
- name: both
  match: {path: {prefix: /both/}}
  providers: [partner, corp]
  access: public
"#,
        )
        .unwrap(),
    )
    .unwrap();
    let p = Policy::new(&rules, &PathConfig::default(), &["corp", "partner"]).unwrap();
    let ext = HashMap::new();
    let billing = p.route(&info("GET", "/billing/x", "h", &ext));
    assert_eq!(billing.providers, Some(&[1][..]));
    assert_eq!(billing.audiences, Some(&["billing-api".to_owned()][..]));
    let both = p.route(&info("GET", "/both/x", "h", &ext));
    assert_eq!(both.providers, Some(&[1, 0][..]));
    assert_eq!(both.audiences, None);
    let default = p.route(&info("GET", "/other", "h", &ext));
    assert_eq!((default.providers, default.audiences), (None, None));
}

#[test]
fn first_match_wins_and_default_is_authenticated() {
    let p = policy(
        r#"
- name: a
  match: {path: {prefix: /api}}
  access: public
- name: b
  match: {path: {prefix: /api/admin}}
  access: deny
"#,
    );
    let ext = HashMap::new();
    assert_eq!(p.route(&info("GET", "/api/admin", "h", &ext)).name, "a");
    let r = p.route(&info("GET", "/other", "h", &ext));
    assert_eq!((r.name, r.kind), ("default", AccessKind::Authenticated));
}

#[test]
fn query_string_is_ignored_and_regex_is_anchored() {
    let p = policy(
        r#"
- match: {path: {exact: /a}}
  access: public
- match: {path: {regex: "/b/[0-9]+"}}
  access: deny
"#,
    );
    let ext = HashMap::new();
    assert_eq!(
        p.route(&info("GET", "/a?x=/b/1", "h", &ext)).kind,
        AccessKind::Public
    );
    assert_eq!(
        p.route(&info("GET", "/b/12", "h", &ext)).kind,
        AccessKind::Deny
    );
    assert_eq!(
        p.route(&info("GET", "/b/12/x", "h", &ext)).kind,
        AccessKind::Authenticated
    );
    assert_eq!(
        p.route(&info("GET", "/x/b/12", "h", &ext)).kind,
        AccessKind::Authenticated
    );
}

#[test]
fn method_host_and_context_extensions() {
    let p = policy(
        r#"
- match: {methods: [get], hosts: [Api.Test], context_extensions: {svc: users}}
  access: public
"#,
    );
    let ext = HashMap::from([("svc".to_owned(), "users".to_owned())]);
    let none = HashMap::new();
    assert_eq!(
        p.route(&info("GET", "/", "api.test", &ext)).kind,
        AccessKind::Public
    );
    assert_eq!(
        p.route(&info("GET", "/", "[::1]", &ext)).kind,
        AccessKind::Authenticated
    );
    assert_eq!(
        p.route(&info("POST", "/", "api.test", &ext)).kind,
        AccessKind::Authenticated
    );
    assert_eq!(
        p.route(&info("GET", "/", "api.test", &none)).kind,
        AccessKind::Authenticated
    );
}

/// The spellings app routers send to one handler match one rule: letter case (unless the
/// rule says otherwise), one trailing slash on an exact path, a prefix's own directory.
#[test]
fn paths_match_in_every_spelling_an_app_routes_alike() {
    let p = policy(
        r#"
- name: users
  match: {path: {exact: /api/users}}
  access: deny
- name: admin
  match: {path: {prefix: /admin/}}
  access: deny
- name: exact-case
  case_sensitive: true
  match: {path: {exact: /Docs}}
  access: deny
- name: regex
  match: {path: {regex: "/reports/[a-z]+"}}
  access: deny
"#,
    );
    let ext = HashMap::new();
    let rule = |path| p.route(&info("GET", path, "h", &ext)).name;
    for path in ["/api/users", "/api/users/", "/API/USERS", "/Api/Users/"] {
        assert_eq!(rule(path), "users", "{path}");
    }
    for path in ["/admin", "/admin/", "/ADMIN", "/Admin/x", "/admin/x/y"] {
        assert_eq!(rule(path), "admin", "{path}");
    }
    for path in ["/Docs", "/Docs/"] {
        assert_eq!(rule(path), "exact-case", "{path}");
    }
    for path in ["/reports/Q", "/REPORTS/abc"] {
        assert_eq!(rule(path), "regex", "{path}");
    }
    for path in [
        "/api/users/x",
        "/api/usersx",
        "/administrator",
        "/docs",
        "/DOCS",
    ] {
        assert_eq!(rule(path), "default", "{path}");
    }
    // Hosts: rules compare canonical hosts, configured in any spelling.
    let p = policy("- match: {hosts: [Admin.Example.COM.]}\n  access: deny\n");
    assert_eq!(
        p.route(&info("GET", "/", "admin.example.com", &ext)).kind,
        AccessKind::Deny
    );
}

/// With `paths.case_sensitive: true`, case is matched exactly unless a rule says otherwise.
#[test]
fn case_sensitivity_is_set_per_config_and_per_rule() {
    let rules: Vec<RuleConfig> = serde_path_to_error::deserialize(
        serde_norway::from_str::<serde_json::Value>(
            r#"
- name: exact
  match: {path: {prefix: /api/}}
  access: deny
- name: folded
  case_sensitive: false
  match: {path: {prefix: /other/}}
  access: deny
"#,
        )
        .unwrap(),
    )
    .unwrap();
    let paths = PathConfig {
        case_sensitive: true,
        ..PathConfig::default()
    };
    let p = Policy::new(&rules, &paths, &[]).unwrap();
    let ext = HashMap::new();
    let rule = |path| p.route(&info("GET", path, "h", &ext)).name;
    assert_eq!(rule("/api/x"), "exact");
    assert_eq!(rule("/API/x"), "default");
    assert_eq!(rule("/OTHER/x"), "folded");
}

#[test]
fn claim_requirements() {
    let p = policy(
        r#"
- access:
    claims:
      - {claim: role, any_of: [admin, ops]}
      - {claim: scope, all_of: [a, b]}
      - {claim: tenant.id, equals: 7}
"#,
    );
    let ext = HashMap::new();
    let route = p.route(&info("GET", "/", "h", &ext));
    let ok = json!({"role": ["x", "ops"], "scope": "b c a", "tenant": {"id": 7}});
    assert_eq!(route.check_claims(ok.as_object().unwrap()), Ok(()));
    let bad_role = json!({"role": "user", "scope": "a b", "tenant": {"id": 7}});
    assert_eq!(
        route.check_claims(bad_role.as_object().unwrap()),
        Err("role")
    );
    let bad_scope = json!({"role": "admin", "scope": "a", "tenant": {"id": 7}});
    assert_eq!(
        route.check_claims(bad_scope.as_object().unwrap()),
        Err("scope")
    );
    let bad_tenant = json!({"role": "admin", "scope": "a b", "tenant": {"id": "7"}});
    assert_eq!(
        route.check_claims(bad_tenant.as_object().unwrap()),
        Err("tenant.id")
    );
    assert_eq!(route.check_claims(&Map::new()), Err("role"));
}

mod index_agrees_with_the_linear_matcher {
    use super::*;
    use proptest::prelude::*;

    const SEGMENTS: [&str; 6] = ["a", "b", "ab", "c", "A", "aB"];
    const REGEXES: [&str; 5] = ["/a/.*", "/[ab]+", "/.*/c", "/b(/.*)?", "/(a|c)/[^/]*/?"];

    fn path() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop::sample::select(&SEGMENTS[..]), 0..4),
            any::<bool>(),
        )
            .prop_map(|(segments, slash)| {
                let mut path = format!("/{}", segments.join("/"));
                if slash && path.len() > 1 {
                    path.push('/');
                }
                path
            })
    }

    /// One rule as YAML: a path condition of each kind (or none), maybe methods and hosts.
    fn rule() -> impl Strategy<Value = String> {
        let path = prop_oneof![
            Just(String::new()),
            path().prop_map(|p| format!("path: {{exact: \"{p}\"}}, ")),
            // Prefixes that end mid-segment too: `/a` is a prefix of `/ab`.
            path().prop_map(|p| format!("path: {{prefix: \"{p}\"}}, ")),
            path().prop_map(|p| format!("path: {{prefix: \"{}\"}}, ", &p[..p.len().min(2)])),
            prop::sample::select(&REGEXES[..]).prop_map(|r| format!("path: {{regex: \"{r}\"}}, ")),
        ];
        let methods = prop_oneof![
            Just(""),
            Just("methods: [GET], "),
            Just("methods: [POST, PUT], ")
        ];
        let hosts = prop_oneof![Just(""), Just("hosts: [h1], ")];
        let case = prop_oneof![
            Just(""),
            Just("  case_sensitive: true\n"),
            Just("  case_sensitive: false\n")
        ];
        (path, methods, hosts, case)
            .prop_map(|(p, m, h, c)| format!("- match: {{{p}{m}{h}}}\n{c}  access: public\n"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// First match wins, whatever the mix of rules: the index finds the rule that
        /// trying every rule in order finds.
        #[test]
        fn first_match(
            rules in prop::collection::vec(rule(), 0..40),
            requests in prop::collection::vec(
                (prop::sample::select(&["GET", "POST", "PUT"][..]), path(), prop::sample::select(&["h1", "h2"][..])),
                1..20,
            ),
        ) {
            let yaml = if rules.is_empty() { "[]".to_owned() } else { rules.concat() };
            let policy = policy(&yaml);
            let ext = HashMap::new();
            // The index itself, whatever the rule count (`route` uses it from INDEX_FROM).
            let index = PathIndex::new(&policy.rules);
            for (method, path, host) in requests {
                let request = RequestInfo::new(method, &path, host, &ext);
                let indexed = index
                    .first(&policy.rules, &path, |i| policy.rules[i].matches_rest(&request))
                    .map_or("default", |i| policy.rules[i].name.as_str());
                let linear = policy.route_linear(&request).name;
                prop_assert_eq!(indexed, linear, "{}", path);
                prop_assert_eq!(policy.route(&request).name, linear, "{}", path);
            }
        }
    }
}

#[test]
fn path_prefix_holds_by_whole_segments() {
    let req: ClaimRequirement = serde_json::from_value(serde_json::json!({
        "claim": "sub",
        "path_prefix": ["spiffe://prod.example/ns/payments"],
    }))
    .expect("requirement");
    let holds = |sub: serde_json::Value| {
        let claims = serde_json::json!({ "sub": sub });
        requirement_met(&req, claims.as_object().expect("object"))
    };
    assert!(holds("spiffe://prod.example/ns/payments".into()));
    assert!(holds("spiffe://prod.example/ns/payments/sa/api".into()));
    for other in [
        "spiffe://prod.example/ns/payments-old/sa/api",
        "spiffe://prod.example/ns/pay",
        "spiffe://prod.example/ns",
        "spiffe://PROD.example/ns/payments",
        "spiffe://prod.example.evil/ns/payments",
    ] {
        assert!(!holds(other.into()), "{other}");
    }
    // Only a string claim.
    assert!(!holds(serde_json::json!([
        "spiffe://prod.example/ns/payments"
    ])));
    assert!(!requirement_met(&req, &serde_json::Map::new()));
}
