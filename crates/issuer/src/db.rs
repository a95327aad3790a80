//! The SQLite database: opened in WAL mode and migrated at start (`PRAGMA user_version`), one
//! connection that writes (behind a mutex) and a fixed pool of read-only connections, so a
//! read never waits for the writer or for another read beyond the pool's size.
//!
//! The pool is hand-rolled (a fixed slice of mutexes, taken round-robin with `try_lock`
//! first) rather than r2d2: every connection is opened at start, so a database that cannot be
//! opened fails the start, not a request under load; there is no connection to create, time
//! out, or test on the hot path, and no dependency or background thread for it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How long a statement waits for a lock held by another connection (the CLI in another
/// process, a checkpoint) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
"#,
    // Token Status List (issue 16): every issued token's entry in a list. AUTOINCREMENT
    // never reuses a list id, so a (list, idx) pair names one token forever.
    r#"
    CREATE TABLE status_lists (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        size INTEGER NOT NULL,
        next_idx INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE issued_tokens (
        jti TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        list INTEGER NOT NULL REFERENCES status_lists(id),
        idx INTEGER NOT NULL,
        issued_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER,
        UNIQUE (list, idx)
    );
    CREATE INDEX issued_tokens_by_subject ON issued_tokens (subject, expires_at);
"#,
    // Issue 32: the Status List Aggregation read every issued token. Each list now keeps
    // the latest expiry of its tokens (set as a token is recorded), so the lists with live
    // tokens are read from the small table alone; backfilled from the tokens recorded so
    // far. The revoked entries of a list, read when it is signed, get a partial index.
    r#"
    ALTER TABLE status_lists ADD COLUMN live_until INTEGER NOT NULL DEFAULT 0;
    UPDATE status_lists SET live_until = latest.until
        FROM (SELECT list, MAX(expires_at) AS until FROM issued_tokens GROUP BY list) AS latest
        WHERE latest.list = status_lists.id;
    CREATE INDEX issued_tokens_revoked ON issued_tokens (list, idx)
        WHERE revoked_at IS NOT NULL;
"#,
    // Opaque access tokens (introspected, RFC 7662): the SHA-256 of the token, never the
    // token, and what introspection answers about it. `cnf_*` are its binding (RFC 9449
    // `jkt`, RFC 8705 `x5t#S256`). Expired rows are pruned by expiry, a few at a time.
    r#"
    CREATE TABLE opaque_tokens (
        token_hash BLOB PRIMARY KEY,
        jti TEXT NOT NULL UNIQUE,
        subject TEXT NOT NULL,
        username TEXT NOT NULL,
        role TEXT NOT NULL,
        audience TEXT NOT NULL,
        issued_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        cnf_jkt TEXT,
        cnf_x5t_s256 TEXT,
        revoked_at INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX opaque_tokens_by_expiry ON opaque_tokens (expires_at);
    CREATE INDEX opaque_tokens_by_subject ON opaque_tokens (subject, expires_at);
"#,
    // Issue 34: an opaque token's granted scopes (RFC 8707 resource indicators go in
    // `audience`), answered by introspection; NULL when none were asked for.
    r#"
    ALTER TABLE opaque_tokens ADD COLUMN scope TEXT;
"#,
];

/// The database file's connections.
#[derive(Debug)]
pub(crate) struct Db {
    writer: Mutex<Connection>,
    readers: Box<[Mutex<Connection>]>,
    next: AtomicUsize,
}

/// Creates the database file readable by its owner only (0600), like the key directory, or
/// tightens an existing one. SQLite gives its `-wal` and `-shm` files the database file's
/// permissions, so they follow.
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
}

/// Runs the migrations `conn` has not seen, in one transaction.
fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for (i, migration) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`, with `readers`
    /// read-only connections (at least one).
    pub(crate) fn open(path: &Path, readers: usize) -> Result<Self, DbError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| DbError::Dir {
                path: parent.display().to_string(),
                source,
            })?;
        }
        restrict_to_owner(path).map_err(|source| DbError::Dir {
            path: path.display().to_string(),
            source,
        })?;
        let mut writer = Connection::open(path)?;
        writer.busy_timeout(BUSY_TIMEOUT)?;
        // Readers see the last commit while the writer writes, and the reverse.
        let mode: String =
            writer.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "the database is not in WAL mode: reads wait for writes");
        }
        migrate(&mut writer)?;
        let readers = (0..readers.max(1))
            .map(|_| {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX
                        | OpenFlags::SQLITE_OPEN_URI,
                )?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<Box<[_]>, rusqlite::Error>>()?;
        Ok(Self {
            writer: Mutex::new(writer),
            readers,
            next: AtomicUsize::new(0),
        })
    }

    /// The connection that writes. Held for a whole transaction: keep reads off it.
    pub(crate) fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back),
        // so a poisoned lock is still safe to use.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read-only connection: a free one if any, else the next in turn once it is free.
    pub(crate) fn reader(&self) -> MutexGuard<'_, Connection> {
        let n = self.readers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(conn) => return conn,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.readers[start % n]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Read-only connections in the pool.
    #[cfg(test)]
    pub(crate) fn readers(&self) -> usize {
        self.readers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows.join("; ")
    }

    #[test]
    fn wal_mode_and_read_only_readers() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("users.db"), 3).unwrap();
        let mode: String = db
            .writer()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(db.readers(), 3);
        let err = db
            .reader()
            .execute("DELETE FROM users", [])
            .expect_err("read-only");
        assert!(err.to_string().contains("readonly"), "{err}");
    }

    #[test]
    fn readers_do_not_wait_for_the_writer_nor_for_a_busy_reader() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("users.db"), 2).unwrap();
        let mut writer = db.writer();
        let tx = writer.transaction().unwrap();
        tx.execute(
            "INSERT INTO status_lists (size, created_at) VALUES (8, 0)",
            [],
        )
        .unwrap();
        let busy = db.reader();
        // Uncommitted: not seen; the writer's lock and the other reader are both held.
        let count: i64 = db
            .reader()
            .query_row("SELECT COUNT(*) FROM status_lists", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 0);
        drop(busy);
        tx.commit().unwrap();
        let count: i64 = db
            .reader()
            .query_row("SELECT COUNT(*) FROM status_lists", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 1, "a commit is seen by the next read");
    }

    #[test]
    fn what_status_requests_query_is_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("users.db"), 1).unwrap();
        let conn = db.reader();
        let revoked = plan(
            &conn,
            "SELECT idx FROM issued_tokens WHERE list = 1 AND revoked_at IS NOT NULL",
        );
        assert!(
            revoked.contains("USING INDEX issued_tokens_revoked"),
            "{revoked}"
        );
        // The aggregation reads the lists' table only.
        let live = plan(
            &conn,
            "SELECT id, size, version, live_until FROM status_lists",
        );
        assert!(!live.contains("issued_tokens"), "{live}");
    }

    #[test]
    fn a_database_of_the_previous_schema_is_migrated_and_backfilled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.execute_batch(
                "INSERT INTO status_lists (id, size, next_idx, created_at)
                     VALUES (1, 8, 2, 0), (2, 8, 1, 0), (3, 8, 0, 0);
                 INSERT INTO issued_tokens (jti, subject, list, idx, issued_at, expires_at)
                     VALUES ('a', 's', 1, 0, 0, 100), ('b', 's', 1, 1, 0, 300),
                            ('c', 's', 2, 0, 0, 200);
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let db = Db::open(&path, 1).unwrap();
        let conn = db.reader();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        let mut stmt = conn
            .prepare("SELECT id, live_until FROM status_lists ORDER BY id")
            .unwrap();
        let heads = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(heads, vec![(1, 300), (2, 200), (3, 0)]);
    }
}
