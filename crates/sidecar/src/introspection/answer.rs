//! Reading an introspection answer (RFC 7662 §2.2, or RFC 9701 §5 for a signed one) and
//! holding an active token's members to the rules a JWT's claims are held to.

use serde_json::{Map, Value};

use crate::config::ProviderConfig;
use crate::verify::VerifyError;
use jwt_authz_jose::jws;

/// What the endpoint said of a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Said {
    /// `active: true`, with the answer's other members (the token's claims).
    Active(Map<String, Value>),
    /// `active: false` (§2.2: unknown, expired, revoked, or not for this caller).
    Inactive,
}

/// The JSON object of an answer: `active`, REQUIRED and a boolean (§2.2); anything else that
/// is not such an object is unusable. A `false` answer's other members are ignored (§2.2:
/// it SHOULD NOT carry any).
pub fn read(object: Value) -> Result<Said, VerifyError> {
    let Value::Object(mut members) = object else {
        return Err(VerifyError::BadIntrospection);
    };
    match members.remove("active") {
        Some(Value::Bool(true)) => Ok(Said::Active(members)),
        Some(Value::Bool(false)) => Ok(Said::Inactive),
        _ => Err(VerifyError::BadIntrospection),
    }
}

/// An active token's members checked as a JWT's claims would be, before any route sees
/// them: `iss`, when present, is the provider's issuer (§2.2 makes it optional: the endpoint
/// is the provider's own); `exp` (required unless `require_exp: false`), `nbf`, `iat` with
/// the provider's leeway, `max_lifetime` and `required_claims`; `token_type`, when present,
/// `Bearer` or `DPoP` (RFC 6749 §7.1, RFC 9449 §6.2), and a `DPoP` token bound to a key
/// (`cnf.jkt`); `cnf`, when present, an object. Audiences are the route's step, as for a JWT.
/// Returns the token's `exp`.
pub fn check_active(
    config: &ProviderConfig,
    claims: &Map<String, Value>,
    now: u64,
) -> Result<Option<u64>, VerifyError> {
    let profile = config.profile();
    let exp = jwt_authz_jose::verify::check_registered(&profile, claims, &[], now, None)?;
    if let Some(iss) = claims.get("iss")
        && !iss.is_string()
    {
        return Err(VerifyError::WrongIssuer);
    }
    // The provider's own requirements, as a JWT's.
    jwt_authz_jose::verify::check_required(&profile, claims)?;
    jwt_authz_jose::verify::check_issued_at(&profile, claims, exp, now, None)?;
    let cnf = match claims.get("cnf") {
        None => None,
        Some(Value::Object(cnf)) => Some(cnf),
        Some(_) => return Err(VerifyError::BadIntrospection),
    };
    match claims.get("token_type") {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        // RFC 9449 §6.2: a DPoP token's introspection names its key.
        Some(Value::String(t))
            if t.eq_ignore_ascii_case("dpop")
                && !cnf.is_some_and(|c| c.get("jkt").is_some_and(Value::is_string)) =>
        {
            return Err(VerifyError::BadIntrospection);
        }
        Some(Value::String(t)) if t.eq_ignore_ascii_case("dpop") => {}
        // A refresh token, an ID token, anything that is not an access token.
        Some(_) => return Err(VerifyError::WrongTokenType),
    }
    // §2.1: the server looks for the token among every kind it issued, whatever the hint,
    // and some say a refresh token is active without `token_type` but with a marker of their
    // own (Ory Hydra's `token_use`, Keycloak's `typ`).
    let refresh = |name: &str| {
        claims.get(name).and_then(Value::as_str).is_some_and(|v| {
            v.eq_ignore_ascii_case("refresh_token") || v.eq_ignore_ascii_case("refresh")
        })
    };
    if refresh("token_use") || refresh("typ") {
        return Err(VerifyError::WrongTokenType);
    }
    Ok(exp)
}

/// The introspection object of a JWT-secured answer's claims (RFC 9701 §5), the JWT's
/// signature already checked with the provider's keys: `iss` the provider's issuer, `aud` this
/// client, `iat` within `fresh` seconds of `now` (an answer names no token: an old one
/// replayed by whoever sits on the path could vouch for any token), and `token_introspection`
/// an object.
pub fn signed_object(
    config: &ProviderConfig,
    client_id: &str,
    mut claims: Map<String, Value>,
    now: u64,
    fresh: u64,
) -> Result<Value, VerifyError> {
    if claims.get("iss").and_then(Value::as_str) != Some(config.issuer.as_str()) {
        return Err(VerifyError::BadIntrospection);
    }
    let for_us = match claims.get("aud") {
        Some(Value::String(aud)) => aud == client_id,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    };
    let iat = jws::date_claim(&claims, "iat").ok().flatten();
    let recent = iat.is_some_and(|iat| iat + fresh >= now && iat <= now + fresh);
    if !for_us || !recent {
        return Err(VerifyError::BadIntrospection);
    }
    match claims.remove("token_introspection") {
        Some(object @ Value::Object(_)) => Ok(object),
        _ => Err(VerifyError::BadIntrospection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider() -> ProviderConfig {
        let yaml = "name: p\nissuer: https://idp.example\naudiences: [api]\njwks: {uri: https://idp.example/jwks}\n";
        // Through a JSON value, as the configuration file is read.
        let value: Value = serde_norway::from_str(yaml).expect("yaml");
        serde_json::from_value(value).expect("provider")
    }

    fn active(members: Value) -> Map<String, Value> {
        match read(members).expect("readable") {
            Said::Active(claims) => claims,
            Said::Inactive => panic!("inactive"),
        }
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn active_is_required_and_a_boolean() {
        assert_eq!(
            read(json!({"active": false, "sub": "x"})),
            Ok(Said::Inactive)
        );
        for bad in [
            json!({}),
            json!({"active": "true"}),
            json!({"active": 1}),
            json!([{"active": true}]),
            json!("active"),
        ] {
            assert_eq!(
                read(bad.clone()),
                Err(VerifyError::BadIntrospection),
                "{bad}"
            );
        }
        let claims = active(json!({"active": true, "sub": "u"}));
        assert!(!claims.contains_key("active"));
    }

    #[test]
    fn an_active_answer_is_held_to_a_jwts_rules() {
        let config = provider();
        let ok = active(
            json!({"active": true, "iss": "https://idp.example", "exp": NOW + 60, "iat": NOW}),
        );
        assert_eq!(check_active(&config, &ok, NOW), Ok(Some(NOW + 60)));
        for (members, error) in [
            (
                json!({"active": true}),
                VerifyError::MissingClaim("exp".into()),
            ),
            (
                json!({"active": true, "exp": NOW - 120}),
                VerifyError::Expired,
            ),
            (
                json!({"active": true, "exp": NOW + 60, "nbf": NOW + 600}),
                VerifyError::NotYetValid,
            ),
            (
                json!({"active": true, "exp": NOW + 60, "iss": "https://other.example"}),
                VerifyError::WrongIssuer,
            ),
            (
                json!({"active": true, "exp": NOW + 60, "iat": NOW + 600}),
                VerifyError::IssuedInFuture,
            ),
            (
                json!({"active": true, "exp": NOW + 60, "token_type": "refresh_token"}),
                VerifyError::WrongTokenType,
            ),
            (
                json!({"active": true, "exp": NOW + 60, "token_use": "refresh_token"}),
                VerifyError::WrongTokenType,
            ),
            (
                json!({"active": true, "exp": NOW + 60, "typ": "Refresh"}),
                VerifyError::WrongTokenType,
            ),
            (
                json!({"active": true, "exp": NOW + 60, "token_type": "DPoP"}),
                VerifyError::BadIntrospection,
            ),
            (
                json!({"active": true, "exp": NOW + 60, "cnf": "x"}),
                VerifyError::BadIntrospection,
            ),
            (
                json!({"active": true, "exp": "soon"}),
                VerifyError::MissingClaim("exp".into()),
            ),
        ] {
            assert_eq!(
                check_active(&config, &active(members.clone()), NOW),
                Err(error),
                "{members}"
            );
        }
        let dpop = active(
            json!({"active": true, "exp": NOW + 60, "token_type": "DPoP", "cnf": {"jkt": "abc"}}),
        );
        assert!(check_active(&config, &dpop, NOW).is_ok());
    }

    #[test]
    fn a_signed_answer_names_its_issuer_and_this_client() {
        let config = provider();
        let claims = |c: Value| c.as_object().cloned().expect("object");
        let good = json!({"iss": "https://idp.example", "aud": "jwt-authz", "iat": NOW, "token_introspection": {"active": true}});
        assert_eq!(
            signed_object(&config, "jwt-authz", claims(good.clone()), NOW, 5),
            Ok(json!({"active": true}))
        );
        for (key, value) in [
            ("iss", json!("https://other.example")),
            ("aud", json!("another-client")),
            ("iat", Value::Null),
            ("iat", json!(NOW - 60)),
            ("iat", json!(NOW + 60)),
            ("token_introspection", json!("active")),
        ] {
            let mut bad = good.clone();
            bad[key] = value;
            assert_eq!(
                signed_object(&config, "jwt-authz", claims(bad), NOW, 5),
                Err(VerifyError::BadIntrospection),
                "{key}"
            );
        }
    }
}
