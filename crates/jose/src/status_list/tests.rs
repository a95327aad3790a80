use std::io::Write;

use serde_json::json;

use super::examples::{LONG, ONE_BIT, ONE_BIT_STATUSES, TOKEN_CLAIMS, TWO_BITS, TWO_BITS_STATUSES};
use super::*;

const MIB: usize = 1 << 20;

fn list(bits: u64, lst: &str) -> Result<StatusList, StatusListError> {
    StatusList::decode(&json!({"bits": bits, "lst": lst}), MIB)
}

fn zlib(bytes: &[u8]) -> String {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    URL_SAFE_NO_PAD.encode(encoder.finish().unwrap())
}

#[test]
fn draft_section_4_1_examples_decode_to_their_statuses() {
    let one = list(1, ONE_BIT).unwrap();
    assert_eq!(one.bytes, [0xB9, 0xA3]);
    assert_eq!(one.len(), 16);
    for (idx, want) in ONE_BIT_STATUSES.iter().enumerate() {
        assert_eq!(
            one.get(idx as u64),
            Ok(Status::from(*want)),
            "1-bit [{idx}]"
        );
    }
    let two = list(2, TWO_BITS).unwrap();
    assert_eq!(two.bytes, [0xC9, 0x44, 0xF9]);
    assert_eq!(two.len(), 12);
    for (idx, want) in TWO_BITS_STATUSES.iter().enumerate() {
        assert_eq!(
            two.get(idx as u64),
            Ok(Status::from(*want)),
            "2-bit [{idx}]"
        );
    }
    // §7.1's registered values.
    assert_eq!(two.get(0), Ok(Status::Invalid));
    assert_eq!(two.get(1), Ok(Status::Suspended));
    assert_eq!(two.get(2), Ok(Status::Valid));
    assert_eq!(two.get(3), Ok(Status::Other(3)));
}

#[test]
fn draft_test_vectors_decode_for_every_bit_size() {
    for super::examples::Vector { bits, lst, listed } in LONG {
        let decoded = list(u64::from(bits), lst).unwrap();
        // "All examples are initialized with a size of 2^20 entries."
        assert_eq!(decoded.len(), 1 << 20, "{bits}-bit");
        for (idx, want) in listed {
            assert_eq!(
                decoded.get(*idx),
                Ok(Status::from(*want)),
                "{bits}-bit [{idx}]"
            );
        }
        // Every entry not listed is 0 (VALID): the listed ones are all the non-zero ones.
        let nonzero = (0..decoded.len())
            .filter(|i| decoded.get(*i) != Ok(Status::Valid))
            .count();
        let listed_nonzero = listed.iter().filter(|(_, v)| *v != 0).count();
        assert_eq!(nonzero, listed_nonzero, "{bits}-bit");
        assert_eq!(
            decoded.get(1 << 20),
            Err(StatusListError::OutOfRange(1 << 20))
        );
    }
}

#[test]
fn hostile_lists_are_refused() {
    // A zip bomb: 64 MiB of zeros in a few dozen KiB of lst, against a 1 MiB limit.
    let bomb = zlib(&vec![0u8; 64 * MIB]);
    assert!(bomb.len() < 128 * 1024, "{}", bomb.len());
    assert_eq!(list(1, &bomb), Err(StatusListError::TooLarge(MIB)));
    // Exactly at the limit is fine; one byte over is not.
    assert_eq!(list(8, &zlib(&vec![0u8; MIB])).unwrap().len(), MIB as u64);
    assert_eq!(
        list(8, &zlib(&vec![0u8; MIB + 1])),
        Err(StatusListError::TooLarge(MIB))
    );
    for bits in [0, 3, 16, 256] {
        assert_eq!(list(bits, ONE_BIT), Err(StatusListError::BadBits), "{bits}");
    }
    assert_eq!(list(1, "not base64!"), Err(StatusListError::BadEncoding));
    assert_eq!(
        list(1, &URL_SAFE_NO_PAD.encode([0xB9, 0xA3])),
        Err(StatusListError::BadCompression),
        "raw bytes, not ZLIB"
    );
    assert_eq!(
        StatusList::decode(&json!({"bits": "1", "lst": ONE_BIT}), MIB),
        Err(StatusListError::BadList)
    );
    assert_eq!(
        StatusList::decode(&json!({"bits": 1}), MIB),
        Err(StatusListError::BadList)
    );
    let one = list(1, ONE_BIT).unwrap();
    assert_eq!(one.get(16), Err(StatusListError::OutOfRange(16)));
    assert_eq!(
        one.get(u64::MAX),
        Err(StatusListError::OutOfRange(u64::MAX))
    );
}

#[test]
fn draft_section_5_1_token_claims_are_checked() {
    let claims: Map<String, Value> = serde_json::from_str(TOKEN_CLAIMS).unwrap();
    let uri = "https://example.com/statuslists/1";
    let now = 1_700_000_000;
    let (list, lifetime) = check_token_claims(&claims, uri, now, MIB).unwrap();
    assert_eq!(list.get(0), Ok(Status::Invalid));
    assert_eq!(list.get(1), Ok(Status::Valid));
    assert_eq!(
        lifetime,
        Lifetime {
            iat: 1_686_920_170,
            exp: Some(2_291_720_170),
            ttl: Some(43_200)
        }
    );
    // §8.3 step 4a: the list must be the one the token names.
    assert_eq!(
        check_token_claims(&claims, "https://example.com/statuslists/2", now, MIB),
        Err(StatusListError::WrongSubject)
    );
    // Step 4c: an expired list says nothing.
    assert_eq!(
        check_token_claims(&claims, uri, 2_291_720_170, MIB),
        Err(StatusListError::Expired)
    );
    let without = |name: &str| {
        let mut c = claims.clone();
        c.remove(name);
        c
    };
    assert_eq!(
        check_token_claims(&without("iat"), uri, now, MIB),
        Err(StatusListError::MissingClaim("iat"))
    );
    assert_eq!(
        check_token_claims(&without("status_list"), uri, now, MIB),
        Err(StatusListError::MissingClaim("status_list"))
    );
    // exp and ttl are RECOMMENDED: absent is fine, malformed is not.
    assert!(check_token_claims(&without("exp"), uri, now, MIB).is_ok());
    let mut zero_ttl = claims.clone();
    zero_ttl.insert("ttl".into(), json!(0));
    assert_eq!(
        check_token_claims(&zero_ttl, uri, now, MIB),
        Err(StatusListError::MissingClaim("ttl"))
    );
    // NumericDates may carry a fraction (RFC 7519 §2); ttl is any positive number.
    let mut fractional = claims.clone();
    fractional.insert("iat".into(), json!(1_686_920_170.75));
    fractional.insert("ttl".into(), json!(0.5));
    let (_, lifetime) = check_token_claims(&fractional, uri, now, MIB).unwrap();
    assert_eq!((lifetime.iat, lifetime.ttl), (1_686_920_170, Some(1)));
    for (name, bad) in [
        ("iat", json!("1686920170")),
        ("exp", json!(-1)),
        ("ttl", json!(-5)),
    ] {
        let mut c = claims.clone();
        c.insert(name.into(), bad);
        assert!(check_token_claims(&c, uri, now, MIB).is_err(), "{name}");
    }
}

#[test]
fn token_references_are_read_as_section_6_2_says() {
    // The draft's example Referenced Token.
    let claims =
        json!({"status": {"status_list": {"idx": 0, "uri": "https://example.com/statuslists/1"}}});
    assert_eq!(
        reference(claims.as_object().unwrap()),
        Ok(Some(Reference {
            idx: 0,
            uri: "https://example.com/statuslists/1"
        }))
    );
    assert_eq!(
        reference(json!({"sub": "u"}).as_object().unwrap()),
        Ok(None)
    );
    // Another status mechanism only: no status list to check.
    let other = json!({"status": {"other_mechanism": {}}});
    assert_eq!(reference(other.as_object().unwrap()), Ok(None));
    for bad in [
        json!({"status": "revoked"}),
        json!({"status": {"status_list": {"idx": -1, "uri": "https://x/1"}}}),
        json!({"status": {"status_list": {"idx": "0", "uri": "https://x/1"}}}),
        json!({"status": {"status_list": {"idx": 0}}}),
        json!({"status": {"status_list": {"idx": 0, "uri": ""}}}),
        json!({"status": {"status_list": {"idx": 0, "uri": "file:///etc/passwd"}}}),
        json!({"status": {"status_list": {"idx": 0, "uri": format!("https://x/{}", "a".repeat(MAX_URI_BYTES))}}}),
    ] {
        assert_eq!(
            reference(bad.as_object().unwrap()),
            Err(StatusListError::BadReference),
            "{bad}"
        );
    }
}

#[test]
fn lists_built_here_read_back_as_the_draft_writes_them() {
    let mut one = StatusList::new(1, 16).unwrap();
    for (idx, value) in ONE_BIT_STATUSES.iter().enumerate() {
        one.set(idx as u64, *value).unwrap();
    }
    assert_eq!(one.bytes, [0xB9, 0xA3], "§4.1's byte array");
    let encoded = one.encode();
    assert_eq!(encoded["bits"], 1);
    // §4.1 gives the compressed array as 78dadbb918000217015d (§4.2: "eNrbuRgAAhcBXQ").
    assert_eq!(encoded["lst"], ONE_BIT);
    assert_eq!(StatusList::decode(&encoded, MIB).unwrap(), one);

    let mut two = StatusList::new(2, 12).unwrap();
    for (idx, value) in TWO_BITS_STATUSES.iter().enumerate() {
        two.set(idx as u64, *value).unwrap();
    }
    assert_eq!(two.bytes, [0xC9, 0x44, 0xF9]);
    assert_eq!(StatusList::decode(&two.encode(), MIB).unwrap(), two);
    // Setting again overwrites, and only that entry.
    two.set(1, 0).unwrap();
    assert_eq!(two.get(1), Ok(Status::Valid));
    assert_eq!(two.get(0), Ok(Status::Invalid));

    assert_eq!(two.set(0, 4), Err(StatusListError::ValueTooWide(4)));
    assert_eq!(two.set(12, 1), Err(StatusListError::OutOfRange(12)));
    assert_eq!(StatusList::new(3, 8), Err(StatusListError::BadBits));
    let mut eight = StatusList::new(8, 3).unwrap();
    eight.set(2, 255).unwrap();
    assert_eq!(eight.get(2), Ok(Status::Other(255)));
}
