//! jwt-authz: an Envoy ext_authz gRPC server that verifies JWTs against cached JWKS and
//! injects identity headers.
//!
//! The decision itself (request, path, rules' configuration, claims, identity headers) is in
//! the `jwt-authz-core` crate, which the in-proxy filter shares; its modules are re-exported
//! here under the same names.
//!
//! - [`config`]: the YAML configuration, its defaults and validation.
//! - [`extract`]: finding the one token in a request (bearer, header, cookie, query).
//! - [`keys`]: a JWKS document turned into ready verifiers, one per usable key.
//! - [`crypto`]: keys parsed by aws-lc once per fetch; every signature is checked with them.
//! - [`dpop`]: DPoP proofs (RFC 9449) and JWK thumbprints (RFC 7638).
//! - [`mtls`]: certificate-bound tokens (RFC 8705 §3): the client certificate's thumbprint.
//! - [`sender`]: whether a request proves the key or certificate its token is bound to.
//! - [`status_list`]: Token Status List references, list tokens and lookups (revocation).
//! - [`revocation`]: per-provider status lists: fetched, verified, refreshed; the per-request status check.
//! - [`jwks`]: per-provider key stores: fetch, refresh, unknown-kid refetch, stale-on-error.
//! - [`verify`]: choosing provider and key, verifying signature and claims.
//! - [`token_cache`]: the verified-token cache, bounded by entries and bytes.
//! - [`request`]: the request as rules see it; its path in canonical form (RFC 3986).
//! - [`policy`]: route rules (public, authenticated, deny, claim requirements, providers).
//! - [`claims`]: reading claims by name or dotted path.
//! - [`identity`]: identity headers set for upstream, client copies removed.
//! - [`response`]: every denial's HTTP status, gRPC code and RFC 6750 error, in one table.
//! - [`authz`]: the decision for one request, and the runtime one configuration builds.
//! - [`front`]: the front ends proxies ask through: gRPC ext_authz, HTTP ext_authz, forward-auth.
//! - [`explain`]: `jwt-authz explain`: one request's decision, step by step.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`metrics`]: the Prometheus registry.
//! - [`telemetry`]: OpenTelemetry spans for checks and fetches, exported over OTLP.
//! - [`server`]: serving the ports, reload and graceful shutdown.

mod clock;
pub mod config;
pub mod explain;
pub mod front;
pub mod keys;
pub mod obs;
pub mod revocation;
pub mod runtime;
pub mod sender;
pub mod serve;
pub mod verify;

pub use config::Config;
pub use serve::Server;
