//! An OTLP/gRPC trace receiver that accepts and discards every span: the collector the
//! traced benchmark row exports to (so the row pays for encoding and sending spans, not for
//! a collector's processing). Usage: `otlp-sink 127.0.0.1:4317`.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

struct Sink;

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        _request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .ok_or("usage: otlp-sink ADDR")?
        .parse()?;
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Sink))
        .serve(addr)
        .await?;
    Ok(())
}
