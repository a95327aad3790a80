//! The in-process tests: jwt-authz started in this process (or its binary run for the CLI),
//! asked over its real sockets; no proxy. One binary, one module per concern.

#[path = "../support/mod.rs"]
mod support;

mod allow_deny;
mod attacks;
mod claim_values;
mod cli;
mod decision_config;
mod decisions;
mod deploy_files;
mod dpop;
mod explain;
mod http_front;
mod in_proxy_callout;
mod introspection;
mod limits;
mod outage;
mod paths;
mod private_jwks;
mod proxy_configs;
mod replay_store;
mod resources;
mod revocation;
mod rotation;
mod shadow;
mod shutdown;
mod snapshots;
mod sources;
mod spiffe;
mod tracing;
mod trust;
mod with_issuer;
mod workspace;
