//! A private JWKS endpoint as a Kubernetes API server is one: HTTPS with a certificate from a
//! CA of its own, and every request needing a bearer token. The HTTP side is a minimal
//! HTTP/1.1 responder (one request per connection) so that the test sees exactly which
//! `Authorization` header each fetch carried.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        Self { issuer }
    }

    /// The CA certificate in PEM, as a `ca_file` holds it.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` signed by this CA, and its key: both PEM.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A TLS server configuration with a certificate for 127.0.0.1 and localhost.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        let key = pki_types::PrivateKeyDer::Pkcs8(pki_types::PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        ));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .expect("server config");
        Arc::new(config)
    }
}

#[derive(Default)]
struct State {
    keys: Vec<Value>,
    token: String,
    /// The path and `Authorization` header of every request, in order.
    requests: Vec<(String, Option<String>)>,
    /// What discovery names as `jwks_uri` instead of this server's own.
    jwks_uri: Option<String>,
    /// Answer the JWKS path with a redirect here.
    redirect: Option<String>,
}

/// The JWKS at `/openid/v1/jwks` and discovery at `/.well-known/openid-configuration`, over
/// TLS, answering 401 to any request without `Authorization: Bearer <token>`.
pub struct PrivateJwksServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl PrivateJwksServer {
    pub async fn start(ca: &TestCa, keys: Vec<Value>, token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            keys,
            token: token.to_owned(),
            ..State::default()
        }));
        let acceptor = TlsAcceptor::from(ca.server_config());
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    // Handshakes a client refuses (untrusted CA) simply end here.
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = serve_one(&mut tls, addr, &state).await;
                    }
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/openid/v1/jwks", self.base())
    }

    pub fn set_token(&self, token: &str) {
        self.state.lock().expect("lock").token = token.to_owned();
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        self.state.lock().expect("lock").keys = keys;
    }

    /// Makes the JWKS path answer `302 Found` to `location`.
    pub fn set_redirect(&self, location: &str) {
        self.state.lock().expect("lock").redirect = Some(location.to_owned());
    }

    /// Makes discovery name another `jwks_uri`.
    pub fn set_discovered_jwks_uri(&self, uri: &str) {
        self.state.lock().expect("lock").jwks_uri = Some(uri.to_owned());
    }

    /// The `Authorization` headers received so far.
    pub fn seen(&self) -> Vec<Option<String>> {
        self.requests().into_iter().map(|(_, a)| a).collect()
    }

    /// The path and `Authorization` header of every request so far.
    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.state.lock().expect("lock").requests.clone()
    }
}

impl Drop for PrivateJwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one<S>(stream: &mut S, addr: SocketAddr, state: &Mutex<State>) -> std::io::Result<()>
where
    S: AsyncReadExt + AsyncWriteExt + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_owned();
    let authorization = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_owned())
    });
    let mut location = String::new();
    let (status, body) = {
        let mut state = state.lock().expect("lock");
        state.requests.push((path.clone(), authorization.clone()));
        let expected = format!("Bearer {}", state.token);
        if authorization.as_deref() != Some(expected.as_str()) {
            ("401 Unauthorized", json!({"message": "Unauthorized"}))
        } else if let Some(target) = state.redirect.clone().filter(|_| path == "/openid/v1/jwks") {
            location = format!("location: {target}\r\n");
            ("302 Found", json!({}))
        } else if path == "/openid/v1/jwks" {
            ("200 OK", json!({"keys": state.keys}))
        } else if path == "/.well-known/openid-configuration" {
            let base = format!("https://127.0.0.1:{}", addr.port());
            let jwks_uri = state
                .jwks_uri
                .clone()
                .unwrap_or_else(|| format!("{base}/openid/v1/jwks"));
            ("200 OK", json!({"issuer": base, "jwks_uri": jwks_uri}))
        } else {
            ("404 Not Found", json!({}))
        }
    };
    let body = body.to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\n{location}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
