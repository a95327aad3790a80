//! Key snapshots (`state_dir`): every good JWKS a provider fetches is written to disk, so
//! that a restart while the identity provider is down starts from the last keys seen
//! instead of answering 503 to everyone.
//!
//! A snapshot holds what the JWKS endpoint published (public keys only: a document with
//! private members never parses into a key set) and where it came from. It is written to a
//! temporary file, synced, renamed over the old one and the directory synced, so a crash
//! leaves the old snapshot or the new one, never half of one. On load it is checked whole
//! (format, checksum, provider, issuer, source, age, parse): anything else is ignored with
//! a warning. It is only ever used when the network gave nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::config::ProviderConfig;

const VERSION: u32 = 1;

/// Where a provider's snapshot lives, and how old one may be to be used.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    path: PathBuf,
    max_age: Duration,
    /// The fetch time of the snapshot last written: writes run one at a time and never
    /// replace a newer snapshot with an older one.
    written: std::sync::Arc<std::sync::Mutex<u64>>,
}

/// The file's content.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    version: u32,
    provider: String,
    issuer: String,
    /// The configured source (`jwks.uri`, `discovery`, `file:<path>`).
    source: String,
    /// Unix seconds of the fetch that produced it.
    fetched_at: u64,
    /// The `jwks_uri` OIDC discovery named (a `discovery` source only): used when discovery
    /// itself is unreachable after a restart.
    #[serde(default)]
    jwks_uri: Option<String>,
    /// The JWKS document as fetched, its private or symmetric keys left out.
    jwks: String,
    /// SHA-256 of `jwks`, base64url: a file cut short or edited is not used.
    sha256: String,
}

/// A snapshot read back and found sound.
#[derive(Debug)]
pub struct Loaded {
    pub jwks: Vec<u8>,
    pub fetched_at: SystemTime,
    pub jwks_uri: Option<String>,
}

/// Why a snapshot was not used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no snapshot")]
    Missing,
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    #[error("not a snapshot file (corrupt or truncated): {0}")]
    Corrupt(String),
    #[error("written by another version ({0})")]
    Version(u32),
    #[error("checksum mismatch (corrupt or edited)")]
    Checksum,
    #[error("belongs to {found}, not to this provider ({expected})")]
    Foreign { found: String, expected: String },
    #[error("{age}s old, older than max_snapshot_age ({max}s)")]
    TooOld { age: u64, max: u64 },
    #[error("fetched in the future")]
    Future,
    #[error("unsafe file: {0}")]
    Unsafe(&'static str),
}

fn digest(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

/// How a provider's keys are configured to be found: a snapshot of another source is
/// another provider's.
fn source_of(provider: &ProviderConfig) -> String {
    match &provider.jwks {
        crate::config::JwksSource::Uri(uri) => uri.clone(),
        crate::config::JwksSource::Discovery => "discovery".to_owned(),
        crate::config::JwksSource::File(path) => format!("file:{}", path.display()),
    }
}

fn identity(provider: &ProviderConfig) -> String {
    format!(
        "provider {:?}, issuer {:?}, source {:?}",
        provider.name,
        provider.issuer,
        source_of(provider)
    )
}

impl SnapshotFile {
    /// The snapshot of `provider` in `dir`: named by a hash of its issuer and source, so
    /// that renaming a provider keeps its snapshot and two providers never share one.
    pub fn new(dir: &Path, provider: &ProviderConfig, max_age: Duration) -> Self {
        let id = format!("{}\n{}", provider.issuer, source_of(provider));
        Self {
            path: dir.join(file_name("jwks", &id)),
            max_age,
            written: Default::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `jwks` (fetched at `fetched_at`) as `provider`'s snapshot, atomically.
    /// (Blocking.) Only the public keys of the document are kept: a key with private
    /// members (`d`, RSA primes, ...) or a symmetric (`oct`) one, which the key set skipped,
    /// never reaches the disk.
    pub fn write(
        &self,
        provider: &ProviderConfig,
        jwks: &[u8],
        fetched_at: SystemTime,
        jwks_uri: Option<&str>,
    ) -> std::io::Result<()> {
        let invalid =
            |e: serde_json::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let jwks = public_keys_only(jwks).map_err(invalid)?;
        let fetched_at = fetched_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if fetched_at < *written {
            return Ok(());
        }
        let stored = Stored {
            version: VERSION,
            provider: provider.name.clone(),
            issuer: provider.issuer.clone(),
            source: source_of(provider),
            fetched_at,
            jwks_uri: jwks_uri.map(str::to_owned),
            sha256: digest(jwks.as_bytes()),
            jwks,
        };
        let body = serde_json::to_vec(&stored).map_err(invalid)?;
        write_atomic(&self.path, &body)?;
        *written = fetched_at;
        Ok(())
    }

    /// Reads `provider`'s snapshot back; `limit` bounds the JWKS it may hold.
    pub fn load(&self, provider: &ProviderConfig, limit: usize) -> Result<Loaded, SnapshotError> {
        let file = open(&self.path)?;
        // The JWKS escaped as a JSON string, plus the fields around it.
        let body = read_limited(file, limit)?;
        let stored: Stored =
            serde_json::from_slice(&body).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        if stored.version != VERSION {
            return Err(SnapshotError::Version(stored.version));
        }
        if digest(stored.jwks.as_bytes()) != stored.sha256 {
            return Err(SnapshotError::Checksum);
        }
        let expected = identity(provider);
        let found = format!(
            "provider {:?}, issuer {:?}, source {:?}",
            stored.provider, stored.issuer, stored.source
        );
        // The name may change (the file is named by issuer and source); those may not.
        if stored.issuer != provider.issuer || stored.source != source_of(provider) {
            return Err(SnapshotError::Foreign { found, expected });
        }
        let fetched_at = UNIX_EPOCH + Duration::from_secs(stored.fetched_at);
        let age = SystemTime::now()
            .duration_since(fetched_at)
            .map_err(|_| SnapshotError::Future)?;
        // Keys are never trusted past max_stale after their fetch, snapshot or not.
        let max = self.max_age.min(provider.jwks_cache.max_stale);
        if age >= max {
            return Err(SnapshotError::TooOld {
                age: age.as_secs(),
                max: max.as_secs(),
            });
        }
        Ok(Loaded {
            jwks: stored.jwks.into_bytes(),
            fetched_at,
            jwks_uri: stored.jwks_uri,
        })
    }
}

/// Replaces `path` with `body` so that a crash leaves the old file or the new one: a
/// temporary file in the same directory, synced, renamed over it, the directory synced.
pub(crate) fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(body)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename is durable once the directory is.
    std::fs::File::open(dir)?.sync_all()
}

/// A snapshot file's bytes, refused past twice `limit` (its payload escaped as a JSON
/// string) plus room for the fields around it.
pub(crate) fn read_limited(file: std::fs::File, limit: usize) -> Result<Vec<u8>, SnapshotError> {
    use std::io::Read;
    let max = (limit as u64).saturating_mul(2).saturating_add(4096);
    let mut body = Vec::new();
    file.take(max + 1).read_to_end(&mut body)?;
    if body.len() as u64 > max {
        return Err(SnapshotError::TooLarge(max));
    }
    Ok(body)
}

/// Opens a snapshot file; a missing one is [`SnapshotError::Missing`]. A symbolic link, or
/// a file others may write to, is refused: snapshots are written 0600 by this process.
pub(crate) fn open(path: &Path) -> Result<std::fs::File, SnapshotError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() || !meta.is_file() => {
            return Err(SnapshotError::Unsafe("not a regular file"));
        }
        Ok(meta) if meta.permissions().mode() & 0o022 != 0 => {
            return Err(SnapshotError::Unsafe("writable by group or others"));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SnapshotError::Missing),
        Err(e) => return Err(e.into()),
    }
    Ok(std::fs::File::open(path)?)
}

/// The private members of a JWK (RFC 7518 §6.2.2, §6.3.2, §6.4.1; RFC 8037 §2).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// `{"keys": [...]}` with every key that has a private member, or is symmetric, left out
/// (such keys are never used, and must never be written down).
fn public_keys_only(jwks: &[u8]) -> Result<String, serde_json::Error> {
    let mut doc: serde_json::Value = serde_json::from_slice(jwks)?;
    if let Some(keys) = doc
        .get_mut("keys")
        .and_then(serde_json::Value::as_array_mut)
    {
        keys.retain(|key| {
            key.get("kty").and_then(serde_json::Value::as_str) != Some("oct")
                && PRIVATE_MEMBERS.iter().all(|m| key.get(*m).is_none())
        });
    }
    serde_json::to_string(&serde_json::json!({"keys": doc.get("keys")}))
}

/// A file name for `key` (a hash: names never carry what the key is made of).
pub(crate) fn file_name(prefix: &str, key: &str) -> String {
    format!("{prefix}-{}.json", &digest(key.as_bytes())[..22])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(max_stale: &str) -> ProviderConfig {
        let yaml = format!(
            "providers:\n  - name: p\n    issuer: https://issuer.test\n    audiences: [api]\n    jwks: {{uri: \"https://issuer.test/jwks.json\"}}\n    jwks_cache: {{min_ttl: 10s, max_ttl: 30s, max_stale: {max_stale}}}\n"
        );
        crate::Config::from_yaml(&yaml)
            .expect("config")
            .providers
            .remove(0)
    }

    const JWKS: &str = r#"{"keys": [
        {"kty": "RSA", "kid": "public", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "leaked", "n": "AQAB", "e": "AQAB", "d": "PRIVATE-D"},
        {"kty": "oct", "kid": "hmac", "k": "SHARED-SECRET"}
    ]}"#;

    fn ago(secs: u64) -> SystemTime {
        SystemTime::now() - Duration::from_secs(secs)
    }

    #[test]
    fn only_public_keys_are_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = provider("4h");
        let file = SnapshotFile::new(dir.path(), &p, Duration::from_secs(3600));
        file.write(
            &p,
            JWKS.as_bytes(),
            ago(10),
            Some("https://issuer.test/keys"),
        )
        .unwrap();
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(
            !text.contains("PRIVATE-D") && !text.contains("SHARED-SECRET"),
            "{text}"
        );
        assert!(text.contains("public"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        let loaded = file.load(&p, 512 * 1024).unwrap();
        assert_eq!(loaded.jwks_uri.as_deref(), Some("https://issuer.test/keys"));
        let keys: serde_json::Value = serde_json::from_slice(&loaded.jwks).unwrap();
        assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn an_older_fetch_never_replaces_a_newer_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let p = provider("4h");
        let file = SnapshotFile::new(dir.path(), &p, Duration::from_secs(3600));
        file.write(&p, JWKS.as_bytes(), ago(10), None).unwrap();
        let newer = std::fs::read_to_string(file.path()).unwrap();
        file.write(&p, br#"{"keys": []}"#, ago(20), None).unwrap();
        assert_eq!(std::fs::read_to_string(file.path()).unwrap(), newer);
    }

    #[test]
    fn snapshots_older_than_max_stale_or_max_age_or_unsafe_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // max_stale (1m) is shorter than max_snapshot_age (1h): it bounds the snapshot.
        let p = provider("1m");
        let file = SnapshotFile::new(dir.path(), &p, Duration::from_secs(3600));
        file.write(&p, JWKS.as_bytes(), ago(120), None).unwrap();
        assert!(matches!(
            file.load(&p, 512 * 1024),
            Err(SnapshotError::TooOld { max: 60, .. })
        ));
        let p = provider("4h");
        let file = SnapshotFile::new(dir.path(), &p, Duration::from_secs(3600));
        file.write(&p, JWKS.as_bytes(), ago(7200), None).unwrap();
        assert!(matches!(
            file.load(&p, 512 * 1024),
            Err(SnapshotError::TooOld { max: 3600, .. })
        ));

        let fresh = SnapshotFile::new(dir.path(), &p, Duration::from_secs(3600));
        std::fs::remove_file(fresh.path()).unwrap();
        fresh.write(&p, JWKS.as_bytes(), ago(1), None).unwrap();
        assert!(fresh.load(&p, 512 * 1024).is_ok());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(fresh.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            fresh.load(&p, 512 * 1024),
            Err(SnapshotError::Unsafe(_))
        ));
        let elsewhere = dir.path().join("planted.json");
        std::fs::copy(fresh.path(), &elsewhere).unwrap();
        std::fs::remove_file(fresh.path()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, fresh.path()).unwrap();
        assert!(matches!(
            fresh.load(&p, 512 * 1024),
            Err(SnapshotError::Unsafe(_))
        ));
    }
}
