//! `jwt-authz explain` through the real binary, with keys from a JWKS file: the decision the
//! server would make, each step shown, the token never printed, and the exit status.

use std::process::Command;

use crate::support::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_jwt-authz");

struct Setup {
    dir: tempfile::TempDir,
    key: TestKey,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = TestKey::rsa("k1");
        std::fs::write(
            dir.path().join("jwks.json"),
            json!({"keys": [key.jwk()]}).to_string(),
        )
        .expect("jwks");
        let config = config_yaml("https://idp.invalid/jwks.json", "")
            .replace("listen:\n  grpc: 127.0.0.1:0\n  admin: 127.0.0.1:0\n", "")
            + r#"rules:
  - name: admin
    match: {path: {prefix: /admin/}}
    access:
      claims:
        - {claim: role, any_of: [admin]}
  - name: closed
    match: {path: {prefix: /closed/}}
    access: deny
"#;
        std::fs::write(dir.path().join("config.yaml"), config).expect("config");
        Self { dir, key }
    }

    /// Runs `explain` with the JWKS file; the exit code and stdout.
    fn explain(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = Command::new(BIN)
            .arg("explain")
            .arg("--config")
            .arg(self.dir.path().join("config.yaml"))
            .arg("--jwks")
            .arg(self.dir.path().join("jwks.json"))
            .args(args)
            .output()
            .expect("run explain");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn token_file(&self, token: &str) -> String {
        let path = self.dir.path().join("token");
        std::fs::write(&path, token).expect("token");
        path.display().to_string()
    }
}

#[test]
fn an_allowed_request_shows_rule_checks_and_headers() {
    let s = Setup::new();
    let token = s.key.token(&claims("u-7"));
    let file = s.token_file(&token);
    let (code, out, err) = s.explain(&["--path", "/api/orders?x=1", "--token-file", &file]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("canonical \"/api/orders\""), "{out}");
    assert!(out.contains("default (authenticated)"), "{out}");
    assert!(out.contains("  verified   ok"), "{out}");
    assert!(out.contains("  provider   test"), "{out}");
    assert!(
        out.contains("decision     allow (verified), HTTP 200"),
        "{out}"
    );
    assert!(out.contains("  set        x-user-id: u-7"), "{out}");
    assert!(out.contains("  remove     authorization"), "{out}");
    for check in [
        "  check      iss ok: provider test",
        "  check      signature ok: valid",
        "  check      aud ok: accepted here: [\"api\", \"other-api\"]",
        "  check      exp ok: +",
    ] {
        assert!(out.contains(check), "{check:?} missing:\n{out}");
    }
    assert!(
        !out.contains(&token) && !err.contains(&token),
        "the token was printed"
    );
    let fingerprint = &out[out.find("fingerprint ").expect("fingerprint") + 12..][..12];
    assert!(fingerprint.chars().all(|c| c.is_ascii_hexdigit()), "{out}");
}

#[test]
fn each_denial_is_explained_and_exits_1() {
    let s = Setup::new();
    let mut expired = claims("u");
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    expired["nbf"] = json!(now() - 7200);
    let mut wrong_aud = claims("u");
    wrong_aud["aud"] = json!("someone-else");
    let forged = TestKey::rsa("k1").token(&claims("u"));
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec!["--path".into(), "/api/x".into()],
            "HTTP 401",
            "bearer token required",
        ),
        (
            vec![
                "--path".into(),
                "/api/x".into(),
                "--token".into(),
                forged.clone(),
            ],
            "  verified   invalid signature",
            "  check      signature FAILED: invalid signature",
        ),
        (
            vec![
                "--path".into(),
                "/api/x".into(),
                "--token".into(),
                s.key.token(&expired),
            ],
            "  verified   token expired",
            "  check      exp FAILED: -360",
        ),
        (
            vec![
                "--path".into(),
                "/api/x".into(),
                "--token".into(),
                s.key.token(&wrong_aud),
            ],
            "invalid_token: invalid audience",
            "  check      aud FAILED: accepted here:",
        ),
        (
            vec![
                "--path".into(),
                "/admin/x".into(),
                "--token".into(),
                s.key.token(&claims("u")),
            ],
            "role any of [\"admin\"]: holds \"user\": NOT met",
            "HTTP 403",
        ),
        (
            vec!["--path".into(), "/closed/x".into()],
            "closed (deny)",
            "denied_by_rule",
        ),
        (
            vec!["--path".into(), "/public/%2F../admin/x".into()],
            "path         refused: percent-encoded slash or backslash",
            "HTTP 400",
        ),
    ];
    for (args, first, second) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = s.explain(&args);
        assert_eq!(code, Some(1), "{args:?}\n{out}{err}");
        assert!(out.contains(first), "{first:?} missing:\n{out}");
        assert!(out.contains(second), "{second:?} missing:\n{out}");
        assert!(out.contains("decision     deny"), "{out}");
    }
}

#[test]
fn json_output_for_scripts() {
    let s = Setup::new();
    let token = s.key.token(&claims("u-9"));
    let (code, out, _) = s.explain(&[
        "--path",
        "/admin/panel",
        "--method",
        "post",
        "-H",
        "X-Trace: abc",
        "--token",
        &token,
        "--json",
    ]);
    assert_eq!(code, Some(1));
    assert!(!out.contains(&token));
    let report: Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["method"], "POST");
    assert_eq!(report["header_names"], json!(["authorization", "x-trace"]));
    assert_eq!(report["rule"]["name"], "admin");
    assert_eq!(report["rule"]["requirements"][0]["met"], false);
    assert_eq!(report["token"]["provider"], "test");
    assert_eq!(report["token"]["verification"], "ok");
    let checks = report["token"]["checks"].as_array().expect("checks");
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:?}");
    assert!(checks.iter().any(|c| c["check"] == "signature"));
    assert!(report["token"]["exp"]["from_now"].as_i64().expect("exp") > 0);
    assert_eq!(report["decision"]["result"], "deny");
    assert_eq!(report["decision"]["http_status"], 403);
    assert_eq!(report["decision"]["error"], "insufficient_scope");
}

#[test]
fn usage_errors_exit_2() {
    let s = Setup::new();
    let (code, _, err) = s.explain(&["--path", "/x", "-H", "no-colon"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not `name: value`"), "{err}");
    let out = Command::new(BIN)
        .args(["explain", "--config", "/nonexistent.yaml", "--path", "/x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).args(["explain"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
}
