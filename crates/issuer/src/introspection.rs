//! What introspection says about a token (RFC 7662 §2.2): the members of an active one,
//! from an opaque token's record or from one of this issuer's JWTs, or `{"active": false}`
//! and nothing else; and the same answer as a signed JWT (RFC 9701 §5).

use jsonwebtoken::{Algorithm, Header};
use serde_json::{Map, Value, json};

use crate::keys::LoadedKey;
use crate::opaque::OpaqueRecord;
use crate::token::{Confirmation, MintError};

/// RFC 9701 §4: the media type a client asks for (and gets) a signed answer with.
pub const JWT_MEDIA_TYPE: &str = "application/token-introspection+jwt";
/// RFC 9701 §5: the `typ` of that JWT's header.
pub const JWT_TYPE: &str = "token-introspection+jwt";
/// Clock skew allowed on a JWT's `nbf`, as verifiers allow it.
const NBF_LEEWAY: u64 = 60;

/// RFC 7662 §2.2: the whole answer for a token that is not active, whatever the reason
/// (unknown, expired, revoked, malformed, not ours), so the reason does not leak.
pub fn inactive() -> Value {
    json!({"active": false})
}

/// RFC 9449 §5 (via RFC 7662 §2.2 `token_type`): a DPoP-bound token's type is DPoP.
fn token_type(cnf: &Confirmation) -> &'static str {
    if cnf.jkt.is_some() { "DPoP" } else { "Bearer" }
}

/// The answer for an opaque token's record at `now`.
pub fn for_opaque(record: &OpaqueRecord, issuer: &str, now: u64) -> Value {
    let live = u64::try_from(record.expires_at).is_ok_and(|exp| now < exp);
    if !live || record.revoked_at.is_some() {
        return inactive();
    }
    let mut answer = json!({
        "active": true,
        "iss": issuer,
        "sub": record.subject,
        "aud": record.audience,
        "iat": record.issued_at,
        "exp": record.expires_at,
        "jti": record.jti,
        "username": record.username,
        "role": record.role,
        "token_type": token_type(&record.cnf),
    });
    // RFC 7662 §2.2: `scope`, space-separated.
    if let Some(scope) = &record.scope {
        answer["scope"] = json!(scope);
    }
    if !record.cnf.is_empty() {
        answer["cnf"] = json!(record.cnf);
    }
    answer
}

/// Members of a JWT's claims an introspection answer repeats.
const JWT_MEMBERS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "username",
    "role",
    "scope",
    "client_id",
    "cnf",
];

/// The answer for one of this issuer's JWTs, its signature, issuer and audience already
/// verified: active if unexpired, already valid, and recorded here unrevoked (`revoked`
/// is `None` for a token never recorded).
pub fn for_jwt(claims: &Map<String, Value>, revoked: Option<bool>, now: u64) -> Value {
    let exp = claims.get("exp").and_then(Value::as_u64);
    let nbf = claims.get("nbf").map(Value::as_u64);
    let live = exp.is_some_and(|exp| now < exp)
        && match nbf {
            None => true,
            Some(Some(nbf)) => nbf <= now + NBF_LEEWAY,
            Some(None) => false,
        };
    if !live || revoked != Some(false) {
        return inactive();
    }
    let mut answer = Map::new();
    answer.insert("active".into(), Value::Bool(true));
    for name in JWT_MEMBERS {
        if let Some(value) = claims.get(*name) {
            answer.insert((*name).to_owned(), value.clone());
        }
    }
    let bound = claims.get("cnf").and_then(|cnf| cnf.get("jkt")).is_some();
    let kind = if bound { "DPoP" } else { "Bearer" };
    answer.insert("token_type".into(), Value::from(kind));
    Value::Object(answer)
}

/// RFC 9701 §5: the answer as a JWT signed with the issuer's current key, for the client
/// that asked (`aud`).
pub fn signed(
    key: &LoadedKey,
    issuer: &str,
    client_id: &str,
    now: u64,
    answer: &Value,
) -> Result<String, MintError> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.entry.kid.clone());
    header.typ = Some(JWT_TYPE.to_owned());
    let claims = json!({
        "iss": issuer,
        "aud": client_id,
        "iat": now,
        "token_introspection": answer,
    });
    Ok(jsonwebtoken::encode(&header, &claims, &key.encoding_key)?)
}

/// Whether an `Accept` header asks for [`JWT_MEDIA_TYPE`] (with a non-zero `q`).
pub fn wants_jwt(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        media.eq_ignore_ascii_case(JWT_MEDIA_TYPE) && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> OpaqueRecord {
        OpaqueRecord {
            jti: "j".into(),
            subject: "s".into(),
            username: "bob".into(),
            role: "user".into(),
            audience: "api".into(),
            scope: None,
            issued_at: 100,
            expires_at: 200,
            cnf: Confirmation::default(),
            revoked_at: None,
        }
    }

    #[test]
    fn an_opaque_token_is_active_until_its_exp_and_unless_revoked() {
        let active = for_opaque(&record(), "http://issuer", 199);
        assert_eq!(active["active"], true);
        assert_eq!(active["token_type"], "Bearer");
        assert!(active.get("cnf").is_none());
        assert!(active.get("scope").is_none());
        let scoped = OpaqueRecord {
            audience: "https://mcp.example/mcp".into(),
            scope: Some("mcp:tools".into()),
            ..record()
        };
        let answer = for_opaque(&scoped, "http://issuer", 150);
        assert_eq!(answer["aud"], "https://mcp.example/mcp");
        assert_eq!(answer["scope"], "mcp:tools");
        assert_eq!(for_opaque(&record(), "http://issuer", 200), inactive());
        let revoked = OpaqueRecord {
            revoked_at: Some(150),
            ..record()
        };
        assert_eq!(for_opaque(&revoked, "http://issuer", 160), inactive());
        let bound = OpaqueRecord {
            cnf: Confirmation {
                jkt: Some("k".into()),
                x5t_s256: None,
            },
            ..record()
        };
        let answer = for_opaque(&bound, "http://issuer", 150);
        assert_eq!(answer["token_type"], "DPoP");
        assert_eq!(answer["cnf"], json!({"jkt": "k"}));
    }

    #[test]
    fn a_jwt_is_active_only_unexpired_valid_and_recorded_unrevoked() {
        let claims = json!({"sub": "s", "exp": 200, "nbf": 100, "status": {"x": 1}, "other": 1});
        let claims = claims.as_object().unwrap();
        let active = for_jwt(claims, Some(false), 150);
        assert_eq!(
            active,
            json!({"active": true, "sub": "s", "exp": 200, "nbf": 100, "token_type": "Bearer"})
        );
        assert_eq!(for_jwt(claims, Some(true), 150), inactive());
        assert_eq!(for_jwt(claims, None, 150), inactive());
        assert_eq!(for_jwt(claims, Some(false), 200), inactive());
        assert_eq!(for_jwt(claims, Some(false), 39), inactive());
        let no_exp = json!({"sub": "s"});
        assert_eq!(
            for_jwt(no_exp.as_object().unwrap(), Some(false), 1),
            inactive()
        );
    }

    #[test]
    fn accept_asks_for_a_jwt_by_media_type_unless_q_is_zero() {
        assert!(wants_jwt("application/token-introspection+jwt"));
        assert!(wants_jwt(
            "application/json;q=0.5, Application/Token-Introspection+JWT"
        ));
        assert!(!wants_jwt("application/json"));
        assert!(!wants_jwt("*/*"));
        assert!(!wants_jwt("application/token-introspection+jwt;q=0"));
    }
}
