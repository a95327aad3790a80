//! Lists kept in `state_dir`, so a restart while the list endpoint is down still has them
//! (verified again when read, used only within their `max_stale`).

use std::sync::Arc;

use crate::clock::unix_now;
use crate::keys::snapshot::{self, SnapshotError};

use super::{Held, List, StatusLists};

const SNAPSHOT_VERSION: u32 = 1;

/// A list as kept in `state_dir`: the token as fetched, and when.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StoredList {
    version: u32,
    issuer: String,
    uri: String,
    fetched_at: u64,
    token: String,
    /// With `state_key_file`: the HMAC-SHA256 of the fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seal: Option<String>,
}

impl StoredList {
    fn parts(&self) -> [Vec<u8>; 5] {
        [
            self.version.to_string().into_bytes(),
            self.issuer.clone().into_bytes(),
            self.uri.clone().into_bytes(),
            self.fetched_at.to_string().into_bytes(),
            self.token.clone().into_bytes(),
        ]
    }
}

fn borrowed(parts: &[Vec<u8>; 5]) -> Vec<&[u8]> {
    parts.iter().map(Vec::as_slice).collect()
}

impl StatusLists {
    /// The snapshot file of `uri` for this provider (two providers naming one URI keep
    /// two files: each verifies with its own keys).
    fn snapshot_path(&self, uri: &str) -> Option<std::path::PathBuf> {
        let state = self.state.as_ref()?;
        let key = format!("{}\n{uri}", self.keys.provider().issuer);
        Some(state.path.join(snapshot::file_name("status", &key)))
    }

    /// Keeps a good fetch in `state_dir` (in the background; a failure is only logged).
    pub(super) fn write_snapshot(&self, list: &List, held: &Held) {
        let Some(path) = self.snapshot_path(&list.uri) else {
            return;
        };
        let Some(state) = &self.state else {
            return;
        };
        let mut stored = StoredList {
            version: SNAPSHOT_VERSION,
            issuer: self.keys.provider().issuer.clone(),
            uri: list.uri.clone(),
            fetched_at: held.fetched_at,
            token: held.token.to_string(),
            seal: None,
        };
        stored.seal = state.seal(&borrowed(&stored.parts()));
        let (iat, written) = (held.iat, Arc::clone(&list.written));
        tokio::task::spawn_blocking(move || {
            let mut last = written.lock().unwrap_or_else(|p| p.into_inner());
            if iat < *last {
                return;
            }
            let result = serde_json::to_vec(&stored)
                .map_err(std::io::Error::other)
                .and_then(|body| snapshot::write_atomic(&path, &body));
            match result {
                Ok(()) => *last = iat,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot write the status list snapshot");
                }
            }
        });
    }

    /// The snapshot of `uri` kept by an earlier run, verified like a fetch (signature,
    /// claims, `exp`) and used only within `max_stale` of the fetch that produced it (and
    /// `max_snapshot_age`). Anything else is ignored with a warning.
    pub(super) async fn snapshot_held(&self, uri: &str) -> Option<Held> {
        let path = self.snapshot_path(uri)?;
        let state = self.state.clone()?;
        let (max_age, limit) = (state.max_age, self.config().max_bytes);
        let issuer = self.keys.provider().issuer.clone();
        let wanted = uri.to_owned();
        let read = tokio::task::spawn_blocking(move || {
            let file = state.open_file(&path)?;
            let body = snapshot::read_limited(file, limit)?;
            let stored: StoredList =
                serde_json::from_slice(&body).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
            if stored.version != SNAPSHOT_VERSION {
                return Err(SnapshotError::Version(stored.version));
            }
            state.verify(&borrowed(&stored.parts()), stored.seal.as_deref())?;
            if stored.issuer != issuer || stored.uri != wanted {
                return Err(SnapshotError::Foreign {
                    found: format!("issuer {:?}, list {:?}", stored.issuer, stored.uri),
                    expected: format!("issuer {issuer:?}, list {wanted:?}"),
                });
            }
            let age = unix_now()
                .checked_sub(stored.fetched_at)
                .ok_or(SnapshotError::Future)?;
            if age > max_age.as_secs() {
                return Err(SnapshotError::TooOld {
                    age,
                    max: max_age.as_secs(),
                });
            }
            Ok(stored)
        })
        .await;
        let name = self.provider_name();
        let stored = match read {
            Ok(Ok(stored)) => stored,
            Ok(Err(SnapshotError::Missing)) => return None,
            Ok(Err(error)) => {
                tracing::warn!(provider = %name, uri, %error, "ignoring the status list snapshot");
                return None;
            }
            Err(error) => {
                tracing::error!(provider = %name, %error, "snapshot task failed");
                return None;
            }
        };
        match self
            .accept(uri, &stored.token, None, stored.fetched_at, None)
            .await
        {
            Ok(held) if unix_now() < held.usable_until => {
                tracing::warn!(provider = %name, uri, age_seconds = unix_now().saturating_sub(held.fetched_at), "status list unreachable; using its snapshot from state_dir until max_stale after its fetch");
                Some(held)
            }
            Ok(_) => {
                tracing::warn!(provider = %name, uri, "ignoring the status list snapshot: older than max_stale");
                None
            }
            Err(error) => {
                tracing::warn!(provider = %name, uri, %error, "ignoring the status list snapshot");
                None
            }
        }
    }
}
