//! Signature verifiers prepared once per fetched key, plugged into `jsonwebtoken` through its
//! `CryptoProvider` hook. `jsonwebtoken`'s aws-lc backend rebuilds the public key from the
//! JWK's bytes on every verification; here each key is parsed by aws-lc once, when its key
//! set is built, and verification finds it by (algorithm, key bytes). A key not prepared
//! here (or a process where another provider was installed first) falls back to the stock
//! aws-lc verifier, which gives the same answers, only slower.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Once, RwLock, Weak};

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::signature::{self as lc, ParsedPublicKey, VerificationAlgorithm};
use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, KeyUtils, aws_lc};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};

type RegistryKey = (Algorithm, Vec<u8>);

/// Prepared keys, weakly held: a key lives as long as a key set holds it.
static PREPARED: LazyLock<RwLock<HashMap<RegistryKey, Weak<ParsedPublicKey>>>> =
    LazyLock::new(Default::default);

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: aws_lc::DEFAULT_PROVIDER.signer_factory,
    verifier_factory,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: aws_lc::DEFAULT_PROVIDER
            .key_utils
            .rsa_pub_components_from_private_key,
        rsa_pub_components_from_public_key: aws_lc::DEFAULT_PROVIDER
            .key_utils
            .rsa_pub_components_from_public_key,
        ec_pub_components_from_private_key: aws_lc::DEFAULT_PROVIDER
            .key_utils
            .ec_pub_components_from_private_key,
        ed_pub_components_from_private_key: aws_lc::DEFAULT_PROVIDER
            .key_utils
            .ed_pub_components_from_private_key,
        compute_digest: aws_lc::DEFAULT_PROVIDER.key_utils.compute_digest,
    },
};

/// Makes `jsonwebtoken` use the prepared verifiers in this process (once; harmless if
/// another provider is already in place).
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if CryptoProvider::install_default(&PROVIDER).is_err() {
            tracing::debug!("a jsonwebtoken crypto provider was installed first; keys are parsed per verification");
        }
    });
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

fn registry_key(alg: Algorithm, key: &DecodingKey) -> RegistryKey {
    let bytes = match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => bytes.clone(),
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            let mut out = Vec::with_capacity(n.len() + e.len() + 4);
            out.extend_from_slice(&(n.len() as u32).to_be_bytes());
            out.extend_from_slice(n);
            out.extend_from_slice(e);
            out
        }
    };
    (alg, bytes)
}

/// Parses `key` for each of `algorithms` and registers the result. The returned handles keep
/// the prepared keys alive; drop them with the key set.
pub fn prepare(key: &DecodingKey, algorithms: &[Algorithm]) -> Vec<Arc<ParsedPublicKey>> {
    let mut handles = Vec::new();
    let mut registry = PREPARED.write().unwrap_or_else(|p| p.into_inner());
    registry.retain(|_, weak| weak.strong_count() > 0);
    for &alg in algorithms {
        let Some(verification) = algorithm(alg) else {
            continue;
        };
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
        let Some(parsed) = material.and_then(|m| ParsedPublicKey::new(verification, m).ok()) else {
            continue;
        };
        let parsed = Arc::new(parsed);
        registry.insert(registry_key(alg, key), Arc::downgrade(&parsed));
        handles.push(parsed);
    }
    handles
}

struct Prepared {
    alg: Algorithm,
    key: Arc<ParsedPublicKey>,
}

impl jsonwebtoken::signature::Verifier<Vec<u8>> for Prepared {
    fn verify(
        &self,
        msg: &[u8],
        signature: &Vec<u8>,
    ) -> Result<(), jsonwebtoken::signature::Error> {
        self.key
            .verify_sig(msg, signature)
            .map_err(|_| jsonwebtoken::signature::Error::new())
    }
}

impl JwtVerifier for Prepared {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// The verifier `jsonwebtoken` gets for `key`: the prepared one when there is one.
pub fn verifier_factory(
    alg: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    let prepared = PREPARED
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&registry_key(*alg, key))
        .and_then(Weak::upgrade);
    match prepared {
        Some(key) => Ok(Box::new(Prepared { alg: *alg, key })),
        None => (aws_lc::DEFAULT_PROVIDER.verifier_factory)(alg, key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::KeyPair as _;
    use base64::Engine;

    fn is_prepared(alg: Algorithm, key: &DecodingKey) -> bool {
        PREPARED
            .read()
            .unwrap()
            .get(&registry_key(alg, key))
            .is_some_and(|w| w.strong_count() > 0)
    }

    #[test]
    fn prepared_keys_verify_and_live_as_long_as_their_handles() {
        let pair = lc::Ed25519KeyPair::generate().unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let key = DecodingKey::from_ed_components(&x).unwrap();
        let handles = prepare(&key, &[Algorithm::EdDSA]);
        assert_eq!(handles.len(), 1);
        assert!(is_prepared(Algorithm::EdDSA, &key));

        let message = b"header.payload";
        let good = pair.sign(message).as_ref().to_vec();
        let mut bad = good.clone();
        bad[0] ^= 1;
        let verifier = verifier_factory(&Algorithm::EdDSA, &key).unwrap();
        assert!(verifier.verify(message, &good).is_ok());
        assert!(verifier.verify(message, &bad).is_err());
        assert!(verifier.verify(b"header.other", &good).is_err());

        drop((handles, verifier));
        assert!(!is_prepared(Algorithm::EdDSA, &key));
        // Unprepared keys still verify, through the stock aws-lc verifier.
        let verifier = verifier_factory(&Algorithm::EdDSA, &key).unwrap();
        assert!(verifier.verify(message, &good).is_ok());
    }
}
