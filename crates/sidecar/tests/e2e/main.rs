//! The end-to-end tests: requests through the real proxies (Envoy, nginx, Caddy, Traefik)
//! in front of the real binaries, and the container images. One binary, one module per
//! concern.

// Shared with the integration tests, which use all of it.
#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;

mod containers;
mod e2e_dpop;
mod e2e_envoy;
mod e2e_in_proxy;
mod e2e_mcp;
mod e2e_module;
mod e2e_mtls;
mod e2e_proxies;
mod e2e_rate_limit;
mod e2e_raw_paths;
mod e2e_revocation;
mod e2e_shadow;
mod e2e_tracing;
