//! The on-disk encodings: small, versioned, big-endian, and decoded without panics.
//!
//! | column family     | key                                   | value |
//! |-------------------|---------------------------------------|-------|
//! | `providers`       | kad key (32) ‖ peer id bytes          | [`encode_provider`] |
//! | `values`          | kad key (32) ‖ DHT key bytes          | [`encode_value`] |
//! | `keystore`        | kad key (32) ‖ multihash bytes        | empty |
//! | `default`         | `format`, `keystore/count`            | u32 BE, u64 BE |

use dht_proto::{Key, Multiaddr, PeerId, Prefix, ProviderRecord, Record, UnixSecs};

use crate::{SourceGroup, StoreError};

/// Version byte at the start of every encoded value record.
pub(crate) const VALUE_RECORD_VERSION: u8 = 1;
/// Version byte of the provider records this build writes. Version 1 (format 2 and older)
/// also held the DHT key, which every reader has already: `providers(key)` is asked for it
/// and the column-family key holds its hash. Both versions are read.
pub(crate) const PROVIDER_RECORD_VERSION: u8 = 2;
/// Version byte of a provider record stored with the [`SourceGroup`] it came from: version 2
/// with the group (u64 BE) after `received_at`.
pub(crate) const PROVIDER_RECORD_GROUPED: u8 = 3;

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() < n {
            return Err(StoreError::corrupt(format!(
                "{}: truncated (wanted {n} more bytes, {} left)",
                self.what,
                self.buf.len()
            )));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// The version byte, if it is one of `known`.
    fn version(&mut self, known: &[u8]) -> Result<u8, StoreError> {
        match self.u8()? {
            v if known.contains(&v) => Ok(v),
            v => Err(StoreError::corrupt(format!(
                "{}: unknown record version {v}",
                self.what
            ))),
        }
    }

    fn finish(&self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(StoreError::corrupt(format!(
                "{}: {} trailing bytes",
                self.what,
                self.buf.len()
            )))
        }
    }
}

fn len_u16(n: usize, what: &str) -> Result<u16, StoreError> {
    u16::try_from(n).map_err(|_| StoreError::invalid(format!("{what} of {n} exceeds 65535")))
}

fn len_u32(n: usize, what: &str) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::invalid(format!("{what} of {n} exceeds 2^32-1")))
}

/// Kademlia key ‖ suffix.
pub(crate) fn kad_prefixed(kad: &Key, suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(32 + suffix.len());
    k.extend_from_slice(kad.as_bytes());
    k.extend_from_slice(suffix);
    k
}

/// Splits a `kad key ‖ suffix` key.
pub(crate) fn split_kad<'a>(
    key: &'a [u8],
    what: &'static str,
) -> Result<(Key, &'a [u8]), StoreError> {
    if key.len() < 32 {
        return Err(StoreError::corrupt(format!(
            "{what}: key of {} bytes is shorter than a Kademlia key",
            key.len()
        )));
    }
    let (kad, rest) = key.split_at(32);
    let mut a = [0u8; 32];
    a.copy_from_slice(kad);
    Ok((Key::from_bytes(a), rest))
}

/// The smallest 32-byte key greater than `key`, `None` for the all-ones key.
pub(crate) fn key_successor(key: &Key) -> Option<[u8; 32]> {
    let mut b = *key.as_bytes();
    for byte in b.iter_mut().rev() {
        if *byte == 0xff {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(b);
        }
    }
    None
}

/// The keys a keystore scan reads, both included: those of `prefix`, after `start_after`.
/// `None` when there are none (or `limit` is 0). Both keystores bound their scans by it.
pub(crate) fn scan_bounds(
    prefix: &Prefix,
    start_after: Option<&Key>,
    limit: usize,
) -> Option<(Key, Key)> {
    let first = prefix.first_key();
    let last = prefix.last_key();
    let lower = match start_after {
        None => first,
        Some(k) => Key::from_bytes(key_successor(k)?).max(first),
    };
    (lower <= last && limit > 0).then_some((lower, last))
}

/// Checks an encoding will fit before anything is written.
pub(crate) fn check_provider(r: &ProviderRecord) -> Result<(), StoreError> {
    len_u16(r.addrs.len(), "address count")?;
    for a in &r.addrs {
        len_u16(a.as_ref().len(), "address length")?;
    }
    Ok(())
}

/// `2 ‖ received_at u64 ‖ n_addrs u16 ‖ (len u16 ‖ addr)*`.
#[cfg(test)]
pub(crate) fn encode_provider(r: &ProviderRecord) -> Result<Vec<u8>, StoreError> {
    encode_provider_from(r, None)
}

/// [`encode_provider`] without a group; with one, `3 ‖ received_at u64 ‖ group u64 ‖ n_addrs
/// u16 ‖ (len u16 ‖ addr)*`.
pub(crate) fn encode_provider_from(
    r: &ProviderRecord,
    group: Option<SourceGroup>,
) -> Result<Vec<u8>, StoreError> {
    let addr_bytes: usize = r.addrs.iter().map(|a| 2 + a.as_ref().len()).sum();
    let mut v = Vec::with_capacity(1 + 8 + 8 + 2 + addr_bytes);
    v.push(match group {
        None => PROVIDER_RECORD_VERSION,
        Some(_) => PROVIDER_RECORD_GROUPED,
    });
    v.extend_from_slice(&r.received_at.to_be_bytes());
    if let Some(g) = group {
        v.extend_from_slice(&g.to_u64().to_be_bytes());
    }
    v.extend_from_slice(&len_u16(r.addrs.len(), "address count")?.to_be_bytes());
    for a in &r.addrs {
        let b = a.as_ref();
        v.extend_from_slice(&len_u16(b.len(), "address length")?.to_be_bytes());
        v.extend_from_slice(b);
    }
    Ok(v)
}

/// Provider record versions this build reads: 1 (`1 ‖ received_at u64 ‖ key_len u16 ‖ key ‖
/// n_addrs u16 ‖ (len u16 ‖ addr)*`), [`PROVIDER_RECORD_VERSION`] and
/// [`PROVIDER_RECORD_GROUPED`].
const PROVIDER_VERSIONS: [u8; 3] = [1, PROVIDER_RECORD_VERSION, PROVIDER_RECORD_GROUPED];

/// Only the received_at of an encoded provider record (for the cap and expiry).
pub(crate) fn provider_received_at(value: &[u8]) -> Result<UnixSecs, StoreError> {
    let mut r = Reader::new(value, "provider record");
    r.version(&PROVIDER_VERSIONS)?;
    r.u64()
}

/// The received_at and the group (if stored) of an encoded provider record (for the cap).
pub(crate) fn provider_slot(value: &[u8]) -> Result<crate::Slot, StoreError> {
    let mut r = Reader::new(value, "provider record");
    let version = r.version(&PROVIDER_VERSIONS)?;
    let received_at = r.u64()?;
    let group = if version == PROVIDER_RECORD_GROUPED {
        SourceGroup::from_u64(r.u64()?)
    } else {
        None
    };
    Ok(crate::Slot { group, received_at })
}

/// Decodes a provider record of `dht_key` from its column-family key (for the peer) and
/// value. A version-1 record carries its DHT key; that one is returned (so a record that is
/// not of `dht_key` is told apart by its key, as before).
pub(crate) fn decode_provider(
    dht_key: &[u8],
    key: &[u8],
    value: &[u8],
) -> Result<ProviderRecord, StoreError> {
    let (_, peer) = split_kad(key, "provider key")?;
    let provider = PeerId::from_bytes(peer)
        .map_err(|e| StoreError::corrupt_because("provider key: bad peer id", e))?;
    let mut r = Reader::new(value, "provider record");
    let version = r.version(&PROVIDER_VERSIONS)?;
    let received_at = r.u64()?;
    if version == PROVIDER_RECORD_GROUPED {
        r.u64()?;
    }
    let dht_key = if version == 1 {
        let key_len = usize::from(r.u16()?);
        r.take(key_len)?.to_vec()
    } else {
        dht_key.to_vec()
    };
    let n = usize::from(r.u16()?);
    let mut addrs = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let len = usize::from(r.u16()?);
        let b = r.take(len)?;
        let a = Multiaddr::try_from(b.to_vec())
            .map_err(|e| StoreError::corrupt_because("provider record: bad address", e))?;
        addrs.push(a);
    }
    r.finish()?;
    Ok(ProviderRecord {
        key: dht_key,
        provider,
        addrs,
        received_at,
    })
}

/// `1 ‖ received_at u64 ‖ time_received_len u32 ‖ time_received ‖ value`.
pub(crate) fn encode_value(rec: &Record, received_at: UnixSecs) -> Result<Vec<u8>, StoreError> {
    let t = rec.time_received.as_bytes();
    let mut v = Vec::with_capacity(1 + 8 + 4 + t.len() + rec.value.len());
    v.push(VALUE_RECORD_VERSION);
    v.extend_from_slice(&received_at.to_be_bytes());
    v.extend_from_slice(&len_u32(t.len(), "time_received length")?.to_be_bytes());
    v.extend_from_slice(t);
    v.extend_from_slice(&rec.value);
    Ok(v)
}

/// Only the received_at of an encoded value record.
pub(crate) fn value_received_at(value: &[u8]) -> Result<UnixSecs, StoreError> {
    let mut r = Reader::new(value, "value record");
    r.version(&[VALUE_RECORD_VERSION])?;
    r.u64()
}

/// Decodes a value record; `dht_key` comes from the column-family key.
pub(crate) fn decode_value(dht_key: &[u8], value: &[u8]) -> Result<(Record, UnixSecs), StoreError> {
    let mut r = Reader::new(value, "value record");
    r.version(&[VALUE_RECORD_VERSION])?;
    let received_at = r.u64()?;
    let tlen = usize::try_from(r.u32()?)
        .map_err(|_| StoreError::corrupt("value record: length overflows usize"))?;
    let t = r.take(tlen)?;
    let time_received = std::str::from_utf8(t)
        .map_err(|_| StoreError::corrupt("value record: time_received is not UTF-8"))?
        .to_owned();
    let value = r.rest().to_vec();
    Ok((
        Record {
            key: dht_key.to_vec(),
            value,
            time_received,
        },
        received_at,
    ))
}

/// A u64 stored big-endian in exactly 8 bytes.
pub(crate) fn decode_u64(b: &[u8], what: &'static str) -> Result<u64, StoreError> {
    let mut r = Reader::new(b, what);
    let v = r.u64()?;
    r.finish()?;
    Ok(v)
}

/// A u32 stored big-endian in exactly 4 bytes.
pub(crate) fn decode_u32(b: &[u8], what: &'static str) -> Result<u32, StoreError> {
    let mut r = Reader::new(b, what);
    let v = r.u32()?;
    r.finish()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(addrs: usize) -> ProviderRecord {
        ProviderRecord {
            key: b"\x12\x20abcdefghijklmnopqrstuvwxyz012345".to_vec(),
            provider: PeerId::random(),
            addrs: (0..addrs)
                .map(|i| format!("/ip4/10.0.0.{i}/tcp/4001").parse().unwrap())
                .collect(),
            received_at: dht_test_kit::EPOCH,
        }
    }

    #[test]
    fn provider_roundtrip() {
        for n in [0, 1, 5] {
            let r = record(n);
            let key = kad_prefixed(&r.kad_key(), &r.provider.to_bytes());
            let v = encode_provider(&r).unwrap();
            assert_eq!(decode_provider(&r.key, &key, &v).unwrap(), r);
            assert_eq!(provider_received_at(&v).unwrap(), r.received_at);
        }
    }

    /// The version-1 encoding, with the DHT key in the value.
    fn encode_provider_v1(r: &ProviderRecord) -> Vec<u8> {
        let mut v = vec![1];
        v.extend_from_slice(&r.received_at.to_be_bytes());
        v.extend_from_slice(&(r.key.len() as u16).to_be_bytes());
        v.extend_from_slice(&r.key);
        v.extend_from_slice(&(r.addrs.len() as u16).to_be_bytes());
        for a in &r.addrs {
            v.extend_from_slice(&(a.as_ref().len() as u16).to_be_bytes());
            v.extend_from_slice(a.as_ref());
        }
        v
    }

    #[test]
    fn version_1_provider_records_decode_with_their_own_key() {
        let r = record(2);
        let key = kad_prefixed(&r.kad_key(), &r.provider.to_bytes());
        let v1 = encode_provider_v1(&r);
        assert_eq!(decode_provider(&r.key, &key, &v1).unwrap(), r);
        assert_eq!(provider_received_at(&v1).unwrap(), r.received_at);
        // The stored key wins, so a caller filtering by key sees the mismatch.
        assert_eq!(decode_provider(b"other", &key, &v1).unwrap().key, r.key);
        // Version 2 drops the 2 + 34 bytes of the key.
        assert_eq!(
            encode_provider(&r).unwrap().len() + 2 + r.key.len(),
            v1.len()
        );
    }

    #[test]
    fn grouped_provider_records_roundtrip() {
        let r = record(2);
        let key = kad_prefixed(&r.kad_key(), &r.provider.to_bytes());
        let group = SourceGroup::from_bytes(&[4, 192, 0, 2]);
        let v = encode_provider_from(&r, Some(group)).unwrap();
        assert_eq!(decode_provider(&r.key, &key, &v).unwrap(), r);
        assert_eq!(provider_received_at(&v).unwrap(), r.received_at);
        let slot = provider_slot(&v).unwrap();
        assert_eq!((slot.group, slot.received_at), (Some(group), r.received_at));
        let plain = provider_slot(&encode_provider(&r).unwrap()).unwrap();
        assert_eq!(plain.group, None);
    }

    #[test]
    fn unknown_provider_versions_are_corrupt() {
        let r = record(1);
        let key = kad_prefixed(&r.kad_key(), &r.provider.to_bytes());
        let mut v = encode_provider(&r).unwrap();
        for version in [0, 4, 0xff] {
            v[0] = version;
            assert!(matches!(
                decode_provider(&r.key, &key, &v),
                Err(StoreError::Corrupt { .. })
            ));
            assert!(matches!(
                provider_received_at(&v),
                Err(StoreError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn value_roundtrip() {
        let mut rec = Record::new(b"/pk/abc".to_vec(), b"value".to_vec());
        rec.time_received = "2024-01-01T00:00:00Z".into();
        let v = encode_value(&rec, 42).unwrap();
        assert_eq!(decode_value(&rec.key, &v).unwrap(), (rec, 42));
    }

    #[test]
    fn scan_bounds_cover_the_prefix_after_the_cursor() {
        let prefix = Prefix::new(&Key::from_bytes([0b1010_0000; 32]), 3);
        let (first, last) = (prefix.first_key(), prefix.last_key());
        assert_eq!(scan_bounds(&prefix, None, 10), Some((first, last)));
        // A cursor before the prefix starts at its first key; one inside, just after it.
        assert_eq!(
            scan_bounds(&prefix, Some(&Key::ZERO), 10),
            Some((first, last))
        );
        let inside = Key::from_bytes(key_successor(&first).unwrap());
        let next = Key::from_bytes(key_successor(&inside).unwrap());
        assert_eq!(scan_bounds(&prefix, Some(&inside), 10), Some((next, last)));
        // Nothing left: the cursor at the prefix's end, or the all-ones key, or no room.
        assert_eq!(scan_bounds(&prefix, Some(&last), 10), None);
        let top = Key::from_bytes([0xff; 32]);
        assert_eq!(scan_bounds(&Prefix::new(&top, 0), Some(&top), 10), None);
        assert_eq!(scan_bounds(&prefix, None, 0), None);
    }

    #[test]
    fn successor() {
        fn check(input: [u8; 32], expected: Option<[u8; 32]>) {
            assert_eq!(key_successor(&Key::from_bytes(input)), expected);
        }
        check([0xff; 32], None);
        check(
            [0; 32],
            Some({
                let mut b = [0; 32];
                b[31] = 1;
                b
            }),
        );
        let mut a = [0u8; 32];
        a[0] = 1;
        a[1..].fill(0xff);
        let mut e = [0u8; 32];
        e[0] = 2;
        check(a, Some(e));
    }

    #[test]
    fn a_bad_peer_id_is_corrupt_with_the_decoders_error_as_source() {
        let r = record(3);
        let key = kad_prefixed(&r.kad_key(), &[0xff; 10]);
        let v = encode_provider(&r).unwrap();
        let err = decode_provider(&r.key, &key, &v).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let source = std::error::Error::source(&err).expect("the peer id's parse error");
        assert!(err.to_string().ends_with(&source.to_string()), "{err}");
    }

    #[test]
    fn truncations_are_corrupt() {
        let r = record(2);
        let key = kad_prefixed(&r.kad_key(), &r.provider.to_bytes());
        for v in [encode_provider(&r).unwrap(), encode_provider_v1(&r)] {
            for n in 0..v.len() {
                assert!(matches!(
                    decode_provider(&r.key, &key, &v[..n]),
                    Err(StoreError::Corrupt { .. })
                ));
            }
        }
        let v = encode_provider(&r).unwrap();
        assert!(matches!(
            decode_provider(&r.key, &key[..20], &v),
            Err(StoreError::Corrupt { .. })
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(key in proptest::collection::vec(any::<u8>(), 0..80),
                                value in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_provider(b"k", &key, &value);
            let _ = decode_value(&key, &value);
            let _ = provider_received_at(&value);
            let _ = decode_u64(&value, "u64");
            let _ = decode_u32(&value, "u32");
        }

        #[test]
        fn garbage_after_valid_header_never_panics(version in 1u8..=2,
                                                   tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut v = vec![version];
            v.extend_from_slice(&7u64.to_be_bytes());
            v.extend_from_slice(&tail);
            let key = kad_prefixed(&Key::ZERO, &PeerId::random().to_bytes());
            let _ = decode_provider(b"k", &key, &v);
            let _ = decode_value(b"k", &v);
        }
    }
}
