//! Signature verifiers prepared once per fetched key. `jsonwebtoken`'s aws-lc backend
//! rebuilds the public key from the JWK's bytes on every verification; here aws-lc parses
//! each key once per algorithm it may verify, when its key set is built, and every token
//! signed with it is checked against that parsed key.

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::signature::{self as lc, ParsedPublicKey, VerificationAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};

/// A public key parsed by aws-lc for one algorithm.
pub struct PreparedKey {
    pub alg: Algorithm,
    key: ParsedPublicKey,
}

impl PreparedKey {
    /// Whether `signature` is this key's signature of `message` (RFC 7515 §5.2 step 8).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

fn algorithm(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match alg {
        Algorithm::RS256 => &lc::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &lc::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &lc::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &lc::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &lc::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &lc::RSA_PSS_2048_8192_SHA512,
        Algorithm::ES256 => &lc::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &lc::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &lc::ED25519,
        _ => return None,
    })
}

/// Parses `key` for each of `algorithms` that aws-lc can verify with it; an algorithm left
/// out is one the key cannot serve.
pub fn prepare(key: &DecodingKey, algorithms: &[Algorithm]) -> Vec<PreparedKey> {
    let material = match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => Some(bytes.clone()),
        DecodingKeyKind::RsaModulusExponent { n, e } => lc::RsaPublicKeyComponents {
            n: n.as_slice(),
            e: e.as_slice(),
        }
        .as_der()
        .ok()
        .map(|der: PublicKeyX509Der<'static>| der.as_ref().to_vec()),
    };
    let Some(material) = material else {
        return Vec::new();
    };
    algorithms
        .iter()
        .filter_map(|&alg| {
            let parsed = ParsedPublicKey::new(algorithm(alg)?, material.clone()).ok()?;
            Some(PreparedKey { alg, key: parsed })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::KeyPair as _;
    use base64::Engine;

    #[test]
    fn prepared_keys_verify_their_own_signatures_only() {
        let pair = lc::Ed25519KeyPair::generate().unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let key = DecodingKey::from_ed_components(&x).unwrap();
        let prepared = prepare(&key, &[Algorithm::EdDSA, Algorithm::RS256]);
        // RS256 cannot use an Ed25519 key: left out.
        assert_eq!(prepared.len(), 1);
        assert_eq!(prepared[0].alg, Algorithm::EdDSA);

        let message = b"header.payload";
        let good = pair.sign(message).as_ref().to_vec();
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert!(prepared[0].verify(message, &good));
        assert!(!prepared[0].verify(message, &bad));
        assert!(!prepared[0].verify(b"header.other", &good));
        assert!(!prepared[0].verify(message, &[]));
    }
}
