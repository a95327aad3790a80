//! Sender-constrained tokens at login. A valid `DPoP` proof (RFC 9449 §5) binds the token to
//! the proof's key (`cnf.jkt`); a client certificate forwarded by a trusted Envoy binds it to
//! the certificate (RFC 8705 §3, `cnf["x5t#S256"]`). The checks are jwt-authz's own
//! ([`jwt_authz_jose::dpop`], [`jwt_authz_jose::mtls`]), so issuer and verifier read proofs alike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use jsonwebtoken::Algorithm;
use jwt_authz_jose::dpop::replay::{MemoryStore, StoreError, proof_key};
use jwt_authz_jose::dpop::{self, Expected};
use jwt_authz_jose::mtls;

use crate::config::Settings;
use crate::token::Confirmation;

/// Proof algorithms accepted, advertised as `dpop_signing_alg_values_supported`.
pub const PROOF_ALGORITHMS: &[Algorithm] = &[
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::EdDSA,
];

/// Clock skew allowed on a proof's `iat`, each way.
const PROOF_LEEWAY: Duration = Duration::from_secs(5);

/// Proofs remembered at once; beyond this, logins with a proof are answered 503.
const MAX_REMEMBERED_PROOFS: u64 = 100_000;

/// Why a login's binding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// RFC 9449 §5: answered 400 `invalid_dpop_proof`.
    #[error("{0}")]
    InvalidProof(&'static str),
    #[error("client certificate header malformed")]
    BadCertificate,
    /// The proof store is full: 503.
    #[error("too many DPoP proofs remembered")]
    Busy,
}

/// The login proofs seen within their window (RFC 9449 §11.1), in this process.
#[derive(Clone)]
pub struct Proofs {
    store: MemoryStore,
    max_age: Duration,
}

impl std::fmt::Debug for Proofs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proofs(max_age {:?})", self.max_age)
    }
}

impl Proofs {
    pub fn new(max_age: Duration) -> Self {
        let window = max_age + PROOF_LEEWAY * 2;
        Self {
            store: MemoryStore::new(window, MAX_REMEMBERED_PROOFS),
            max_age,
        }
    }
}

/// The `cnf` for a login's token: empty when the client proved nothing. `endpoint`: the
/// URL the request was sent to, which a DPoP proof's `htu` must name.
pub async fn confirmation(
    settings: &Settings,
    headers: &HeaderMap,
    proofs: &Proofs,
    endpoint: &str,
) -> Result<Confirmation, BindingError> {
    Ok(Confirmation {
        jkt: dpop_key(headers, proofs, endpoint).await?,
        x5t_s256: certificate(settings, headers)?,
    })
}

/// RFC 9449 §4.3 for the token request: `htm` POST, `htu` the endpoint (`/auth/login` or
/// `/auth/token`), no `ath`.
async fn dpop_key(
    headers: &HeaderMap,
    proofs: &Proofs,
    endpoint: &str,
) -> Result<Option<String>, BindingError> {
    let mut values = headers.get_all("dpop").iter();
    let proof = match (values.next(), values.next()) {
        (None, _) => return Ok(None),
        (Some(value), None) => value
            .to_str()
            .map_err(|_| BindingError::InvalidProof("malformed DPoP proof"))?,
        // Check 1: one proof.
        (Some(_), Some(_)) => return Err(BindingError::InvalidProof("more than one DPoP proof")),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let expected = Expected {
        method: "POST",
        uri: endpoint,
        access_token: None,
        nonce: None,
        algorithms: PROOF_ALGORITHMS,
        now,
        max_age: proofs.max_age.as_secs(),
        leeway: PROOF_LEEWAY.as_secs(),
    };
    let accepted = dpop::verify_proof(proof, &expected).map_err(|error| {
        tracing::info!(%error, "login DPoP proof refused");
        BindingError::InvalidProof("invalid DPoP proof")
    })?;
    let key = proof_key("login", &accepted.jkt, &accepted.jti);
    match proofs.store.first_use(&key).await {
        Ok(true) => Ok(Some(accepted.jkt)),
        Ok(false) => Err(BindingError::InvalidProof("DPoP proof already used")),
        Err(StoreError::Full(_) | StoreError::Unavailable(_)) => Err(BindingError::Busy),
    }
}

/// The thumbprint of the certificate Envoy verified, from `x-forwarded-client-cert`, when
/// trusted. Envoy (`SANITIZE_SET`) writes exactly one element; `Cert` holds the URL-encoded
/// PEM.
fn certificate(settings: &Settings, headers: &HeaderMap) -> Result<Option<String>, BindingError> {
    if !settings.trust_client_cert_header {
        return Ok(None);
    }
    let mut values = headers.get_all("x-forwarded-client-cert").iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Ok(None),
        (Some(value), None) => value.to_str().map_err(|_| BindingError::BadCertificate)?,
        (Some(_), Some(_)) => return Err(BindingError::BadCertificate),
    };
    let Some(cert) = xfcc_cert(value)? else {
        return Ok(None);
    };
    mtls::certificate_thumbprint(cert)
        .map(Some)
        .map_err(|_| BindingError::BadCertificate)
}

/// The `Cert` value of a one-element XFCC header (`Key=value;Key="quoted"`), refusing a
/// header of several elements (a proxy that appends rather than overwrites).
fn xfcc_cert(value: &str) -> Result<Option<&str>, BindingError> {
    let mut cert = None;
    let mut rest = value;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or(BindingError::BadCertificate)?;
        let (field, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').ok_or(BindingError::BadCertificate)?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => {
                let end = after.find([';', ',']).unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        if key.trim().eq_ignore_ascii_case("cert") {
            if cert.is_some() {
                return Err(BindingError::BadCertificate);
            }
            cert = Some(field);
        }
        rest = match after.chars().next() {
            None => "",
            Some(';') => &after[1..],
            // `,` separates elements: more than one proxy's worth.
            Some(_) => return Err(BindingError::BadCertificate),
        };
    }
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_cert_is_read_from_one_element_only() {
        // Envoy's documented shape (SANITIZE_SET with cert: true, subject: true).
        let header = r#"By=spiffe://lyft.com/backend;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Cert="-----BEGIN%20CERTIFICATE-----%0AMIIB";Subject="CN=client,O=Org""#;
        assert_eq!(
            xfcc_cert(header),
            Ok(Some("-----BEGIN%20CERTIFICATE-----%0AMIIB"))
        );
        assert_eq!(xfcc_cert("By=a;Hash=b"), Ok(None));
        // Two elements (a proxy appended), or two Cert keys: refused.
        assert_eq!(
            xfcc_cert(r#"Cert="a",Cert="b""#),
            Err(BindingError::BadCertificate)
        );
        assert_eq!(
            xfcc_cert(r#"Cert="a";cert="b""#),
            Err(BindingError::BadCertificate)
        );
        assert_eq!(
            xfcc_cert(r#"Cert="unterminated"#),
            Err(BindingError::BadCertificate)
        );
        assert_eq!(xfcc_cert("garbage"), Err(BindingError::BadCertificate));
    }
}
