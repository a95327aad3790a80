//! DPoP proof checks (RFC 9449): the proof JWT a client sends in the `DPoP` header with each
//! request, checked as §4.3 lists, and the RFC 7638 thumbprint that binds an access token
//! (`cnf.jkt`, §6.1) to the proof's key. Replay of a proof's `jti` (§11.1) is the caller's:
//! it needs a store shared by every replica.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

pub mod nonce;
pub mod replay;

/// The examples the specification itself gives, for tests here and in the sidecar.
#[doc(hidden)]
pub mod examples;
#[cfg(test)]
mod tests;

/// The `typ` a proof must carry (§4.2).
pub const PROOF_TYPE: &str = "dpop+jwt";

pub use jwt_authz_core::token::{DpopError, MAX_PROOF_BYTES};

/// What a proof is checked against.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// The request's method (`htm`, §4.3 check 8).
    pub method: &'a str,
    /// The request's URI as the client addressed it, scheme and authority included
    /// (`htu`, check 9); its query and fragment are ignored.
    pub uri: &'a str,
    /// The access token the proof accompanies, if any (`ath`, check 12).
    pub access_token: Option<&'a str>,
    /// Whether a proof's nonce is one the server issued, when it requires nonces (check 10).
    pub nonce: Option<NonceCheck<'a>>,
    /// Accepted signature algorithms (check 5): asymmetric only.
    pub algorithms: &'a [Algorithm],
    /// Unix time now.
    pub now: u64,
    /// How old a proof's `iat` may be (check 11).
    pub max_age: u64,
    /// How far in the future a proof's `iat` may be (clock skew).
    pub leeway: u64,
}

/// How a server tells its own nonces (§8, §9) from others: an exact value, or a check such
/// as [`nonce::Nonces::valid`] that accepts every nonce it issued and has not retired.
#[derive(Clone, Copy)]
pub struct NonceCheck<'a>(pub &'a (dyn Fn(&str) -> bool + Sync));

impl std::fmt::Debug for NonceCheck<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceCheck")
    }
}

/// A proof that passed every check of §4.3 except replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The proof's `jti`: the caller must refuse one seen before within the window.
    pub jti: String,
    /// `iat`, to bound how long the `jti` must be remembered.
    pub iat: u64,
    /// RFC 7638 SHA-256 thumbprint of the proof's key, base64url: compare with the access
    /// token's `cnf.jkt`.
    pub jkt: String,
}

/// Checks one proof (RFC 9449 §4.3, checks 2 to 12; check 1, exactly one `DPoP` header,
/// is the front end's).
pub fn verify_proof(proof: &str, expected: &Expected<'_>) -> Result<Proof, DpopError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(DpopError::TooLarge);
    }
    // Check 2: a well-formed JWT (three base64url parts, JSON header and claims).
    let mut parts = proof.split('.');
    let (Some(header_b64), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DpopError::Malformed);
    };
    let header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(header_b64)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(DpopError::Malformed)?;
    // Check 4: typ (compared exactly: §4.2 names the value, and media types here are
    // lowercase by registration).
    if header.get("typ").and_then(Value::as_str) != Some(PROOF_TYPE) {
        return Err(DpopError::WrongType);
    }
    // Check 5: an asymmetric algorithm we accept (never `none`, never HMAC).
    let alg: Algorithm = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(|a| a.parse().ok())
        .ok_or(DpopError::AlgorithmNotAllowed)?;
    if !expected.algorithms.contains(&alg)
        || matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    {
        return Err(DpopError::AlgorithmNotAllowed);
    }
    // Check 7: the public key, and nothing private (§4.2: "MUST NOT contain a private key").
    let jwk_json = header
        .get("jwk")
        .and_then(Value::as_object)
        .ok_or(DpopError::BadKey)?;
    let jkt = thumbprint(jwk_json)?;
    let jwk: Jwk =
        serde_json::from_value(Value::Object(jwk_json.clone())).map_err(|_| DpopError::BadKey)?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| DpopError::BadKey)?;
    // Check 6: the signature, by that key. Claims are checked below, by the RFC's rules.
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(proof, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => DpopError::BadSignature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
            | jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => {
                DpopError::AlgorithmNotAllowed
            }
            jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
            | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_)
            | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat => DpopError::BadKey,
            _ => DpopError::Malformed,
        })?
        .claims;
    // Check 3: the required claims (§4.2), each of the right type.
    let text = |name: &'static str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .ok_or(DpopError::MissingClaim(name))
    };
    let jti = text("jti")?;
    let htm = text("htm")?;
    let htu = text("htu")?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(DpopError::MissingClaim("iat"))?;
    // Check 8: htm is the method, compared exactly (methods are case-sensitive, RFC 9110 §9.1).
    if htm != expected.method {
        return Err(DpopError::WrongMethod);
    }
    // Check 9: htu is the URI without query and fragment (§4.2: a proof's htu carries
    // neither; one that does is refused), compared after normalisation.
    if htu.contains(['?', '#']) || !same_uri(htu, expected.uri) {
        return Err(DpopError::WrongUri);
    }
    // Check 10: the nonce, when the server provided one (§8).
    if let Some(NonceCheck(valid)) = expected.nonce {
        match claims.get("nonce").and_then(Value::as_str) {
            None => return Err(DpopError::NonceRequired),
            Some(sent) if !valid(sent) => return Err(DpopError::WrongNonce),
            Some(_) => {}
        }
    }
    // Check 11: created within an acceptable window.
    if iat > expected.now.saturating_add(expected.leeway)
        || iat.saturating_add(expected.max_age) < expected.now
    {
        return Err(DpopError::StaleOrFuture);
    }
    // Check 12: with an access token, `ath` is its hash (the key binding, `cnf.jkt` against
    // `jkt`, is checked against the verified token by the caller).
    if let Some(token) = expected.access_token {
        let ath = text("ath")?;
        if ath != access_token_hash(token) {
            return Err(DpopError::WrongTokenHash);
        }
    }
    Ok(Proof {
        jti: jti.to_owned(),
        iat,
        jkt,
    })
}

/// `ath` (§4.2): base64url of the SHA-256 of the access token's ASCII bytes.
pub fn access_token_hash(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK, base64url. Written here rather than
/// taken from `jsonwebtoken` (whose `Jwk::thumbprint` copies member values into the JSON
/// unescaped and ignores private members) so that the members are checked first: only the
/// required members of `RSA`, `EC` and `OKP` keys count (§3.2), each must be base64url or a
/// known name, and a key carrying private members (`d`, `p`, ...) or a symmetric key is
/// refused (RFC 9449 §4.2).
pub fn thumbprint(jwk: &Map<String, Value>) -> Result<String, DpopError> {
    const PRIVATE: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
    if PRIVATE.iter().any(|m| jwk.contains_key(*m)) {
        return Err(DpopError::BadKey);
    }
    let member = |name: &str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .filter(|v| {
                !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .ok_or(DpopError::BadKey)
    };
    // §3.2: the required members in lexicographic order, no whitespace.
    let canonical = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            member("e")?,
            member("n")?
        ),
        Some("EC") => {
            let crv = member("crv")?;
            if !matches!(crv, "P-256" | "P-384" | "P-521") {
                return Err(DpopError::BadKey);
            }
            format!(
                r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                member("x")?,
                member("y")?
            )
        }
        Some("OKP") => {
            let crv = member("crv")?;
            if crv != "Ed25519" {
                return Err(DpopError::BadKey);
            }
            format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{}"}}"#, member("x")?)
        }
        _ => return Err(DpopError::BadKey),
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    Ok(URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// RFC 9449 §4.3 check 9: `htu` and the request URI are compared without query and
/// fragment, after syntax-based (RFC 3986 §6.2.2) and scheme-based (§6.2.3) normalisation:
/// case of scheme and host, the default port, an empty path as `/`, percent-encoding case
/// and unreserved escapes, dot-segments.
pub fn same_uri(htu: &str, uri: &str) -> bool {
    match (normalise(htu), normalise(uri)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn normalise(uri: &str) -> Option<String> {
    let uri = uri.split(['?', '#']).next()?;
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    // `[v6]:port` or `host:port`; the scheme's default port is the same as none.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']')?;
            (
                format!("[{addr}]"),
                after.strip_prefix(':').unwrap_or(after),
            )
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port),
            None => (authority.clone(), ""),
        },
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let authority = if port.is_empty() || port == default_port {
        host
    } else {
        format!("{host}:{port}")
    };
    let config = jwt_authz_core::config::PathConfig {
        escaped_slashes: jwt_authz_core::config::EscapedSlashes::Keep,
        path_parameters: jwt_authz_core::config::PathParameters::Keep,
        case_sensitive: true,
        max_bytes: 8192,
    };
    let path = jwt_authz_core::request::canonical_path(path, &config).ok()?;
    Some(format!("{scheme}://{authority}{path}"))
}
