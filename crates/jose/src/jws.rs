//! A token taken apart once: the compact JWS split into its three parts (RFC 7515 §7.1),
//! the header and the claims each base64url-decoded and parsed once, and the registered
//! claims (RFC 7519 §4.1) validated on that one parse.
//!
//! `jsonwebtoken::decode` parses the header twice and the claims twice per call, and choosing
//! the provider by `iss` and the key by `kid` parsed both once more before it: about a tenth
//! of a miss's CPU (BENCHMARKS.md, "miss path"). `jsonwebtoken` still reads the keys
//! (`Jwk`, `DecodingKey`) and the header type; the signature is checked with the aws-lc key
//! prepared per fetch (the sidecar's `keys::VerifyingKey::verify_signature`, over [`crate::crypto`]).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;
use serde_json::{Map, Value};

use jwt_authz_core::token::VerifyError;

#[cfg(test)]
mod tests;

/// A token whose parts are decoded but whose signature is not yet checked: nothing in it is
/// to be trusted except to choose the provider and key that will check it.
#[derive(Debug)]
pub struct Unverified {
    pub header: Header,
    pub claims: Map<String, Value>,
    /// `BASE64URL(header) '.' BASE64URL(payload)`: what the signature covers (RFC 7515 §5.2
    /// step 8).
    pub signing_input: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Unverified {
    /// Splits and decodes `token` (its size was bounded where it was found:
    /// `max_token_bytes`). Exactly three parts; each base64url without padding (RFC 7515
    /// §2, §7.1); the header and the claims each a JSON object (RFC 7519 §7.2 steps 3–10).
    /// A JWE (five parts) and anything else are `Malformed`.
    pub fn parse(token: &str) -> Result<Self, VerifyError> {
        let mut parts = token.splitn(4, '.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| VerifyError::Malformed)
        };
        let header: Header =
            serde_json::from_slice(&decode(header)?).map_err(|_| VerifyError::Malformed)?;
        let UniqueClaims(claims) =
            serde_json::from_slice(&decode(payload)?).map_err(|_| VerifyError::Malformed)?;
        let signing_input = token.as_bytes()[..token.len() - signature.len() - 1].to_vec();
        Ok(Self {
            header,
            claims,
            signing_input,
            signature: decode(signature)?,
        })
    }

    /// The issuer the token names (unverified: only used to pick the provider). A token
    /// without a string `iss` has no provider (RFC 7519 §4.1.1: a StringOrURI).
    pub fn issuer(&self) -> Result<&str, VerifyError> {
        self.claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(VerifyError::Malformed)
    }
}

/// A JWT Claims Set whose claim names are unique. RFC 7519 §4 lets a parser either refuse
/// duplicates or keep the last; refusing them means no reader of the same token (an upstream
/// that keeps the first) can see other claims than the ones verified here.
struct UniqueClaims(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for UniqueClaims {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueClaims;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object with unique member names")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueClaims, A::Error> {
                let mut claims = Map::new();
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    if claims.contains_key(&name) {
                        return Err(serde::de::Error::custom("duplicate claim name"));
                    }
                    claims.insert(name, value);
                }
                Ok(UniqueClaims(claims))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Which registered claims a token must carry and which are checked against the clock.
#[derive(Debug, Clone, Copy)]
pub struct Registered<'a> {
    /// Of `exp`, `nbf`, `iss`, `aud`, `sub`: the ones that must be present (and well formed).
    pub required: &'a [&'a str],
    /// Refuse a token whose `exp` has passed (RFC 7519 §4.1.4).
    pub check_exp: bool,
    /// Refuse a token whose `nbf` has not come yet (RFC 7519 §4.1.5).
    pub check_nbf: bool,
    /// Seconds of clock skew allowed either way.
    pub leeway: u64,
    /// `iss` must equal this when present (RFC 7519 §4.1.1).
    pub issuer: Option<&'a str>,
}

/// A registered claim as read for validation: absent (or null), present and well formed,
/// or present in a shape the RFC does not allow.
enum Read<T> {
    Absent,
    Valid(T),
    Invalid,
}

impl<T> Read<T> {
    fn of(claims: &Map<String, Value>, name: &str, read: impl Fn(&Value) -> Option<T>) -> Self {
        match claims.get(name) {
            None | Some(Value::Null) => Read::Absent,
            Some(value) => read(value).map_or(Read::Invalid, Read::Valid),
        }
    }
}

/// A NumericDate (RFC 7519 §2: seconds, possibly fractional) as whole seconds, rounded
/// down (a fractional `exp` is past once its whole second is); negative, infinite and
/// non-numbers are not dates.
pub fn numeric_date(value: &Value) -> Option<u64> {
    if let Some(secs) = value.as_u64() {
        return Some(secs);
    }
    let secs = value.as_f64()?;
    (secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64).then(|| secs.floor() as u64)
}

/// A NumericDate claim: `None` when absent, `Malformed` when present but not a date.
pub fn date_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, VerifyError> {
    match Read::of(claims, name, numeric_date) {
        Read::Absent => Ok(None),
        Read::Valid(secs) => Ok(Some(secs)),
        Read::Invalid => Err(VerifyError::Malformed),
    }
}

/// An `aud` (RFC 7519 §4.1.3): one string, or an array of strings.
fn audience(value: &Value) -> Option<()> {
    match value {
        Value::String(_) => Some(()),
        Value::Array(items) => items.iter().all(Value::is_string).then_some(()),
        _ => None,
    }
}

/// One check of a token's verification, as `explain` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub check: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// Where verification records its checks as it makes them (for `explain`); `None` on the
/// request path, where nothing is recorded.
pub type Record<'a> = Option<&'a std::sync::Mutex<Vec<Check>>>;

/// `result`, recorded as check `name` with `detail` (on a failure, followed by the error):
/// the check and what `explain` says of it are one piece of code.
pub fn stage<T>(
    record: Record<'_>,
    name: &'static str,
    result: Result<T, VerifyError>,
    detail: impl FnOnce(bool) -> String,
) -> Result<T, VerifyError> {
    if let Some(record) = record {
        let detail = detail(result.is_ok());
        let (passed, detail) = match &result {
            Ok(_) => (true, detail),
            Err(e) if detail.is_empty() => (false, e.to_string()),
            Err(e) => (false, format!("{detail} ({e})")),
        };
        if let Ok(mut checks) = record.lock() {
            checks.push(Check {
                check: name,
                passed,
                detail,
            });
        }
    }
    result
}

/// Seconds from `now` to `at`, signed.
pub fn from_now(at: u64, now: u64) -> i64 {
    i64::try_from(at).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(i64::MAX)
}

/// Validates the registered claims of a token whose signature has been checked, in the
/// order `jsonwebtoken` did, so that each refusal keeps its reason: required claims present,
/// `exp`/`nbf` well formed, not expired, already valid, then the issuer. Returns `exp`.
pub fn check_registered(
    claims: &Map<String, Value>,
    rules: &Registered<'_>,
    now: u64,
    record: Record<'_>,
) -> Result<Option<u64>, VerifyError> {
    let exp = Read::of(claims, "exp", numeric_date);
    let nbf = Read::of(claims, "nbf", numeric_date);
    let missing = rules.required.iter().find(|&&name| !match name {
        "exp" => matches!(exp, Read::Valid(_)),
        "nbf" => matches!(nbf, Read::Valid(_)),
        "iss" | "sub" => matches!(
            Read::of(claims, name, |v| v.is_string().then_some(())),
            Read::Valid(())
        ),
        "aud" => matches!(Read::of(claims, name, audience), Read::Valid(())),
        _ => true,
    });
    let present = match missing {
        Some(name) => Err(VerifyError::MissingClaim((*name).to_owned())),
        None => Ok(()),
    };
    stage(record, "required", present, |_| rules.required.join(", "))?;
    let malformed = (rules.check_exp && matches!(exp, Read::Invalid))
        || (rules.check_nbf && matches!(nbf, Read::Invalid));
    let dates = if malformed {
        Err(VerifyError::Malformed)
    } else {
        Ok(())
    };
    stage(record, "dates", dates, |_| {
        "exp, nbf well formed".to_owned()
    })?;
    let leeway = rules.leeway;
    match (&exp, rules.check_exp) {
        (Read::Valid(exp), true) => {
            let expired = if *exp < now.saturating_sub(leeway) {
                Err(VerifyError::Expired)
            } else {
                Ok(())
            };
            stage(record, "exp", expired, |_| {
                format!("{:+} s from now, leeway {leeway} s", from_now(*exp, now))
            })?;
        }
        (_, true) => stage(record, "exp", Ok(()), |_| "absent".to_owned())?,
        _ => {}
    }
    if let (Read::Valid(nbf), true) = (&nbf, rules.check_nbf) {
        let early = if *nbf > now.saturating_add(leeway) {
            Err(VerifyError::NotYetValid)
        } else {
            Ok(())
        };
        stage(record, "nbf", early, |_| {
            format!("{:+} s from now, leeway {leeway} s", from_now(*nbf, now))
        })?;
    }
    if let Some(issuer) = rules.issuer {
        let other = claims
            .get("iss")
            .is_some_and(|iss| iss.as_str() != Some(issuer));
        let same = if other {
            Err(VerifyError::WrongIssuer)
        } else {
            Ok(())
        };
        stage(record, "issuer", same, |_| format!("{issuer} when present"))?;
    }
    Ok(match exp {
        Read::Valid(exp) => Some(exp),
        _ => None,
    })
}
