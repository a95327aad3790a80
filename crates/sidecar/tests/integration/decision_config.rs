//! The in-proxy filter reads the sidecar's own configuration file through the decision
//! core's view of it (`jwt_authz_core::config::DecisionConfig`). Every shipped sidecar
//! configuration must read the same both ways, and a document the sidecar refuses for a
//! decision field must be refused by the view with the same field and message.

use jwt_authz::Config;
use jwt_authz_core::config::{DecisionConfig, LoadError};

fn read(path: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(path),
    )
    .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn shipped_configurations_read_the_same_both_ways() {
    for path in [
        "config/example.yaml",
        "compose/jwt-authz.yaml",
        "deploy/kubernetes/config.yaml",
    ] {
        // compose's secret file is the container's mount of compose/introspection.secret.
        let secret = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("compose/introspection.secret");
        let text = read(path).replace(
            "/etc/jwt-authz/introspection.secret",
            &secret.display().to_string(),
        );
        let sidecar = Config::from_yaml(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let view = DecisionConfig::from_yaml(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(view.mode, sidecar.mode, "{path}");
        assert_eq!(view.realm, sidecar.realm, "{path}");
        assert_eq!(view.max_token_bytes, sidecar.max_token_bytes, "{path}");
        assert_eq!(view.paths, sidecar.paths, "{path}");
        assert_eq!(view.identity, sidecar.identity, "{path}");
        assert_eq!(view.rules, sidecar.rules, "{path}");
        assert_eq!(view.providers.len(), sidecar.providers.len(), "{path}");
        for (v, s) in view.providers.iter().zip(&sidecar.providers) {
            assert_eq!(v.name, s.name, "{path}");
            assert_eq!(v.issuer, s.issuer, "{path}");
            assert_eq!(v.audiences, s.audiences, "{path}");
            assert_eq!(v.token_sources, s.token_sources, "{path}");
            assert_eq!(v.mode, s.mode, "{path}");
        }
    }
}

#[test]
fn a_bad_decision_field_is_refused_alike() {
    let base = "providers:\n  - {name: corp, issuer: https://corp.test, audiences: [api], jwks: {uri: https://corp.test/jwks}}";
    for extra in [
        "realm: ''",
        "max_token_bytes: 0",
        "paths: {max_bytes: 0}",
        "identity: {headers: [{claim: '', header: x-a}]}",
        "identity: {headers: [{claim: a, header: x-a}, {claim: b, header: x-a}]}",
        "rules: [{providers: [nobody], access: authenticated}]",
        "rules: [{match: {path: {exact: '/a//b'}}, access: public}]",
        "rules: [{match: {methods: ['G T']}, access: public}]",
        "rules: [{access: {claims: [{claim: role}]}}]",
        "rules: [{access: deny, audiences: [x]}]",
    ] {
        let text = format!("{base}\n{extra}\n");
        let sidecar = Config::from_yaml(&text)
            .err()
            .unwrap_or_else(|| panic!("the sidecar took {extra}"));
        let view = DecisionConfig::from_yaml(&text)
            .err()
            .unwrap_or_else(|| panic!("the decision view took {extra}"));
        let LoadError::Invalid(invalid) = view else {
            panic!("{extra}: {view:?}");
        };
        assert_eq!(sidecar.to_string(), invalid.to_string(), "{extra}");
    }
}

/// The Kubernetes service-account example's rules, on the claims a projected token carries:
/// the namespace and service account (in `kubernetes.io`, a key holding a dot) choose who may
/// call which route.
#[test]
fn the_service_account_examples_rules_go_by_namespace_and_account() {
    use jwt_authz_core::policy::Policy;
    use jwt_authz_core::request::RequestInfo;
    let config = DecisionConfig::from_yaml(&read("deploy/kubernetes-service-accounts/config.yaml"))
        .expect("valid");
    let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    let policy = Policy::new(&config.rules, &config.paths, &names).expect("rules");
    let token = |namespace: &str, account: &str| {
        serde_json::json!({
            "sub": format!("system:serviceaccount:{namespace}:{account}"),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account, "uid": "u"}},
        })
    };
    let ext = std::collections::HashMap::new();
    let allowed = |path: &str, claims: &serde_json::Value| {
        let route = policy.route(&RequestInfo::new("GET", path, "api.test", &ext));
        route
            .check_claims(claims.as_object().expect("object"))
            .is_ok()
    };
    assert!(allowed("/internal/payments/x", &token("payments", "api")));
    assert!(allowed(
        "/internal/payments/x",
        &token("payments", "settlement")
    ));
    assert!(!allowed("/internal/payments/x", &token("payments", "web")));
    assert!(!allowed("/internal/payments/x", &token("staging", "api")));
    assert!(allowed("/reports/daily", &token("batch", "reporter")));
    assert!(!allowed("/reports/daily", &token("payments", "api")));
}
