//! The decision jwt-authz makes for one request, free of I/O: what every front end of the
//! sidecar calls, and what the in-proxy filter runs inside Envoy (it builds for
//! `wasm32-wasip1`). Nothing here reaches for a socket, a clock, a thread or a crypto
//! library; tokens arrive here already verified, as claims.
//!
//! - [`config`]: the configuration the decision reads, and its validation.
//! - [`request`]: the request as rules see it; its path in canonical form (RFC 3986).
//! - [`extract`]: finding the one token in a request (bearer, header, cookie, query).
//! - [`claims`]: reading claims by name or dotted path.
//! - [`identity`]: identity headers set for upstream, client copies removed.
//! - [`policy`]: route rules (public, authenticated, deny, claim requirements, providers).
//! - [`token`]: what verification hands the decision: verified claims, or why not.
//! - [`response`]: every denial's HTTP status, gRPC code and RFC 6750 error, in one table.
//! - [`in_proxy`]: what the sidecar and the in-proxy filter say to each other.
//! - [`decision`]: the decision's sequence, written once ([`decision::Decider::decide`]:
//!   the sidecar, the in-proxy filter and `explain` all run it, each supplying only its
//!   I/O), and its steps: reading the request, accepting a token for a route, claims,
//!   identity headers, the mode that applies, shadow mode's answer.

pub mod claims;
pub mod config;
pub mod decision;
pub mod extract;
pub mod identity;
pub mod in_proxy;
pub mod policy;
pub mod request;
pub mod response;
pub mod token;
