//! Judging value records: the [`Validator`] trait, implemented by the server's validators
//! (dht-handler's `/pk` and `/ipns`) and used by the client's get-value walk (dht-routing),
//! and [`ValidationError`].

use std::sync::Arc;

use crate::UnixSecs;

/// Why a record is not valid.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The key is not of the form `/<namespace>/<rest>`.
    #[error("record key has no namespace (expected /<namespace>/…)")]
    NoNamespace,
    /// No validator is registered for the key's namespace.
    #[error("no validator for record namespace {0:?}")]
    UnknownNamespace(String),
    /// The part of the key after the namespace is not what the namespace expects.
    #[error("invalid record key: {0}")]
    InvalidKey(&'static str),
    /// The record (or the public key in it) does not decode.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// The record is larger than its namespace allows.
    #[error("record of {len} bytes is larger than the limit of {max}")]
    TooLarge {
        /// The record's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A public key of a known type that does not decode.
    #[error("invalid {key_type} public key: {source}")]
    InvalidPublicKey {
        /// The key's type (`Ed25519`, `RSA`, …).
        key_type: &'static str,
        /// Why it does not decode.
        source: crate::SharedError,
    },
    /// An RSA public key of a size go-libp2p refuses (it accepts 2048 to 8192 bits).
    #[error("RSA public key of {0} bits (go-libp2p accepts 2048 to 8192)")]
    RsaKeySize(usize),
    /// A public key of a type this build cannot check (a `libp2p-identity` key type the
    /// workspace does not enable).
    #[error("unsupported public key type {0}")]
    UnsupportedKeyType(&'static str),
    /// A public key of a type libp2p does not define.
    #[error("unknown public key type {0}")]
    UnknownKeyType(u64),
    /// The public key does not belong to the key the record is stored under.
    #[error("the public key does not match the record key")]
    KeyMismatch,
    /// An IPNS record without `signatureV2` (V1-only records are no longer accepted).
    #[error("IPNS record has no signatureV2")]
    MissingSignature,
    /// An IPNS record without its DAG-CBOR `data`.
    #[error("IPNS record has no data")]
    MissingData,
    /// An IPNS record whose name does not inline its public key, and that carries none.
    #[error("IPNS record carries no public key and its name does not inline one")]
    PublicKeyNotFound,
    /// A signature that does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// An IPNS record whose legacy V1 protobuf field differs from its signed `data`.
    #[error("IPNS record field {0} differs between the protobuf and the signed data")]
    FieldMismatch(&'static str),
    /// An IPNS validity type other than 0 (EOL).
    #[error("unsupported IPNS validity type {0}")]
    UnsupportedValidityType(u64),
    /// An IPNS validity that is not an RFC 3339 timestamp.
    #[error("IPNS validity is not an RFC 3339 timestamp")]
    InvalidValidity,
    /// An IPNS record whose validity (EOL) has passed.
    #[error("IPNS record expired")]
    Expired,
    /// `select` among no records.
    #[error("no record to select from")]
    NoRecords,
}

/// Checks value records of one kind, and picks the best of several.
///
/// Time is a parameter: validators read no clock.
pub trait Validator: Send + Sync {
    /// Whether `value` is a valid record for `key` at wall time `now`.
    fn validate(&self, key: &[u8], value: &[u8], now: UnixSecs) -> Result<(), ValidationError>;

    /// The index of the best of `values`, all stored under `key` and assumed to have been
    /// validated. Errors only when `values` is empty (or, for a registry, when no validator
    /// handles `key`).
    fn select(&self, key: &[u8], values: &[&[u8]]) -> Result<usize, ValidationError>;
}

macro_rules! forward_validator {
    ($($ty:ty),*) => {$(
        impl<T: Validator + ?Sized> Validator for $ty {
            fn validate(&self, key: &[u8], value: &[u8], now: UnixSecs) -> Result<(), ValidationError> {
                (**self).validate(key, value, now)
            }
            fn select(&self, key: &[u8], values: &[&[u8]]) -> Result<usize, ValidationError> {
                (**self).select(key, values)
            }
        }
    )*};
}

forward_validator!(Arc<T>, Box<T>, &T);

/// Splits a record key `/<namespace>/<rest>` into namespace and rest, as Go's
/// `record.SplitKey` does: the namespace is non-empty, the rest may be empty.
///
/// ```
/// assert_eq!(dht_proto::split_key(b"/pk/\x12\x20"), Some((&b"pk"[..], &b"\x12\x20"[..])));
/// assert_eq!(dht_proto::split_key(b"pk/x"), None);
/// assert_eq!(dht_proto::split_key(b"//x"), None);
/// ```
pub fn split_key(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = key.strip_prefix(b"/")?;
    let i = rest.iter().position(|&b| b == b'/')?;
    if i == 0 {
        return None;
    }
    Some((rest.get(..i)?, rest.get(i + 1..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_key_cases() {
        let check = |key: &[u8], expected: Option<(&[u8], &[u8])>| {
            assert_eq!(split_key(key), expected, "{key:?}");
        };
        check(b"/pk/abc", Some((b"pk", b"abc")));
        check(b"/ipns/a/b", Some((b"ipns", b"a/b")));
        check(b"/pk/", Some((b"pk", b"")));
        check(b"/pk", None);
        check(b"//abc", None);
        check(b"pk/abc", None);
        check(b"", None);
        check(b"/", None);
    }
}
