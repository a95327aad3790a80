//! This binary's test support: the shared kit ([`testkit`], re-exported whole so that tests
//! name one place), and jwt-authz itself started in this process on port 0 ([`TestServer`]),
//! which the kit cannot hold since it depends on no crate of this workspace.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use jwt_authz::serve::Listeners;
use jwt_authz::{Config, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub use testkit::*;

/// One RSA key served by a JWKS server, and jwt-authz ready with [`config_yaml`] plus
/// `extra` (rules, identity, provider fields indented under the provider).
pub async fn start_with_key(extra: &str) -> (JwksServer, TestKey, TestServer) {
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let server = TestServer::start_ready(&config_yaml(&jwks.url(), extra)).await;
    (jwks, key, server)
}

/// jwt-authz running in this process on loopback ports.
pub struct TestServer {
    pub server: Arc<Server>,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    /// The HTTP authorization port (always on in tests).
    pub http: SocketAddr,
    client: AuthorizationClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(yaml: &str) -> Self {
        let config = Config::from_yaml(yaml).expect("valid test config");
        Self::start_config(config).await
    }

    pub async fn start_config(config: Config) -> Self {
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let http_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let grpc = grpc_listener.local_addr().expect("addr");
        let admin = admin_listener.local_addr().expect("addr");
        let http = http_listener.local_addr().expect("addr");
        let server = Server::new(config).expect("server");
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = Arc::clone(&server);
        let task = tokio::spawn(async move {
            serving
                .serve(
                    Listeners {
                        grpc: grpc_listener,
                        admin: admin_listener,
                        http: Some(http_listener),
                    },
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .expect("serve");
        });
        let client = AuthorizationClient::connect(format!("http://{grpc}"))
            .await
            .expect("connect");
        Self {
            server,
            grpc,
            admin,
            http,
            client,
            stop: Some(stop),
            task,
        }
    }

    /// Starts and waits until every provider holds keys.
    pub async fn start_ready(yaml: &str) -> Self {
        let server = Self::start(yaml).await;
        server.wait_ready().await;
        server
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if self.readyz().await == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("jwt-authz did not become ready");
    }

    pub async fn check(&self, request: CheckRequest) -> CheckResponse {
        self.check_request(tonic::Request::new(request)).await
    }

    /// A Check with the gRPC metadata the caller set (as Envoy sends its own trace context).
    pub async fn check_request(&self, request: tonic::Request<CheckRequest>) -> CheckResponse {
        self.client
            .clone()
            .check(request)
            .await
            .expect("Check answered")
            .into_inner()
    }

    pub async fn check_token(&self, path: &str, token: &str) -> CheckResponse {
        self.check(request(
            "GET",
            path,
            &[("authorization", &format!("Bearer {token}"))],
        ))
        .await
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .expect("admin answered");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    pub async fn readyz(&self) -> u16 {
        self.admin_get("/readyz").await.0
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
