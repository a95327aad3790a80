//! A DPoP client (RFC 9449), written here from the RFC independently of the verifier under
//! test: an ES256 key, its RFC 7638 thumbprint, and a fresh proof per request.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::{TestKey, b64, now};

pub struct DpopClient {
    key: TestKey,
    counter: AtomicU64,
}

impl Default for DpopClient {
    fn default() -> Self {
        Self::new()
    }
}

impl DpopClient {
    pub fn new() -> Self {
        Self {
            key: TestKey::ec256("dpop"),
            counter: AtomicU64::new(0),
        }
    }

    /// The public key as the proof header carries it (no private members, §4.2).
    pub fn public_jwk(&self) -> Value {
        let jwk = self.key.jwk();
        json!({"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"]})
    }

    /// RFC 7638: SHA-256 over the required members in lexicographic order, no spaces.
    pub fn jkt(&self) -> String {
        crate::jws::p256_thumbprint(&self.public_jwk())
    }

    /// A fresh proof for `method uri`, bound to `access_token` when given (`ath`).
    pub fn proof(&self, method: &str, uri: &str, access_token: Option<&str>) -> String {
        self.proof_with_nonce(method, uri, access_token, None)
    }

    /// [`DpopClient::proof`] carrying a server's `nonce` (RFC 9449 §9).
    pub fn proof_with_nonce(
        &self,
        method: &str,
        uri: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        let mut claims = json!({
            "jti": self.fresh_jti(),
            "htm": method,
            "htu": uri,
            "iat": now(),
        });
        if let Some(token) = access_token {
            claims["ath"] = json!(ath(token));
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        self.sign(&claims)
    }

    /// A proof with these exact claims.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.public_jwk()});
        self.key.sign(&header, claims)
    }

    pub fn fresh_jti(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut random = [0u8; 12];
        aws_lc_rs::rand::fill(&mut random).expect("random");
        format!("{n}-{}", b64(&random))
    }
}

/// `ath` (§4.2): base64url of the SHA-256 of the access token.
pub fn ath(token: &str) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref())
}
