//! The JOSE jwt-authz reads, with no network and no runtime: what the sidecar verifies tokens
//! with, and what the issuer mints bound tokens and status lists with, so both read them
//! alike.
//!
//! - [`jws`]: a compact JWS taken apart once (RFC 7515 §7.1), its registered claims checked
//!   (RFC 7519 §4.1), each check recorded for `explain` when asked.
//! - [`crypto`]: keys parsed by aws-lc once; every signature is checked with them.
//! - [`dpop`]: DPoP proofs (RFC 9449 §4.3), JWK thumbprints (RFC 7638), server nonces, and
//!   the in-process store of proofs seen.
//! - [`mtls`]: certificate-bound tokens (RFC 8705 §3): the certificate's thumbprint.
//! - [`status_list`]: Token Status List references, list tokens and lookups.
//! - [`spiffe`]: SPIFFE IDs, the subjects of JWT-SVIDs.
//! - [`verify`]: a JWT access token verified under its provider's rules, the steps written
//!   once for the sidecar and the Envoy dynamic module.

pub mod crypto;
pub mod dpop;
pub mod jws;
pub mod mtls;
pub mod spiffe;
pub mod status_list;
pub mod verify;
