use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use issuer::config::{Cli, Command, KeysCommand, TokensCommand, UsersCommand};
use issuer::keys::{KeyDir, KeyState};
use issuer::users::UserStore;
use issuer::{Issuer, Settings};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Probe { url }) = &cli.command {
        return http_probe::exit_code(url);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.settings),
        Command::Users(cmd) => users(&cli.settings, cmd),
        Command::Keys(cmd) => keys(&cli.settings, cmd),
        Command::Tokens(cmd) => tokens(&cli.settings, cmd),
        Command::Probe { .. } => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("issuer: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn serve(settings: Settings) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listen = settings.listen;
        let issuer = Issuer::open(settings)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        tracing::info!(addr = %listener.local_addr()?, kid = %issuer.signing_kid(), "issuer listening");
        let shutdown = async {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            tracing::info!("shutting down");
        };
        issuer.serve(listener, shutdown).await?;
        Ok(())
    })
}

fn read_password() -> Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ")?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            return Err("passwords differ".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    Ok(password)
}

fn users(settings: &Settings, cmd: UsersCommand) -> Result<()> {
    let store = UserStore::open(&settings.db)?;
    match cmd {
        UsersCommand::Add { name, role } => {
            let password = read_password()?;
            let user = store.add(&name, &role, &password)?;
            println!(
                "added {} (role {}, sub {})",
                user.username, user.role, user.id
            );
        }
        UsersCommand::List => {
            println!("{:<24} {:<12} {:<34} CREATED", "USERNAME", "ROLE", "SUB");
            for u in store.list()? {
                println!(
                    "{:<24} {:<12} {:<34} {}",
                    u.username, u.role, u.id, u.created_at
                );
            }
        }
        UsersCommand::Remove { name } => {
            let revoked = store.remove(&name)?;
            println!("removed {name}; revoked {revoked} unexpired token(s)");
        }
    }
    Ok(())
}

fn tokens(settings: &Settings, cmd: TokensCommand) -> Result<()> {
    let store = UserStore::open(&settings.db)?;
    let subject_of = |name: &str| -> Result<String> {
        store
            .find(name)?
            .map(|u| u.id)
            .ok_or_else(|| format!("no user {name:?}").into())
    };
    match cmd {
        TokensCommand::Revoke {
            user: Some(name), ..
        } => {
            let revoked = store.revoke_subject(&subject_of(&name)?)?;
            println!("revoked {revoked} unexpired token(s) of {name}");
        }
        TokensCommand::Revoke { jti: Some(jti), .. } => match store.revoke_jti(&jti)? {
            Some(true) => println!("revoked {jti}"),
            Some(false) => println!("{jti} was already revoked"),
            None => return Err(format!("no token with jti {jti:?}").into()),
        },
        TokensCommand::Revoke { .. } => return Err("--user or --jti is required".into()),
        TokensCommand::List { user } => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default();
            println!(
                "{:<34} {:>6} {:>8} {:>12} {:>12} STATE",
                "JTI", "LIST", "IDX", "ISSUED", "EXPIRES"
            );
            for t in store.tokens_of(&subject_of(&user)?)? {
                let state = match t.revoked_at {
                    Some(_) => "revoked",
                    None if t.expires_at <= now => "expired",
                    None => "valid",
                };
                println!(
                    "{:<34} {:>6} {:>8} {:>12} {:>12} {state}",
                    t.jti, t.slot.list, t.slot.idx, t.issued_at, t.expires_at
                );
            }
        }
    }
    Ok(())
}

fn keys(settings: &Settings, cmd: KeysCommand) -> Result<()> {
    let dir = KeyDir::new(&settings.key_dir, settings.key_bits)?;
    match cmd {
        KeysCommand::Rotate { kid } => {
            if dir.ensure_key(kid.as_deref())? {
                println!("no key yet: created the first signing key");
                return Ok(());
            }
            let entry = dir.rotate(
                kid.as_deref(),
                settings.key_publish_ahead,
                settings.key_retention(),
            )?;
            println!(
                "new key {} published; it signs from {} (unix time)",
                entry.kid,
                entry.starts_signing()
            );
        }
        KeysCommand::List => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            println!(
                "{:<48} {:<10} {:>10} PUBLISHED UNTIL",
                "KID", "STATE", "AGE (s)"
            );
            for (entry, state) in dir.list()? {
                let state = match state {
                    KeyState::Pending => "pending",
                    KeyState::Signing => "signing",
                    KeyState::Retired => "retired",
                    KeyState::Expired => "expired",
                };
                let until = entry
                    .publish_until
                    .map_or_else(|| "-".to_owned(), |u| u.to_string());
                println!(
                    "{:<48} {:<10} {:>10} {}",
                    entry.kid,
                    state,
                    now.saturating_sub(entry.created_at),
                    until
                );
            }
        }
    }
    Ok(())
}
