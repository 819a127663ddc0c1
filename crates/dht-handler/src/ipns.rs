//! IPNS record validation (`/ipns/` keys), per the IPNS record specification
//! (<https://specs.ipfs.tech/ipns/ipns-record/>) and go's `boxo/ipns`.
//!
//! No maintained Rust crate validates IPNS records against this workspace's
//! `libp2p-identity` 0.3 (`rust-ipns` 0.9 builds on 0.2 and does not check that an embedded
//! public key belongs to the name), so this is a complete implementation: the `IpnsEntry`
//! protobuf, the DAG-CBOR `data` document, V2 signatures, the V1 field consistency rule, the
//! EOL validity and the selection rule.

use dht_proto::libp2p_identity::PublicKey;
use dht_proto::{PeerId, UnixSecs, ValidationError, Validator, pb, split_key};

use crate::cbor::{IpnsData, decode_ipns_data};
use crate::time::{UnixNanos, is_after, parse_rfc3339};
use crate::validator::decode_public_key;

/// Largest serialized IPNS record accepted (10 KiB, the spec's limit).
pub const MAX_IPNS_RECORD_SIZE: usize = 10 * 1024;

/// What V2 signatures sign: this prefix, then the raw `data` bytes.
const SIGNATURE_V2_PREFIX: &[u8] = b"ipns-signature:";

/// The multihash code of the identity hash, which inlines a small public key in a peer id.
const IDENTITY: u64 = 0x00;

/// Validates `/ipns/<peer id bytes>` records.
///
/// `validate` follows the spec's "Record Verification" steps, failing on the first error:
///
/// 1. the record is at most [`MAX_IPNS_RECORD_SIZE`] bytes;
/// 2. `signatureV2` and `data` are present and not empty (V1-only records are refused);
/// 3. the public key is `pubKey` if present — and then it must hash to the name — or else is
///    inlined in the name (identity multihash), or the record is refused;
/// 4. `data` is a DAG-CBOR map with `Value` and `Validity` (bytes), `ValidityType`,
///    `Sequence` and `TTL` (unsigned integers), and possibly extra fields;
/// 5. `signatureV2` verifies over `"ipns-signature:" ‖ data`;
/// 6. if the legacy `signatureV1` or `value` is present, every legacy field equals its
///    signed copy in `data`;
/// 7. `ValidityType` is 0 (EOL) and `Validity` is an RFC 3339 time after `now`.
///
/// `select` prefers a record with a V2 signature, then the higher `Sequence`, then the later
/// `Validity`, then the larger bytes (so every node picks the same), as `boxo/ipns`.
/// Records that do not parse lose to any that do.
#[derive(Clone, Copy, Debug, Default)]
pub struct IpnsValidator;

/// The fields of an `IpnsEntry` protobuf (absent fields read as empty or zero, as proto2
/// getters do).
#[derive(Default)]
struct Entry<'a> {
    value: &'a [u8],
    signature_v1: &'a [u8],
    validity_type: u64,
    validity: &'a [u8],
    sequence: u64,
    ttl: u64,
    pub_key: &'a [u8],
    signature_v2: &'a [u8],
    data: &'a [u8],
}

fn parse_entry(bytes: &[u8]) -> Result<Entry<'_>, ValidationError> {
    if bytes.len() > MAX_IPNS_RECORD_SIZE {
        return Err(ValidationError::TooLarge {
            len: bytes.len(),
            max: MAX_IPNS_RECORD_SIZE,
        });
    }
    let mut e = Entry::default();
    let mut r = pb::Reader::new(bytes);
    let m = |e: pb::PbError| ValidationError::Malformed(e.reason());
    while let Some((field, v)) = r.field().map_err(m)? {
        match field {
            1 => e.value = v.bytes().map_err(m)?,
            2 => e.signature_v1 = v.bytes().map_err(m)?,
            3 => e.validity_type = v.varint().map_err(m)?,
            4 => e.validity = v.bytes().map_err(m)?,
            5 => e.sequence = v.varint().map_err(m)?,
            6 => e.ttl = v.varint().map_err(m)?,
            7 => e.pub_key = v.bytes().map_err(m)?,
            8 => e.signature_v2 = v.bytes().map_err(m)?,
            9 => e.data = v.bytes().map_err(m)?,
            _ => {}
        }
    }
    Ok(e)
}

/// The IPNS name of an `/ipns/` key.
fn name_of(key: &[u8]) -> Result<PeerId, ValidationError> {
    match split_key(key) {
        Some((b"ipns", rest)) => PeerId::from_bytes(rest)
            .map_err(|_| ValidationError::InvalidKey("/ipns/ key does not hold a peer id")),
        _ => Err(ValidationError::InvalidKey("not an /ipns/ key")),
    }
}

/// The record's public key: `pubKey` (which must belong to `name`), or inlined in `name`.
fn public_key(name: &PeerId, entry: &Entry<'_>) -> Result<PublicKey, ValidationError> {
    if !entry.pub_key.is_empty() {
        let pk = decode_public_key(entry.pub_key)?;
        if PeerId::from_public_key(&pk) != *name {
            return Err(ValidationError::KeyMismatch);
        }
        return Ok(pk);
    }
    let mh: &dht_proto::multihash::Multihash<64> = name.as_ref();
    if mh.code() != IDENTITY {
        return Err(ValidationError::PublicKeyNotFound);
    }
    decode_public_key(mh.digest())
}

fn eol_of(data: &IpnsData<'_>) -> Result<UnixNanos, ValidationError> {
    if data.validity_type != 0 {
        return Err(ValidationError::UnsupportedValidityType(data.validity_type));
    }
    parse_rfc3339(data.validity).ok_or(ValidationError::InvalidValidity)
}

impl Validator for IpnsValidator {
    fn validate(&self, key: &[u8], value: &[u8], now: UnixSecs) -> Result<(), ValidationError> {
        let name = name_of(key)?;
        let entry = parse_entry(value)?;
        if entry.signature_v2.is_empty() {
            return Err(ValidationError::MissingSignature);
        }
        if entry.data.is_empty() {
            return Err(ValidationError::MissingData);
        }
        let pk = public_key(&name, &entry)?;
        let data = decode_ipns_data(entry.data).map_err(ValidationError::Malformed)?;
        let signed = [SIGNATURE_V2_PREFIX, entry.data].concat();
        if !pk.verify(&signed, entry.signature_v2) {
            return Err(ValidationError::BadSignature);
        }
        if !entry.signature_v1.is_empty() || !entry.value.is_empty() {
            let checks: [(&'static str, bool); 5] = [
                ("value", entry.value == data.value),
                ("validity", entry.validity == data.validity),
                ("validityType", entry.validity_type == data.validity_type),
                ("sequence", entry.sequence == data.sequence),
                ("ttl", entry.ttl == data.ttl),
            ];
            if let Some((field, _)) = checks.iter().find(|(_, same)| !same) {
                return Err(ValidationError::FieldMismatch(field));
            }
        }
        let eol = eol_of(&data)?;
        if is_after(now, eol) {
            return Err(ValidationError::Expired);
        }
        Ok(())
    }

    fn select(&self, _key: &[u8], values: &[&[u8]]) -> Result<usize, ValidationError> {
        /// (has a V2 signature, sequence, EOL); `None` for a record that does not parse.
        fn rank(value: &[u8]) -> Option<(bool, u64, UnixNanos)> {
            let entry = parse_entry(value).ok()?;
            let data = decode_ipns_data(entry.data).ok()?;
            let eol = eol_of(&data).ok()?;
            Some((!entry.signature_v2.is_empty(), data.sequence, eol))
        }
        let (first, rest) = values.split_first().ok_or(ValidationError::NoRecords)?;
        let mut best = (0, rank(first), *first);
        for (i, v) in rest.iter().enumerate() {
            let candidate = (i + 1, rank(v), *v);
            if (&candidate.1, candidate.2) > (&best.1, best.2) {
                best = candidate;
            }
        }
        Ok(best.0)
    }
}
