//! What the sidecar and the in-proxy filter say to each other, defined once for both ends.
//!
//! The filter asks `<in_proxy.prefix>/check<original path>` with the original method and
//! headers (`:authority` the original host) about every request it cannot decide alone; the
//! sidecar decides it in full (verification, DPoP, certificate binding, status lists, rules)
//! and answers a [`CheckAnswer`] as JSON with status 200. Any other status, or a body that is
//! not one, is a failed callout: the filter answers 503 ([`crate::response::Deny::SidecarUnavailable`]).
//!
//! When the token's verified claims are all a later decision needs (no proof, binding or
//! status to check per request), the answer carries them ([`CachedToken`]) and how long the
//! filter may keep them; the filter then decides that token's next requests itself with
//! this crate's [`decision`](crate::decision). Every answer, and the filter's periodic poll
//! of `<in_proxy.prefix>/generation` ([`GenerationAnswer`]), carries the sidecar's
//! generation: a digest of its key sets that changes when a key is added or removed or the
//! configuration is reloaded. A filter that sees another generation empties its cache.
//!
//! Both answers also carry the digest of the sidecar's decision configuration (rules, paths,
//! identity headers, providers: `DecisionConfig::digest`). A filter given another
//! configuration than the sidecar runs (a plugin configuration not yet updated after the
//! sidecar's was reloaded, a typo) would decide by rules the sidecar no longer has: until the
//! two digests agree, it decides nothing itself and asks the sidecar about every request.
//!
//! **Rolling upgrades.** Sidecars and filters are upgraded one after the other, in either
//! order, so each reads what the other version writes: an answer's or a poll's top-level
//! members a reader does not know (a newer writer's additions: information such as a reason)
//! are ignored, and every member added after the first version has a default (an older
//! writer leaves it out: `config` missing means "not known to agree", so the filter asks the
//! sidecar about everything, which is slower, never wrong). Inside a verdict and inside the
//! held claims' envelope, an unknown member is still refused, as is a verdict of an unknown
//! kind (503, fail closed): there a newer sidecar's addition may restrict what the filter
//! does (another header to remove, a token not to hold), and an older filter that dropped it
//! would fail open. Such additions need the filters upgraded first.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::response::Verdict;

/// The header a callout carries the original request's method in. Callouts are sent as
/// `GET`: the answer of a callout sent as `HEAD` would come back without its body. The filter
/// sets it itself, after dropping any copy the client sent.
pub const METHOD_HEADER: &str = "x-jwt-authz-method";

/// The largest answer body a filter reads; a longer one is a failed callout. Claims ride
/// in it, and a token (so its claims) is bounded by `max_token_bytes` on the sidecar.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// The sidecar's answer to a callout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckAnswer {
    pub generation: String,
    /// The digest of the sidecar's decision configuration ([`DecisionConfig::digest`]): a
    /// filter whose own differs (or that is not told it) decides nothing itself.
    ///
    /// [`DecisionConfig::digest`]: crate::config::DecisionConfig::digest
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    pub verdict: WireVerdict,
    /// The token's verified claims, when the filter may decide its later requests itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<CachedToken>,
}

/// A verdict as it travels: what the filter applies to the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WireVerdict {
    /// Let the request through with these header changes.
    Allow {
        set: Vec<(String, String)>,
        remove: Vec<String>,
        /// The identity as dynamic metadata, when `identity.dynamic_metadata` asks for it
        /// (the dynamic module sets it; the Wasm ABI cannot).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<IdentityMetadata>,
    },
    /// Answer the client with this response.
    Deny {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

impl From<Verdict> for WireVerdict {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Allow { mutation, metadata } => WireVerdict::Allow {
                set: mutation.set,
                remove: mutation.remove,
                metadata: metadata.map(|(provider, token)| IdentityMetadata {
                    provider,
                    claims: token.claims.clone(),
                }),
            },
            Verdict::Deny(denial) => WireVerdict::Deny {
                status: denial.status(),
                headers: denial
                    .headers
                    .into_iter()
                    .map(|(name, value)| (name.to_owned(), value))
                    .collect(),
                body: denial.body,
            },
        }
    }
}

/// A verified identity as dynamic metadata (`identity.dynamic_metadata`): what the ext_authz
/// front ends put in their answer's `dynamic_metadata`, `{provider, claims}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityMetadata {
    /// The name of the provider that verified the token.
    pub provider: String,
    pub claims: Map<String, Value>,
}

/// A token's verified claims, for the filter's cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachedToken {
    /// The name of the provider that verified it (names are unique; the filter finds the
    /// provider in its own copy of the configuration by it, whatever the order there).
    pub provider: String,
    pub claims: Map<String, Value>,
    /// Seconds the filter may keep it: at most `token_cache.ttl`, and never past `exp`.
    pub cache_for: u64,
}

/// The sidecar's answer to the filter's poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationAnswer {
    pub generation: String,
    /// As [`CheckAnswer::config`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The DPoP challenge's `algs` when some provider takes DPoP (RFC 9449 §7.1): the
    /// filter names them when it denies a request without a token, as the sidecar would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_algs: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::Deny;

    #[test]
    fn a_denial_travels_as_the_client_would_see_it() {
        let denial = Deny::MissingToken.denial("api");
        let wire = WireVerdict::from(Verdict::Deny(denial.clone()));
        let WireVerdict::Deny {
            status,
            headers,
            body,
        } = &wire
        else {
            panic!("not a denial: {wire:?}");
        };
        assert_eq!(*status, 401);
        assert_eq!(body, &denial.body);
        assert!(headers.contains(&(
            "www-authenticate".to_owned(),
            "Bearer realm=\"api\"".to_owned()
        )));
        let text = serde_json::to_string(&CheckAnswer {
            generation: "1".into(),
            config: None,
            verdict: wire.clone(),
            token: None,
        })
        .unwrap();
        let back: CheckAnswer = serde_json::from_str(&text).unwrap();
        assert_eq!(back.verdict, wire);
        assert_eq!(back.token, None);
    }

    /// A newer sidecar's answer (top-level members this version does not know) read by
    /// this filter: the same answer as without them.
    #[test]
    fn a_newer_sidecars_answers_read_as_without_what_they_add() {
        let plain = r#"{"generation":"g1","config":"d1","verdict":{"allow":{"set":[["x-user-id","alice"]],"remove":["x-user-role"]}},"token":{"provider":"corp","claims":{"sub":"alice"},"cache_for":30}}"#;
        let newer = r#"{"generation":"g1","config":"d1","reason":"allowed","explain":{"steps":[]},"verdict":{"allow":{"set":[["x-user-id","alice"]],"remove":["x-user-role"]}},"token":{"provider":"corp","claims":{"sub":"alice"},"cache_for":30}}"#;
        let plain: CheckAnswer = serde_json::from_str(plain).unwrap();
        assert_eq!(serde_json::from_str::<CheckAnswer>(newer).unwrap(), plain);
        let poll = r#"{"generation":"g2","config":"d1","dpop_algs":"ES256","keys":3}"#;
        assert_eq!(
            serde_json::from_str::<GenerationAnswer>(poll).unwrap(),
            GenerationAnswer {
                generation: "g2".into(),
                config: Some("d1".into()),
                dpop_algs: Some("ES256".into()),
            }
        );
    }

    /// An older sidecar's answers (from before `config`, `token` and `dpop_algs` existed) read
    /// by this filter: what is missing takes its default (`config` unknown: the filter then
    /// decides nothing itself).
    #[test]
    fn an_older_sidecars_answers_read_with_defaults() {
        let older = r#"{"generation":"g1","verdict":{"allow":{"set":[],"remove":[]}}}"#;
        let answer: CheckAnswer = serde_json::from_str(older).unwrap();
        assert_eq!((answer.config, answer.token), (None, None));
        let poll: GenerationAnswer = serde_json::from_str(r#"{"generation":"g1"}"#).unwrap();
        assert_eq!((poll.config, poll.dpop_algs), (None, None));
    }

    /// What cannot be read safely is no answer (the filter answers 503): a verdict of a kind
    /// this version does not know, a member it does not know inside a verdict or the held
    /// claims' envelope, or one without what it must have.
    #[test]
    fn an_answer_that_cannot_be_read_safely_is_not_one() {
        for text in [
            r#"{"generation":"1","verdict":{"challenge":{"status":401}}}"#,
            // Inside a verdict or the held claims' envelope, an addition may be a restriction.
            r#"{"generation":"1","verdict":{"allow":{"set":[],"remove":[],"also_remove":["x-a"]}}}"#,
            r#"{"generation":"1","verdict":{"deny":{"status":401,"headers":[],"body":"{}","retry_after":3}}}"#,
            r#"{"generation":"1","verdict":{"allow":{"set":[],"remove":[]}},"token":{"provider":"p","claims":{},"cache_for":5,"do_not_hold":true}}"#,
            r#"{"generation":"1","verdict":{"allow":{"set":[]}}}"#,
            r#"{"generation":"1","verdict":{"deny":{"status":401,"headers":[]}}}"#,
            r#"{"verdict":{"allow":{"set":[],"remove":[]}}}"#,
            r#"{"generation":"1"}"#,
        ] {
            assert!(serde_json::from_str::<CheckAnswer>(text).is_err(), "{text}");
        }
    }
}
