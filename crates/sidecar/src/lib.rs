//! jwt-authz, the sidecar: JWT authentication for the services behind Envoy (ext_authz over
//! gRPC and HTTP) and nginx, Traefik and Caddy (forward-auth). Tokens are verified against
//! each provider's cached JWKS; the decision itself is the core's pipeline
//! (`jwt_authz_core::decision::Decider`), which this crate runs with its I/O.
//!
//! - [`config`]: the YAML file by section, its defaults and validation.
//! - [`runtime`]: what one configuration builds, and one request decided through it
//!   (`runtime::check`: the pipeline's verification and bind steps).
//! - [`verify`]: choosing provider and key, the signature and claims checks, the
//!   verification threads, the verified-token cache.
//! - [`keys`]: key sets parsed from a JWKS, the per-provider key store (fetch, refresh,
//!   unknown-kid refetch, stale-on-error), snapshots in `state_dir`.
//! - [`introspection`]: opaque tokens checked at their provider's RFC 7662 endpoint: the
//!   request and client authentication, the answer, its cache and limits.
//! - [`revocation`]: per-provider status lists: fetched, verified, refreshed, stored; the
//!   per-request status check.
//! - [`sender`]: whether a request proves the key or certificate its token is bound to;
//!   the DPoP replay stores.
//! - [`front`]: the front ends proxies ask through: gRPC ext_authz, HTTP ext_authz,
//!   forward-auth, the in-proxy filter's callouts.
//! - [`serve`]: serving the ports, reload and graceful shutdown; the admin port.
//! - [`obs`]: Prometheus metrics and OpenTelemetry spans.
//! - [`explain`]: `jwt-authz explain`: the steps one request's decision took.
//!
//! The pure JOSE (JWS parsing, DPoP proofs, certificate thumbprints, status-list decoding)
//! is `jwt_authz_jose`'s.

mod clock;
pub mod config;
pub mod explain;
pub mod front;
pub mod introspection;
pub mod keys;
pub mod obs;
pub(crate) mod revocation;
pub mod runtime;
pub mod sender;
pub mod serve;
pub mod verify;

pub use config::Config;
pub use serve::Server;
