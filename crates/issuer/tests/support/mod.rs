//! An issuer serving on a loopback port for the tests that need real sockets, with its own
//! database and keys in a temporary directory; stopped when dropped. Each test binary uses
//! a part of it.
#![allow(dead_code)]

use std::path::Path;

use clap::Parser;
use issuer::config::Cli;
use serde_json::Value;

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

impl Running {
    /// The directory of its database (`users.db`) and keys.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

/// An introspection client to register: its id, and its secret and/or public JWKS.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub id: &'a str,
    pub secret: Option<&'a str>,
    pub jwks: Option<&'a Value>,
}

/// The demo issuer with `extra` command-line arguments.
pub async fn start(extra: &[&str]) -> Running {
    start_with_clients(extra, &[]).await
}

/// The demo issuer with `extra` arguments and `clients` allowed to introspect: each secret
/// and JWKS written to a file and named by `--introspection-client` or
/// `--introspection-client-jwks`, as an operator would.
pub async fn start_with_clients(extra: &[&str], clients: &[Client<'_>]) -> Running {
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
    for (n, client) in clients.iter().enumerate() {
        if let Some(secret) = client.secret {
            let path = dir.path().join(format!("client-{n}.secret"));
            std::fs::write(&path, format!("{secret}\n")).expect("secret file");
            args.push("--introspection-client".into());
            args.push(format!("{}={}", client.id, path.display()));
        }
        if let Some(jwks) = client.jwks {
            let path = dir.path().join(format!("client-{n}.jwks"));
            std::fs::write(&path, jwks.to_string()).expect("jwks file");
            args.push("--introspection-client-jwks".into());
            args.push(format!("{}={}", client.id, path.display()));
        }
    }
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

/// An ES256 DPoP client (RFC 9449 §4.2).
#[allow(dead_code)] // Each test binary uses its own part of the support.
pub struct Dpop {
    key: aws_lc_rs::signature::EcdsaKeyPair,
}

#[allow(dead_code)]
impl Dpop {
    pub fn new() -> Self {
        Self {
            key: aws_lc_rs::signature::EcdsaKeyPair::generate(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            )
            .expect("ec"),
        }
    }

    pub fn jwk(&self) -> Value {
        use aws_lc_rs::signature::KeyPair as _;
        let point = self.key.public_key().as_ref();
        serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])})
    }

    /// RFC 7638: the required members in lexicographic order, no spaces.
    pub fn jkt(&self) -> String {
        let jwk = self.jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#,
            jwk["x"], jwk["y"]
        );
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// A proof for `POST <htu>`, with a fresh random `jti`.
    pub fn proof(&self, htu: &str) -> String {
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).expect("random");
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()});
        let claims = serde_json::json!({"jti": b64(&jti), "htm": "POST", "htu": htu, "iat": iat});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self
            .key
            .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", b64(signature.as_ref()))
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 6749 Appendix B: form-urlencoding, every byte but unreserved ones escaped.
#[allow(dead_code)] // Each test binary uses its own part of the support.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An `application/x-www-form-urlencoded` body of `params`.
#[allow(dead_code)]
pub fn form(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}
