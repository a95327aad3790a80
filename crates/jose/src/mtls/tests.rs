use super::*;
use serde_json::json;

fn certificate(name: &str) -> rcgen::CertifiedKey<rcgen::KeyPair> {
    rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap()
}

/// As Envoy puts it in `source.certificate`: the PEM, URL-encoded.
fn as_envoy_sends(pem: &str) -> String {
    percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[test]
fn thumbprint_is_sha256_of_the_der_base64url() {
    let cert = certificate("client.test");
    let der = cert.cert.der().to_vec();
    let expected = URL_SAFE_NO_PAD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der).as_ref());
    let thumbprint = certificate_thumbprint(&as_envoy_sends(&cert.cert.pem())).unwrap();
    assert_eq!(thumbprint, expected);
    // §3.1: 256 bits, base64url without padding.
    assert_eq!(thumbprint.len(), 43);
    assert!(!thumbprint.contains(['=', '+', '/']));
    // Not URL-encoded works too (nothing to decode).
    assert_eq!(certificate_thumbprint(&cert.cert.pem()).unwrap(), expected);
}

#[test]
fn a_bound_token_needs_its_own_certificate() {
    let mine = certificate("mine.test");
    let other = certificate("other.test");
    let mine_tp = certificate_thumbprint(&as_envoy_sends(&mine.cert.pem())).unwrap();
    let other_tp = certificate_thumbprint(&as_envoy_sends(&other.cert.pem())).unwrap();
    assert_ne!(mine_tp, other_tp);
    let bound = json!({"sub": "u", "cnf": {"x5t#S256": mine_tp}});
    let bound = bound.as_object().unwrap();
    assert!(binding_holds(bound, Ok(&mine_tp)));
    assert!(!binding_holds(bound, Ok(&other_tp)));
    assert!(!binding_holds(bound, Err(CertificateError::Missing)));
    // RFC 8705 §3.1's example value: a token bound to it is refused with any other one.
    let example = json!({"cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}});
    assert_eq!(
        bound_thumbprint(example.as_object().unwrap()),
        Some("bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2")
    );
    assert!(!binding_holds(example.as_object().unwrap(), Ok(&mine_tp)));
    // An unbound token is not constrained (whether a provider requires binding is policy).
    let unbound = json!({"sub": "u"});
    assert!(binding_holds(
        unbound.as_object().unwrap(),
        Err(CertificateError::Missing)
    ));
    // A cnf with only a DPoP key is not a certificate binding.
    let dpop = json!({"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}});
    assert_eq!(bound_thumbprint(dpop.as_object().unwrap()), None);
}

#[test]
fn malformed_certificates_are_refused() {
    let one = certificate("a.test").cert.pem();
    let two = format!("{one}{}", certificate("b.test").cert.pem());
    let key = certificate("c.test").signing_key.serialize_pem();
    let huge = "A".repeat(MAX_CERTIFICATE_BYTES + 1);
    for (input, error) in [
        ("", CertificateError::Missing),
        (huge.as_str(), CertificateError::TooLarge),
        ("not a pem", CertificateError::Malformed),
        (two.as_str(), CertificateError::Malformed),
        (key.as_str(), CertificateError::Malformed),
        (
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
            CertificateError::Malformed,
        ),
    ] {
        assert_eq!(
            certificate_thumbprint(&as_envoy_sends(input)),
            Err(error),
            "{input:.30}"
        );
    }
    // Escapes that do not decode to UTF-8.
    assert_eq!(
        certificate_thumbprint("%FF%FE"),
        Err(CertificateError::Malformed)
    );
}
