//! Revocation by Token Status List (draft-ietf-oauth-status-list): every token issued gets
//! an entry (`status.status_list = {idx, uri}`, §6.2) in a list of fixed size; a full list
//! is followed by a new one, and list ids are never reused, so an index is never handed to
//! a second token (§13.3). Revoking sets the token's bit; `GET <uri>` serves the list as a
//! signed Status List Token (§5.1), re-signed when it changes and once per `ttl`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, Header};
use jwt_authz_jose::status_list::{StatusList, TOKEN_TYPE};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::json;

use crate::keys::LoadedKey;
use crate::list_heads::{Head, Heads};
use crate::users::{UserError, UserStore, now};

/// The media type of a Status List Token in JWT format (§8.1).
pub const MEDIA_TYPE: &str = "application/statuslist+jwt";

/// Where a token's status lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub list: i64,
    pub idx: i64,
}

/// One issued token as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub jti: String,
    pub subject: String,
    pub slot: Slot,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// A list's revoked entries as of its `version` (bumped by every revocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListState {
    pub size: i64,
    pub version: i64,
    pub revoked: Vec<i64>,
}

/// Records of expired tokens are kept at least this long after expiry (for `tokens list`),
/// and dropped when the next list is created: their entries no longer matter to anyone.
const KEEP_EXPIRED_SECS: i64 = 7 * 24 * 3600;

impl UserStore {
    /// Removes a user and revokes every unexpired token issued to them, in one
    /// transaction; returns how many tokens were revoked.
    pub fn remove(&self, username: &str) -> Result<usize, UserError> {
        let removed = self.remove_in(username);
        self.heads.invalidate();
        removed
    }

    fn remove_in(&self, username: &str) -> Result<usize, UserError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let id: Option<String> = tx
            .query_row(
                "SELECT id FROM users WHERE username = ?1",
                params![username],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = id else {
            return Err(UserError::NotFound(username.to_owned()));
        };
        let revoked = revoke_subject_in(&tx, &id, now())?;
        tx.execute("DELETE FROM users WHERE id = ?1", params![id])?;
        tx.commit()?;
        Ok(revoked)
    }

    /// Records a newly minted token and gives it the next free entry: in the newest list
    /// with room, or a new list of `list_size` entries.
    pub fn record_token(
        &self,
        jti: &str,
        subject: &str,
        issued_at: i64,
        expires_at: i64,
        list_size: i64,
    ) -> Result<Slot, UserError> {
        let slot = self.record_token_in(jti, subject, issued_at, expires_at, list_size);
        self.heads.invalidate();
        slot
    }

    fn record_token_in(
        &self,
        jti: &str,
        subject: &str,
        issued_at: i64,
        expires_at: i64,
        list_size: i64,
    ) -> Result<Slot, UserError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let open: Option<(i64, i64)> = tx
            .query_row(
                "SELECT id, next_idx FROM status_lists WHERE next_idx < size ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (list, idx) = match open {
            Some(open) => open,
            None => {
                tx.execute(
                    "INSERT INTO status_lists (size, created_at) VALUES (?1, ?2)",
                    params![list_size, issued_at],
                )?;
                // A good moment to forget tokens long expired.
                tx.execute(
                    "DELETE FROM issued_tokens WHERE expires_at < ?1",
                    params![issued_at - KEEP_EXPIRED_SECS],
                )?;
                (tx.last_insert_rowid(), 0)
            }
        };
        tx.execute(
            "UPDATE status_lists SET next_idx = ?2, live_until = MAX(live_until, ?3)
             WHERE id = ?1",
            params![list, idx + 1, expires_at],
        )?;
        tx.execute(
            "INSERT INTO issued_tokens (jti, subject, list, idx, issued_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![jti, subject, list, idx, issued_at, expires_at],
        )?;
        tx.commit()?;
        Ok(Slot { list, idx })
    }

    /// Revokes the token with this `jti`; `None` when no such token was recorded, else
    /// whether this call revoked it (false: it already was).
    pub fn revoke_jti(&self, jti: &str) -> Result<Option<bool>, UserError> {
        // Read first: a token unknown or already revoked (a repeated logout) costs no
        // write lock.
        let known: Option<Option<i64>> = self
            .reader()
            .query_row(
                "SELECT revoked_at FROM issued_tokens WHERE jti = ?1",
                params![jti],
                |r| r.get(0),
            )
            .optional()?;
        match known {
            None => return self.revoke_opaque_jti(jti),
            Some(Some(_)) => return Ok(Some(false)),
            Some(None) => {}
        }
        let revoked = self.revoke_jti_in(jti);
        self.heads.invalidate();
        revoked
    }

    /// [`UserStore::revoke_jti`] for an opaque token (`tokens revoke --jti`).
    fn revoke_opaque_jti(&self, jti: &str) -> Result<Option<bool>, UserError> {
        let changed = self.conn().execute(
            "UPDATE opaque_tokens SET revoked_at = ?2 WHERE jti = ?1 AND revoked_at IS NULL",
            params![jti, now()],
        )?;
        if changed == 1 {
            return Ok(Some(true));
        }
        let known: Option<i64> = self
            .reader()
            .query_row(
                "SELECT 1 FROM opaque_tokens WHERE jti = ?1",
                params![jti],
                |r| r.get(0),
            )
            .optional()?;
        Ok(known.map(|_| false))
    }

    /// Whether the JWT with this `jti` is revoked; `None` when it was never recorded here
    /// (or its record is long gone).
    pub fn jti_revoked(&self, jti: &str) -> Result<Option<bool>, UserError> {
        let known: Option<Option<i64>> = self
            .reader()
            .query_row(
                "SELECT revoked_at FROM issued_tokens WHERE jti = ?1",
                params![jti],
                |r| r.get(0),
            )
            .optional()?;
        Ok(known.map(|revoked_at| revoked_at.is_some()))
    }

    fn revoke_jti_in(&self, jti: &str) -> Result<Option<bool>, UserError> {
        let mut conn = self.conn();
        // IMMEDIATE: read and write under one lock, also against the CLI in another process.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found: Option<(i64, Option<i64>)> = tx
            .query_row(
                "SELECT list, revoked_at FROM issued_tokens WHERE jti = ?1",
                params![jti],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((list, revoked_at)) = found else {
            return Ok(None);
        };
        if revoked_at.is_some() {
            return Ok(Some(false));
        }
        tx.execute(
            "UPDATE issued_tokens SET revoked_at = ?2 WHERE jti = ?1",
            params![jti, now()],
        )?;
        tx.execute(
            "UPDATE status_lists SET version = version + 1 WHERE id = ?1",
            params![list],
        )?;
        tx.commit()?;
        Ok(Some(true))
    }

    /// Revokes every unexpired, unrevoked token of `subject`; returns how many.
    pub fn revoke_subject(&self, subject: &str) -> Result<usize, UserError> {
        let revoked = (|| -> Result<usize, UserError> {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let revoked = revoke_subject_in(&tx, subject, now())?;
            tx.commit()?;
            Ok(revoked)
        })();
        self.heads.invalidate();
        revoked
    }

    /// Every recorded token of `subject`, newest first.
    pub fn tokens_of(&self, subject: &str) -> Result<Vec<IssuedToken>, UserError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT jti, subject, list, idx, issued_at, expires_at, revoked_at
             FROM issued_tokens WHERE subject = ?1 ORDER BY issued_at DESC, list DESC, idx DESC",
        )?;
        let tokens = stmt
            .query_map(params![subject], |r| {
                Ok(IssuedToken {
                    jti: r.get(0)?,
                    subject: r.get(1)?,
                    slot: Slot {
                        list: r.get(2)?,
                        idx: r.get(3)?,
                    },
                    issued_at: r.get(4)?,
                    expires_at: r.get(5)?,
                    revoked_at: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(tokens)
    }

    /// A list's size, version and revoked entries; `None` for a list never created.
    pub fn status_list(&self, list: i64) -> Result<Option<ListState>, UserError> {
        let conn = self.reader();
        // One snapshot: the version matches the entries.
        let tx = conn.unchecked_transaction()?;
        let head: Option<(i64, i64)> = tx
            .query_row(
                "SELECT size, version FROM status_lists WHERE id = ?1",
                params![list],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((size, version)) = head else {
            return Ok(None);
        };
        let mut stmt =
            tx.prepare("SELECT idx FROM issued_tokens WHERE list = ?1 AND revoked_at IS NOT NULL")?;
        let revoked = stmt
            .query_map(params![list], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(Some(ListState {
            size,
            version,
            revoked,
        }))
    }

    /// Every list's head, from memory when the copy there is current (see
    /// [`crate::list_heads`]).
    pub fn list_heads(&self) -> Result<Arc<Heads>, UserError> {
        if let Some(heads) = self.heads.fresh() {
            return Ok(heads);
        }
        let generation = self.heads.generation();
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT id, size, version, live_until FROM status_lists")?;
        let by_list = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    Head {
                        size: r.get(1)?,
                        version: r.get(2)?,
                        live_until: r.get(3)?,
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        let heads = Arc::new(Heads { by_list });
        self.heads.store(generation, Arc::clone(&heads));
        Ok(heads)
    }

    /// The heads held in memory, if current: no database call (for the async fast path).
    pub fn cached_list_heads(&self) -> Option<Arc<Heads>> {
        self.heads.fresh()
    }

    /// The version of a list (cheap: tells whether a signed copy is still current).
    pub fn status_list_version(&self, list: i64) -> Result<Option<i64>, UserError> {
        Ok(self.list_heads()?.by_list.get(&list).map(|h| h.version))
    }

    /// Ids of the lists that hold an unexpired token (the Status List Aggregation, §9).
    pub fn live_status_lists(&self) -> Result<Vec<i64>, UserError> {
        Ok(self.list_heads()?.live(now()))
    }
}

/// Tokens expired this recently are revoked too: verifiers accept a token for their clock
/// leeway past `exp` (jwt-authz: 60 s by default).
const EXPIRY_LEEWAY_SECS: i64 = 300;

/// Revokes `subject`'s unrevoked tokens that are unexpired (or expired within the leeway
/// verifiers allow) inside `tx`, and bumps their lists' versions; returns how many.
pub(crate) fn revoke_subject_in(
    tx: &Transaction<'_>,
    subject: &str,
    now: i64,
) -> Result<usize, UserError> {
    let revoked_at = now;
    let now = now - EXPIRY_LEEWAY_SECS;
    tx.execute(
        "UPDATE status_lists SET version = version + 1 WHERE id IN (
             SELECT list FROM issued_tokens
             WHERE subject = ?1 AND expires_at > ?2 AND revoked_at IS NULL)",
        params![subject, now],
    )?;
    let listed = tx.execute(
        "UPDATE issued_tokens SET revoked_at = ?2
         WHERE subject = ?1 AND expires_at > ?2 AND revoked_at IS NULL",
        params![subject, now],
    )?;
    // Opaque tokens have no list entry: their record is what introspection reads.
    let opaque = tx.execute(
        "UPDATE opaque_tokens SET revoked_at = ?3
         WHERE subject = ?1 AND expires_at > ?2 AND revoked_at IS NULL",
        params![subject, now, revoked_at],
    )?;
    Ok(listed + opaque)
}

/// A list's URI under `base` (the issuer's URL as verifiers reach it).
pub fn list_uri(base: &str, list: i64) -> String {
    format!("{}/auth/status/{list}", base.trim_end_matches('/'))
}

/// A list as its token names it: its id here, its URI (`sub`) and the issuer (`iss`).
#[derive(Debug, Clone, Copy)]
pub struct Named<'a> {
    pub id: i64,
    pub uri: &'a str,
    pub issuer: &'a str,
}

/// One signed copy of a list.
#[derive(Debug, Clone)]
pub struct SignedList {
    pub token: Arc<str>,
    /// Strong validator over the token's bytes (RFC 9110 §8.8.3).
    pub etag: Arc<str>,
    version: i64,
    kid: String,
    signed_at: u64,
}

/// How list tokens are made: their lifetime and the `ttl` verifiers cache them for.
#[derive(Debug, Clone, Copy)]
pub struct ListPolicy {
    pub ttl: u64,
    pub lifetime: u64,
}

/// Signed copies of lists, each kept while its list is unchanged, its key still signs,
/// and it is younger than `ttl` (so `iat` and `exp` move on).
#[derive(Debug, Default, Clone)]
pub struct SignedLists {
    by_list: Arc<Mutex<HashMap<i64, SignedList>>>,
}

impl SignedList {
    /// Unix seconds when this copy was signed (its `iat`).
    pub fn signed_at(&self) -> u64 {
        self.signed_at
    }
}

impl SignedLists {
    /// The signed copy of `list` as of `version`, if one is current.
    pub fn current(
        &self,
        list: i64,
        version: i64,
        kid: &str,
        policy: ListPolicy,
        now: u64,
    ) -> Option<SignedList> {
        let held = self.by_list.lock().unwrap_or_else(|p| p.into_inner());
        held.get(&list)
            .filter(|s| s.version == version && s.kid == kid)
            .filter(|s| now.saturating_sub(s.signed_at) < policy.ttl)
            .cloned()
    }

    /// Signs `state` as the Status List Token at `uri` (§5.1: `typ` statuslist+jwt, `sub`
    /// the URI, `iat`, `exp`, `ttl`, a 1-bit ZLIB-compressed `status_list`), and keeps it.
    pub fn sign(
        &self,
        key: &LoadedKey,
        list: Named<'_>,
        state: &ListState,
        policy: ListPolicy,
        now: u64,
    ) -> Result<SignedList, String> {
        let size = u64::try_from(state.size).map_err(|_| "negative list size".to_owned())?;
        let mut bits = StatusList::new(1, size).map_err(|e| e.to_string())?;
        for idx in &state.revoked {
            let idx = u64::try_from(*idx).map_err(|_| "negative index".to_owned())?;
            // 0x01: INVALID (§7.1).
            bits.set(idx, 1).map_err(|e| e.to_string())?;
        }
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.entry.kid.clone());
        header.typ = Some(TOKEN_TYPE.to_owned());
        let claims = json!({
            "iss": list.issuer,
            "sub": list.uri,
            "iat": now,
            "exp": now + policy.lifetime,
            "ttl": policy.ttl,
            "status_list": bits.encode(),
        });
        let token =
            jsonwebtoken::encode(&header, &claims, &key.encoding_key).map_err(|e| e.to_string())?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let etag = format!("\"{}\"", crate::users::hex(&digest.as_ref()[..16]));
        let signed = SignedList {
            token: token.into(),
            etag: etag.into(),
            version: state.version,
            kid: key.entry.kid.clone(),
            signed_at: now,
        };
        self.by_list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(list.id, signed.clone());
        Ok(signed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, UserStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(&dir.path().join("users.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn indices_are_allocated_in_order_and_a_full_list_is_followed_by_a_new_one() {
        let (_dir, store) = store();
        let now = now();
        let slots: Vec<Slot> = (0..5)
            .map(|i| {
                store
                    .record_token(&format!("j{i}"), "s", now, now + 60, 2)
                    .unwrap()
            })
            .collect();
        let pairs: Vec<(i64, i64)> = slots.iter().map(|s| (s.list, s.idx)).collect();
        let first = pairs[0].0;
        assert_eq!(
            pairs,
            vec![
                (first, 0),
                (first, 1),
                (first + 1, 0),
                (first + 1, 1),
                (first + 2, 0)
            ]
        );
        // A jti is recorded once.
        assert!(store.record_token("j0", "s", now, now + 60, 2).is_err());
    }

    #[test]
    fn revocation_by_jti_and_by_subject_sets_bits_and_bumps_versions() {
        let (_dir, store) = store();
        let now = now();
        let a = store.record_token("a", "alice", now, now + 60, 8).unwrap();
        store.record_token("b", "bob", now, now + 60, 8).unwrap();
        store.record_token("c", "bob", now, now + 60, 8).unwrap();
        store
            .record_token("old", "bob", now - 900, now - 600, 8)
            .unwrap();
        // Expired a minute ago: still accepted within a verifier's leeway, so revoked too.
        store
            .record_token("late", "bob", now - 120, now - 60, 8)
            .unwrap();
        let before = store.status_list(a.list).unwrap().unwrap();
        assert_eq!(before.revoked, Vec::<i64>::new());

        assert_eq!(store.revoke_jti("a").unwrap(), Some(true));
        assert_eq!(store.revoke_jti("a").unwrap(), Some(false));
        assert_eq!(store.revoke_jti("nope").unwrap(), None);
        // bob's two live tokens and the one within the leeway; the long expired one is
        // left alone.
        assert_eq!(store.revoke_subject("bob").unwrap(), 3);
        assert_eq!(store.revoke_subject("bob").unwrap(), 0);
        let after = store.status_list(a.list).unwrap().unwrap();
        let mut revoked = after.revoked.clone();
        revoked.sort_unstable();
        assert_eq!(revoked, vec![0, 1, 2, 4]);
        assert!(after.version > before.version);
        let bobs = store.tokens_of("bob").unwrap();
        assert_eq!(bobs.len(), 4);
        assert_eq!(bobs.iter().filter(|t| t.revoked_at.is_some()).count(), 3);
        assert_eq!(store.live_status_lists().unwrap(), vec![a.list]);
    }

    #[test]
    fn reads_do_not_wait_for_the_writer() {
        let (_dir, store) = store();
        let user = store.add("erin", "user", "erin's password").unwrap();
        let now = now();
        let slot = store.record_token("e", &user.id, now, now + 60, 8).unwrap();
        assert_eq!(store.revoke_jti("e").unwrap(), Some(true));
        // A long write holds the writer (a login recording its token, a revocation).
        let writer = store.conn();
        let (done, finished) = std::sync::mpsc::channel();
        let reading = store.clone();
        std::thread::spawn(move || {
            let read = (
                reading.status_list(slot.list).unwrap().unwrap().revoked,
                reading.live_status_lists().unwrap(),
                reading.status_list_version(slot.list).unwrap(),
                reading
                    .authenticate("erin", "erin's password")
                    .unwrap()
                    .is_some(),
                reading.revoke_jti("e").unwrap(),
            );
            let _ = done.send(read);
        });
        let read = finished.recv_timeout(std::time::Duration::from_secs(10));
        drop(writer);
        assert_eq!(
            read.expect("the reads finished while the writer was held"),
            (vec![0], vec![slot.list], Some(1), true, Some(false))
        );
    }

    #[test]
    fn writes_here_are_seen_at_once_and_other_writers_within_the_cache_age() {
        let (dir, store) = store();
        let now = now();
        let a = store.record_token("a", "s", now, now + 60, 1).unwrap();
        assert_eq!(store.live_status_lists().unwrap(), vec![a.list]);
        assert_eq!(store.status_list_version(a.list).unwrap(), Some(0));
        // Recorded here (in a new list, the first is full): seen by the next read, though
        // the heads were just read.
        let b = store.record_token("b", "s", now, now + 60, 1).unwrap();
        assert_eq!(store.live_status_lists().unwrap(), vec![a.list, b.list]);
        store.revoke_jti("a").unwrap();
        assert_eq!(store.status_list_version(a.list).unwrap(), Some(1));
        // Revoked by another process (the CLI): seen once the copy in memory is too old.
        let cli = UserStore::open(&dir.path().join("users.db")).unwrap();
        cli.revoke_subject("s").unwrap();
        std::thread::sleep(crate::list_heads::MAX_AGE + std::time::Duration::from_millis(50));
        assert_eq!(store.status_list_version(b.list).unwrap(), Some(1));
    }

    #[test]
    fn removing_a_user_revokes_their_tokens() {
        let (_dir, store) = store();
        let user = store.add("dave", "user", "correct horse battery").unwrap();
        let now = now();
        store
            .record_token("d1", &user.id, now, now + 60, 8)
            .unwrap();
        store
            .record_token("d2", &user.id, now, now + 60, 8)
            .unwrap();
        assert_eq!(store.remove("dave").unwrap(), 2);
        assert!(
            store
                .tokens_of(&user.id)
                .unwrap()
                .iter()
                .all(|t| t.revoked_at.is_some())
        );
    }
}
