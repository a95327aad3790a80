//! Server-provided DPoP nonces (RFC 9449 §8 for authorization servers, §9 for resource
//! servers): a value the client must put in its next proofs, which bounds how far ahead a
//! stolen-key holder can make proofs. Nonces here are stateless, so every replica with the
//! same secret issues and accepts the same ones: the time slot they were made in, and an
//! HMAC-SHA256 of it under the shared secret. A nonce is accepted in its own slot and the
//! next, so it lives between one and two `lifetime`s.
//!
//! Hand-written because the format is ours (the RFC leaves it to the server, §8); the HMAC
//! is aws-lc's.

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The shortest secret accepted: 256 bits, HMAC-SHA256's own strength.
pub const MIN_SECRET_BYTES: usize = 32;

/// A nonce longer than this is not one of ours (8-byte slot + 32-byte tag, base64url).
const NONCE_CHARS: usize = 54;

/// Issues and checks nonces.
pub struct Nonces {
    key: hmac::Key,
    lifetime: u64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Nonces(lifetime {}s)", self.lifetime)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    #[error("the nonce secret must be at least {MIN_SECRET_BYTES} bytes")]
    ShortSecret,
    #[error("the nonce lifetime must be at least one second")]
    ZeroLifetime,
}

impl Nonces {
    pub fn new(secret: &[u8], lifetime: Duration) -> Result<Self, NonceError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(NonceError::ShortSecret);
        }
        if lifetime.as_secs() == 0 {
            return Err(NonceError::ZeroLifetime);
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            lifetime: lifetime.as_secs(),
        })
    }

    /// The nonce for the slot `now` (Unix seconds) falls in.
    pub fn issue(&self, now: u64) -> String {
        let slot = (now / self.lifetime).to_be_bytes();
        let tag = hmac::sign(&self.key, &slot);
        let mut raw = Vec::with_capacity(8 + tag.as_ref().len());
        raw.extend_from_slice(&slot);
        raw.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `nonce` was issued by a holder of the secret in the current slot or the one
    /// before. The tag is compared in constant time.
    pub fn valid(&self, nonce: &str, now: u64) -> bool {
        if nonce.len() != NONCE_CHARS {
            return false;
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        let Some((slot, tag)) = raw.split_first_chunk::<8>() else {
            return false;
        };
        let current = now / self.lifetime;
        let issued = u64::from_be_bytes(*slot);
        (issued == current || issued.checked_add(1) == Some(current))
            && hmac::verify(&self.key, slot, tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_nonce_lives_for_its_slot_and_the_next() {
        let nonces = Nonces::new(SECRET, Duration::from_secs(300)).unwrap();
        // The start of a slot (1_800_000_000 is a multiple of 300).
        let t = 1_800_000_000;
        assert_eq!(t % 300, 0);
        let nonce = nonces.issue(t);
        assert_eq!(nonce.len(), NONCE_CHARS);
        assert!(nonces.valid(&nonce, t));
        assert!(nonces.valid(&nonce, t + 599));
        assert!(!nonces.valid(&nonce, t + 600), "two slots later");
        assert!(!nonces.valid(&nonce, t - 1), "from the future");
        // Another replica with the same secret accepts it; another secret does not.
        let replica = Nonces::new(SECRET, Duration::from_secs(300)).unwrap();
        assert!(replica.valid(&nonce, t + 1));
        let other = Nonces::new(&[7u8; 32], Duration::from_secs(300)).unwrap();
        assert!(!other.valid(&nonce, t + 1));
    }

    #[test]
    fn forged_and_malformed_nonces_are_refused() {
        let nonces = Nonces::new(SECRET, Duration::from_secs(60)).unwrap();
        let now = 1_800_000_000;
        let nonce = nonces.issue(now);
        // The slot moved forward with the old tag, one character changed, garbage.
        let mut raw = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        raw[7] = raw[7].wrapping_add(1);
        assert!(!nonces.valid(&URL_SAFE_NO_PAD.encode(&raw), now + 60));
        let mut flipped = nonce.clone().into_bytes();
        flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
        assert!(!nonces.valid(&String::from_utf8(flipped).unwrap(), now));
        for bad in [
            "",
            "n-1",
            "eyJ7S_zG.eyJH0-Z.HX4w-7v",
            &"A".repeat(NONCE_CHARS),
        ] {
            assert!(!nonces.valid(bad, now), "{bad}");
        }
        assert_eq!(
            Nonces::new(b"short", Duration::from_secs(60)).unwrap_err(),
            NonceError::ShortSecret
        );
    }
}
