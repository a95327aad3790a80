//! What a client sees. Every denial reason maps to its HTTP status, gRPC code and RFC 6750
//! error in [`Deny::answer`], the one table of client-visible outcomes; details stay in logs.

use std::sync::Arc;

use crate::identity::HeaderMutation;
use crate::request::{HostError, PathError};
use crate::token::{DpopError, VerifiedToken, VerifyError};

/// Why a request was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deny {
    /// The path is ambiguous (or too long); refused before any rule ran.
    InvalidPath(PathError),
    /// The host is not one RFC 3986 host (`crate::request::host`); refused before any rule.
    InvalidHost(HostError),
    /// The request carries a configured identity header in another spelling (case aside,
    /// `_` for `-`): the header named.
    LookalikeHeader(String),
    /// The query string cannot be read unambiguously (invalid percent-encoding).
    InvalidQuery,
    /// A forward-auth request that does not describe one original request: a header of its
    /// family missing, repeated, or malformed. The proxy is misconfigured (or appends where
    /// it should overwrite); nothing is decided.
    BadForwardedRequest,
    MissingToken,
    MultipleTokens,
    TokenTooLarge,
    /// The token came from a place its provider does not accept tokens from.
    WrongSource,
    Invalid(VerifyError),
    /// A claim mapped to an identity header holds characters a header cannot carry.
    UnsafeClaim,
    /// A route rule's claim requirement was not met.
    InsufficientClaims,
    /// A route rule denies every request.
    DeniedByRule,
    /// The route accepts tokens only from other providers.
    ProviderNotAccepted,
    /// More checks in flight than `limits.max_concurrent_checks`.
    Overloaded,
    /// Not decided within `limits.check_timeout`.
    TimedOut,
    /// `Authorization: DPoP` without a `DPoP` proof header (RFC 9449 §4.3 check 1).
    DpopMissingProof,
    /// More than one `DPoP` header (§4.3 check 1).
    DpopMultipleProofs,
    /// The proof failed one of §4.3's checks 2 to 12.
    DpopInvalidProof(DpopError),
    /// The proof's `jti` was seen before within its window (§11.1).
    DpopReplayed,
    /// The proof lacks a current server nonce (§9); the client is to retry with this one.
    DpopUseNonce(String),
    /// The token's `cnf.jkt` is not the proof key's thumbprint (§6.1).
    DpopKeyMismatch,
    /// `Authorization: DPoP` with a token that is not DPoP-bound (§7.1).
    DpopUnbound,
    /// A DPoP-bound token sent as a bearer token: a downgrade (§7.2).
    DpopBoundAsBearer,
    /// The token's provider requires DPoP and the token came as a bearer token.
    DpopRequired,
    /// `Authorization: DPoP` for a provider with DPoP off.
    DpopNotAccepted,
    /// The replay store did not answer (or is full): the proof cannot be checked for reuse.
    ReplayStoreUnavailable,
    /// A certificate-bound token (RFC 8705 §3) without a client certificate to check it.
    CertificateMissing,
    /// A certificate-bound token over a connection with another certificate (§3).
    CertificateMismatch,
    /// The provider requires certificate-bound tokens and this one is not bound.
    CertificateRequired,
    /// The token's status list marks it INVALID, SUSPENDED or another non-VALID status
    /// (draft-ietf-oauth-status-list §7).
    TokenRevoked,
    /// The provider requires a `status` reference and the token carries none.
    StatusMissing,
    /// The token's `status` reference cannot be checked: malformed, a list outside the
    /// allowed origins, or an index outside the list (§8.3 steps 1 and 6).
    StatusUnusable,
    /// The token's status list could not be fetched, or was last fetched longer than
    /// `max_stale` ago: the token is not let through unchecked.
    StatusListUnavailable,
    /// The in-proxy filter could not get the sidecar's answer for a request it cannot decide
    /// alone (no answer, a failed callout, an answer it cannot read): never let through.
    SidecarUnavailable,
}

/// The HTTP status of a denial. The values are the status codes themselves, as Envoy's
/// `envoy.type.v3.StatusCode` numbers them, so a front end sends `status as i32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpStatus {
    BadRequest = 400,
    Unauthorized = 401,
    Forbidden = 403,
    UriTooLong = 414,
    ServiceUnavailable = 503,
}

/// The gRPC status of a denial (for ext_authz's `CheckResponse.status`), numbered as gRPC
/// numbers its status codes (`google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    InvalidArgument = 3,
    PermissionDenied = 7,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// The authentication scheme a denial's challenge names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    Bearer,
    /// RFC 9449 §7.1.
    Dpop,
}

/// The client-visible shape of a denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub http: HttpStatus,
    pub grpc: GrpcCode,
    /// RFC 6750 `error`, also added to `WWW-Authenticate` when `challenge_error` is set.
    pub error: &'static str,
    pub description: &'static str,
    pub challenge_error: bool,
    /// Which scheme's challenge carries the error.
    pub challenge: Challenge,
    /// Metric label and log field.
    pub reason: &'static str,
}

impl Deny {
    pub fn answer(&self) -> Answer {
        use HttpStatus::{BadRequest, Forbidden, ServiceUnavailable, Unauthorized, UriTooLong};
        let (http, grpc, error, description, challenge_error, reason) = match self {
            Deny::InvalidPath(PathError::TooLong) => (
                UriTooLong,
                GrpcCode::InvalidArgument,
                "invalid_request",
                "request path too long",
                true,
                "path_too_long",
            ),
            Deny::InvalidHost(_) => (
                BadRequest,
                GrpcCode::InvalidArgument,
                "invalid_request",
                "invalid host",
                true,
                "invalid_host",
            ),
            Deny::LookalikeHeader(_) => (
                BadRequest,
                GrpcCode::InvalidArgument,
                "invalid_request",
                "identity header in another spelling",
                true,
                "lookalike_identity_header",
            ),
            Deny::InvalidQuery => (
                BadRequest,
                GrpcCode::InvalidArgument,
                "invalid_request",
                "malformed query string",
                true,
                "invalid_query",
            ),
            Deny::BadForwardedRequest => (
                BadRequest,
                GrpcCode::InvalidArgument,
                "invalid_request",
                "original request not described",
                true,
                "bad_forwarded_request",
            ),
            Deny::InvalidPath(_) => (
                BadRequest,
                GrpcCode::InvalidArgument,
                "invalid_request",
                "ambiguous request path",
                true,
                "invalid_path",
            ),
            Deny::MissingToken => (
                Unauthorized,
                GrpcCode::Unauthenticated,
                "invalid_request",
                "bearer token required",
                false,
                "missing_token",
            ),
            Deny::MultipleTokens => (
                BadRequest,
                GrpcCode::Unauthenticated,
                "invalid_request",
                "more than one token in request",
                true,
                "multiple_tokens",
            ),
            Deny::TokenTooLarge => (
                BadRequest,
                GrpcCode::Unauthenticated,
                "invalid_request",
                "token too large",
                true,
                "token_too_large",
            ),
            Deny::WrongSource => (
                Unauthorized,
                GrpcCode::Unauthenticated,
                "invalid_token",
                "token not accepted from this location",
                true,
                "wrong_source",
            ),
            Deny::ProviderNotAccepted => (
                Unauthorized,
                GrpcCode::Unauthenticated,
                "invalid_token",
                "token not accepted on this route",
                true,
                "provider_not_accepted",
            ),
            Deny::UnsafeClaim => (
                Unauthorized,
                GrpcCode::Unauthenticated,
                "invalid_token",
                "token claims not usable",
                true,
                "unsafe_claim",
            ),
            Deny::InsufficientClaims => (
                Forbidden,
                GrpcCode::PermissionDenied,
                "insufficient_scope",
                "token lacks the claims this route requires",
                true,
                "insufficient_claims",
            ),
            Deny::DeniedByRule => (
                Forbidden,
                GrpcCode::PermissionDenied,
                "insufficient_scope",
                "access to this route is denied",
                true,
                "denied_by_rule",
            ),
            Deny::Overloaded => (
                ServiceUnavailable,
                GrpcCode::Unavailable,
                "temporarily_unavailable",
                "server busy, retry later",
                false,
                "overloaded",
            ),
            Deny::TimedOut => (
                ServiceUnavailable,
                GrpcCode::Unavailable,
                "temporarily_unavailable",
                "check timed out, retry later",
                false,
                "timeout",
            ),
            Deny::Invalid(VerifyError::KeyFetchBusy) => (
                ServiceUnavailable,
                GrpcCode::Unavailable,
                "temporarily_unavailable",
                "signing keys being fetched, retry later",
                false,
                "key_fetch_busy",
            ),
            Deny::Invalid(VerifyError::VerifyBusy) => (
                ServiceUnavailable,
                GrpcCode::Unavailable,
                "temporarily_unavailable",
                "server busy, retry later",
                false,
                "verify_busy",
            ),
            Deny::Invalid(VerifyError::IntrospectionUnavailable) => (
                ServiceUnavailable,
                GrpcCode::Unavailable,
                "temporarily_unavailable",
                "token introspection unavailable, retry later",
                false,
                "introspection_unavailable",
            ),
            Deny::Invalid(VerifyError::IntrospectionBusy) => (
                ServiceUnavailable,
                GrpcCode::Unavailable,
                "temporarily_unavailable",
                "server busy, retry later",
                false,
                "introspection_busy",
            ),
            Deny::Invalid(VerifyError::KeysUnavailable) => (
                ServiceUnavailable,
                GrpcCode::Unavailable,
                "temporarily_unavailable",
                "signing keys unavailable, retry later",
                false,
                "keys_unavailable",
            ),
            Deny::ReplayStoreUnavailable => (
                ServiceUnavailable,
                GrpcCode::Unavailable,
                "temporarily_unavailable",
                "proof replay check unavailable, retry later",
                false,
                "replay_store_unavailable",
            ),
            Deny::StatusListUnavailable => (
                ServiceUnavailable,
                GrpcCode::Unavailable,
                "temporarily_unavailable",
                "token status unavailable, retry later",
                false,
                "status_list_unavailable",
            ),
            Deny::SidecarUnavailable => (
                ServiceUnavailable,
                GrpcCode::Unavailable,
                "temporarily_unavailable",
                "authorization service unavailable, retry later",
                false,
                "sidecar_unavailable",
            ),
            Deny::TokenRevoked => (
                Unauthorized,
                GrpcCode::Unauthenticated,
                "invalid_token",
                "token revoked",
                true,
                "token_revoked",
            ),
            Deny::StatusMissing => (
                Unauthorized,
                GrpcCode::Unauthenticated,
                "invalid_token",
                "token carries no status",
                true,
                "status_missing",
            ),
            Deny::StatusUnusable => (
                Unauthorized,
                GrpcCode::Unauthenticated,
                "invalid_token",
                "token status cannot be checked",
                true,
                "status_unusable",
            ),
            Deny::DpopMissingProof
            | Deny::DpopMultipleProofs
            | Deny::DpopInvalidProof(_)
            | Deny::DpopReplayed => {
                let (description, reason) = match self {
                    Deny::DpopMissingProof => ("DPoP proof required", "dpop_missing_proof"),
                    Deny::DpopMultipleProofs => {
                        ("more than one DPoP proof", "dpop_multiple_proofs")
                    }
                    Deny::DpopReplayed => ("DPoP proof already used", "dpop_replayed"),
                    _ => ("invalid DPoP proof", "dpop_invalid_proof"),
                };
                return Answer {
                    http: Unauthorized,
                    grpc: GrpcCode::Unauthenticated,
                    error: "invalid_dpop_proof",
                    description,
                    challenge_error: true,
                    challenge: Challenge::Dpop,
                    reason,
                };
            }
            Deny::DpopUseNonce(_) => {
                return Answer {
                    http: Unauthorized,
                    grpc: GrpcCode::Unauthenticated,
                    error: "use_dpop_nonce",
                    description: "Resource server requires nonce in DPoP proof",
                    challenge_error: true,
                    challenge: Challenge::Dpop,
                    reason: "dpop_use_nonce",
                };
            }
            Deny::DpopKeyMismatch
            | Deny::DpopUnbound
            | Deny::DpopBoundAsBearer
            | Deny::DpopRequired => {
                let (description, reason) = match self {
                    Deny::DpopKeyMismatch => ("invalid DPoP key binding", "dpop_key_mismatch"),
                    Deny::DpopUnbound => ("token is not DPoP-bound", "dpop_unbound"),
                    Deny::DpopBoundAsBearer => {
                        ("DPoP-bound token sent as bearer", "dpop_bound_as_bearer")
                    }
                    _ => ("DPoP-bound token required", "dpop_required"),
                };
                return Answer {
                    http: Unauthorized,
                    grpc: GrpcCode::Unauthenticated,
                    error: "invalid_token",
                    description,
                    challenge_error: true,
                    challenge: Challenge::Dpop,
                    reason,
                };
            }
            Deny::DpopNotAccepted => (
                Unauthorized,
                GrpcCode::Unauthenticated,
                "invalid_token",
                "DPoP not accepted for this token",
                true,
                "dpop_not_accepted",
            ),
            Deny::CertificateMissing => (
                Unauthorized,
                GrpcCode::Unauthenticated,
                "invalid_token",
                "certificate-bound token without a client certificate",
                true,
                "certificate_missing",
            ),
            Deny::CertificateMismatch => (
                Unauthorized,
                GrpcCode::Unauthenticated,
                "invalid_token",
                "token bound to another certificate",
                true,
                "certificate_mismatch",
            ),
            Deny::CertificateRequired => (
                Unauthorized,
                GrpcCode::Unauthenticated,
                "invalid_token",
                "certificate-bound token required",
                true,
                "certificate_required",
            ),
            Deny::Invalid(e) => {
                let (description, reason) = match e {
                    VerifyError::Malformed => ("malformed token", "malformed"),
                    VerifyError::UnsupportedHeader => {
                        ("unsupported token header", "unsupported_header")
                    }
                    VerifyError::UnknownIssuer => ("unknown issuer", "unknown_issuer"),
                    VerifyError::AlgorithmNotAllowed => {
                        ("algorithm not allowed", "algorithm_not_allowed")
                    }
                    VerifyError::UnknownKey => ("unknown signing key", "unknown_key"),
                    VerifyError::BadSignature => ("invalid signature", "bad_signature"),
                    VerifyError::Expired => ("token expired", "expired"),
                    VerifyError::NotYetValid => ("token not yet valid", "not_yet_valid"),
                    VerifyError::WrongAudience => ("invalid audience", "wrong_audience"),
                    VerifyError::WrongIssuer => ("invalid issuer", "wrong_issuer"),
                    VerifyError::MissingClaim(_) => ("missing required claim", "missing_claim"),
                    VerifyError::WrongTokenType => ("token type not accepted", "wrong_token_type"),
                    VerifyError::LifetimeTooLong => {
                        ("token lifetime too long", "lifetime_too_long")
                    }
                    VerifyError::IssuedInFuture => {
                        ("token issued in the future", "issued_in_future")
                    }
                    VerifyError::Inactive => ("token not active", "inactive"),
                    VerifyError::NotSpiffeId => (
                        "subject is not a SPIFFE ID of this trust domain",
                        "not_spiffe_id",
                    ),
                    VerifyError::BadIntrospection => {
                        ("token could not be introspected", "bad_introspection")
                    }
                    VerifyError::KeysUnavailable
                    | VerifyError::KeyFetchBusy
                    | VerifyError::VerifyBusy
                    | VerifyError::IntrospectionUnavailable
                    | VerifyError::IntrospectionBusy => {
                        ("signing keys unavailable", "keys_unavailable")
                    }
                };
                (
                    Unauthorized,
                    GrpcCode::Unauthenticated,
                    "invalid_token",
                    description,
                    true,
                    reason,
                )
            }
        };
        Answer {
            http,
            grpc,
            error,
            description,
            challenge_error,
            challenge: Challenge::Bearer,
            reason,
        }
    }

    /// The denial as the client sees it: status, headers and JSON body, the same whichever
    /// front end answers.
    pub fn denial(&self, realm: &str) -> Denial {
        self.denial_with(realm, None)
    }

    /// [`Deny::denial`] where DPoP is accepted: `dpop_algs` (space-separated) is named in
    /// the DPoP challenge (RFC 9449 §7.1), which is offered beside the Bearer one when the
    /// request had no token at all.
    pub fn denial_with(&self, realm: &str, dpop_algs: Option<&str>) -> Denial {
        self.denial_for(&ChallengeParams {
            realm,
            dpop_algs,
            ..ChallengeParams::default()
        })
    }

    /// The denial with every challenge parameter that applies (`c`).
    pub fn denial_for(&self, c: &ChallengeParams<'_>) -> Denial {
        let answer = self.answer();
        let realm = c.realm;
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            ("cache-control", "no-store".to_owned()),
        ];
        if answer.http != HttpStatus::ServiceUnavailable {
            let mut error = if answer.challenge_error {
                format!(
                    ", error=\"{}\", error_description=\"{}\"",
                    answer.error, answer.description
                )
            } else {
                String::new()
            };
            // RFC 6750 §3: the scope a token lacks (`insufficient_scope`), or the scope to ask
            // for when there is no token (MCP: "SHOULD include scope" on that 401).
            let names_scope =
                answer.error == "insufficient_scope" || matches!(self, Deny::MissingToken);
            if let Some(scope) = c.scope.filter(|_| names_scope) {
                error.push_str(&format!(", scope=\"{scope}\""));
            }
            // RFC 9728 §5.1: where the protected resource's metadata is, in every challenge
            // ("MAY be combined with other parameters"; MCP asks it of 403s too).
            let metadata = c
                .resource_metadata
                .map(|url| format!(", resource_metadata=\"{url}\""))
                .unwrap_or_default();
            let algs = c
                .dpop_algs
                .map(|algs| format!(", algs=\"{algs}\""))
                .unwrap_or_default();
            let challenge = match answer.challenge {
                Challenge::Dpop => format!("DPoP realm=\"{realm}\"{algs}{error}{metadata}"),
                // No token at all: either scheme will do (RFC 9110 §11.6.1 allows several
                // challenges in one field).
                Challenge::Bearer if !answer.challenge_error && c.dpop_algs.is_some() => {
                    format!(
                        "Bearer realm=\"{realm}\"{metadata}, DPoP realm=\"{realm}\"{algs}{metadata}"
                    )
                }
                Challenge::Bearer => format!("Bearer realm=\"{realm}\"{error}{metadata}"),
            };
            headers.push(("www-authenticate", challenge));
            if let Deny::DpopUseNonce(nonce) = self
                && !nonce.is_empty()
            {
                headers.push(("dpop-nonce", nonce.clone()));
            }
        } else {
            headers.push(("retry-after", "5".to_owned()));
        }
        let body = serde_json::json!({
            "error": answer.error,
            "error_description": answer.description,
        })
        .to_string();
        Denial {
            answer,
            headers,
            body,
        }
    }
}

/// The parameters of a denial's challenges besides its error.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChallengeParams<'a> {
    pub realm: &'a str,
    /// The DPoP algorithms accepted (space-separated), when some provider takes DPoP.
    pub dpop_algs: Option<&'a str>,
    /// The protected resource's metadata URL (RFC 9728 §5.1).
    pub resource_metadata: Option<&'a str>,
    /// The scopes the route needs (RFC 6750 §3), named on `insufficient_scope`.
    pub scope: Option<&'a str>,
}

/// A denial ready to send: what every front end puts on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub answer: Answer,
    /// Lowercase names.
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Denial {
    pub fn status(&self) -> u16 {
        self.answer.http as u16
    }
}

impl From<crate::extract::ExtractError> for Deny {
    fn from(error: crate::extract::ExtractError) -> Self {
        use crate::extract::ExtractError;
        match error {
            ExtractError::Multiple => Deny::MultipleTokens,
            ExtractError::TooLarge => Deny::TokenTooLarge,
            ExtractError::BadQuery => Deny::InvalidQuery,
        }
    }
}

/// What a check answers, before any front end encodes it.
#[derive(Debug)]
pub enum Verdict {
    /// Let the request through with these header changes; `metadata` is the provider's name
    /// and the verified token, for front ends that can pass claims on (Envoy's dynamic
    /// metadata), when `identity.dynamic_metadata` asks for it.
    Allow {
        mutation: HeaderMutation,
        metadata: Option<(String, Arc<VerifiedToken>)>,
    },
    Deny(Denial),
}

impl Verdict {
    /// The HTTP status the client gets: 200 when allowed, else the denial's.
    pub fn http_status(&self) -> u16 {
        match self {
            Verdict::Allow { .. } => 200,
            Verdict::Deny(denial) => denial.answer.http as u16,
        }
    }
}

#[cfg(test)]
mod tests;
