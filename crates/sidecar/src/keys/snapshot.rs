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
//!
//! The checksum finds accidents, not forgeries: whoever can write to `state_dir` could plant
//! keys. So the directory must belong to jwt-authz's user and be writable by nobody else, and
//! so must every file read from it ([`StateDir::open`], [`open`]); otherwise start-up fails
//! or the file is ignored. Where that cannot be had (a shared volume), `state_key_file` makes
//! every file carry an HMAC-SHA256 under a key of its own, and only files with a valid one
//! are read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::config::ProviderConfig;

const VERSION: u32 = 1;

/// `state_dir`, checked, with what every snapshot in it is held to.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub path: PathBuf,
    /// `max_snapshot_age`.
    pub max_age: Duration,
    /// `state_key_file`: when set, files are sealed with it and read only when sealed.
    key: Option<Arc<StateKey>>,
}

struct StateKey(aws_lc_rs::hmac::Key);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(..)")
    }
}

/// Why `state_dir` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("state_dir {path}: {message}")]
    Dir { path: String, message: String },
    #[error("state_key_file {path}: {message}")]
    Key { path: String, message: String },
}

/// The least a `state_key_file` holds.
pub const MIN_STATE_KEY_BYTES: usize = 32;

impl StateDir {
    /// Creates `path` (0700) when missing, and checks it: it must be owned by this process's
    /// user and writable by no one else, unless `key_file` seals the files (then a warning).
    pub fn open(
        path: &Path,
        max_age: Duration,
        key_file: Option<&Path>,
    ) -> Result<Self, StateDirError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let failed = |message: String| StateDirError::Dir {
            path: path.display().to_string(),
            message,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| failed(e.to_string()))?;
        let key = match key_file {
            None => None,
            Some(file) => {
                let failed = |message: String| StateDirError::Key {
                    path: file.display().to_string(),
                    message,
                };
                let secret = std::fs::read(file).map_err(|e| failed(e.to_string()))?;
                if let Ok(meta) = std::fs::metadata(file)
                    && meta.mode() & 0o077 != 0
                {
                    tracing::warn!(path = %file.display(), mode = format!("{:o}", meta.mode() & 0o7777), "state_key_file is readable by group or others: whoever reads it can seal snapshots");
                }
                if secret.len() < MIN_STATE_KEY_BYTES {
                    return Err(failed(format!(
                        "holds {} bytes; at least {MIN_STATE_KEY_BYTES} random bytes are needed",
                        secret.len()
                    )));
                }
                Some(Arc::new(StateKey(aws_lc_rs::hmac::Key::new(
                    aws_lc_rs::hmac::HMAC_SHA256,
                    &secret,
                ))))
            }
        };
        let meta = std::fs::metadata(path).map_err(|e| failed(e.to_string()))?;
        let me = rustix::process::geteuid().as_raw();
        let problem = if !meta.is_dir() {
            return Err(failed("not a directory".to_owned()));
        } else if meta.uid() != me {
            Some(format!(
                "owned by uid {}, not by jwt-authz's user (uid {me})",
                meta.uid()
            ))
        } else if meta.mode() & 0o022 != 0 {
            Some(format!(
                "writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            if key.is_none() {
                return Err(failed(format!(
                    "{problem}: whoever else can write there could plant a key snapshot. Give it \
                     to jwt-authz's user alone (chown; chmod 700), or set state_key_file so that \
                     only snapshots sealed with that key are read"
                )));
            }
            tracing::warn!(path = %path.display(), "state_dir is {problem}; only snapshots sealed with state_key_file are read");
        }
        Ok(Self {
            path: path.to_owned(),
            max_age,
            key,
        })
    }

    /// The seal of a file made of `parts` (`None` without `state_key_file`).
    pub(crate) fn seal(&self, parts: &[&[u8]]) -> Option<String> {
        let key = self.key.as_ref()?;
        Some(URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key.0, &framed(parts))))
    }

    /// Opens a file of the directory (see [`open`]): without a key, only a file of this
    /// user's; with one, the seal is checked instead ([`StateDir::verify`]).
    pub(crate) fn open_file(&self, path: &Path) -> Result<std::fs::File, SnapshotError> {
        open(path, self.key.is_none())
    }

    /// Checks `seal` over `parts`, when files are sealed.
    pub(crate) fn verify(&self, parts: &[&[u8]], seal: Option<&str>) -> Result<(), SnapshotError> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let seal = seal.ok_or(SnapshotError::Unsealed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(seal)
            .map_err(|_| SnapshotError::Unsealed)?;
        aws_lc_rs::hmac::verify(&key.0, &framed(parts), &tag).map_err(|_| SnapshotError::Unsealed)
    }
}

/// `parts`, each prefixed with its length, so no two lists frame the same bytes.
fn framed(parts: &[&[u8]]) -> Vec<u8> {
    let mut framed = b"jwt-authz state v1".to_vec();
    for part in parts {
        framed.extend_from_slice(&(part.len() as u64).to_be_bytes());
        framed.extend_from_slice(part);
    }
    framed
}

/// Where a provider's snapshot lives, and how old one may be to be used.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    path: PathBuf,
    state: StateDir,
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
    /// With `state_key_file`: the HMAC-SHA256 of every field above, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seal: Option<String>,
}

impl Stored {
    fn parts(&self) -> [Vec<u8>; 7] {
        [
            self.version.to_string().into_bytes(),
            self.provider.clone().into_bytes(),
            self.issuer.clone().into_bytes(),
            self.source.clone().into_bytes(),
            self.fetched_at.to_string().into_bytes(),
            self.jwks_uri.clone().unwrap_or_default().into_bytes(),
            self.jwks.clone().into_bytes(),
        ]
    }
}

fn borrowed<const N: usize>(parts: &[Vec<u8>; N]) -> Vec<&[u8]> {
    parts.iter().map(Vec::as_slice).collect()
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
    Unsafe(String),
    #[error("not sealed with state_key_file (written without it, or by someone else)")]
    Unsealed,
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
    pub fn new(state: &StateDir, provider: &ProviderConfig) -> Self {
        let id = format!("{}\n{}", provider.issuer, source_of(provider));
        Self {
            path: state.path.join(file_name("jwks", &id)),
            state: state.clone(),
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
        let mut stored = Stored {
            version: VERSION,
            provider: provider.name.clone(),
            issuer: provider.issuer.clone(),
            source: source_of(provider),
            fetched_at,
            jwks_uri: jwks_uri.map(str::to_owned),
            sha256: digest(jwks.as_bytes()),
            jwks,
            seal: None,
        };
        stored.seal = self.state.seal(&borrowed(&stored.parts()));
        let body = serde_json::to_vec(&stored).map_err(invalid)?;
        write_atomic(&self.path, &body)?;
        *written = fetched_at;
        Ok(())
    }

    /// Reads `provider`'s snapshot back; `limit` bounds the JWKS it may hold.
    pub fn load(&self, provider: &ProviderConfig, limit: usize) -> Result<Loaded, SnapshotError> {
        let file = self.state.open_file(&self.path)?;
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
        self.state
            .verify(&borrowed(&stored.parts()), stored.seal.as_deref())?;
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
        let max = self.state.max_age.min(provider.jwks_cache.max_stale);
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

/// Opens a snapshot file; a missing one is [`SnapshotError::Missing`]. A symbolic link, a
/// file others may write to, or (when `owned`) one another user owns is refused: snapshots
/// are written 0600 by this process. (With `state_key_file` the seal decides whose a file
/// is, so `owned` is false.)
pub(crate) fn open(path: &Path, owned: bool) -> Result<std::fs::File, SnapshotError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // O_NOFOLLOW: a symbolic link is not opened; what is checked below is the file opened,
    // not a name that could be swapped between a check and the open. O_NONBLOCK: a FIFO put
    // in its place does not hold the start waiting for a writer (and is then refused).
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SnapshotError::Missing),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(SnapshotError::Unsafe("a symbolic link".to_owned()));
        }
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(SnapshotError::Unsafe("not a regular file".to_owned()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(SnapshotError::Unsafe(
            "writable by group or others".to_owned(),
        ));
    }
    if owned && meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(SnapshotError::Unsafe(format!(
            "owned by uid {}, not by jwt-authz's user",
            meta.uid()
        )));
    }
    Ok(file)
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

    fn state(dir: &Path) -> StateDir {
        StateDir::open(dir, Duration::from_secs(3600), None).unwrap()
    }

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
        let file = SnapshotFile::new(&state(dir.path()), &p);
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
        let file = SnapshotFile::new(&state(dir.path()), &p);
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
        let file = SnapshotFile::new(&state(dir.path()), &p);
        file.write(&p, JWKS.as_bytes(), ago(120), None).unwrap();
        assert!(matches!(
            file.load(&p, 512 * 1024),
            Err(SnapshotError::TooOld { max: 60, .. })
        ));
        let p = provider("4h");
        let file = SnapshotFile::new(&state(dir.path()), &p);
        file.write(&p, JWKS.as_bytes(), ago(7200), None).unwrap();
        assert!(matches!(
            file.load(&p, 512 * 1024),
            Err(SnapshotError::TooOld { max: 3600, .. })
        ));

        let fresh = SnapshotFile::new(&state(dir.path()), &p);
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
        // A FIFO in its place is refused at once (not waited on for a writer).
        std::fs::remove_file(fresh.path()).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(fresh.path())
            .status()
            .unwrap();
        assert!(made.success());
        assert!(matches!(
            fresh.load(&p, 512 * 1024),
            Err(SnapshotError::Unsafe(_))
        ));
    }
}
