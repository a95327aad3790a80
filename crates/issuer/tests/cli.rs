//! The `issuer` binary's user and key commands, and a running issuer picking up a rotation
//! made by `issuer keys rotate` without a restart.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_issuer");

fn issuer(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("ISSUER_DB", dir.join("users.db"))
        .env("ISSUER_KEY_DIR", dir.join("keys"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.unwrap_or_default().as_bytes());
    }
    child.wait_with_output().expect("wait")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn users_add_list_remove_with_the_password_on_stdin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = issuer(
        dir.path(),
        &["users", "add", "dave", "--role", "ops"],
        Some("dave-password\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = issuer(dir.path(), &["users", "list"], None);
    let text = stdout(&listed);
    assert!(text.contains("dave") && text.contains("ops"), "{text}");
    assert!(!text.contains("dave-password"));

    let out = issuer(
        dir.path(),
        &["users", "add", "dave", "--role", "ops"],
        Some("dave-password\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = issuer(
        dir.path(),
        &["users", "add", "erin", "--role", "ops"],
        Some("short\n"),
    );
    assert_eq!(out.status.code(), Some(1));

    assert!(
        issuer(dir.path(), &["users", "remove", "dave"], None)
            .status
            .success()
    );
    assert!(!stdout(&issuer(dir.path(), &["users", "list"], None)).contains("dave"));
    assert_eq!(
        issuer(dir.path(), &["users", "remove", "dave"], None)
            .status
            .code(),
        Some(1)
    );
}

/// `issuer tokens list|revoke` and the revocation a removed user gets, on tokens recorded
/// as a login records them.
#[test]
fn tokens_are_listed_and_revoked_by_jti_by_user_and_with_their_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["frank", "gina"] {
        let out = issuer(
            dir.path(),
            &["users", "add", name, "--role", "ops"],
            Some("long-enough-password\n"),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let store = issuer::users::UserStore::open(&dir.path().join("users.db")).expect("open");
    let frank = store.find("frank").expect("find").expect("frank");
    let gina = store.find("gina").expect("find").expect("gina");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    for (jti, subject) in [("f1", &frank.id), ("f2", &frank.id), ("g1", &gina.id)] {
        store
            .record_token(jti, subject, now, now + 600, 64)
            .expect("record");
    }
    drop(store);
    let listed = stdout(&issuer(
        dir.path(),
        &["tokens", "list", "--user", "frank"],
        None,
    ));
    assert_eq!(
        listed.lines().filter(|l| l.ends_with(" valid")).count(),
        2,
        "{listed}"
    );

    let out = issuer(dir.path(), &["tokens", "revoke", "--jti", "f1"], None);
    assert!(stdout(&out).contains("revoked f1"), "{}", stdout(&out));
    let out = issuer(dir.path(), &["tokens", "revoke", "--jti", "nope"], None);
    assert_eq!(out.status.code(), Some(1));
    let out = issuer(dir.path(), &["tokens", "revoke", "--user", "frank"], None);
    assert!(
        stdout(&out).contains("revoked 1 unexpired token(s) of frank"),
        "{}",
        stdout(&out)
    );
    let listed = stdout(&issuer(
        dir.path(),
        &["tokens", "list", "--user", "frank"],
        None,
    ));
    assert_eq!(
        listed.lines().filter(|l| l.ends_with(" revoked")).count(),
        2,
        "{listed}"
    );
    assert_eq!(
        issuer(dir.path(), &["tokens", "revoke"], None)
            .status
            .code(),
        Some(2),
        "--user or --jti is required"
    );

    let out = issuer(dir.path(), &["users", "remove", "gina"], None);
    assert!(
        stdout(&out).contains("revoked 1 unexpired token(s)"),
        "{}",
        stdout(&out)
    );
    let store = issuer::users::UserStore::open(&dir.path().join("users.db")).expect("open");
    assert!(
        store.tokens_of(&gina.id).expect("tokens")[0]
            .revoked_at
            .is_some()
    );
}

#[test]
fn running_issuer_picks_up_a_cli_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let server = Command::new(BIN)
        .args([
            "--demo",
            "--listen",
            &listen,
            "--issuer-url",
            &format!("http://{listen}"),
        ])
        .env("ISSUER_DB", dir.path().join("users.db"))
        .env("ISSUER_KEY_DIR", dir.path().join("keys"))
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn");
    let _server = KillOnDrop(server);
    let jwks = || -> Option<serde_json::Value> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(
            stream,
            "GET /.well-known/jwks.json HTTP/1.0\r\nHost: x\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stream, &mut text).ok()?;
        serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()
    };
    let mut first = None;
    for _ in 0..100 {
        first = jwks();
        if first.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = first.expect("issuer answered");
    assert_eq!(first["keys"].as_array().map(Vec::len), Some(1));

    let out = issuer(
        dir.path(),
        &[
            "keys",
            "rotate",
            "--kid",
            "next",
            "--key-publish-ahead",
            "0s",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = stdout(&issuer(dir.path(), &["keys", "list"], None));
    assert!(
        listed.contains("next") && listed.contains("signing") && listed.contains("retired"),
        "{listed}"
    );

    let mut kids = Vec::new();
    for _ in 0..60 {
        if let Some(doc) = jwks() {
            kids = doc["keys"]
                .as_array()
                .map(|k| k.iter().map(|k| k["kid"].clone()).collect())
                .unwrap_or_default();
            if kids.len() == 2 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert_eq!(kids[0], "next", "the new signer is listed first");
}

/// Stops the server even when an assertion fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
