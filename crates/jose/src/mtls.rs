//! Certificate-bound access tokens (RFC 8705 §3): a token whose `cnf` holds `x5t#S256` may be
//! used only over a TLS connection authenticated with that certificate. Envoy passes the
//! client certificate it saw in the `CheckRequest` (`source.certificate`, URL-encoded PEM, when
//! `include_peer_certificate: true`); this module turns it into the thumbprint and compares.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

#[cfg(test)]
mod tests;

/// A client certificate longer than this (URL-encoded PEM) is refused: chains are not
/// expected here, and a certificate is a few KiB at most.
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("no client certificate")]
    Missing,
    #[error("client certificate larger than {MAX_CERTIFICATE_BYTES} bytes")]
    TooLarge,
    #[error("client certificate is not one PEM CERTIFICATE")]
    Malformed,
}

/// The RFC 8705 §3.1 thumbprint of the certificate Envoy reports: base64url (no padding) of
/// the SHA-256 of its DER encoding. `url_encoded_pem` is `source.certificate` as Envoy sends
/// it; exactly one `CERTIFICATE` block is accepted.
pub fn certificate_thumbprint(url_encoded_pem: &str) -> Result<String, CertificateError> {
    if url_encoded_pem.is_empty() {
        return Err(CertificateError::Missing);
    }
    if url_encoded_pem.len() > MAX_CERTIFICATE_BYTES {
        return Err(CertificateError::TooLarge);
    }
    let decoded = percent_encoding::percent_decode_str(url_encoded_pem)
        .decode_utf8()
        .map_err(|_| CertificateError::Malformed)?;
    let blocks = pem::parse_many(decoded.as_bytes()).map_err(|_| CertificateError::Malformed)?;
    let [block] = blocks.as_slice() else {
        return Err(CertificateError::Malformed);
    };
    if block.tag() != "CERTIFICATE" || block.contents().is_empty() {
        return Err(CertificateError::Malformed);
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, block.contents());
    Ok(URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// The token's RFC 8705 §3.1 binding: `cnf["x5t#S256"]`, if it has one.
pub fn bound_thumbprint(claims: &Map<String, Value>) -> Option<&str> {
    claims.get("cnf")?.get("x5t#S256")?.as_str()
}

/// Whether a token may be used over a connection with this client certificate (§3): an
/// unbound token always; a bound one only with the very certificate it names. Compared as
/// strings, as §3.1 defines the value (base64url without padding).
pub fn binding_holds(
    claims: &Map<String, Value>,
    certificate: Result<&str, CertificateError>,
) -> bool {
    match bound_thumbprint(claims) {
        None => true,
        Some(bound) => certificate.is_ok_and(|thumbprint| thumbprint == bound),
    }
}
