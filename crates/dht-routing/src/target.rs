//! Lookup targets inside a region of the keyspace.
//!
//! Servers hash the key of a FIND_NODE request (`sha256`) before looking for the closest
//! peers, so a lookup aimed at a region of the keyspace (a crawl probing one bucket of a
//! peer, a sweep walking one region) needs key bytes whose hash falls in that region. This
//! module keeps one such preimage for each of the 65,536 prefixes of 16 bits (as
//! go-libp2p-kbucket does), found once by hashing counters, about 0.7 million hashes.

use std::sync::OnceLock;

use dht_proto::{Key, Prefix};

/// The longest prefix [`key_in_prefix`] matches exactly.
pub const MAX_TARGET_PREFIX_BITS: usize = 16;

const TABLE_LEN: usize = 1 << MAX_TARGET_PREFIX_BITS;

/// The key bytes for counter `c`: a well-formed sha2-256 multihash (`0x12 0x20` and 32 digest
/// bytes), like a peer id, whose digest is zeros followed by `c`.
fn preimage(c: u32) -> [u8; 34] {
    let mut bytes = [0u8; 34];
    bytes[0] = 0x12;
    bytes[1] = 0x20;
    bytes[30..].copy_from_slice(&c.to_be_bytes());
    bytes
}

fn first16(key: &Key) -> usize {
    let b = key.as_bytes();
    usize::from(b[0]) << 8 | usize::from(b[1])
}

/// Counter of a preimage for each 16-bit prefix.
fn table() -> &'static [u32] {
    static TABLE: OnceLock<Vec<u32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = vec![u32::MAX; TABLE_LEN];
        let mut missing = TABLE_LEN;
        let mut c: u32 = 0;
        while missing > 0 && c < u32::MAX {
            if let Some(slot) = table.get_mut(first16(&Key::hash(&preimage(c))))
                && *slot == u32::MAX
            {
                *slot = c;
                missing -= 1;
            }
            c += 1;
        }
        tracing::debug!(counters = c, "FIND_NODE target table built");
        table
    })
}

/// DHT key bytes whose Kademlia key (`sha256`) starts with `prefix`, for a FIND_NODE aimed
/// at the region `prefix`.
///
/// The first 16 bits of the Kademlia key are chosen: those of `prefix`, then, past its end,
/// those of `fill`; the remaining bits are arbitrary. Prefixes longer than
/// [`MAX_TARGET_PREFIX_BITS`] are matched on their first 16 bits only. The first call builds
/// the table (a fraction of a second in an optimised build).
///
/// ```
/// use dht_proto::{Key, Prefix};
/// use dht_routing::key_in_prefix;
/// let prefix: Prefix = "1011001".parse()?;
/// let bytes = key_in_prefix(&prefix, &Key::ZERO);
/// assert!(prefix.contains(&Key::hash(&bytes)));
/// # Ok::<(), dht_proto::ParsePrefixError>(())
/// ```
pub fn key_in_prefix(prefix: &Prefix, fill: &Key) -> Vec<u8> {
    let target = prefix
        .truncate(prefix.len().min(MAX_TARGET_PREFIX_BITS))
        .key_with_suffix(fill);
    let c = table().get(first16(&target)).copied().unwrap_or(0);
    preimage(c).to_vec()
}

/// FIND_NODE key bytes whose `sha256` lies in `prefix`, like [`key_in_prefix`] with a zero
/// fill, but deeper: the first 16 bits are matched from the table, the next ones by search,
/// up to 24 bits (at most 2^24 hashes; deeper prefixes are matched on 24 bits). The sweep
/// aims its region lookups with it.
pub fn find_node_key(prefix: &Prefix) -> Vec<u8> {
    let quick = key_in_prefix(prefix, &Key::ZERO);
    if prefix.contains(&Key::hash(&quick)) {
        return quick;
    }
    let mut bytes = quick;
    let n = bytes.len();
    for c in 0u32..(1 << 24) {
        if let Some(tail) = bytes.get_mut(n.saturating_sub(4)..) {
            tail.copy_from_slice(&c.to_be_bytes());
        }
        if prefix.contains(&Key::hash(&bytes)) {
            return bytes;
        }
    }
    key_in_prefix(prefix, &Key::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_has_a_preimage() {
        assert!(table().iter().all(|&c| c != u32::MAX));
        for (i, &c) in table().iter().enumerate().step_by(997) {
            assert_eq!(first16(&Key::hash(&preimage(c))), i);
        }
    }

    #[test]
    fn keys_land_in_their_prefix() {
        let fill = Key::hash(b"fill");
        for len in [0, 1, 5, 15, 16, 20] {
            let prefix = Prefix::new(&Key::hash(&[len as u8]), len);
            let key = Key::hash(&key_in_prefix(&prefix, &fill));
            let matched = len.min(MAX_TARGET_PREFIX_BITS);
            assert!(prefix.truncate(matched).contains(&key), "len {len}");
            // Past the prefix, up to 16 bits, the key follows `fill`.
            assert_eq!(
                first16(&key) & ((1 << (16 - matched)) - 1),
                first16(&fill) & ((1 << (16 - matched)) - 1)
            );
        }
    }
}
