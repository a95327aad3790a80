//! Key snapshots (`state_dir`): a jwt-authz restarted while the identity provider is down
//! starts from the last good JWKS it saw, says so, and takes fresh keys once the provider
//! is back; a snapshot that is too old, cut short, edited, or another provider's is
//! ignored (503 as without one).

use std::path::Path;
use std::time::Duration;

use crate::support::*;
use jwt_authz::Config;
use jwt_authz::keys::snapshot::{SnapshotFile, StateDir};

fn yaml(jwks_url: &str, dir: &Path, max_age: &str) -> String {
    yaml_with(jwks_url, dir, max_age, "")
}

/// [`yaml`] with `provider` fields added to the provider.
fn yaml_with(jwks_url: &str, dir: &Path, max_age: &str, provider: &str) -> String {
    config_yaml(
        jwks_url,
        &format!(
            "{provider}state_dir: {}\nmax_snapshot_age: {max_age}\n",
            dir.display()
        ),
    )
}

/// `jwt_authz_jwks_from_snapshot` of the test provider.
async fn from_snapshot(server: &TestServer) -> u64 {
    let metrics = server.admin_get("/metrics").await.1;
    metric(
        &metrics,
        "jwt_authz_jwks_from_snapshot",
        &[("provider", "test")],
    )
}

/// The snapshot file of the (only) provider of `yaml`.
fn snapshot_path(yaml: &str, dir: &Path) -> std::path::PathBuf {
    let config = Config::from_yaml(yaml).expect("config");
    let state = StateDir::open(
        dir,
        config.max_snapshot_age,
        config.state_key_file.as_deref(),
    )
    .expect("state_dir");
    SnapshotFile::new(&state, &config.providers[0])
        .path()
        .to_owned()
}

/// Runs jwt-authz once with the provider up, so that it writes its snapshot; returns the
/// stopped JWKS server's address (to bring it back on) and the key.
async fn first_run(dir: &Path, max_age: &str) -> (std::net::SocketAddr, TestKey, String) {
    first_run_with(dir, |url| yaml(url, dir, max_age)).await
}

/// [`first_run`] with the configuration `config` makes for the JWKS URL.
async fn first_run_with(
    dir: &Path,
    config: impl Fn(&str) -> String,
) -> (std::net::SocketAddr, TestKey, String) {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let yaml = config(&jwks.url());
    let server = TestServer::start_ready(&yaml).await;
    let path = snapshot_path(&yaml, dir);
    for _ in 0..100 {
        if path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = std::fs::read_to_string(&path).expect("snapshot written");
    assert!(text.contains(&key.kid), "{text}");
    for private in ["\\\"d\\\"", "\\\"p\\\"", "\\\"q\\\""] {
        assert!(!text.contains(private), "public keys only: {private}");
    }
    server.shutdown().await;
    let addr = jwks.addr;
    jwks.stop();
    drop(jwks);
    // The aborted server lets go of its port (tests bring it back on the same one).
    tokio::time::sleep(Duration::from_millis(200)).await;
    (addr, key, yaml)
}

#[tokio::test]
async fn a_restart_while_the_provider_is_down_starts_from_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, key, yaml) = first_run(dir.path(), "1h").await;

    // The provider is down; the restarted jwt-authz is ready on the snapshot's keys.
    let server = TestServer::start(&yaml).await;
    server.wait_ready().await;
    let (status, body) = server.admin_get("/readyz").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("snapshot") && body.contains("test ("),
        "{body}"
    );
    allowed(
        &server
            .check_token("/api", &key.token(&claims("alice")))
            .await,
    );
    assert_eq!(from_snapshot(&server).await, 1);

    // The provider is back: fresh keys replace the snapshot's.
    let jwks = JwksServer::start_on(addr, vec![key.jwk()]).await;
    let mut body = String::new();
    for _ in 0..100 {
        body = server.admin_get("/readyz").await.1;
        if body == "ready\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(body, "ready\n");
    assert!(jwks.fetches() >= 1);
    assert_eq!(from_snapshot(&server).await, 0);
    server.shutdown().await;
}

/// A restart with a snapshot that must not be trusted: not ready, tokens 503 as before.
async fn assert_ignored(yaml: &str, key: &TestKey) {
    let server = TestServer::start(yaml).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = server.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let response = server
        .check_token("/api", &key.token(&claims("alice")))
        .await;
    assert_eq!(denied_status(&response), Some(503), "{response:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_snapshot_older_than_max_snapshot_age_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, key, yaml) = first_run(dir.path(), "1s").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_ignored(&yaml, &key).await;
}

#[tokio::test]
async fn a_truncated_or_edited_snapshot_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, key, yaml) = first_run(dir.path(), "1h").await;
    let path = snapshot_path(&yaml, dir.path());
    let whole = std::fs::read_to_string(&path).expect("snapshot");

    std::fs::write(&path, &whole[..whole.len() / 2]).expect("truncate");
    assert_ignored(&yaml, &key).await;

    // Another key put in place of the published one (the checksum no longer matches).
    let intruder = TestKey::rsa("k1");
    let mut stored: serde_json::Value = serde_json::from_str(&whole).expect("json");
    stored["jwks"] = serde_json::json!({"keys": [intruder.jwk()]})
        .to_string()
        .into();
    std::fs::write(&path, stored.to_string()).expect("edit");
    assert_ignored(&yaml, &intruder).await;
}

#[tokio::test]
async fn another_providers_snapshot_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, key, yaml) = first_run(dir.path(), "1h").await;
    // The same JWKS location for a provider with another issuer: its snapshot file is
    // this provider's, copied over.
    let other = yaml.replace(ISSUER, "https://other-issuer.test");
    assert_ne!(other, yaml);
    std::fs::copy(
        snapshot_path(&yaml, dir.path()),
        snapshot_path(&other, dir.path()),
    )
    .expect("copy");
    let mut token_claims = claims("alice");
    token_claims["iss"] = "https://other-issuer.test".into();
    let server = TestServer::start(&other).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.readyz().await, 503);
    let response = server.check_token("/api", &key.token(&token_claims)).await;
    assert_eq!(denied_status(&response), Some(503), "{response:?}");
    server.shutdown().await;
}

/// Status lists are kept too: restarted while both the JWKS and the list server are down,
/// a valid token passes on the snapshots and a revoked one stays refused (never let
/// through because its list could not be fetched).
#[tokio::test]
async fn status_lists_are_snapshotted_and_revocations_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let uri = jwks.document_url("1");
    let mut list = jwt_authz_jose::status_list::StatusList::new(1, 8).expect("list");
    list.set(1, 1).expect("revoke");
    jwks.set_document(
        "1",
        &list_token(&key, &uri, &list.encode(), serde_json::json!({})),
        None,
    );
    let yaml = yaml_with(
        &jwks.url(),
        dir.path(),
        "1h",
        "    status_list: {mode: required, max_stale: 1h, fetch_timeout: 1s}\n",
    );
    let token = |idx: u64| {
        let mut c = claims("alice");
        c["status"] = serde_json::json!({"status_list": {"idx": idx, "uri": uri}});
        key.token(&c)
    };
    let server = TestServer::start_ready(&yaml).await;
    allowed(&server.check_token("/api", &token(0)).await);
    assert_invalid_token(
        &server.check_token("/api", &token(1)).await,
        "token revoked",
    );
    // Both snapshots written (the key set's and the list's).
    for _ in 0..100 {
        if std::fs::read_dir(dir.path()).expect("dir").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 2);
    server.shutdown().await;
    jwks.stop();
    drop(jwks);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let server = TestServer::start(&yaml).await;
    server.wait_ready().await;
    allowed(&server.check_token("/api", &token(0)).await);
    assert_invalid_token(
        &server.check_token("/api", &token(1)).await,
        "token revoked",
    );
    server.shutdown().await;
}

/// The snapshot stands in only for a provider that cannot be reached: a provider that
/// answers (with other keys, an empty key set, a 404) is believed, and the snapshot's keys
/// stay unused, even if the answer leaves no keys at all.
#[tokio::test]
async fn a_provider_that_answers_is_never_overruled_by_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, key, yaml) = first_run(dir.path(), "1h").await;
    let old_token = key.token(&claims("alice"));

    // Up again with another key: the network's key set, not the snapshot's.
    let rotated = TestKey::rsa("k2");
    let jwks = JwksServer::start_on(addr, vec![rotated.jwk()]).await;
    let server = TestServer::start_ready(&yaml).await;
    assert_eq!(server.admin_get("/readyz").await.1, "ready\n");
    allowed(
        &server
            .check_token("/api", &rotated.token(&claims("bob")))
            .await,
    );
    let refused = server.check_token("/api", &old_token).await;
    assert_eq!(denied_status(&refused), Some(401), "{refused:?}");
    server.shutdown().await;
    jwks.stop();
    drop(jwks);

    // Up, publishing no keys (a withdrawal): not ready, and the snapshot is not used.
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, key, yaml) = first_run(dir.path(), "1h").await;
    let jwks = JwksServer::start_on(addr, vec![]).await;
    assert_ignored(&yaml, &key).await;
    drop(jwks);
}

/// The review's reproduction: an attacker who can write to `state_dir` plants a snapshot of
/// their own key, with a checksum that matches, while the JWKS is unreachable. Whatever the
/// route, the planted key never signs a token that passes.
#[tokio::test]
async fn a_planted_snapshot_is_never_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, yaml) = first_run(dir.path(), "1h").await;
    let path = snapshot_path(&yaml, dir.path());
    let genuine = std::fs::read_to_string(&path).expect("snapshot");
    let attacker = TestKey::rsa("k1");
    let mut admin = claims("mallory");
    admin["role"] = "admin".into();
    let forged = attacker.token(&admin);
    // The attacker's key, with the checksum recomputed: a sound file in every other way.
    let plant = |jwks_uri: Option<&str>| {
        let mut stored: serde_json::Value = serde_json::from_str(&genuine).expect("json");
        let jwks = serde_json::json!({"keys": [attacker.jwk()]}).to_string();
        stored["sha256"] = jwt_authz_sha256(&jwks).into();
        stored["jwks"] = jwks.into();
        if let Some(uri) = jwks_uri {
            stored["jwks_uri"] = uri.into();
        }
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, stored.to_string()).expect("plant");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    };

    // 1. The directory others may write to: jwt-authz refuses to start, saying why.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let config = Config::from_yaml(&yaml).expect("config");
    let Err(error) = jwt_authz::serve::Server::new(config.clone()) else {
        panic!("a state_dir others can write to is refused");
    };
    let message = error.to_string();
    assert!(
        message.contains("state_dir") && message.contains("writable by group or others (mode 777)"),
        "{message}"
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");

    // 2. A file owned by another user (as root can make it; the directory is sound).
    plant(None);
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown to nobody");
        assert_planted_refused(&yaml, &forged).await;
    } else {
        eprintln!("SKIPPING the foreign-owner case: chown to another user needs root");
    }

    // 3. With `jwks: discovery`, the jwks_uri remembered from discovery pointing elsewhere
    // (plain http to another host): no part of the snapshot is used. (The same file naming
    // the provider's own JWKS is used: the control.)
    let discovery = yaml.replace(&format!("uri: {}", jwks_url_of(&yaml)), "discovery");
    assert!(matches!(
        Config::from_yaml(&discovery).expect("config").providers[0].jwks,
        jwt_authz::config::JwksSource::Discovery
    ));
    let discovered = snapshot_path(&discovery, dir.path());
    let plant_discovered = |jwks_uri: &str| {
        let mut stored: serde_json::Value = serde_json::from_str(&genuine).expect("json");
        let jwks = serde_json::json!({"keys": [attacker.jwk()]}).to_string();
        stored["sha256"] = jwt_authz_sha256(&jwks).into();
        stored["jwks"] = jwks.into();
        stored["source"] = "discovery".into();
        stored["jwks_uri"] = jwks_uri.into();
        std::fs::write(&discovered, stored.to_string()).expect("plant");
        std::fs::set_permissions(&discovered, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    };
    plant_discovered(&jwks_url_of(&yaml));
    let server = TestServer::start(&discovery).await;
    server.wait_ready().await;
    server.shutdown().await;
    plant_discovered("http://attacker.test/jwks.json");
    assert_planted_refused(&discovery, &forged).await;

    // 4. The genuine keys, with a remembered jwks_uri that passes the URL rules but is off
    // the issuer's origin: the keys are used, the URI never (a token of an unknown key makes
    // the sidecar look for keys; it must not find the attacker's there).
    let evil_key = TestKey::rsa("evil");
    let evil = JwksServer::start(vec![evil_key.jwk()]).await;
    let mut stored: serde_json::Value = serde_json::from_str(&genuine).expect("json");
    stored["source"] = "discovery".into();
    stored["jwks_uri"] = evil.url().into();
    std::fs::write(&discovered, stored.to_string()).expect("plant");
    std::fs::set_permissions(&discovered, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let server = TestServer::start(&discovery).await;
    server.wait_ready().await;
    let response = server.check_token("/api", &evil_key.token(&admin)).await;
    assert!(
        matches!(denied_status(&response), Some(401 | 503)),
        "{response:?}"
    );
    assert_eq!(evil.fetches(), 0, "keys fetched from a snapshot's jwks_uri");
    server.shutdown().await;
}

/// Sealed state (`state_key_file`): a group-writable directory is accepted, snapshots are
/// written sealed and used; one planted without the key (or sealed with another) is not.
#[tokio::test]
async fn with_a_state_key_only_sealed_snapshots_are_read() {
    use std::os::unix::fs::PermissionsExt;
    let keys = tempfile::tempdir().expect("tempdir");
    let key_file = keys.path().join("state.key");
    std::fs::write(&key_file, [7u8; 32]).expect("key");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).expect("chmod");
    let sealed = |yaml: &str| format!("{yaml}state_key_file: {}\n", key_file.display());

    let (_, key, yaml) =
        first_run_with(dir.path(), |url| sealed(&yaml(url, dir.path(), "1h"))).await;
    let path = snapshot_path(&yaml, dir.path());
    let genuine = std::fs::read_to_string(&path).expect("snapshot");
    assert!(genuine.contains("\"seal\""), "{genuine}");

    // Down: the sealed snapshot is used.
    let server = TestServer::start(&yaml).await;
    server.wait_ready().await;
    allowed(
        &server
            .check_token("/api", &key.token(&claims("alice")))
            .await,
    );
    server.shutdown().await;

    // The same file with the attacker's key and a fixed checksum: the seal no longer
    // matches. Without a seal at all: refused too.
    let attacker = TestKey::rsa("k1");
    let mut stored: serde_json::Value = serde_json::from_str(&genuine).expect("json");
    let planted = serde_json::json!({"keys": [attacker.jwk()]}).to_string();
    stored["sha256"] = jwt_authz_sha256(&planted).into();
    stored["jwks"] = planted.into();
    std::fs::write(&path, stored.to_string()).expect("plant");
    assert_planted_refused(&yaml, &attacker.token(&claims("mallory"))).await;
    stored.as_object_mut().expect("object").remove("seal");
    std::fs::write(&path, stored.to_string()).expect("plant");
    assert_planted_refused(&yaml, &attacker.token(&claims("mallory"))).await;

    // A key too short is refused at start.
    std::fs::write(&key_file, [7u8; 16]).expect("key");
    let Err(error) = jwt_authz::serve::Server::new(Config::from_yaml(&yaml).expect("config"))
    else {
        panic!("a key shorter than 32 bytes is refused");
    };
    assert!(error.to_string().contains("at least 32"), "{error}");
}

/// What the snapshot's `sha256` holds: base64url SHA-256.
fn jwt_authz_sha256(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        text.as_bytes(),
    ))
}

fn jwks_url_of(yaml: &str) -> String {
    match &Config::from_yaml(yaml).expect("config").providers[0].jwks {
        jwt_authz::config::JwksSource::Uri(uri) => uri.clone(),
        other => panic!("{other:?}"),
    }
}

/// Started on a planted snapshot (JWKS unreachable): not ready, and the forged token gets
/// 503 (no keys), never 200.
async fn assert_planted_refused(yaml: &str, forged: &str) {
    let server = TestServer::start(yaml).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = server.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let response = server.check_token("/api", forged).await;
    assert_eq!(denied_status(&response), Some(503), "{response:?}");
    server.shutdown().await;
}
