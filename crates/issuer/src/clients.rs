//! The clients allowed to introspect tokens (RFC 7662 §2.1), read once at start from the
//! files `--introspection-client` and `--introspection-client-jwks` name: a secret (kept as
//! its SHA-256 only) and/or a set of public keys for `private_key_jwt` (RFC 7523 §2.2).

use std::collections::BTreeMap;
use std::io::Read;

use aws_lc_rs::digest::{SHA256, digest};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::{ClientFile, Settings};

/// The shortest secret accepted: shorter ones are guessable.
pub const MIN_SECRET_LEN: usize = 16;
/// The longest secret file read.
pub const MAX_SECRET_LEN: usize = 1024;
/// The largest JWKS file read.
const MAX_JWKS_FILE: u64 = 64 * 1024;
/// Keys one client may register.
const MAX_KEYS: usize = 16;

/// Why the clients could not be loaded: the start fails with this message.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    #[error("introspection client {id:?}: cannot read {path}: {source}")]
    Read {
        id: String,
        path: String,
        source: std::io::Error,
    },
    #[error("introspection client {id:?}: {path} is larger than {limit} bytes")]
    TooLarge {
        id: String,
        path: String,
        limit: u64,
    },
    #[error(
        "introspection client {id:?}: the secret in {path} is shorter than {MIN_SECRET_LEN} bytes"
    )]
    ShortSecret { id: String, path: String },
    #[error("introspection client {id:?}: the secret in {path} is not UTF-8")]
    SecretNotUtf8 { id: String, path: String },
    #[error("introspection client {id:?} is given {what} twice")]
    Duplicate { id: String, what: &'static str },
    #[error("introspection client {id:?}: {path} is not a JWKS: {reason}")]
    BadJwks {
        id: String,
        path: String,
        reason: String,
    },
}

/// A key a client signs its assertions with, and the one algorithm it is used with.
pub struct ClientKey {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// One registered client.
#[derive(Debug, Default)]
pub struct Client {
    /// SHA-256 of the secret: compared in constant time, never the secret itself.
    secret_digest: Option<[u8; 32]>,
    pub keys: Vec<ClientKey>,
}

/// The registered clients by id.
#[derive(Debug, Default)]
pub struct Clients {
    by_id: BTreeMap<String, Client>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

fn read_limited(file: &ClientFile, limit: u64) -> Result<Vec<u8>, ClientsError> {
    let path = file.path.display().to_string();
    let read_error = |source| ClientsError::Read {
        id: file.id.clone(),
        path: path.clone(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(&file.path)
        .map_err(read_error)?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(ClientsError::TooLarge {
            id: file.id.clone(),
            path,
            limit,
        });
    }
    Ok(bytes)
}

/// The secret in `file`: one trailing newline (`\n` or `\r\n`) trimmed, at least
/// [`MIN_SECRET_LEN`] bytes.
fn read_secret(file: &ClientFile) -> Result<String, ClientsError> {
    let bytes = read_limited(file, MAX_SECRET_LEN as u64)?;
    let path = file.path.display().to_string();
    let text = String::from_utf8(bytes).map_err(|_| ClientsError::SecretNotUtf8 {
        id: file.id.clone(),
        path: path.clone(),
    })?;
    let secret = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if secret.len() < MIN_SECRET_LEN {
        return Err(ClientsError::ShortSecret {
            id: file.id.clone(),
            path,
        });
    }
    Ok(secret.to_owned())
}

/// The algorithm a JWK is used with: RS256 for RSA, ES256 for EC P-256 (the only two
/// `introspection_endpoint_auth_signing_alg_values_supported`). Symmetric keys, private
/// keys and other curves are refused: a JWKS is a client's public keys.
fn client_key(value: &serde_json::Value) -> Result<ClientKey, String> {
    if value.get("d").is_some() {
        return Err("a key holds private members (\"d\"): give only the public keys".into());
    }
    let jwk: Jwk = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::EllipticCurve(_) => return Err("an EC key not on P-256".into()),
        _ => return Err("a key that is neither RSA nor EC P-256".into()),
    };
    if let Some(declared) = value.get("alg") {
        let name = if algorithm == Algorithm::RS256 {
            "RS256"
        } else {
            "ES256"
        };
        if declared.as_str() != Some(name) {
            return Err(format!("a key's alg {declared} is not {name}"));
        }
    }
    if matches!(
        jwk.common.public_key_use,
        Some(ref u) if *u != PublicKeyUse::Signature
    ) {
        return Err("a key whose use is not sig".into());
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    Ok(ClientKey {
        kid: jwk.common.key_id,
        algorithm,
        key,
    })
}

fn read_jwks(file: &ClientFile) -> Result<Vec<ClientKey>, ClientsError> {
    let bytes = read_limited(file, MAX_JWKS_FILE)?;
    let bad = |reason: String| ClientsError::BadJwks {
        id: file.id.clone(),
        path: file.path.display().to_string(),
        reason,
    };
    let jwks: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let keys = jwks
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| bad("no \"keys\" array".into()))?;
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(bad(format!("1 to {MAX_KEYS} keys expected")));
    }
    keys.iter().map(|k| client_key(k).map_err(&bad)).collect()
}

impl Clients {
    /// Reads every client's secret and keys; any unreadable or unfit file fails the start.
    pub fn load(settings: &Settings) -> Result<Self, ClientsError> {
        let mut by_id: BTreeMap<String, Client> = BTreeMap::new();
        for file in &settings.introspection_clients {
            let secret = read_secret(file)?;
            let client = by_id.entry(file.id.clone()).or_default();
            if client.secret_digest.is_some() {
                return Err(ClientsError::Duplicate {
                    id: file.id.clone(),
                    what: "a secret",
                });
            }
            client.secret_digest = Some(sha256(secret.as_bytes()));
        }
        for file in &settings.introspection_client_jwks {
            let keys = read_jwks(file)?;
            let client = by_id.entry(file.id.clone()).or_default();
            if !client.keys.is_empty() {
                return Err(ClientsError::Duplicate {
                    id: file.id.clone(),
                    what: "a JWKS",
                });
            }
            client.keys = keys;
        }
        Ok(Self { by_id })
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn get(&self, id: &str) -> Option<&Client> {
        self.by_id.get(id)
    }

    /// Whether `secret` is client `id`'s. The digests are compared in constant time, and an
    /// unknown client or one without a secret costs the same digest and comparison.
    pub fn secret_matches(&self, id: &str, secret: &str) -> bool {
        let presented = sha256(secret.as_bytes());
        let (expected, known) = match self.by_id.get(id).and_then(|c| c.secret_digest) {
            Some(digest) => (digest, true),
            None => ([0u8; 32], false),
        };
        let equal =
            aws_lc_rs::constant_time::verify_slices_are_equal(&presented, &expected).is_ok();
        equal && known
    }
}

/// Loads clients for a test without files.
#[cfg(test)]
pub(crate) fn with_secret(id: &str, secret: &str) -> Clients {
    let mut clients = Clients::default();
    clients.by_id.insert(
        id.to_owned(),
        Client {
            secret_digest: Some(sha256(secret.as_bytes())),
            keys: Vec::new(),
        },
    );
    clients
}

#[cfg(test)]
pub(crate) fn read_secret_for_test(path: &std::path::Path) -> Result<String, ClientsError> {
    read_secret(&ClientFile {
        id: "t".into(),
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_trimmed_of_one_newline_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        assert_eq!(read_secret_for_test(&path).unwrap(), "0123456789abcdef");
        std::fs::write(&path, "0123456789abcdef\r\n").unwrap();
        assert_eq!(read_secret_for_test(&path).unwrap(), "0123456789abcdef");
        std::fs::write(&path, "0123456789abcde\n").unwrap();
        let err = read_secret_for_test(&path).unwrap_err();
        assert!(err.to_string().contains("shorter than 16 bytes"), "{err}");
        std::fs::write(&path, vec![b'a'; MAX_SECRET_LEN + 1]).unwrap();
        assert!(matches!(
            read_secret_for_test(&path),
            Err(ClientsError::TooLarge { .. })
        ));
        let err = read_secret_for_test(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn secrets_match_exactly() {
        let clients = with_secret("sidecar", "0123456789abcdef");
        assert!(clients.secret_matches("sidecar", "0123456789abcdef"));
        assert!(!clients.secret_matches("sidecar", "0123456789abcdeF"));
        assert!(!clients.secret_matches("sidecar", "0123456789abcdef "));
        assert!(!clients.secret_matches("other", "0123456789abcdef"));
        assert!(!clients.secret_matches("", ""));
    }

    #[test]
    fn a_jwks_holds_public_rsa_or_p256_signing_keys_only() {
        let rsa = serde_json::json!({"kty": "RSA", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"});
        let key = client_key(&rsa).unwrap();
        assert_eq!(key.algorithm, Algorithm::RS256);
        let ec = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "e", "alg": "ES256", "use": "sig",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let key = client_key(&ec).unwrap();
        assert_eq!(key.algorithm, Algorithm::ES256);
        assert_eq!(key.kid.as_deref(), Some("e"));
        let mut wrong_alg = ec.clone();
        wrong_alg["alg"] = "RS256".into();
        assert!(client_key(&wrong_alg).is_err());
        let mut encryption = ec.clone();
        encryption["use"] = "enc".into();
        assert!(client_key(&encryption).is_err());
        let mut private = ec.clone();
        private["d"] = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI".into();
        assert!(client_key(&private).is_err());
        let p384 = serde_json::json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"});
        assert!(client_key(&p384).is_err());
        let oct = serde_json::json!({"kty": "oct", "k": "c2VjcmV0"});
        assert!(client_key(&oct).is_err());
    }
}
