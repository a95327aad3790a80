//! Users in an embedded SQLite database, with argon2id password hashes. The schema is created
//! and migrated at start-up (`PRAGMA user_version`).

use std::path::Path;
use std::sync::{Arc, MutexGuard};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rusqlite::{Connection, OptionalExtension, params};

use crate::db::{Db, DbError};
use crate::list_heads::HeadCache;

/// Demo users seeded by `--demo` into an empty database (documented in the README).
pub const DEMO_USERS: &[(&str, &str, &str)] = &[
    ("alice", "admin", "alice-password"),
    ("bob", "user", "bob-password"),
];

pub const MIN_PASSWORD_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Open(#[from] DbError),
    #[error("password hashing failed")]
    Hash,
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("no user {0:?}")]
    NotFound(String),
    #[error("invalid username {0:?}: 1-64 letters, digits, '.', '_', '-' or '@'")]
    InvalidName(String),
    #[error("invalid role {0:?}: 1-64 letters, digits, '.', '_', '-' or ':'")]
    InvalidRole(String),
    #[error("password must be at least {MIN_PASSWORD_LEN} characters")]
    WeakPassword,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id, used as the token's `sub`; never changes, unlike the name.
    pub id: String,
    pub username: String,
    pub role: String,
    pub created_at: i64,
}

/// The user store. Blocking: call it from `spawn_blocking` in async code.
#[derive(Debug, Clone)]
pub struct UserStore {
    pub(crate) db: Arc<Db>,
    /// The status lists' heads, read by every status request.
    pub(crate) heads: Arc<HeadCache>,
    /// A hash of a random password, verified for unknown users so their login costs the same.
    dummy_hash: Arc<String>,
}

/// Read-only connections of a store opened with [`UserStore::open`] (the CLI's).
pub const DEFAULT_READERS: usize = 2;

fn argon2() -> Argon2<'static> {
    // OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], UserError> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| UserError::Hash)?;
    Ok(out)
}

fn hash_password(password: &str) -> Result<String, UserError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?).map_err(|_| UserError::Hash)?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| UserError::Hash)
}

/// Whether `role` is a role name users may hold (and `--scope` may name).
pub fn valid_role(role: &str) -> bool {
    valid_name(role, b":")
}

fn valid_name(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || extra.contains(&b))
}

impl UserStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, UserError> {
        Self::open_with_readers(path, DEFAULT_READERS)
    }

    /// Opens the database at `path` with `readers` read-only connections for the reads
    /// (at least one), besides the one that writes.
    pub fn open_with_readers(path: &Path, readers: usize) -> Result<Self, UserError> {
        let db = Db::open(path, readers)?;
        let dummy = hex(&random_bytes::<16>()?);
        Ok(Self {
            db: Arc::new(db),
            heads: Arc::default(),
            dummy_hash: Arc::new(hash_password(&dummy)?),
        })
    }

    /// The connection that writes (one transaction at a time).
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.writer()
    }

    /// A read-only connection: never waits for the writer.
    pub(crate) fn reader(&self) -> MutexGuard<'_, Connection> {
        self.db.reader()
    }

    pub fn add(&self, username: &str, role: &str, password: &str) -> Result<User, UserError> {
        if !valid_name(username, b"@") {
            return Err(UserError::InvalidName(username.to_owned()));
        }
        if !valid_role(role) {
            return Err(UserError::InvalidRole(role.to_owned()));
        }
        if password.chars().count() < MIN_PASSWORD_LEN {
            return Err(UserError::WeakPassword);
        }
        let user = User {
            id: hex(&random_bytes::<16>()?),
            username: username.to_owned(),
            role: role.to_owned(),
            created_at: now(),
        };
        let hash = hash_password(password)?;
        let inserted = self.conn().execute(
            "INSERT INTO users (id, username, role, password_hash, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(username) DO NOTHING",
            params![user.id, user.username, user.role, hash, user.created_at],
        )?;
        if inserted == 0 {
            return Err(UserError::Exists(username.to_owned()));
        }
        Ok(user)
    }

    /// The user named `username`, if any.
    pub fn find(&self, username: &str) -> Result<Option<User>, UserError> {
        Ok(self
            .reader()
            .query_row(
                "SELECT id, username, role, created_at FROM users WHERE username = ?1",
                params![username],
                |r| {
                    Ok(User {
                        id: r.get(0)?,
                        username: r.get(1)?,
                        role: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn list(&self) -> Result<Vec<User>, UserError> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare("SELECT id, username, role, created_at FROM users ORDER BY username")?;
        let users = stmt
            .query_map([], |r| {
                Ok(User {
                    id: r.get(0)?,
                    username: r.get(1)?,
                    role: r.get(2)?,
                    created_at: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(users)
    }

    pub fn is_empty(&self) -> Result<bool, UserError> {
        let count: i64 = self
            .reader()
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
        Ok(count == 0)
    }

    /// Seeds [`DEMO_USERS`] when the database is empty; returns how many were added.
    pub fn seed_demo(&self) -> Result<usize, UserError> {
        if !self.is_empty()? {
            return Ok(0);
        }
        for (name, role, password) in DEMO_USERS {
            self.add(name, role, password)?;
        }
        Ok(DEMO_USERS.len())
    }

    /// The user when the password matches. An unknown user costs one hash verification
    /// too, so the answer's timing does not tell which part was wrong.
    pub fn authenticate(&self, username: &str, password: &str) -> Result<Option<User>, UserError> {
        let row = self
            .reader()
            .query_row(
                "SELECT id, username, role, created_at, password_hash FROM users WHERE username = ?1",
                params![username],
                |r| {
                    Ok((
                        User {
                            id: r.get(0)?,
                            username: r.get(1)?,
                            role: r.get(2)?,
                            created_at: r.get(3)?,
                        },
                        r.get::<_, String>(4)?,
                    ))
                },
            )
            .optional()?;
        let (user, hash) = match row {
            Some((user, hash)) => (Some(user), hash),
            None => (None, self.dummy_hash.as_str().to_owned()),
        };
        let parsed = PasswordHash::new(&hash).map_err(|_| UserError::Hash)?;
        let matches = argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(user.filter(|_| matches))
    }
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_authenticate_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(&dir.path().join("db/users.db")).unwrap();
        assert!(store.is_empty().unwrap());
        let carol = store.add("carol", "user", "carol-password").unwrap();
        assert_eq!(carol.id.len(), 32);
        assert!(matches!(
            store.add("carol", "admin", "whatever-pass"),
            Err(UserError::Exists(_))
        ));
        assert!(matches!(
            store.add("x y", "user", "password1"),
            Err(UserError::InvalidName(_))
        ));
        assert!(matches!(
            store.add("dan", "user", "short"),
            Err(UserError::WeakPassword)
        ));
        assert_eq!(
            store.authenticate("carol", "carol-password").unwrap(),
            Some(carol.clone())
        );
        assert_eq!(store.authenticate("carol", "wrong-password").unwrap(), None);
        assert_eq!(
            store.authenticate("nobody", "carol-password").unwrap(),
            None
        );
        assert_eq!(store.list().unwrap(), vec![carol]);
        store.remove("carol").unwrap();
        assert!(matches!(store.remove("carol"), Err(UserError::NotFound(_))));
        assert_eq!(store.authenticate("carol", "carol-password").unwrap(), None);
    }

    #[test]
    fn the_database_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.db");
        // An older release left it world-readable.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = UserStore::open(&path).unwrap();
        store.add("eve", "user", "a long enough password").unwrap();
        for file in ["users.db", "users.db-wal", "users.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let fresh = dir.path().join("fresh.db");
        UserStore::open(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn demo_seed_only_into_an_empty_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.db");
        let store = UserStore::open(&path).unwrap();
        assert_eq!(store.seed_demo().unwrap(), DEMO_USERS.len());
        assert_eq!(store.seed_demo().unwrap(), 0);
        drop(store);
        // Reopening runs the migrations again harmlessly and keeps the users.
        let store = UserStore::open(&path).unwrap();
        assert_eq!(store.list().unwrap().len(), DEMO_USERS.len());
        let stored: String = store
            .conn()
            .query_row(
                "SELECT password_hash FROM users WHERE username='alice'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
    }
}
