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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    path: PathBuf,
    max_age: Duration,
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
    /// The JWKS document as fetched.
    jwks: String,
    /// SHA-256 of `jwks`, base64url: a file cut short or edited is not used.
    sha256: String,
}

/// A snapshot read back and found sound.
#[derive(Debug)]
pub struct Loaded {
    pub jwks: Vec<u8>,
    pub fetched_at: SystemTime,
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
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `jwks` (fetched at `fetched_at`) as `provider`'s snapshot, atomically.
    pub fn write(
        &self,
        provider: &ProviderConfig,
        jwks: &[u8],
        fetched_at: SystemTime,
    ) -> std::io::Result<()> {
        let jwks = std::str::from_utf8(jwks)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let stored = Stored {
            version: VERSION,
            provider: provider.name.clone(),
            issuer: provider.issuer.clone(),
            source: source_of(provider),
            fetched_at: fetched_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            jwks: jwks.to_owned(),
            sha256: digest(jwks.as_bytes()),
        };
        let body = serde_json::to_vec(&stored)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        write_atomic(&self.path, &body)
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
        if age > self.max_age {
            return Err(SnapshotError::TooOld {
                age: age.as_secs(),
                max: self.max_age.as_secs(),
            });
        }
        Ok(Loaded {
            jwks: stored.jwks.into_bytes(),
            fetched_at,
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

/// Opens a snapshot file; a missing one is [`SnapshotError::Missing`].
pub(crate) fn open(path: &Path) -> Result<std::fs::File, SnapshotError> {
    match std::fs::File::open(path) {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SnapshotError::Missing),
        Err(e) => Err(e.into()),
    }
}

/// A file name for `key` (a hash: names never carry what the key is made of).
pub(crate) fn file_name(prefix: &str, key: &str) -> String {
    format!("{prefix}-{}.json", &digest(key.as_bytes())[..22])
}
