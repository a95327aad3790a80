//! An issuer serving on a loopback port for the tests that need real sockets, with its own
//! database and keys in a temporary directory; stopped when dropped.

use clap::Parser;
use issuer::config::Cli;

pub struct Running {
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The demo issuer with `extra` command-line arguments.
pub async fn start(extra: &[&str]) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = vec![
        "issuer".to_owned(),
        "--demo".into(),
        "--db".into(),
        dir.path().join("users.db").display().to_string(),
        "--key-dir".into(),
        dir.path().join("keys").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let settings = Cli::try_parse_from(args).expect("settings").settings;
    let issuer = issuer::Issuer::open(settings).expect("issuer");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(issuer.serve(listener, async {
        let _ = stopped.await;
    }));
    Running {
        base,
        stop: Some(stop),
        _dir: dir,
    }
}

/// A response's status and its `Retry-After`, if any.
pub fn status_and_retry_after(response: &reqwest::Response) -> (u16, Option<String>) {
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (response.status().as_u16(), retry)
}
