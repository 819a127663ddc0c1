//! 256-bit Kademlia keys and the XOR metric.

use std::fmt;

use libp2p_identity::PeerId;
use sha2::{Digest, Sha256};

/// Number of bits in a Kademlia key.
pub const KEY_BITS: usize = 256;

/// A point of the 256-bit Kademlia keyspace.
///
/// The Amino DHT places a record whose DHT key is `k` (for content, the multihash bytes of a
/// CID) at the Kademlia key `sha256(k)`, and a peer at `sha256(peer id bytes)`. Keys order
/// numerically, most significant bit first, which is also keyspace order.
///
/// ```
/// use dht_proto::Key;
/// let a = Key::from_bytes([0u8; 32]);
/// let mut b = [0u8; 32];
/// b[0] = 0b0010_0000;
/// let b = Key::from_bytes(b);
/// assert_eq!(a.common_prefix_len(&b), 2);
/// assert!(a < b);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Key([u8; 32]);

impl Key {
    /// The smallest key, all bits zero.
    pub const ZERO: Key = Key([0; 32]);
    /// The largest key, all bits one.
    pub const MAX: Key = Key([0xff; 32]);

    /// A key with exactly these 256 bits (no hashing).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }

    /// The Kademlia key of arbitrary DHT key bytes: `sha256(bytes)`.
    ///
    /// This is how the Amino DHT maps record keys (`/pk/…`, `/ipns/…`) and provider keys
    /// (multihash bytes) into the keyspace.
    pub fn hash(bytes: &[u8]) -> Self {
        Key(Sha256::digest(bytes).into())
    }

    /// The Kademlia key of a multihash: `sha256` of its byte encoding.
    pub fn from_multihash<const S: usize>(mh: &multihash::Multihash<S>) -> Self {
        Self::hash(&mh.to_bytes())
    }

    /// The Kademlia key under which a CID is provided: that of its multihash.
    pub fn from_cid(cid: &cid::Cid) -> Self {
        Self::from_multihash(cid.hash())
    }

    /// The Kademlia key of a peer: `sha256` of the peer id's bytes.
    pub fn from_peer_id(peer: &PeerId) -> Self {
        Self::hash(&peer.to_bytes())
    }

    /// The 32 bytes of the key, most significant first.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The XOR distance between two keys.
    pub fn distance(&self, other: &Key) -> Distance {
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// The number of leading bits the two keys share (256 when equal).
    pub fn common_prefix_len(&self, other: &Key) -> usize {
        self.distance(other).leading_zeros()
    }

    /// Bit `i` of the key, counting from the most significant bit (bit 0).
    ///
    /// # Panics
    /// If `i >= 256`.
    pub fn bit(&self, i: usize) -> bool {
        assert!(i < KEY_BITS, "bit index {i} out of range");
        self.0[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// This key with bit `i` set to `value`.
    ///
    /// # Panics
    /// If `i >= 256`.
    #[must_use]
    pub fn with_bit(mut self, i: usize, value: bool) -> Self {
        assert!(i < KEY_BITS, "bit index {i} out of range");
        let mask = 0x80 >> (i % 8);
        if value {
            self.0[i / 8] |= mask;
        } else {
            self.0[i / 8] &= !mask;
        }
        self
    }
}

impl From<[u8; 32]> for Key {
    fn from(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }
}

impl From<&PeerId> for Key {
    fn from(peer: &PeerId) -> Self {
        Key::from_peer_id(peer)
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The XOR distance between two [`Key`]s, ordered numerically (closer is smaller).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Distance([u8; 32]);

impl Distance {
    /// The distance of a key to itself.
    pub const ZERO: Distance = Distance([0; 32]);
    /// The largest distance.
    pub const MAX: Distance = Distance([0xff; 32]);

    /// A distance with exactly these 256 bits.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Distance(bytes)
    }

    /// The 32 bytes of the distance, most significant first.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Number of leading zero bits (256 for [`Distance::ZERO`]); equals the common prefix
    /// length of the two keys.
    pub fn leading_zeros(&self) -> usize {
        for (i, b) in self.0.iter().enumerate() {
            if *b != 0 {
                return i * 8 + b.leading_zeros() as usize;
            }
        }
        KEY_BITS
    }

    /// `floor(log2(distance))`, the index of the highest set bit counting from the least
    /// significant (0..=255), or `None` for a zero distance. Classic Kademlia's bucket index.
    pub fn ilog2(&self) -> Option<usize> {
        let lz = self.leading_zeros();
        (lz < KEY_BITS).then(|| KEY_BITS - 1 - lz)
    }
}

impl fmt::Debug for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Distance(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        // sha256("") is a well-known constant.
        assert_eq!(
            Key::hash(b"").to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn distance_and_prefix_len() {
        let a = Key::ZERO;
        assert_eq!(a.common_prefix_len(&a), 256);
        assert_eq!(a.distance(&a).ilog2(), None);
        let b = Key::ZERO.with_bit(255, true);
        assert_eq!(a.common_prefix_len(&b), 255);
        assert_eq!(a.distance(&b).ilog2(), Some(0));
        let c = Key::ZERO.with_bit(0, true);
        assert_eq!(a.common_prefix_len(&c), 0);
        assert_eq!(a.distance(&c).ilog2(), Some(255));
        assert!(a.distance(&b) < a.distance(&c));
        assert!(c.bit(0) && !c.bit(1));
    }

    #[test]
    fn cid_key_is_multihash_key() {
        let mh = multihash::Multihash::<64>::wrap(0x12, &[7u8; 32]).unwrap();
        let cid = cid::Cid::new_v1(0x55, mh);
        assert_eq!(Key::from_cid(&cid), Key::hash(&mh.to_bytes()));
    }
}
