//! Value record validation: the [`NamespacedValidator`] registry and the `/pk/` validator
//! (the [`Validator`] trait itself is dht-proto's). The `/ipns/` validator is in `ipns.rs`.

use std::collections::HashMap;

use dht_proto::libp2p_identity::PublicKey;
use dht_proto::{PeerId, UnixSecs, ValidationError, Validator, pb, split_key};

use crate::ipns::IpnsValidator;

/// Validators by key namespace: a key `/<ns>/…` goes to the validator registered for `ns`.
///
/// [`NamespacedValidator::new`] (and `Default`) registers those of the Amino DHT, `pk` and
/// `ipns`, as go-libp2p-kad-dht does; a key of any other namespace is refused with
/// [`ValidationError::UnknownNamespace`].
///
/// ```
/// use dht_handler::{NamespacedValidator, ValidationError, Validator};
/// let v = NamespacedValidator::new();
/// assert_eq!(
///     v.validate(b"/other/key", b"value", 0),
///     Err(ValidationError::UnknownNamespace("other".into()))
/// );
/// ```
pub struct NamespacedValidator {
    validators: HashMap<Vec<u8>, Box<dyn Validator>>,
}

impl std::fmt::Debug for NamespacedValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<String> = self
            .validators
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        names.sort();
        f.debug_struct("NamespacedValidator")
            .field("namespaces", &names)
            .finish()
    }
}

impl Default for NamespacedValidator {
    fn default() -> Self {
        NamespacedValidator::new()
    }
}

impl NamespacedValidator {
    /// The Amino DHT's validators: `pk` ([`PublicKeyValidator`]) and `ipns`
    /// ([`IpnsValidator`]).
    pub fn new() -> Self {
        NamespacedValidator::empty()
            .with("pk", PublicKeyValidator)
            .with("ipns", IpnsValidator)
    }

    /// No validator at all: every key is refused.
    pub fn empty() -> Self {
        NamespacedValidator {
            validators: HashMap::new(),
        }
    }

    /// This registry with `validator` for `namespace` (replacing any before).
    #[must_use]
    pub fn with(mut self, namespace: &str, validator: impl Validator + 'static) -> Self {
        self.insert(namespace, validator);
        self
    }

    /// Registers `validator` for `namespace`, replacing any before.
    pub fn insert(&mut self, namespace: &str, validator: impl Validator + 'static) {
        self.validators
            .insert(namespace.as_bytes().to_vec(), Box::new(validator));
    }

    /// The validator for `key`'s namespace.
    pub fn validator_for(&self, key: &[u8]) -> Result<&dyn Validator, ValidationError> {
        let (ns, _) = split_key(key).ok_or(ValidationError::NoNamespace)?;
        self.validators
            .get(ns)
            .map(|v| &**v as &dyn Validator)
            .ok_or_else(|| ValidationError::UnknownNamespace(String::from_utf8_lossy(ns).into()))
    }
}

impl Validator for NamespacedValidator {
    fn validate(&self, key: &[u8], value: &[u8], now: UnixSecs) -> Result<(), ValidationError> {
        self.validator_for(key)?.validate(key, value, now)
    }

    fn select(&self, key: &[u8], values: &[&[u8]]) -> Result<usize, ValidationError> {
        self.validator_for(key)?.select(key, values)
    }
}

/// Validates `/pk/<multihash>` records, as Go's `record.PublicKeyValidator`: the value is a
/// protobuf-encoded libp2p public key whose peer id is the multihash of the key. All valid
/// records of a key are equal; `select` picks the first.
#[derive(Clone, Copy, Debug, Default)]
pub struct PublicKeyValidator;

impl Validator for PublicKeyValidator {
    fn validate(&self, key: &[u8], value: &[u8], _now: UnixSecs) -> Result<(), ValidationError> {
        let id = match split_key(key) {
            Some((b"pk", rest)) => rest,
            _ => return Err(ValidationError::InvalidKey("not a /pk/ key")),
        };
        dht_proto::multihash::Multihash::<64>::from_bytes(id)
            .map_err(|_| ValidationError::InvalidKey("/pk/ key does not hold a multihash"))?;
        let pk = decode_public_key(value)?;
        if PeerId::from_public_key(&pk).to_bytes() != id {
            return Err(ValidationError::KeyMismatch);
        }
        Ok(())
    }

    fn select(&self, _key: &[u8], values: &[&[u8]]) -> Result<usize, ValidationError> {
        if values.is_empty() {
            return Err(ValidationError::NoRecords);
        }
        Ok(0)
    }
}

/// The libp2p key types (`crypto.proto`'s `KeyType`).
fn key_type_name(t: u64) -> Option<&'static str> {
    Some(match t {
        0 => "RSA",
        1 => "Ed25519",
        2 => "Secp256k1",
        3 => "ECDSA",
        _ => return None,
    })
}

/// Decodes a protobuf-encoded libp2p public key, telling a key type this build cannot check
/// apart from a malformed key.
pub(crate) fn decode_public_key(bytes: &[u8]) -> Result<PublicKey, ValidationError> {
    // Read the key type first (`PublicKey { Type = 1; Data = 2 }`), for a clear error.
    let mut key_type = None;
    let mut r = pb::Reader::new(bytes);
    let malformed = |e: pb::PbError| ValidationError::Malformed(e.reason());
    while let Some((field, value)) = r.field().map_err(malformed)? {
        if field == 1 {
            key_type = Some(value.varint().map_err(malformed)?);
        }
    }
    let key_type = key_type.ok_or(ValidationError::Malformed("public key has no type"))?;
    let Some(name) = key_type_name(key_type) else {
        return Err(ValidationError::UnknownKeyType(key_type));
    };
    let pk = PublicKey::try_decode_protobuf(bytes).map_err(|e| {
        if e.to_string().contains("is not enabled") {
            ValidationError::UnsupportedKeyType(name)
        } else {
            ValidationError::InvalidPublicKey {
                key_type: name,
                source: dht_proto::SharedError::new(e),
            }
        }
    })?;
    if let Ok(rsa) = pk.clone().try_into_rsa() {
        let bits = der_first_integer_bits(&rsa.encode_pkcs1())
            .ok_or(ValidationError::Malformed("RSA public key"))?;
        if !RSA_KEY_BITS.contains(&bits) {
            return Err(ValidationError::RsaKeySize(bits));
        }
    }
    Ok(pk)
}

/// The RSA modulus sizes go-libp2p accepts (`MinRsaKeyBits`, `maxRsaKeyBits`).
const RSA_KEY_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// The bit length of the first INTEGER of a DER SEQUENCE: the modulus of a PKCS#1
/// `RSAPublicKey { modulus, publicExponent }`.
fn der_first_integer_bits(der: &[u8]) -> Option<usize> {
    /// A tag, a DER length (short or long form) and the rest after the length.
    fn header(der: &[u8], tag: u8) -> Option<(usize, &[u8])> {
        let (&t, rest) = der.split_first()?;
        let (&first, rest) = rest.split_first()?;
        if t != tag {
            return None;
        }
        if first < 0x80 {
            return Some((usize::from(first), rest));
        }
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (len, rest) = (rest.get(..n)?, rest.get(n..)?);
        Some((
            len.iter().fold(0, |acc, &b| acc << 8 | usize::from(b)),
            rest,
        ))
    }
    let (_, seq) = header(der, 0x30)?;
    let (len, rest) = header(seq, 0x02)?;
    let int = rest.get(..len)?;
    let start = int.iter().position(|&b| b != 0)?;
    let top = *int.get(start)?;
    Some((int.len() - start) * 8 - top.leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dht_proto::libp2p_identity::Keypair;

    #[test]
    fn der_integer_bits() {
        // SEQUENCE { INTEGER 0x00 0x80 0x01, INTEGER 3 }: a 16-bit first integer.
        assert_eq!(
            der_first_integer_bits(&[0x30, 0x08, 0x02, 0x03, 0x00, 0x80, 0x01, 0x02, 0x01, 0x03]),
            Some(16)
        );
        // Long-form lengths: a 2048-bit modulus (0x00 then 256 bytes, top bit set).
        let mut der = vec![0x30, 0x82, 0x01, 0x09, 0x02, 0x82, 0x01, 0x01, 0x00, 0xc0];
        der.extend([0x11; 255]);
        der.extend([0x02, 0x01, 0x03]);
        assert_eq!(der_first_integer_bits(&der), Some(2048));
        for bad in [
            &[][..],
            &[0x30],
            &[0x31, 0x03, 0x02, 0x01, 0x01],
            &[0x30, 0x03, 0x02, 0x05, 0x01],
        ] {
            assert_eq!(der_first_integer_bits(bad), None, "{bad:?}");
        }
    }

    fn proto_key(key_type: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![0x08, key_type, 0x12, data.len() as u8];
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn public_key_validator_cases() {
        let kp = Keypair::generate_ed25519();
        let pk = kp.public().encode_protobuf();
        let id = kp.public().to_peer_id().to_bytes();
        let other = Keypair::generate_ed25519().public().encode_protobuf();
        let key = [b"/pk/".as_slice(), &id].concat();

        let check = |key: &[u8], value: &[u8], expected: Result<(), ValidationError>| {
            assert_eq!(PublicKeyValidator.validate(key, value, 0), expected);
        };
        check(&key, &pk, Ok(()));
        check(&key, &other, Err(ValidationError::KeyMismatch));
        check(
            b"/pk/",
            &pk,
            Err(ValidationError::InvalidKey(
                "/pk/ key does not hold a multihash",
            )),
        );
        check(
            &[b"/pk/".as_slice(), &id, b"x"].concat(),
            &pk,
            Err(ValidationError::InvalidKey(
                "/pk/ key does not hold a multihash",
            )),
        );
        check(
            b"/ipns/x",
            &pk,
            Err(ValidationError::InvalidKey("not a /pk/ key")),
        );
        check(
            &key,
            b"",
            Err(ValidationError::Malformed("public key has no type")),
        );
        check(
            &key,
            &[0x12],
            Err(ValidationError::Malformed("truncated protobuf")),
        );
        check(
            &key,
            &proto_key(9, &[1; 32]),
            Err(ValidationError::UnknownKeyType(9)),
        );
        // A Secp256k1 key that is not the key's: refused whether or not it decodes.
        let secp = proto_key(2, &[2; 33]);
        assert!(matches!(
            PublicKeyValidator.validate(&key, &secp, 0),
            Err(ValidationError::UnsupportedKeyType(_)
                | ValidationError::InvalidPublicKey { .. }
                | ValidationError::KeyMismatch)
        ));
        assert!(matches!(
            PublicKeyValidator.validate(&key, &proto_key(1, &[1; 5]), 0),
            Err(ValidationError::InvalidPublicKey { .. })
        ));
        assert_eq!(PublicKeyValidator.select(&key, &[&pk, &pk]), Ok(0));
        assert_eq!(
            PublicKeyValidator.select(&key, &[]),
            Err(ValidationError::NoRecords)
        );
    }

    #[test]
    fn registry_dispatches_by_namespace() {
        let kp = Keypair::generate_ed25519();
        let pk = kp.public().encode_protobuf();
        let key = [b"/pk/".as_slice(), &kp.public().to_peer_id().to_bytes()].concat();
        let v = NamespacedValidator::new();
        assert_eq!(v.validate(&key, &pk, 0), Ok(()));
        assert_eq!(
            v.validate(b"nokey", &pk, 0),
            Err(ValidationError::NoNamespace)
        );
        assert_eq!(
            v.validate(b"/x/y", &pk, 0),
            Err(ValidationError::UnknownNamespace("x".into()))
        );
        assert_eq!(
            NamespacedValidator::empty().validate(&key, &pk, 0),
            Err(ValidationError::UnknownNamespace("pk".into()))
        );
        assert_eq!(
            v.select(b"/x/y", &[b"a"]),
            Err(ValidationError::UnknownNamespace("x".into()))
        );
        assert_eq!(
            format!("{v:?}"),
            r#"NamespacedValidator { namespaces: ["ipns", "pk"] }"#
        );
    }
}
