//! The checked-in compose files: rendered from the shared templates (no drift), and the
//! stack shape users rely on (only Envoy published, backend internal, health-ordered start).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

const WORKSPACE: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(WORKSPACE).join(path)).expect(path)
}

fn render_env() -> HashMap<String, String> {
    read("compose/render.env")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn render(template: &str, vars: &HashMap<String, String>) -> String {
    let mut out = read(template);
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

#[test]
fn compose_configs_are_rendered_from_the_templates() {
    let vars = render_env();
    for (generated, template) in [
        ("compose/envoy.yaml", "envoy/envoy.yaml.tmpl"),
        ("compose/jwt-authz.yaml", "config/jwt-authz.demo.yaml.tmpl"),
    ] {
        let expected = render(template, &vars);
        let actual = read(generated);
        let body = actual.split_once('\n').map(|(_, b)| b).unwrap_or_default();
        assert_eq!(
            body.trim_end(),
            expected.trim_end(),
            "{generated} is stale: run scripts/render-compose.sh"
        );
    }
    let config = jwt_authz::Config::from_yaml(&read("compose/jwt-authz.yaml")).expect("valid");
    assert_eq!(config.listen.grpc.port(), 9001);
}

#[test]
fn only_envoy_is_published_and_start_up_is_health_ordered() {
    let compose: Value = serde_norway::from_str(&read("compose/docker-compose.yml")).expect("yaml");
    let services = compose["services"].as_object().expect("services");
    for (name, svc) in services {
        if name == "envoy" {
            assert_eq!(svc["ports"][0], "${ENVOY_PORT:-8000}:8000");
            let networks: Vec<_> = svc["networks"].as_array().expect("networks").clone();
            assert!(networks.contains(&Value::from("frontend")));
            for dep in ["jwt-authz", "issuer", "users", "orders", "feed"] {
                assert_eq!(
                    svc["depends_on"][dep]["condition"], "service_healthy",
                    "{dep}"
                );
            }
        } else {
            assert!(svc.get("ports").is_none(), "{name} must not publish ports");
            assert_eq!(svc["networks"], serde_json::json!(["backend"]), "{name}");
            let test = svc["healthcheck"]["test"].as_array().expect("healthcheck");
            assert_eq!(test[0], "CMD", "{name}: exec form (no shell in the images)");
        }
    }
    assert_eq!(compose["networks"]["backend"]["internal"], true);
    let authz_probe = &services["jwt-authz"]["healthcheck"]["test"];
    assert_eq!(authz_probe[3], "http://127.0.0.1:9002/readyz");
}
