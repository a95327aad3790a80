//! Token Status List (draft-ietf-oauth-status-list-19): a token's `status.status_list`
//! reference (§6.2), the Status List Token's claims as §8.3 says to check them, and the
//! status of one index in the ZLIB-compressed list (§4.1, §4.2), with a bound on what
//! decompression may produce.
//!
//! Pure: fetching, signature verification (by a key of the token's own provider), caching
//! and the per-request lookup are the sidecar's (its `revocation` module).

use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// The examples the specification itself gives, for tests here and in the sidecar.
#[doc(hidden)]
pub mod examples;
#[cfg(test)]
mod tests;

/// The `typ` of a Status List Token in JWT format (§5.1).
pub const TOKEN_TYPE: &str = "statuslist+jwt";

/// A `uri` longer than this is refused (it is fetched, and names a cache entry).
pub const MAX_URI_BYTES: usize = 2048;

/// A status value (§7.1). Values other than the three registered ones are application
/// specific; a verifier without a rule for them cannot call the token valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Valid,
    Invalid,
    Suspended,
    Other(u8),
}

impl From<u8> for Status {
    fn from(value: u8) -> Self {
        match value {
            0x00 => Status::Valid,
            0x01 => Status::Invalid,
            0x02 => Status::Suspended,
            other => Status::Other(other),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusListError {
    #[error("status claim malformed")]
    BadReference,
    #[error("status list claim missing or malformed")]
    BadList,
    #[error("bits must be 1, 2, 4 or 8")]
    BadBits,
    #[error("lst is not base64url")]
    BadEncoding,
    #[error("lst is not ZLIB-compressed data")]
    BadCompression,
    #[error("status list larger than {0} bytes once decompressed")]
    TooLarge(usize),
    #[error("index {0} outside the status list")]
    OutOfRange(u64),
    #[error("status list token claim {0} missing or malformed")]
    MissingClaim(&'static str),
    #[error("status list token sub is not the referenced uri")]
    WrongSubject,
    #[error("status list token expired")]
    Expired,
    #[error("status value {0} does not fit the list's bits")]
    ValueTooWide(u8),
}

/// A token's reference to its entry in a status list (§6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference<'a> {
    pub idx: u64,
    pub uri: &'a str,
}

/// The token's `status.status_list` reference: `Ok(None)` when the token has no `status`
/// claim or it names no status list (another mechanism), an error when what is there is
/// malformed (§8.3 step 1: the token is then rejected).
pub fn reference(claims: &Map<String, Value>) -> Result<Option<Reference<'_>>, StatusListError> {
    let Some(status) = claims.get("status") else {
        return Ok(None);
    };
    let status = status.as_object().ok_or(StatusListError::BadReference)?;
    let Some(list) = status.get("status_list") else {
        return Ok(None);
    };
    let idx = list
        .get("idx")
        .and_then(Value::as_u64)
        .ok_or(StatusListError::BadReference)?;
    let uri = list
        .get("uri")
        .and_then(Value::as_str)
        .filter(|uri| !uri.is_empty() && uri.len() <= MAX_URI_BYTES)
        .filter(|uri| uri.starts_with("https://") || uri.starts_with("http://"))
        .ok_or(StatusListError::BadReference)?;
    Ok(Some(Reference { idx, uri }))
}

/// When a Status List Token's content may be used (§5.1, §8.3 step 4, §13.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub iat: u64,
    pub exp: Option<u64>,
    /// Seconds the token may be cached before a fresh copy should be fetched.
    pub ttl: Option<u64>,
}

/// Checks a Status List Token's claims (its signature and `typ` are checked by the caller)
/// for the list at `uri`: `sub` names that very URI (§8.3 step 4a), `iat` is there (§5.1),
/// `exp`, if present, has not passed (step 4c), `ttl`, if present, is positive (§5.1).
/// Returns the list with its lifetime.
pub fn check_token_claims(
    claims: &Map<String, Value>,
    uri: &str,
    now: u64,
    max_bytes: usize,
) -> Result<(StatusList, Lifetime), StatusListError> {
    if claims.get("sub").and_then(Value::as_str) != Some(uri) {
        return Err(StatusListError::WrongSubject);
    }
    // NumericDate (RFC 7519 §2) may have a fraction: `iat` rounds down, `exp` down too
    // (expiring a fraction early, never late); `ttl` is any positive number (§5.1), rounded
    // up to whole seconds.
    let seconds = |name: &'static str, value: &Value| {
        value
            .as_f64()
            .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e15)
            .ok_or(StatusListError::MissingClaim(name))
    };
    let iat = claims
        .get("iat")
        .ok_or(StatusListError::MissingClaim("iat"))
        .and_then(|v| seconds("iat", v))?
        .floor() as u64;
    let exp = match claims.get("exp") {
        None => None,
        Some(exp) => Some(seconds("exp", exp)?.floor() as u64),
    };
    if exp.is_some_and(|exp| exp <= now) {
        return Err(StatusListError::Expired);
    }
    let ttl = match claims.get("ttl") {
        None => None,
        Some(ttl) => Some(
            Some(seconds("ttl", ttl)?)
                .filter(|ttl| *ttl > 0.0)
                .ok_or(StatusListError::MissingClaim("ttl"))?
                .ceil() as u64,
        ),
    };
    let list = claims
        .get("status_list")
        .ok_or(StatusListError::MissingClaim("status_list"))?;
    Ok((
        StatusList::decode(list, max_bytes)?,
        Lifetime { iat, exp, ttl },
    ))
}

/// A decompressed status list: `bits` per entry, packed from the least significant bit of
/// each byte (§4.1 step 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusList {
    bits: u8,
    bytes: Vec<u8>,
}

impl StatusList {
    /// A list of `len` entries of `bits` each, all VALID (§4.1 steps 1 and 2).
    pub fn new(bits: u8, len: u64) -> Result<Self, StatusListError> {
        if !matches!(bits, 1 | 2 | 4 | 8) {
            return Err(StatusListError::BadBits);
        }
        let bytes = len
            .checked_mul(u64::from(bits))
            .map(|b| b.div_ceil(8))
            .and_then(|b| usize::try_from(b).ok())
            .ok_or(StatusListError::TooLarge(usize::MAX))?;
        Ok(Self {
            bits,
            bytes: vec![0; bytes],
        })
    }

    /// Sets the status at `idx` (§4.1 step 3).
    pub fn set(&mut self, idx: u64, value: u8) -> Result<(), StatusListError> {
        if self.bits < 8 && value >> self.bits != 0 {
            return Err(StatusListError::ValueTooWide(value));
        }
        let (byte, shift, mask) = self.position(idx)?;
        self.bytes[byte] = (self.bytes[byte] & !(mask << shift)) | (value << shift);
        Ok(())
    }

    /// The JSON `StatusList` (§4.2): `lst` is the byte array compressed with DEFLATE in the
    /// ZLIB format at the highest level (§4.1 step 4), base64url.
    pub fn encode(&self) -> Value {
        use std::io::Write as _;
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing to a Vec cannot fail.
        let compressed = encoder
            .write_all(&self.bytes)
            .and_then(|()| encoder.finish())
            .unwrap_or_default();
        serde_json::json!({"bits": self.bits, "lst": URL_SAFE_NO_PAD.encode(compressed)})
    }

    /// Reads the JSON `StatusList` (§4.2): `bits` of 1, 2, 4 or 8 and `lst`, base64url of
    /// ZLIB (§4.1 step 4). Decompression stops past `max_bytes`: a small `lst` can expand
    /// to gigabytes (a zip bomb), so what it may produce is bounded, not what it is.
    pub fn decode(list: &Value, max_bytes: usize) -> Result<Self, StatusListError> {
        let bits = list
            .get("bits")
            .and_then(Value::as_u64)
            .ok_or(StatusListError::BadList)?;
        let bits = match bits {
            1 | 2 | 4 | 8 => bits as u8,
            _ => return Err(StatusListError::BadBits),
        };
        let lst = list
            .get("lst")
            .and_then(Value::as_str)
            .ok_or(StatusListError::BadList)?;
        // base64 of the compressed bytes is at most 4/3 of them; anything near max_bytes
        // compressed is refused before decoding.
        if lst.len() > max_bytes.saturating_mul(2) {
            return Err(StatusListError::TooLarge(max_bytes));
        }
        let compressed = URL_SAFE_NO_PAD
            .decode(lst)
            .map_err(|_| StatusListError::BadEncoding)?;
        let mut bytes = Vec::new();
        let limit = u64::try_from(max_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        flate2::read::ZlibDecoder::new(compressed.as_slice())
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(|_| StatusListError::BadCompression)?;
        if bytes.len() > max_bytes {
            return Err(StatusListError::TooLarge(max_bytes));
        }
        Ok(Self { bits, bytes })
    }

    /// How many entries the list holds.
    pub fn len(&self) -> u64 {
        (self.bytes.len() as u64).saturating_mul(8) / u64::from(self.bits)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The status at `idx` (§4.1 step 3); an index past the end is an error, never VALID
    /// (§8.3 step 6).
    pub fn get(&self, idx: u64) -> Result<Status, StatusListError> {
        let (byte, shift, mask) = self.position(idx)?;
        Ok(Status::from((self.bytes[byte] >> shift) & mask))
    }

    /// Where entry `idx` lives: its byte, the shift of its lowest bit, and the mask of its
    /// width. Entries fill each byte from the least significant bit (§4.1 step 3).
    fn position(&self, idx: u64) -> Result<(usize, u32, u8), StatusListError> {
        let per_byte = u64::from(8 / self.bits);
        let byte = usize::try_from(idx / per_byte)
            .ok()
            .filter(|b| *b < self.bytes.len())
            .ok_or(StatusListError::OutOfRange(idx))?;
        let shift = (idx % per_byte) as u32 * u32::from(self.bits);
        let mask = if self.bits == 8 {
            0xFF
        } else {
            (1u8 << self.bits) - 1
        };
        Ok((byte, shift, mask))
    }
}
