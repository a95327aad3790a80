//! Minting access tokens: RS256, `kid` and `typ: JWT` in the header, and exactly the claims
//! the README documents.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;

use crate::grants::Granted;
use crate::keys::LoadedKey;
use crate::users::User;

#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    pub sub: &'a str,
    pub username: &'a str,
    pub role: &'a str,
    pub iss: &'a str,
    /// A resource indicator (RFC 8707 §2) or the configured audience.
    pub aud: &'a str,
    /// The granted scopes, space-separated (RFC 9068 §2.2.3, RFC 8693 §4.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'a str>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
    /// The key or certificate the token is bound to (RFC 7800 `cnf`), if any.
    #[serde(skip_serializing_if = "Confirmation::is_empty")]
    pub cnf: &'a Confirmation,
    /// Where the token's status is published (draft-ietf-oauth-status-list §6.2).
    pub status: Status<'a>,
}

/// The `status` claim: `{"status_list": {"idx": .., "uri": ..}}`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Status<'a> {
    pub status_list: StatusReference<'a>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct StatusReference<'a> {
    pub idx: i64,
    pub uri: &'a str,
}

/// A token about to be minted: its `jti`, times and status entry, recorded before it is
/// signed.
#[derive(Debug, Clone)]
pub struct Minting {
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
}

impl Minting {
    /// A fresh `jti` and the times of a token valid for `ttl` from now.
    pub fn new(ttl: Duration) -> Result<Self, MintError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| MintError::Random)?;
        Ok(Self {
            jti: crate::users::hex(&jti),
            iat: now,
            exp: now + ttl.as_secs(),
        })
    }
}

/// RFC 7800 confirmation members: `jkt` for DPoP (RFC 9449 §6.1), `x5t#S256` for a client
/// certificate (RFC 8705 §3.1).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Confirmation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

impl Confirmation {
    pub fn is_empty(&self) -> bool {
        self.jkt.is_none() && self.x5t_s256.is_none()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("no randomness for jti")]
    Random,
}

pub fn mint(
    key: &LoadedKey,
    user: &User,
    issuer: &str,
    granted: &Granted,
    minting: &Minting,
    cnf: &Confirmation,
    status: Status<'_>,
) -> Result<String, MintError> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.entry.kid.clone());
    header.typ = Some("JWT".to_owned());
    let claims = Claims {
        sub: &user.id,
        username: &user.username,
        role: &user.role,
        iss: issuer,
        aud: &granted.audience,
        scope: granted.scope.as_deref(),
        iat: minting.iat,
        nbf: minting.iat,
        exp: minting.exp,
        jti: minting.jti.clone(),
        cnf,
        status,
    };
    Ok(jsonwebtoken::encode(&header, &claims, &key.encoding_key)?)
}
