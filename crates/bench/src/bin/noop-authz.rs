//! The floor: an ext_authz server that answers every Check with OK and one header, on the
//! same tonic/envoy-types stack as jwt-authz. No tonic ext_authz server can be faster.
//! With `--http`, the same for the HTTP front ends (Envoy's `http_service`, nginx
//! `auth_request`): 200 with one header to any request, on jwt-authz's axum/hyper stack.

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse, OkHttpResponse};
use envoy_types::pb::google::rpc::Status;
use tonic::{Request, Response};

struct Noop;

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, tonic::Status> {
        Ok(Response::new(CheckResponse {
            status: Some(Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![HeaderValueOption {
                    header: Some(HeaderValue {
                        key: "x-user-id".into(),
                        value: "noop".into(),
                        raw_value: Vec::new(),
                    }),
                    append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                    ..Default::default()
                }],
                ..Default::default()
            })),
            dynamic_metadata: None,
        }))
    }
}

#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let http = args.first().is_some_and(|a| a == "--http");
    if http {
        args.remove(0);
    }
    let addr: std::net::SocketAddr = args
        .first()
        .map_or("127.0.0.1:9101", String::as_str)
        .parse()?;
    if http {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let app = axum::Router::new().fallback(|| async { ([("x-user-id", "noop")], "") });
        axum::serve(listener, app).await?;
        return Ok(());
    }
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(AuthorizationServer::new(Noop))
        .serve(addr)
        .await?;
    Ok(())
}
