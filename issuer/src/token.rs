//! Minting access tokens: RS256, `kid` and `typ: JWT` in the header, and exactly the claims
//! the README documents.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;

use crate::keys::LoadedKey;
use crate::users::User;

#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    pub sub: &'a str,
    pub username: &'a str,
    pub role: &'a str,
    pub iss: &'a str,
    pub aud: &'a str,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
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
    audience: &str,
    ttl: Duration,
) -> Result<String, MintError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|_| MintError::Random)?;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.entry.kid.clone());
    header.typ = Some("JWT".to_owned());
    let claims = Claims {
        sub: &user.id,
        username: &user.username,
        role: &user.role,
        iss: issuer,
        aud: audience,
        iat: now,
        nbf: now,
        exp: now + ttl.as_secs(),
        jti: crate::users::hex(&jti),
    };
    Ok(jsonwebtoken::encode(&header, &claims, &key.encoding_key)?)
}
