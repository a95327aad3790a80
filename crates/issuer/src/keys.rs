//! Signing keys on disk: RSA private keys as PEM files (0600) in a key directory, and a
//! manifest naming which key signs and until when retired keys stay published. Rotation is a
//! CLI command that edits the directory; a running issuer re-reads it when it changes.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair as _, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

const MANIFEST: &str = "keys.json";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid key manifest: {source}")]
    Manifest {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: not a usable RSA private key")]
    BadKey { path: PathBuf },
    #[error("cannot generate an RSA key")]
    Generate,
    #[error("unsupported RSA key size {0} (use 2048, 3072 or 4096)")]
    KeySize(usize),
    #[error("key id {0:?} is already in use")]
    DuplicateKid(String),
    #[error("invalid key id {0:?}: use letters, digits, '-', '_' and '.'")]
    InvalidKid(String),
    #[error("the key directory holds no signing key")]
    NoSigningKey,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One key as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub kid: String,
    /// File name of the PEM inside the key directory.
    pub file: String,
    pub created_at: u64,
    /// When it starts signing; until then it is only published, so that verifiers hold it
    /// before the first token names it. `None`: from `created_at`.
    #[serde(default)]
    pub signs_from: Option<u64>,
    /// When it stopped signing; it stays published until `publish_until`.
    #[serde(default)]
    pub retired_at: Option<u64>,
    #[serde(default)]
    pub publish_until: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    keys: Vec<KeyEntry>,
}

/// The state of a key, for `issuer keys list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, and signing from `signs_from`.
    Pending,
    Signing,
    Retired,
    Expired,
}

/// A loaded key: its signer and its public JWK.
pub struct LoadedKey {
    pub entry: KeyEntry,
    pub encoding_key: jsonwebtoken::EncodingKey,
    pub jwk: serde_json::Value,
}

impl std::fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKey")
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

/// The keys in force: one signer and every published public key.
#[derive(Debug)]
pub struct KeyRing {
    pub signer: LoadedKey,
    /// Published public JWKs (the signer's first).
    pub published: Vec<serde_json::Value>,
    /// The manifest's modification time when it was read, to notice rotations.
    pub manifest_mtime: Option<SystemTime>,
    /// When (unix seconds) the ring must be rebuilt without any change on disk: a pending
    /// key starts signing, or a retired one leaves the JWKS.
    pub next_change: Option<u64>,
}

/// The key directory.
#[derive(Debug, Clone)]
pub struct KeyDir {
    dir: PathBuf,
    bits: usize,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl KeyDir {
    pub fn new(dir: impl Into<PathBuf>, bits: usize) -> Result<Self, KeyError> {
        if !matches!(bits, 2048 | 3072 | 4096) {
            return Err(KeyError::KeySize(bits));
        }
        Ok(Self {
            dir: dir.into(),
            bits,
        })
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    fn read_manifest(&self) -> Result<Manifest, KeyError> {
        let path = self.manifest_path();
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| KeyError::Manifest { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Writes the manifest atomically (temp file + rename), so a running issuer never reads
    /// half of it.
    fn write_manifest(&self, manifest: &Manifest) -> Result<(), KeyError> {
        let path = self.manifest_path();
        let tmp = self.dir.join(format!(".{MANIFEST}.tmp"));
        let body = serde_json::to_vec_pretty(manifest).map_err(|source| KeyError::Manifest {
            path: path.clone(),
            source,
        })?;
        fs::write(&tmp, body).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    fn ensure_dir(&self) -> Result<(), KeyError> {
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&self.dir))
    }

    /// Creates the first key when the directory has none. Returns whether one was made.
    pub fn ensure_key(&self, kid: Option<&str>) -> Result<bool, KeyError> {
        self.ensure_dir()?;
        let manifest = self.read_manifest()?;
        if manifest.keys.iter().any(|k| k.retired_at.is_none()) {
            return Ok(false);
        }
        self.add_key(manifest, kid, Duration::ZERO, Duration::ZERO)?;
        Ok(true)
    }

    /// Adds a key that is published at once and signs after `publish_ahead` (so verifiers
    /// that refresh on their schedule hold it before any token names it, and an attacker who
    /// spends their unknown-kid refetch budget cannot make the first new tokens fail). The
    /// previous signer signs until then and stays published for `retain` more (the token
    /// lifetime plus a margin); keys whose time is up are pruned.
    pub fn rotate(
        &self,
        kid: Option<&str>,
        publish_ahead: Duration,
        retain: Duration,
    ) -> Result<KeyEntry, KeyError> {
        self.ensure_dir()?;
        let manifest = self.read_manifest()?;
        self.add_key(manifest, kid, publish_ahead, retain)
    }

    fn add_key(
        &self,
        mut manifest: Manifest,
        kid: Option<&str>,
        publish_ahead: Duration,
        retain: Duration,
    ) -> Result<KeyEntry, KeyError> {
        let size = match self.bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            _ => KeySize::Rsa4096,
        };
        let pair = RsaKeyPair::generate(size).map_err(|_| KeyError::Generate)?;
        let der = pair.as_der().map_err(|_| KeyError::Generate)?;
        let jwk = public_jwk(&pair, "");
        let kid = match kid {
            Some(kid) => {
                validate_kid(kid)?;
                kid.to_owned()
            }
            None => thumbprint(&jwk),
        };
        if manifest.keys.iter().any(|k| k.kid == kid) {
            return Err(KeyError::DuplicateKid(kid));
        }
        let now = unix_now();
        let file = format!("{now}-{kid}.pem");
        let path = self.dir.join(&file);
        let pem = pem_encode("PRIVATE KEY", der.as_ref());
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        out.write_all(pem.as_bytes()).map_err(io_err(&path))?;
        out.sync_all().map_err(io_err(&path))?;

        let signs_from = now + publish_ahead.as_secs();
        let until = signs_from + retain.as_secs();
        for key in manifest.keys.iter_mut().filter(|k| k.retired_at.is_none()) {
            key.retired_at = Some(signs_from);
            key.publish_until = Some(until);
        }
        let entry = KeyEntry {
            kid,
            file,
            created_at: now,
            signs_from: Some(signs_from),
            retired_at: None,
            publish_until: None,
        };
        manifest.keys.push(entry.clone());
        self.prune(&mut manifest, now);
        self.write_manifest(&manifest)?;
        Ok(entry)
    }

    /// Drops retired keys past their publication time, files included.
    fn prune(&self, manifest: &mut Manifest, now: u64) {
        manifest.keys.retain(|k| {
            let keep = k.publish_until.is_none_or(|until| until > now);
            if !keep {
                let path = self.dir.join(&k.file);
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove expired key");
                }
            }
            keep
        });
    }

    /// Every key in the manifest with its state.
    pub fn list(&self) -> Result<Vec<(KeyEntry, KeyState)>, KeyError> {
        let now = unix_now();
        Ok(self
            .read_manifest()?
            .keys
            .into_iter()
            .map(|k| {
                let state = match k.publish_until {
                    _ if k.starts_signing() > now => KeyState::Pending,
                    _ if k.signs_at(now) => KeyState::Signing,
                    Some(until) if until <= now => KeyState::Expired,
                    _ => KeyState::Retired,
                };
                (k, state)
            })
            .collect())
    }

    /// Loads the signer and the published keys as of now.
    pub fn load(&self) -> Result<KeyRing, KeyError> {
        self.load_at(unix_now())
    }

    /// Loads the ring as it stands at `now` (unix seconds): the signer is the most recent
    /// key whose signing time has come and not ended; every key not past `publish_until`
    /// is published, pending ones included.
    pub fn load_at(&self, now: u64) -> Result<KeyRing, KeyError> {
        let manifest_mtime = self.manifest_mtime();
        let manifest = self.read_manifest()?;
        let signer_kid = manifest
            .keys
            .iter()
            .filter(|k| k.signs_at(now))
            .max_by_key(|k| (k.starts_signing(), k.created_at))
            .map(|k| k.kid.clone());
        let mut signer = None;
        let mut published = Vec::new();
        let mut next_change: Option<u64> = None;
        for entry in manifest.keys.iter().rev() {
            for at in [
                Some(entry.starts_signing()),
                entry.retired_at,
                entry.publish_until,
            ]
            .into_iter()
            .flatten()
            .filter(|at| *at > now)
            {
                next_change = Some(next_change.map_or(at, |n| n.min(at)));
            }
            if entry.publish_until.is_some_and(|until| until <= now) {
                continue;
            }
            let path = self.dir.join(&entry.file);
            let pem = fs::read(&path).map_err(io_err(&path))?;
            let der = pem_decode(&pem).ok_or_else(|| KeyError::BadKey { path: path.clone() })?;
            let pair = RsaKeyPair::from_pkcs8(&der)
                .map_err(|_| KeyError::BadKey { path: path.clone() })?;
            let jwk = public_jwk(&pair, &entry.kid);
            if signer_kid.as_deref() == Some(entry.kid.as_str()) {
                let encoding_key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
                    .map_err(|_| KeyError::BadKey { path: path.clone() })?;
                signer = Some(LoadedKey {
                    entry: entry.clone(),
                    encoding_key,
                    jwk: jwk.clone(),
                });
                published.insert(0, jwk);
            } else {
                published.push(jwk);
            }
        }
        Ok(KeyRing {
            signer: signer.ok_or(KeyError::NoSigningKey)?,
            published,
            manifest_mtime,
            next_change,
        })
    }

    pub fn manifest_mtime(&self) -> Option<SystemTime> {
        fs::metadata(self.manifest_path())
            .and_then(|m| m.modified())
            .ok()
    }
}

impl KeyEntry {
    /// When this key starts (or started) signing.
    pub fn starts_signing(&self) -> u64 {
        self.signs_from.unwrap_or(self.created_at)
    }

    /// Whether this key signs at `now`.
    pub fn signs_at(&self, now: u64) -> bool {
        self.starts_signing() <= now && self.retired_at.is_none_or(|at| at > now)
    }
}

fn validate_kid(kid: &str) -> Result<(), KeyError> {
    let ok = !kid.is_empty()
        && kid.len() <= 128
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::InvalidKid(kid.to_owned()))
    }
}

/// The public half as a JWK: `kty`, `use`, `alg`, `kid`, `n`, `e`, and nothing private.
fn public_jwk(pair: &RsaKeyPair, kid: &str) -> serde_json::Value {
    let public = pair.public_key();
    serde_json::json!({
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
    })
}

/// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order.
fn thumbprint(jwk: &serde_json::Value) -> String {
    let canonical = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        jwk["e"].as_str().unwrap_or_default(),
        jwk["n"].as_str().unwrap_or_default()
    );
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_decode(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_key_rotation_and_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path().join("k"), 2048).unwrap();
        assert!(keys.ensure_key(None).unwrap());
        assert!(!keys.ensure_key(None).unwrap());
        let first = keys.load().unwrap();
        assert_eq!(first.published.len(), 1);
        // Default kid: the RFC 7638 thumbprint of the public key.
        assert_eq!(first.signer.entry.kid, thumbprint(&first.signer.jwk));
        let mode = fs::metadata(dir.path().join("k").join(&first.signer.entry.file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let second = keys
            .rotate(Some("second"), Duration::ZERO, Duration::from_secs(600))
            .unwrap();
        let ring = keys.load().unwrap();
        assert_eq!(ring.signer.entry.kid, "second");
        let kids: Vec<_> = ring.published.iter().map(|j| j["kid"].clone()).collect();
        assert_eq!(
            kids,
            vec![
                serde_json::json!("second"),
                serde_json::json!(first.signer.entry.kid)
            ]
        );
        let states: Vec<_> = keys.list().unwrap().into_iter().map(|(_, s)| s).collect();
        assert_eq!(states, vec![KeyState::Retired, KeyState::Signing]);

        // With no retention, the previous signer is pruned at once, file and all; the first
        // key's retention (600 s) still runs.
        keys.rotate(Some("third"), Duration::ZERO, Duration::ZERO)
            .unwrap();
        let ring = keys.load().unwrap();
        let kids: Vec<_> = ring.published.iter().map(|j| j["kid"].clone()).collect();
        assert_eq!(
            kids,
            vec![
                serde_json::json!("third"),
                serde_json::json!(first.signer.entry.kid)
            ]
        );
        let listed: Vec<_> = keys
            .list()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.kid)
            .collect();
        assert!(!listed.contains(&second.kid), "{listed:?}");
        assert!(!dir.path().join("k").join(&second.file).exists());
        assert!(matches!(
            keys.rotate(Some("third"), Duration::ZERO, Duration::ZERO),
            Err(KeyError::DuplicateKid(_))
        ));
        assert!(matches!(
            keys.rotate(Some("bad kid"), Duration::ZERO, Duration::ZERO),
            Err(KeyError::InvalidKid(_))
        ));
    }

    #[test]
    fn a_rotated_in_key_is_published_before_it_signs() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path(), 2048).unwrap();
        keys.ensure_key(Some("old")).unwrap();
        let now = unix_now();
        keys.rotate(
            Some("new"),
            Duration::from_secs(300),
            Duration::from_secs(600),
        )
        .unwrap();
        let kids = |ring: &KeyRing| -> Vec<String> {
            ring.published
                .iter()
                .map(|j| j["kid"].as_str().unwrap().to_owned())
                .collect()
        };
        // Published at once, but the old key signs until the new one's time comes.
        let ring = keys.load_at(now).unwrap();
        assert_eq!(ring.signer.entry.kid, "old");
        assert_eq!(kids(&ring), vec!["old", "new"]);
        assert!(
            ring.next_change
                .is_some_and(|at| at >= now + 300 && at <= now + 301)
        );
        let states: Vec<_> = keys.list().unwrap().into_iter().map(|(_, s)| s).collect();
        assert_eq!(states, vec![KeyState::Signing, KeyState::Pending]);
        // Then the new key signs and the old one stays published for the retention.
        let ring = keys.load_at(now + 301).unwrap();
        assert_eq!(ring.signer.entry.kid, "new");
        assert_eq!(kids(&ring), vec!["new", "old"]);
        let ring = keys.load_at(now + 302 + 600).unwrap();
        assert_eq!(kids(&ring), vec!["new"]);
    }

    #[test]
    fn published_jwks_hold_no_private_parts() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path(), 2048).unwrap();
        keys.ensure_key(Some("k1")).unwrap();
        let ring = keys.load().unwrap();
        let jwk = ring.published[0].as_object().unwrap();
        let mut members: Vec<_> = jwk.keys().map(String::as_str).collect();
        members.sort_unstable();
        assert_eq!(members, vec!["alg", "e", "kid", "kty", "n", "use"]);
    }
}
