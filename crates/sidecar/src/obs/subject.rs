//! How the decision log names a token's subject. `sub` is personal data (often an email
//! address or an employee number), and a debug log travels further than the requests it
//! describes: by default it is logged as a keyed fingerprint, which tells one user's requests
//! apart and follows one user through the log, but cannot be reversed by hashing a list of
//! candidate addresses (the key is not in the log).

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::{Config, SubjectLog};

/// The least a `log.subject_key_file` holds.
pub const MIN_KEY_BYTES: usize = 32;

/// `log.subject` and its key.
#[derive(Clone)]
pub struct Subjects {
    mode: SubjectLog,
    key: Arc<aws_lc_rs::hmac::Key>,
    /// Where the key came from (`None`: random, made at start).
    file: Option<PathBuf>,
}

impl std::fmt::Debug for Subjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subjects({:?}, key from {:?})", self.mode, self.file)
    }
}

impl Subjects {
    /// The settings of `config`; a random key is kept from `previous` (a reload does not
    /// change every fingerprint), a key file is read again.
    pub fn start(config: &Config, previous: Option<&Subjects>) -> Result<Self, String> {
        let log = &config.log;
        let file = log.subject_key_file.clone();
        let key = match (&file, previous) {
            (None, Some(previous)) if previous.file.is_none() => Arc::clone(&previous.key),
            (None, _) => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let key = aws_lc_rs::hmac::Key::generate(aws_lc_rs::hmac::HMAC_SHA256, &rng)
                    .map_err(|_| "no random key could be made".to_owned())?;
                Arc::new(key)
            }
            (Some(path), _) => {
                let secret = std::fs::read(path)
                    .map_err(|e| format!("log.subject_key_file {}: {e}", path.display()))?;
                if secret.len() < MIN_KEY_BYTES {
                    return Err(format!(
                        "log.subject_key_file {}: holds {} bytes; at least {MIN_KEY_BYTES} random bytes are needed",
                        path.display(),
                        secret.len()
                    ));
                }
                Arc::new(aws_lc_rs::hmac::Key::new(
                    aws_lc_rs::hmac::HMAC_SHA256,
                    &secret,
                ))
            }
        };
        Ok(Self {
            mode: log.subject,
            key,
            file,
        })
    }

    /// What the log line says for `sub` (`-` when there is none, or when it is not logged).
    pub fn logged(&self, sub: Option<&str>) -> String {
        match (self.mode, sub) {
            (SubjectLog::Off, _) | (_, None) => "-".to_owned(),
            (SubjectLog::Raw, Some(sub)) => sub.to_owned(),
            (SubjectLog::Fingerprint, Some(sub)) => {
                let tag = aws_lc_rs::hmac::sign(&self.key, sub.as_bytes());
                format!("hmac:{}", URL_SAFE_NO_PAD.encode(&tag.as_ref()[..12]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_yaml(&format!(
            "providers:\n  - name: p\n    issuer: https://i.test\n    audiences: [a]\n    jwks: {{uri: https://i.test/jwks}}\nlog:\n  level: debug\n{extra}"
        ))
        .expect("config")
    }

    #[test]
    fn a_subject_is_a_keyed_fingerprint_unless_raw_is_asked_for() {
        let subjects = Subjects::start(&config(""), None).unwrap();
        let alice = subjects.logged(Some("alice@example.com"));
        assert!(alice.starts_with("hmac:") && alice.len() == 21, "{alice}");
        assert!(!alice.contains("alice"));
        assert_eq!(alice, subjects.logged(Some("alice@example.com")));
        assert_ne!(alice, subjects.logged(Some("bob@example.com")));
        assert_eq!(subjects.logged(None), "-");
        // Another process (another random key): another fingerprint; a reload keeps it.
        assert_ne!(
            alice,
            Subjects::start(&config(""), None)
                .unwrap()
                .logged(Some("alice@example.com"))
        );
        let reloaded = Subjects::start(&config(""), Some(&subjects)).unwrap();
        assert_eq!(alice, reloaded.logged(Some("alice@example.com")));

        let raw = Subjects::start(&config("  subject: raw\n"), None).unwrap();
        assert_eq!(raw.logged(Some("alice@example.com")), "alice@example.com");
        let off = Subjects::start(&config("  subject: off\n"), None).unwrap();
        assert_eq!(off.logged(Some("alice@example.com")), "-");
    }

    #[test]
    fn a_key_file_makes_fingerprints_the_same_on_every_replica() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, [9u8; 32]).unwrap();
        let extra = format!("  subject_key_file: {}\n", path.display());
        let one = Subjects::start(&config(&extra), None).unwrap();
        let two = Subjects::start(&config(&extra), None).unwrap();
        assert_eq!(one.logged(Some("alice")), two.logged(Some("alice")));
        // RFC 4231-style check of the construction: HMAC-SHA256 under the file's bytes.
        let expected = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[9u8; 32]),
            b"alice",
        );
        assert_eq!(
            one.logged(Some("alice")),
            format!("hmac:{}", URL_SAFE_NO_PAD.encode(&expected.as_ref()[..12]))
        );
        std::fs::write(&path, [9u8; 16]).unwrap();
        let error = Subjects::start(&config(&extra), None).unwrap_err();
        assert!(error.contains("at least 32"), "{error}");
    }
}
