//! issuer: the small login service the demo stack (and teams without an identity provider)
//! trusts. It mints RS256 tokens and publishes its keys.
//!
//! - [`config`]: flags and `ISSUER_*` environment variables.
//! - [`binding`]: DPoP- and certificate-bound tokens (RFC 9449, RFC 8705) at login.
//! - [`clients`]: the clients allowed to introspect, their secrets and keys.
//! - [`client_auth`]: their authentication (RFC 6749 §2.3.1, RFC 7523).
//! - [`form`]: form-urlencoded request bodies.
//! - [`grants`]: resource indicators (RFC 8707) and scopes, configured and granted.
//! - [`opaque`]: opaque access tokens, stored by hash.
//! - [`introspection`]: what introspection answers about a token (RFC 7662, RFC 9701).
//! - [`db`]: the SQLite file: WAL, migrations, the writer and the pool of readers.
//! - [`users`]: the SQLite user store with argon2id hashes.
//! - [`keys`]: RSA keys on disk, rotation and pruning.
//! - [`token`]: minting tokens.
//! - [`revocation`]: status list entries, revocation, signed Status List Tokens.
//! - [`list_heads`]: the status lists' heads kept in memory between writes.
//! - [`throttle`]: login throttling per user, per user and address, per address.
//! - [`ratelimit`]: requests per client address on the public endpoints.
//! - [`hashing`]: the bound on password verifications in flight.
//! - [`http`]: the HTTP API.

pub mod binding;
pub mod client_auth;
pub mod clients;
pub mod config;
mod db;
pub mod form;
pub mod grants;
pub mod hashing;
pub mod http;
pub mod introspection;
pub mod keys;
pub mod list_heads;
pub mod opaque;
pub mod ratelimit;
pub mod revocation;
pub mod throttle;
pub mod token;
pub mod users;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use clients::{Clients, ClientsError};
pub use config::Settings;
use hashing::HashGate;
use http::AppState;
use keys::{KeyDir, KeyError};
use ratelimit::RateLimit;
use throttle::Throttle;
use users::{UserError, UserStore};

/// How often a running issuer looks for a rotation in the key directory.
const KEY_POLL: Duration = Duration::from_secs(1);
/// Keys are re-read at least this often, so retired keys leave the JWKS on time.
const KEY_RELOAD: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Users(#[from] UserError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Clients(#[from] ClientsError),
    #[error("{0}")]
    Settings(String),
}

/// An issuer ready to serve: users opened, keys loaded.
#[derive(Debug, Clone)]
pub struct Issuer {
    state: AppState,
    key_dir: KeyDir,
}

impl Issuer {
    /// Opens (and migrates) the database, seeds demo users if asked, creates the first key
    /// if there is none, and loads the keys.
    pub fn open(settings: Settings) -> Result<Self, Error> {
        // A list copy is served for up to one ttl after it is signed: it must still be
        // valid (and usable for a while) by then.
        if settings.status_list_lifetime < settings.status_list_ttl * 2 {
            return Err(Error::Settings(format!(
                "--status-list-lifetime ({:?}) must be at least twice --status-list-ttl ({:?})",
                settings.status_list_lifetime, settings.status_list_ttl
            )));
        }
        let grants =
            grants::Grants::new(&settings.resources, &settings.scopes).map_err(Error::Settings)?;
        let clients = Clients::load(&settings)?;
        if !clients.is_empty() {
            tracing::info!(clients = clients.len(), "introspection clients loaded");
        }
        let users = UserStore::open_with_readers(&settings.db, settings.db_readers.into())?;
        if settings.demo {
            let added = users.seed_demo()?;
            if added > 0 {
                tracing::info!(added, "seeded demo users");
            }
        }
        let key_dir = KeyDir::new(&settings.key_dir, settings.key_bits)?;
        if key_dir.ensure_key(settings.key_id.as_deref())? {
            tracing::info!(dir = %settings.key_dir.display(), "generated the first signing key");
        }
        let ring = key_dir.load()?;
        let throttle = Throttle::new(settings.login_window);
        let hashing = HashGate::new(settings.hash_concurrency(), settings.login_hash_queue);
        let proofs = binding::Proofs::new(settings.dpop_max_age);
        let public_limit = Arc::new(RateLimit::new(
            settings.public_rate_limit,
            settings.public_rate_burst,
        ));
        Ok(Self {
            state: AppState {
                proofs,
                lists: Default::default(),
                settings: Arc::new(settings),
                users,
                keys: Arc::new(RwLock::new(Arc::new(ring))),
                throttle: Arc::new(throttle),
                public_limit,
                hashing,
                clients: Arc::new(clients),
                assertions: Default::default(),
                grants: Arc::new(grants),
            },
            key_dir,
        })
    }

    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    pub fn users(&self) -> &UserStore {
        &self.state.users
    }

    /// The kid that signs new tokens.
    pub fn signing_kid(&self) -> String {
        self.state.key_ring().signer.entry.kid.clone()
    }

    /// Re-reads the key directory now.
    pub fn reload_keys(&self) -> Result<(), KeyError> {
        let ring = self.key_dir.load()?;
        let kid = ring.signer.entry.kid.clone();
        let mut slot = self.state.keys.write().unwrap_or_else(|p| p.into_inner());
        if slot.signer.entry.kid != kid {
            tracing::info!(%kid, "new signing key in force");
        }
        *slot = Arc::new(ring);
        Ok(())
    }

    /// Watches the key directory and reloads on change, when a pending key's signing time
    /// or a retired key's end comes, and every 30 s.
    pub fn spawn_key_reloader(&self) -> tokio::task::JoinHandle<()> {
        let issuer = self.clone();
        tokio::spawn(async move {
            let mut last = Instant::now();
            let mut failed = false;
            loop {
                tokio::time::sleep(KEY_POLL).await;
                let ring = issuer.state.key_ring();
                // A scheduled change is due (unless the last reload failed: then the 30 s
                // rhythm applies, not a retry every poll).
                let due = !failed
                    && ring.next_change.is_some_and(|at| {
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .is_ok_and(|now| now.as_secs() >= at)
                    });
                if issuer.key_dir.manifest_mtime() == ring.manifest_mtime
                    && last.elapsed() < KEY_RELOAD
                    && !due
                {
                    continue;
                }
                last = Instant::now();
                failed = false;
                if let Err(e) = issuer.reload_keys() {
                    failed = true;
                    tracing::error!(error = %e, "cannot reload keys; keeping the keys in force");
                }
            }
        })
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let reloader = self.spawn_key_reloader();
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        reloader.abort();
        result
    }
}
