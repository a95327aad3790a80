//! Settings, from flags or `ISSUER_*` environment variables, checked before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::grants::{self, ScopeRule};

/// The login service that mints RS256 tokens and publishes its keys.
#[derive(Debug, Parser)]
#[command(name = "issuer", version)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Revoke and list issued tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// GET URL and exit 0 if it answers 200 (a container health check without curl).
    Probe { url: String },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user; the password is read from standard input (or prompted for on a terminal).
    Add {
        name: String,
        #[arg(long)]
        role: String,
    },
    List,
    Remove {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Revoke tokens: every unexpired token of a user, or one token by its `jti`. Verifiers
    /// refuse them once they next fetch the status list (within its ttl).
    Revoke {
        #[arg(long, conflicts_with = "jti", required_unless_present = "jti")]
        user: Option<String>,
        #[arg(long)]
        jti: Option<String>,
    },
    /// List a user's tokens with their status list entry and state.
    List {
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a key: published at once, signing after `--key-publish-ahead` (default 10m); the
    /// previous signer signs until then and stays published until every token it signed has
    /// expired (token TTL plus one minute). A running issuer picks both steps up by itself.
    Rotate {
        /// Key id for the new key (default: its RFC 7638 thumbprint).
        #[arg(long)]
        kid: Option<String>,
    },
    /// List keys with their state and age.
    List,
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[arg(
        long,
        env = "ISSUER_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,
    /// The `iss` of every token, and the base of the discovery document's URLs.
    #[arg(long, env = "ISSUER_URL", default_value = "http://127.0.0.1:8080", value_parser = parse_url, global = true)]
    pub issuer_url: String,
    #[arg(
        long,
        env = "ISSUER_AUDIENCE",
        default_value = "api-gateway",
        global = true
    )]
    pub audience: String,
    #[arg(long, env = "ISSUER_TOKEN_TTL", default_value = "15m", value_parser = parse_ttl, global = true)]
    pub token_ttl: Duration,
    #[arg(
        long,
        env = "ISSUER_DB",
        default_value = "issuer-data/users.db",
        global = true
    )]
    pub db: PathBuf,
    #[arg(
        long,
        env = "ISSUER_KEY_DIR",
        default_value = "issuer-data/keys",
        global = true
    )]
    pub key_dir: PathBuf,
    /// Key id of the first key, generated when the key directory is empty.
    #[arg(long, env = "ISSUER_KEY_ID", global = true)]
    pub key_id: Option<String>,
    #[arg(long, env = "ISSUER_KEY_BITS", default_value_t = 2048, global = true)]
    pub key_bits: usize,
    /// How long `keys rotate` publishes a new key before it signs: at least the time
    /// verifiers take to refresh their JWKS (jwt-authz: 90 % of the JWKS max-age, within
    /// its min_ttl..max_ttl), so none of them meets the new kid unprepared. 0s: at once.
    #[arg(long, env = "ISSUER_KEY_PUBLISH_AHEAD", default_value = "10m", value_parser = parse_duration, global = true)]
    pub key_publish_ahead: Duration,
    /// `max-age` of the JWKS response, in seconds.
    #[arg(
        long,
        env = "ISSUER_JWKS_MAX_AGE",
        default_value_t = 300,
        global = true
    )]
    pub jwks_max_age: u32,
    /// Seed the documented demo users when the database is empty.
    #[arg(long, env = "ISSUER_DEMO", global = true)]
    pub demo: bool,
    /// Login attempts for one username from one client address (an IPv6 /64 counts as one)
    /// within the window before 429: the tight limit that slows guessing.
    #[arg(
        long,
        env = "ISSUER_LOGIN_MAX_FAILURES",
        value_parser = clap::value_parser!(u32).range(1..),
        default_value_t = 5,
        global = true
    )]
    pub login_max_failures: u32,
    /// Login attempts for one username from anywhere within the window before 429: loose,
    /// so that guesses from one place cannot lock the owner out, yet a botnet is slowed.
    #[arg(
        long,
        env = "ISSUER_LOGIN_MAX_FAILURES_PER_USER",
        value_parser = clap::value_parser!(u32).range(1..),
        default_value_t = 50,
        global = true
    )]
    pub login_max_failures_per_user: u32,
    /// Login attempts from one client address (IPv6: its /64) within the window before 429.
    #[arg(
        long,
        env = "ISSUER_LOGIN_MAX_FAILURES_PER_ADDRESS",
        value_parser = clap::value_parser!(u32).range(1..),
        default_value_t = 20,
        global = true
    )]
    pub login_max_failures_per_address: u32,
    /// Password verifications (argon2id, ~19 MiB each) running at once; default: the CPUs.
    #[arg(long, env = "ISSUER_LOGIN_HASH_CONCURRENCY", global = true)]
    pub login_hash_concurrency: Option<usize>,
    /// Logins that may wait for a verification slot; beyond them, 503 with Retry-After.
    #[arg(
        long,
        env = "ISSUER_LOGIN_HASH_QUEUE",
        default_value_t = 16,
        global = true
    )]
    pub login_hash_queue: usize,
    #[arg(long, env = "ISSUER_LOGIN_WINDOW", default_value = "1m", value_parser = parse_ttl, global = true)]
    pub login_window: Duration,
    /// Requests a second one client address (IPv6: its /64) may make to the public
    /// endpoints (status lists, JWKS, discovery, logout) once its burst is spent; beyond,
    /// 429 with Retry-After. Verifiers fetch a list once per ttl: this is for floods.
    #[arg(
        long,
        env = "ISSUER_PUBLIC_RATE_LIMIT",
        value_parser = clap::value_parser!(u32).range(1..),
        default_value_t = 20,
        global = true
    )]
    pub public_rate_limit: u32,
    /// Requests one client address may make to the public endpoints at once.
    #[arg(
        long,
        env = "ISSUER_PUBLIC_RATE_BURST",
        value_parser = clap::value_parser!(u32).range(1..),
        default_value_t = 100,
        global = true
    )]
    pub public_rate_burst: u32,
    /// Read-only database connections the server reads with (besides the one that writes).
    #[arg(
        long,
        env = "ISSUER_DB_READERS",
        value_parser = clap::value_parser!(u16).range(1..=64),
        default_value_t = 4,
        global = true
    )]
    pub db_readers: u16,
    /// Take the client address from the last `X-Forwarded-For` entry (set this only behind
    /// a proxy such as Envoy that appends it).
    #[arg(long, env = "ISSUER_TRUST_FORWARDED_FOR", global = true)]
    pub trust_forwarded_for: bool,
    /// How old a login's DPoP proof (RFC 9449 §4.3 check 11) may be; its `jti` is
    /// remembered this long (plus 5 s of clock skew each way) in this process.
    #[arg(long, env = "ISSUER_DPOP_MAX_AGE", default_value = "60s", value_parser = parse_ttl, global = true)]
    pub dpop_max_age: Duration,
    /// Bind tokens to the client certificate named in `x-forwarded-client-cert` (RFC 8705
    /// §3). Set this only behind an Envoy that verifies client certificates and overwrites
    /// the header (`forward_client_cert_details: SANITIZE_SET`, `cert: true`): anyone could
    /// send it otherwise.
    #[arg(long, env = "ISSUER_TRUST_CLIENT_CERT_HEADER", global = true)]
    pub trust_client_cert_header: bool,
    /// Where verifiers fetch status lists: every token's `status.status_list.uri` is
    /// `<this>/auth/status/<list>`. Default: `--issuer-url`. Set it when verifiers reach the
    /// issuer at another address than clients do (the compose stack: `http://issuer:8080`).
    #[arg(long, env = "ISSUER_STATUS_BASE_URL", value_parser = parse_url, global = true)]
    pub status_base_url: Option<String>,
    /// The `ttl` of status list tokens (and their `Cache-Control: max-age`): how long
    /// verifiers may go before fetching a list again, so the longest a revocation takes to
    /// reach them.
    #[arg(long, env = "ISSUER_STATUS_LIST_TTL", default_value = "60s", value_parser = parse_ttl, global = true)]
    pub status_list_ttl: Duration,
    /// `exp - iat` of status list tokens: how long a copy may be relied on at all (a
    /// verifier that cannot reach the issuer stops using it then, or sooner).
    #[arg(long, env = "ISSUER_STATUS_LIST_LIFETIME", default_value = "1h", value_parser = parse_ttl, global = true)]
    pub status_list_lifetime: Duration,
    /// Entries per status list (a multiple of 8, at most 2^24); a full list is followed by
    /// a new one. 65536 entries are 8 KiB before compression.
    #[arg(long, env = "ISSUER_STATUS_LIST_SIZE", default_value_t = 65536, value_parser = parse_list_size, global = true)]
    pub status_list_size: i64,
    /// A client allowed to call `POST /auth/introspect` with a secret (`client_secret_basic`
    /// or `client_secret_post`, RFC 6749 §2.3.1): `ID=PATH`, PATH a file holding the secret
    /// (read at start, trailing newline trimmed, at least 16 bytes). Repeatable; in the
    /// environment, comma-separated.
    #[arg(
        long = "introspection-client",
        env = "ISSUER_INTROSPECTION_CLIENTS",
        value_name = "ID=PATH",
        value_delimiter = ',',
        value_parser = parse_client_file,
        global = true
    )]
    pub introspection_clients: Vec<ClientFile>,
    /// A client allowed to call `POST /auth/introspect` with `private_key_jwt` (RFC 7523):
    /// `ID=PATH`, PATH a JWKS file of the client's public keys (RSA, EC P-256). Repeatable;
    /// in the environment, comma-separated.
    #[arg(
        long = "introspection-client-jwks",
        env = "ISSUER_INTROSPECTION_CLIENT_JWKS",
        value_name = "ID=PATH",
        value_delimiter = ',',
        value_parser = parse_client_file,
        global = true
    )]
    pub introspection_client_jwks: Vec<ClientFile>,
    /// A resource indicator (RFC 8707) tokens may be asked for: the token's `aud` is then
    /// this URI instead of `--audience`. An absolute https URI (http only on 127.0.0.1,
    /// [::1] or localhost), no fragment, query or userinfo, at most 2048 bytes. Repeatable;
    /// in the environment, comma-separated.
    #[arg(
        long = "resource",
        env = "ISSUER_RESOURCES",
        value_name = "URI",
        value_delimiter = ',',
        value_parser = grants::parse_resource,
        global = true
    )]
    pub resources: Vec<String>,
    /// A scope tokens may carry: `NAME` for every user, `NAME=ROLE[,ROLE...]` for users of
    /// those roles. Repeatable; several in one value (and in the environment) separated by
    /// `;`.
    #[arg(
        long = "scope",
        env = "ISSUER_SCOPES",
        value_name = "NAME[=ROLE[,ROLE...]]",
        value_delimiter = ';',
        value_parser = grants::parse_scope_rule,
        global = true
    )]
    pub scopes: Vec<ScopeRule>,
}

impl Settings {
    /// Verifications that run at once: the setting, or the number of CPUs.
    pub fn hash_concurrency(&self) -> usize {
        self.login_hash_concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1)
    }

    /// How long a retired key stays published: every token it signed has expired by then.
    pub fn key_retention(&self) -> Duration {
        self.token_ttl + Duration::from_secs(60)
    }

    pub fn jwks_uri(&self) -> String {
        format!(
            "{}/.well-known/jwks.json",
            self.issuer_url.trim_end_matches('/')
        )
    }

    /// The base of status list URIs.
    pub fn status_base(&self) -> &str {
        self.status_base_url
            .as_deref()
            .unwrap_or(&self.issuer_url)
            .trim_end_matches('/')
    }

    /// `POST /auth/login`: the JSON login, and the `htu` its DPoP proofs name.
    pub fn login_endpoint(&self) -> String {
        format!("{}/auth/login", self.issuer_url.trim_end_matches('/'))
    }

    /// RFC 6749 §3.2: the token endpoint, as the metadata lists it.
    pub fn token_endpoint(&self) -> String {
        format!("{}/auth/token", self.issuer_url.trim_end_matches('/'))
    }

    /// RFC 7662 §2: the introspection endpoint, as discovery lists it.
    pub fn introspection_endpoint(&self) -> String {
        format!("{}/auth/introspect", self.issuer_url.trim_end_matches('/'))
    }
}

/// An introspection client's id and the file that holds its secret or its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFile {
    pub id: String,
    pub path: PathBuf,
}

/// The longest client id accepted.
pub const MAX_CLIENT_ID: usize = 128;

/// `ID=PATH`: the id 1-128 visible ASCII characters (no `=`), the path not empty.
fn parse_client_file(s: &str) -> Result<ClientFile, String> {
    let (id, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ID=PATH"))?;
    if id.is_empty() || id.len() > MAX_CLIENT_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{id:?}: a client id is 1-{MAX_CLIENT_ID} visible ASCII characters"
        ));
    }
    if path.is_empty() {
        return Err(format!("{s:?}: the path is empty"));
    }
    Ok(ClientFile {
        id: id.to_owned(),
        path: PathBuf::from(path),
    })
}

fn parse_url(s: &str) -> Result<String, String> {
    let uri: axum::http::Uri = s.parse().map_err(|e| format!("invalid URL {s:?}: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) if uri.query().is_none() => Ok(s.to_owned()),
        _ => Err(format!("{s:?} must be an http(s) URL without a query")),
    }
}

fn parse_list_size(s: &str) -> Result<i64, String> {
    let size: i64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(8..=1 << 24).contains(&size) || size % 8 != 0 {
        return Err(format!("{s}: a multiple of 8 between 8 and 16777216"));
    }
    Ok(size)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s:?} is shorter than one second"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let cli = Cli::try_parse_from(["issuer"]).unwrap();
        assert_eq!(cli.settings.audience, "api-gateway");
        assert_eq!(cli.settings.token_ttl, Duration::from_secs(900));
        assert_eq!(cli.settings.jwks_max_age, 300);
        let err = Cli::try_parse_from(["issuer", "--issuer-url", "ftp://x"]).unwrap_err();
        assert!(err.to_string().contains("ftp://x"), "{err}");
        let err = Cli::try_parse_from(["issuer", "--token-ttl", "soon"]).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
        // A limit of 0 would let one attempt per window through, not none: refused.
        for flag in [
            "--login-max-failures",
            "--login-max-failures-per-user",
            "--login-max-failures-per-address",
        ] {
            assert!(
                Cli::try_parse_from(["issuer", flag, "0"]).is_err(),
                "{flag}"
            );
        }
        let cli = Cli::try_parse_from(["issuer"]).unwrap();
        assert_eq!(cli.settings.key_publish_ahead, Duration::from_secs(600));
        assert_eq!(cli.settings.login_max_failures_per_user, 50);
        assert_eq!(cli.settings.public_rate_limit, 20);
        assert_eq!(cli.settings.public_rate_burst, 100);
        assert_eq!(cli.settings.db_readers, 4);
        for (flag, value) in [
            ("--public-rate-limit", "0"),
            ("--public-rate-burst", "0"),
            ("--db-readers", "0"),
            ("--db-readers", "65"),
        ] {
            assert!(
                Cli::try_parse_from(["issuer", flag, value]).is_err(),
                "{flag} {value}"
            );
        }
        let cli = Cli::try_parse_from([
            "issuer",
            "users",
            "add",
            "eve",
            "--role",
            "user",
            "--db",
            "/tmp/x.db",
        ])
        .unwrap();
        assert_eq!(cli.settings.db, PathBuf::from("/tmp/x.db"));
        let cli = Cli::try_parse_from(["issuer"]).unwrap();
        assert_eq!(cli.settings.status_base(), "http://127.0.0.1:8080");
        assert_eq!(cli.settings.status_list_size, 65536);
        for size in ["0", "12", "33554432", "x"] {
            assert!(
                Cli::try_parse_from(["issuer", "--status-list-size", size]).is_err(),
                "{size}"
            );
        }
        let cli =
            Cli::try_parse_from(["issuer", "--status-base-url", "http://issuer:8080/"]).unwrap();
        assert_eq!(cli.settings.status_base(), "http://issuer:8080");
    }

    #[test]
    fn resources_and_scopes_from_flags_or_the_environment_syntax() {
        let cli = Cli::try_parse_from([
            "issuer",
            "--resource",
            "http://127.0.0.1:8080/mcp",
            "--resource",
            "https://a.example/x,https://b.example/y",
            "--scope",
            "mcp:tools",
            "--scope",
            "mcp:admin=admin,ops;other",
        ])
        .unwrap();
        assert_eq!(
            cli.settings.resources,
            [
                "http://127.0.0.1:8080/mcp",
                "https://a.example/x",
                "https://b.example/y"
            ]
        );
        let names: Vec<_> = cli
            .settings
            .scopes
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["mcp:tools", "mcp:admin", "other"]);
        assert_eq!(
            cli.settings.scopes[1].roles.as_deref(),
            Some(&["admin".to_owned(), "ops".to_owned()][..])
        );
        for (flag, bad) in [
            ("--resource", "http://example.com/mcp"),
            ("--resource", "https://example.com/mcp#x"),
            ("--scope", "a b"),
            ("--scope", "s="),
        ] {
            let err = Cli::try_parse_from(["issuer", flag, bad]).unwrap_err();
            assert!(err.to_string().contains(flag), "{err}");
        }
    }

    #[test]
    fn introspection_clients_are_id_equals_path() {
        let cli = Cli::try_parse_from([
            "issuer",
            "--introspection-client",
            "sidecar=/run/secrets/sidecar",
            "--introspection-client",
            "other=a=b",
            "--introspection-client-jwks",
            "sidecar=/etc/sidecar.jwks",
        ])
        .unwrap();
        assert_eq!(
            cli.settings.introspection_clients,
            vec![
                ClientFile {
                    id: "sidecar".into(),
                    path: "/run/secrets/sidecar".into()
                },
                ClientFile {
                    id: "other".into(),
                    path: "a=b".into()
                },
            ]
        );
        assert_eq!(cli.settings.introspection_client_jwks.len(), 1);
        let long = format!("{}=/x", "a".repeat(MAX_CLIENT_ID + 1));
        for bad in ["sidecar", "=/x", "sidecar=", "two words=/x", long.as_str()] {
            assert!(
                Cli::try_parse_from(["issuer", "--introspection-client", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
