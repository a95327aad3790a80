//! jwt-authz's in-proxy mode: an Envoy Wasm filter (`envoy.filters.http.wasm`, V8) that
//! decides requests whose token it holds verified claims for with the decision core
//! (`jwt-authz-core`), and asks the sidecar about the rest (module [`engine`]).
//!
//! Configured with the sidecar's own YAML (or the same as JSON) as the plugin
//! configuration; its `in_proxy` section names the sidecar's cluster. Built with
//! `make wasm` into `target/wasm/wasm32-wasip1/release/jwt_authz_filter.wasm`.

pub mod engine;

// Natively it would not link (the host calls are Envoy's imports); clippy checks it there.
#[cfg(any(target_arch = "wasm32", clippy))]
mod envoy;
