//! The `/ipns/` and `/pk/` validators, table-driven, on records signed here with ed25519 keys
//! (the spec's test vectors are binary files; each of them has a case below built the same
//! way: V1-only, V1+V2, V1+V2 with a broken V1 value, broken V2 signature, broken V1
//! signature, V2-only).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use dht_handler::{
    IpnsValidator, MAX_IPNS_RECORD_SIZE, NamespacedValidator, PublicKeyValidator, ValidationError,
    Validator,
};
use dht_proto::libp2p_identity::Keypair;
use dht_proto::multihash::Multihash;
use dht_proto::{Key, PeerId};

/// 2033-05-18T03:33:20Z = 2,000,000,000 s.
const EOL: &str = "2033-05-18T03:33:20Z";
const EOL_SECS: u64 = 2_000_000_000;

#[test]
fn dag_cbor_of_the_signed_fields_matches_a_hand_derived_vector() {
    // Keys in DAG-CBOR order: by length, then bytewise: TTL, Value, Sequence, Validity,
    // ValidityType. Each head derived by hand from RFC 8949.
    let f = IpnsFields {
        value: b"/ipfs/bafkqaddwgevxmmraojswg33smq".to_vec(), // 33 bytes
        validity: b"2033-05-18T03:33:20.000000000Z".to_vec(), // 30 bytes
        validity_type: 0,
        sequence: 300,
        ttl: 0,
    };
    let expected: Vec<u8> = [
        &[0xa5][..], // map(5)
        &[0x63],
        b"TTL",
        &[0x00], // 0
        &[0x65],
        b"Value",
        &[0x58, 0x21], // bytes(33)
        b"/ipfs/bafkqaddwgevxmmraojswg33smq",
        &[0x68],
        b"Sequence",
        &[0x19, 0x01, 0x2c], // 300
        &[0x68],
        b"Validity",
        &[0x58, 0x1e], // bytes(30)
        b"2033-05-18T03:33:20.000000000Z",
        &[0x6c],
        b"ValidityType",
        &[0x00],
    ]
    .concat();
    assert_eq!(hex::encode(f.data(&[])), hex::encode(&expected));
}

#[test]
fn ipns_validate_cases() {
    let kp = Keypair::generate_ed25519();
    let other = Keypair::generate_ed25519();
    let key = ipns_key(&kp);
    let fields = IpnsFields::new(1, EOL);
    let rec = |opts: IpnsOptions| ipns_record(&kp, &fields, &opts);
    let mut broken_value = fields.clone();
    broken_value.value = b"/ipfs/bafkqahtwgevxmmrao5uxi2bamjzg623fnyqhg2lhnzqxi5lsmuqhmmi".to_vec();
    let mut broken_seq = fields.clone();
    broken_seq.sequence = 2;
    let mut flipped_sig = rec(IpnsOptions::default());
    // The signature is the field before `data`: flip a byte inside it.
    let sig_at = flipped_sig.len() - fields.data(&[]).len() - 2 - 10;
    flipped_sig[sig_at] ^= 1;
    let sha_name = PeerId::from_multihash(
        Multihash::wrap(0x12, Key::hash(b"rsa-ish").as_bytes()).expect("32 bytes"),
    )
    .expect("peer id");
    let sha_key = [b"/ipns/".as_slice(), &sha_name.to_bytes()].concat();
    let big = rec(IpnsOptions {
        extra: vec![("_pad", cbor_bytes(&vec![0; MAX_IPNS_RECORD_SIZE]))],
        ..Default::default()
    });
    let big_len = big.len();
    let mut dup_data = [fields.data(&[]), cbor_text("TTL"), cbor_uint(1)].concat();
    dup_data[0] = 0xa6; // map(6)
    let with_fields = |f: IpnsFields| ipns_record(&kp, &f, &IpnsOptions::default());

    type Case = (
        &'static str,
        Vec<u8>,
        Vec<u8>,
        u64,
        Result<(), ValidationError>,
    );
    let cases: Vec<Case> = vec![
        (
            "V2-only",
            key.clone(),
            rec(IpnsOptions::default()),
            NOW,
            Ok(()),
        ),
        (
            "V1+V2",
            key.clone(),
            rec(IpnsOptions {
                v1: true,
                ..Default::default()
            }),
            NOW,
            Ok(()),
        ),
        (
            "V1+V2, V1 value differs from the signed one",
            key.clone(),
            rec(IpnsOptions {
                v1_fields: Some(broken_value),
                ..Default::default()
            }),
            NOW,
            Err(ValidationError::FieldMismatch("value")),
        ),
        (
            "V1+V2, V1 sequence differs from the signed one",
            key.clone(),
            rec(IpnsOptions {
                v1_fields: Some(broken_seq),
                ..Default::default()
            }),
            NOW,
            Err(ValidationError::FieldMismatch("sequence")),
        ),
        (
            "V1-only",
            key.clone(),
            rec(IpnsOptions {
                v1: true,
                no_signature_v2: true,
                no_data: true,
                ..Default::default()
            }),
            NOW,
            Err(ValidationError::MissingSignature),
        ),
        (
            "no data",
            key.clone(),
            rec(IpnsOptions {
                no_data: true,
                ..Default::default()
            }),
            NOW,
            Err(ValidationError::MissingData),
        ),
        (
            "V2 signature broken",
            key.clone(),
            flipped_sig,
            NOW,
            Err(ValidationError::BadSignature),
        ),
        (
            "V2 signed by another key",
            key.clone(),
            rec(IpnsOptions {
                signer: Some(other.clone()),
                ..Default::default()
            }),
            NOW,
            Err(ValidationError::BadSignature),
        ),
        (
            "record of another name",
            ipns_key(&other),
            rec(IpnsOptions::default()),
            NOW,
            Err(ValidationError::BadSignature),
        ),
        (
            "valid up to its EOL second",
            key.clone(),
            rec(IpnsOptions::default()),
            EOL_SECS,
            Ok(()),
        ),
        (
            "expired",
            key.clone(),
            rec(IpnsOptions::default()),
            EOL_SECS + 1,
            Err(ValidationError::Expired),
        ),
        (
            "nanosecond EOL",
            key.clone(),
            with_fields(IpnsFields::new(1, "2033-05-18T03:33:20.000000001Z")),
            EOL_SECS,
            Ok(()),
        ),
        (
            "EOL with an offset",
            key.clone(),
            with_fields(IpnsFields::new(1, "2033-05-18T05:33:20+02:00")),
            EOL_SECS + 1,
            Err(ValidationError::Expired),
        ),
        (
            "validity type 1",
            key.clone(),
            with_fields(IpnsFields {
                validity_type: 1,
                ..fields.clone()
            }),
            NOW,
            Err(ValidationError::UnsupportedValidityType(1)),
        ),
        (
            "validity not RFC 3339",
            key.clone(),
            with_fields(IpnsFields::new(1, "2033-05-18 03:33:20")),
            NOW,
            Err(ValidationError::InvalidValidity),
        ),
        (
            "larger than 10 KiB",
            key.clone(),
            big,
            NOW,
            Err(ValidationError::TooLarge {
                len: big_len,
                max: MAX_IPNS_RECORD_SIZE,
            }),
        ),
        (
            "pubKey of the name",
            key.clone(),
            rec(IpnsOptions {
                pub_key: Some(kp.public().encode_protobuf()),
                ..Default::default()
            }),
            NOW,
            Ok(()),
        ),
        (
            "pubKey of another key",
            key.clone(),
            rec(IpnsOptions {
                pub_key: Some(other.public().encode_protobuf()),
                ..Default::default()
            }),
            NOW,
            Err(ValidationError::KeyMismatch),
        ),
        (
            "sha256 name without pubKey",
            sha_key.clone(),
            rec(IpnsOptions::default()),
            NOW,
            Err(ValidationError::PublicKeyNotFound),
        ),
        (
            "sha256 name with a pubKey that does not hash to it",
            sha_key,
            rec(IpnsOptions {
                pub_key: Some(kp.public().encode_protobuf()),
                ..Default::default()
            }),
            NOW,
            Err(ValidationError::KeyMismatch),
        ),
        (
            "extra metadata in data",
            key.clone(),
            rec(IpnsOptions {
                extra: vec![
                    ("_meta", cbor_map(&[("k", cbor_text("v"))])),
                    ("_n", cbor_uint(7)),
                ],
                ..Default::default()
            }),
            NOW,
            Ok(()),
        ),
        (
            "data keys out of DAG-CBOR order (signed as sent: accepted, as Go)",
            key.clone(),
            rec(IpnsOptions {
                raw_data: Some(
                    [
                        cbor_head(5, 5),
                        cbor_text("Value"),
                        cbor_bytes(&fields.value),
                        cbor_text("TTL"),
                        cbor_uint(fields.ttl),
                        cbor_text("Validity"),
                        cbor_bytes(&fields.validity),
                        cbor_text("Sequence"),
                        cbor_uint(fields.sequence),
                        cbor_text("ValidityType"),
                        cbor_uint(0),
                    ]
                    .concat(),
                ),
                ..Default::default()
            }),
            NOW,
            Ok(()),
        ),
        (
            "data with a duplicate key",
            key.clone(),
            rec(IpnsOptions {
                raw_data: Some(dup_data),
                ..Default::default()
            }),
            NOW,
            Err(ValidationError::Malformed("duplicate key in IPNS data")),
        ),
        (
            "data is not a map",
            key.clone(),
            rec(IpnsOptions {
                raw_data: Some(vec![0x80]),
                ..Default::default()
            }),
            NOW,
            Err(ValidationError::Malformed("IPNS data is not a CBOR map")),
        ),
        (
            "data without Sequence",
            key.clone(),
            rec(IpnsOptions {
                raw_data: Some(cbor_map(&[
                    ("Value", cbor_bytes(&fields.value)),
                    ("Validity", cbor_bytes(&fields.validity)),
                    ("ValidityType", cbor_uint(0)),
                    ("TTL", cbor_uint(0)),
                ])),
                ..Default::default()
            }),
            NOW,
            Err(ValidationError::Malformed("IPNS data has no Sequence")),
        ),
        (
            "protobuf truncated",
            key.clone(),
            vec![0x4a, 0x10, 0xa5],
            NOW,
            Err(ValidationError::Malformed("truncated protobuf")),
        ),
        (
            "empty value",
            key.clone(),
            vec![],
            NOW,
            Err(ValidationError::MissingSignature),
        ),
        (
            "not an /ipns/ key",
            b"/pk/abc".to_vec(),
            rec(IpnsOptions::default()),
            NOW,
            Err(ValidationError::InvalidKey("not an /ipns/ key")),
        ),
        (
            "/ipns/ key without a peer id",
            b"/ipns/abc".to_vec(),
            rec(IpnsOptions::default()),
            NOW,
            Err(ValidationError::InvalidKey(
                "/ipns/ key does not hold a peer id",
            )),
        ),
    ];
    let mut failures = Vec::new();
    for (name, key, value, now, expected) in cases {
        let got = IpnsValidator.validate(&key, &value, now);
        if got != expected {
            failures.push(format!("{name}: got {got:?}, expected {expected:?}"));
        }
        // The registry agrees with the validator it dispatches to.
        if key.starts_with(b"/ipns/") {
            assert_eq!(
                NamespacedValidator::new().validate(&key, &value, now),
                got,
                "{name}"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ipns_select_cases() {
    let kp = Keypair::generate_ed25519();
    let key = ipns_key(&kp);
    let seq1 = ipns_v2(&kp, 1, EOL);
    let seq2 = ipns_v2(&kp, 2, EOL);
    let seq2_later = ipns_v2(&kp, 2, "2034-01-01T00:00:00Z");
    let v1_only = ipns_record(
        &kp,
        &IpnsFields::new(9, EOL),
        &IpnsOptions {
            v1: true,
            no_signature_v2: true,
            ..Default::default()
        },
    );
    let check = |values: &[&[u8]], expected: Result<usize, ValidationError>| {
        assert_eq!(
            IpnsValidator.select(&key, values),
            expected,
            "{} values",
            values.len()
        );
    };
    check(&[&seq1], Ok(0));
    check(&[&seq1, &seq2], Ok(1));
    check(&[&seq2, &seq1], Ok(0));
    check(&[&seq2, &seq2_later, &seq1], Ok(1));
    // A V2 signature beats a higher sequence without one.
    check(&[&v1_only, &seq1], Ok(1));
    // A record that does not parse loses.
    check(&[b"garbage", &seq1], Ok(1));
    check(&[&seq1, b"garbage"], Ok(0));
    // Same rank (sequence and EOL), other value: the larger bytes win, wherever they are;
    // equal bytes: the first.
    let mut f = IpnsFields::new(1, EOL);
    f.value = b"/ipfs/bafkqaaa".to_vec();
    let same_rank = ipns_record(&kp, &f, &IpnsOptions::default());
    assert_ne!(same_rank, seq1);
    let (lo, hi) = if same_rank < seq1 {
        (&same_rank, &seq1)
    } else {
        (&seq1, &same_rank)
    };
    check(&[lo, hi], Ok(1));
    check(&[hi, lo], Ok(0));
    check(&[&seq1, &seq1], Ok(0));
    check(&[], Err(ValidationError::NoRecords));
}

#[test]
fn pk_validate_cases() {
    let kp = Keypair::generate_ed25519();
    let (key, value) = pk_record(&kp);
    let (other_key, other_value) = pk_record(&Keypair::generate_ed25519());
    let check = |key: &[u8], value: &[u8], expected: Result<(), ValidationError>| {
        assert_eq!(PublicKeyValidator.validate(key, value, NOW), expected);
        assert_eq!(
            NamespacedValidator::new().validate(key, value, NOW),
            expected
        );
    };
    check(&key, &value, Ok(()));
    check(&other_key, &other_value, Ok(()));
    check(&key, &other_value, Err(ValidationError::KeyMismatch));
    check(
        &key,
        b"",
        Err(ValidationError::Malformed("public key has no type")),
    );
    check(
        b"/pk/x",
        &value,
        Err(ValidationError::InvalidKey(
            "/pk/ key does not hold a multihash",
        )),
    );
}
