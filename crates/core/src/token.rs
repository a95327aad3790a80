//! What verification hands the decision: a verified token's claims, or why a token (or its
//! DPoP proof) was refused. Verification itself (signatures, keys, clocks) is the sidecar's;
//! the decision only reads its outcome, so the in-proxy filter can decide on claims the
//! sidecar verified.

use serde_json::{Map, Value};

/// Claims of a token whose signature and registered claims have been checked.
#[derive(Debug)]
pub struct VerifiedToken {
    /// Index of the provider in the configuration that verified it.
    pub provider: usize,
    /// Thumbprint of the key that verified it, so a cached token dies with its key.
    pub thumbprint: String,
    pub claims: Map<String, Value>,
    pub exp: Option<u64>,
}

impl VerifiedToken {
    /// A rough count of the heap bytes this entry holds, for the cache's byte bound.
    pub fn approx_size(&self) -> usize {
        fn value_size(v: &Value) -> usize {
            match v {
                Value::String(s) => s.len() + 24,
                Value::Array(a) => a.iter().map(value_size).sum::<usize>() + 24,
                Value::Object(o) => o.iter().map(|(k, v)| k.len() + 24 + value_size(v)).sum(),
                _ => 16,
            }
        }
        std::mem::size_of::<Self>()
            + self.thumbprint.len()
            + self
                .claims
                .iter()
                .map(|(k, v)| k.len() + 48 + value_size(v))
                .sum::<usize>()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token header")]
    UnsupportedHeader,
    #[error("unknown issuer")]
    UnknownIssuer,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("invalid signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("invalid audience")]
    WrongAudience,
    #[error("invalid issuer")]
    WrongIssuer,
    #[error("missing required claim")]
    MissingClaim(String),
    #[error("token type not accepted")]
    WrongTokenType,
    #[error("token lifetime too long")]
    LifetimeTooLong,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("signing keys unavailable")]
    KeysUnavailable,
    #[error("too many checks waiting on a key fetch")]
    KeyFetchBusy,
    #[error("too many tokens waiting for a signature check")]
    VerifyBusy,
    /// A JWT-SVID whose `sub` is not a SPIFFE ID of its provider's trust domain.
    #[error("subject is not a SPIFFE ID of this trust domain")]
    NotSpiffeId,
    /// The provider's introspection endpoint says the token is not active (RFC 7662 §2.2:
    /// unknown, expired, revoked, or anything else it will not vouch for).
    #[error("token not active")]
    Inactive,
    /// The introspection answer cannot be read: not JSON, too large, or not the shape
    /// RFC 7662 §2.2 (or RFC 9701 §5) gives it.
    #[error("introspection answer unusable")]
    BadIntrospection,
    /// The introspection endpoint could not be asked: unreachable, timed out, an error status,
    /// or it refused this sidecar's client authentication. Nothing is known about the token.
    #[error("introspection unavailable")]
    IntrospectionUnavailable,
    /// More introspection calls than the provider's rate limit or `max_in_flight` allow.
    #[error("introspection busy")]
    IntrospectionBusy,
}

/// A proof larger than this is refused before parsing (a proof holds one public key and a
/// handful of claims; an RSA-4096 key makes it about 1.5 KiB).
pub const MAX_PROOF_BYTES: usize = 4096;

/// Why a proof is refused. Every variant is `invalid_dpop_proof` to the client (§7.1),
/// except [`DpopError::NonceRequired`] (`use_dpop_nonce`, §8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("proof larger than {MAX_PROOF_BYTES} bytes")]
    TooLarge,
    #[error("proof is not a well-formed JWS")]
    Malformed,
    #[error("proof typ is not dpop+jwt")]
    WrongType,
    #[error("proof algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("proof jwk missing, unsupported or holding a private key")]
    BadKey,
    #[error("proof signature invalid")]
    BadSignature,
    #[error("proof claim {0} missing or malformed")]
    MissingClaim(&'static str),
    #[error("proof htm does not match the request method")]
    WrongMethod,
    #[error("proof htu does not match the request URI")]
    WrongUri,
    #[error("proof iat outside the accepted window")]
    StaleOrFuture,
    #[error("proof ath does not match the access token")]
    WrongTokenHash,
    #[error("the server requires a DPoP nonce")]
    NonceRequired,
    #[error("proof nonce is not the current one")]
    WrongNonce,
}
