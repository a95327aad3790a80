//! Opaque access tokens: 32 random bytes, base64url (43 characters, no dots), meaningless
//! to anyone but this issuer, which answers for them at its introspection endpoint
//! (RFC 7662). The database holds the token's SHA-256 only, so a copy of it lets no one
//! present a token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::{OptionalExtension, params};

use crate::token::Confirmation;
use crate::users::{UserError, UserStore, now};

/// Length of a token: 32 bytes in base64url without padding.
pub const TOKEN_LEN: usize = 43;
/// Expired rows deleted per login at most: pruning never makes one login slow.
const PRUNE_BATCH: i64 = 64;

/// A fresh token; `None` if the system has no randomness.
pub fn new_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `token` has an opaque token's shape (and not a JWT's).
pub fn looks_opaque(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The SHA-256 a token is stored and found by.
pub fn token_hash(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
    );
    out
}

/// A short fingerprint of a token for logs: the first 8 hex digits of its SHA-256.
pub fn fingerprint(token: &str) -> String {
    crate::users::hex(&token_hash(token)[..4])
}

/// What is recorded about an opaque token, and read back by introspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueRecord {
    pub jti: String,
    pub subject: String,
    pub username: String,
    pub role: String,
    /// The token's `aud`: a resource indicator or the configured audience.
    pub audience: String,
    /// The granted scopes, space-separated.
    pub scope: Option<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub cnf: Confirmation,
    pub revoked_at: Option<i64>,
}

impl UserStore {
    /// Records an opaque token by its hash, and prunes a few expired ones.
    pub fn record_opaque(&self, hash: &[u8; 32], record: &OpaqueRecord) -> Result<(), UserError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM opaque_tokens WHERE token_hash IN (
                 SELECT token_hash FROM opaque_tokens WHERE expires_at <= ?1 LIMIT ?2)",
            params![record.issued_at, PRUNE_BATCH],
        )?;
        tx.execute(
            "INSERT INTO opaque_tokens (token_hash, jti, subject, username, role, audience,
                 issued_at, expires_at, cnf_jkt, cnf_x5t_s256, scope)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                hash.as_slice(),
                record.jti,
                record.subject,
                record.username,
                record.role,
                record.audience,
                record.issued_at,
                record.expires_at,
                record.cnf.jkt,
                record.cnf.x5t_s256,
                record.scope,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The record of the token with this hash, if any (revoked or expired included).
    pub fn find_opaque(&self, hash: &[u8; 32]) -> Result<Option<OpaqueRecord>, UserError> {
        Ok(self
            .reader()
            .query_row(
                "SELECT jti, subject, username, role, audience, issued_at, expires_at,
                        cnf_jkt, cnf_x5t_s256, revoked_at, scope
                 FROM opaque_tokens WHERE token_hash = ?1",
                params![hash.as_slice()],
                |r| {
                    Ok(OpaqueRecord {
                        jti: r.get(0)?,
                        subject: r.get(1)?,
                        username: r.get(2)?,
                        role: r.get(3)?,
                        audience: r.get(4)?,
                        issued_at: r.get(5)?,
                        expires_at: r.get(6)?,
                        cnf: Confirmation {
                            jkt: r.get(7)?,
                            x5t_s256: r.get(8)?,
                        },
                        revoked_at: r.get(9)?,
                        scope: r.get(10)?,
                    })
                },
            )
            .optional()?)
    }

    /// Revokes the token with this hash: its record (for the log), `None` when unknown,
    /// with whether this call revoked it (false: it already was).
    pub fn revoke_opaque(
        &self,
        hash: &[u8; 32],
    ) -> Result<Option<(OpaqueRecord, bool)>, UserError> {
        let Some(record) = self.find_opaque(hash)? else {
            return Ok(None);
        };
        if record.revoked_at.is_some() {
            return Ok(Some((record, false)));
        }
        let changed = self.conn().execute(
            "UPDATE opaque_tokens SET revoked_at = ?2
             WHERE token_hash = ?1 AND revoked_at IS NULL",
            params![hash.as_slice(), now()],
        )?;
        Ok(Some((record, changed == 1)))
    }

    /// Opaque tokens recorded now (expired ones not yet pruned included).
    pub fn opaque_count(&self) -> Result<i64, UserError> {
        Ok(self
            .reader()
            .query_row("SELECT COUNT(*) FROM opaque_tokens", [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(jti: &str, issued_at: i64, expires_at: i64) -> OpaqueRecord {
        OpaqueRecord {
            jti: jti.into(),
            subject: "s".into(),
            username: "bob".into(),
            role: "user".into(),
            audience: "api".into(),
            scope: Some("read write".into()),
            issued_at,
            expires_at,
            cnf: Confirmation {
                jkt: Some("thumb".into()),
                x5t_s256: None,
            },
            revoked_at: None,
        }
    }

    #[test]
    fn tokens_are_43_base64url_characters_and_differ() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(looks_opaque(&a), "{a}");
        assert_ne!(a, b);
        assert!(!looks_opaque("a.b.c"));
        assert!(!looks_opaque(&"A".repeat(44)));
        assert!(!looks_opaque(&format!("{}=", &a[..42])));
        assert_eq!(fingerprint(&a).len(), 8);
    }

    #[test]
    fn the_cli_revokes_opaque_tokens_by_user_and_by_jti() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(&dir.path().join("users.db")).unwrap();
        let far = now() + 3600;
        let (a, b, other) = (token_hash("a"), token_hash("b"), token_hash("c"));
        store.record_opaque(&a, &record("ja", 0, far)).unwrap();
        store.record_opaque(&b, &record("jb", 0, far)).unwrap();
        let mut someone_else = record("jc", 0, far);
        someone_else.subject = "t".into();
        store.record_opaque(&other, &someone_else).unwrap();
        assert_eq!(store.revoke_jti("ja").unwrap(), Some(true));
        assert_eq!(store.revoke_jti("ja").unwrap(), Some(false));
        assert_eq!(store.revoke_jti("nope").unwrap(), None);
        assert!(store.find_opaque(&a).unwrap().unwrap().revoked_at.is_some());
        assert!(store.find_opaque(&b).unwrap().unwrap().revoked_at.is_none());
        assert_eq!(store.revoke_subject("s").unwrap(), 1);
        assert!(store.find_opaque(&b).unwrap().unwrap().revoked_at.is_some());
        assert!(
            store
                .find_opaque(&other)
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );
    }

    #[test]
    fn recorded_found_revoked_and_expired_rows_pruned_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(&dir.path().join("users.db")).unwrap();
        let live = token_hash("live");
        store
            .record_opaque(&live, &record("j0", 1000, 2000))
            .unwrap();
        assert_eq!(
            store.find_opaque(&live).unwrap(),
            Some(record("j0", 1000, 2000))
        );
        assert_eq!(store.find_opaque(&token_hash("other")).unwrap(), None);
        let (_, first) = store.revoke_opaque(&live).unwrap().unwrap();
        assert!(first);
        let (found, first) = store.revoke_opaque(&live).unwrap().unwrap();
        assert!(!first);
        assert!(found.revoked_at.is_some());
        assert_eq!(store.revoke_opaque(&token_hash("other")).unwrap(), None);

        for i in 0..100 {
            let hash = token_hash(&format!("old{i}"));
            store
                .record_opaque(&hash, &record(&format!("old{i}"), 0, 10))
                .unwrap();
        }
        assert_eq!(store.opaque_count().unwrap(), 101);
        // Each later login prunes at most a batch of the expired rows.
        store
            .record_opaque(&token_hash("new1"), &record("new1", 3000, 4000))
            .unwrap();
        assert_eq!(store.opaque_count().unwrap(), 102 - PRUNE_BATCH);
        store
            .record_opaque(&token_hash("new2"), &record("new2", 3000, 4000))
            .unwrap();
        // The live one was revoked, but expired too (2000 <= 3000): pruned with the rest.
        assert_eq!(store.opaque_count().unwrap(), 2);
    }
}
