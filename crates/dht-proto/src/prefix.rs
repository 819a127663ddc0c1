//! Keyspace prefixes: bit strings of 0 to 256 bits naming a region of the keyspace.

use std::{cmp::Ordering, fmt, str::FromStr};

use crate::key::{KEY_BITS, Key};

/// A bit string of 0 to 256 bits; the region of the keyspace whose keys start with it.
///
/// The empty prefix ([`Prefix::ROOT`]) is the whole keyspace. Prefixes order in keyspace
/// order: by their first key, and a prefix before its own descendants. The sweeping provider
/// walks regions in this order, the keystore stores keys so that a region is one range, and
/// the routing table's buckets are prefixes too.
///
/// ```
/// use dht_proto::{Key, Prefix};
/// let p: Prefix = "01".parse()?;
/// let (left, right) = p.children().expect("shorter than 256 bits");
/// assert_eq!(left.to_string(), "010");
/// assert_eq!(left.sibling(), Some(right));
/// assert!(p.contains(&p.first_key()) && p.contains(&p.last_key()));
/// assert!(!p.contains(&Key::ZERO));
/// # Ok::<(), dht_proto::ParsePrefixError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// The prefix bits, followed by zeros.
    bits: Key,
    len: u16,
}

impl Prefix {
    /// The empty prefix: the whole keyspace.
    pub const ROOT: Prefix = Prefix {
        bits: Key::ZERO,
        len: 0,
    };

    /// The first `len` bits of `key`.
    ///
    /// # Panics
    /// If `len > 256`.
    pub fn new(key: &Key, len: usize) -> Self {
        assert!(len <= KEY_BITS, "prefix length {len} exceeds 256 bits");
        Prefix {
            bits: mask(key, len),
            len: len as u16,
        }
    }

    /// The number of bits.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether this is the empty prefix (the whole keyspace).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit `i` of the prefix.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn bit(&self, i: usize) -> bool {
        assert!(i < self.len(), "bit {i} beyond prefix of {} bits", self.len);
        self.bits.bit(i)
    }

    /// Whether `key` starts with this prefix.
    pub fn contains(&self, key: &Key) -> bool {
        self.bits.common_prefix_len(key) >= self.len()
    }

    /// Whether `other` lies inside this region (it is this prefix or an extension of it).
    pub fn contains_prefix(&self, other: &Prefix) -> bool {
        other.len >= self.len && self.contains(&other.bits)
    }

    /// The smallest key in the region (the prefix followed by zeros).
    pub fn first_key(&self) -> Key {
        self.bits
    }

    /// The largest key in the region (the prefix followed by ones).
    pub fn last_key(&self) -> Key {
        let mut bytes = *self.bits.as_bytes();
        let len = self.len();
        for (i, b) in bytes.iter_mut().enumerate() {
            let start = i * 8;
            if start >= len {
                *b = 0xff;
            } else if start + 8 > len {
                *b |= 0xff >> (len - start);
            }
        }
        Key::from_bytes(bytes)
    }

    /// The two halves of the region: this prefix followed by `0`, then by `1`.
    /// `None` for a full 256-bit prefix.
    pub fn children(&self) -> Option<(Prefix, Prefix)> {
        let len = self.len();
        (len < KEY_BITS).then(|| {
            let left = Prefix {
                bits: self.bits,
                len: self.len + 1,
            };
            let right = Prefix {
                bits: self.bits.with_bit(len, true),
                len: self.len + 1,
            };
            (left, right)
        })
    }

    /// The prefix with the last bit flipped; `None` for the root.
    pub fn sibling(&self) -> Option<Prefix> {
        let len = self.len();
        (len > 0).then(|| Prefix {
            bits: self.bits.with_bit(len - 1, !self.bits.bit(len - 1)),
            len: self.len,
        })
    }

    /// The prefix without its last bit; `None` for the root.
    pub fn parent(&self) -> Option<Prefix> {
        (self.len > 0).then(|| Prefix::new(&self.bits, self.len() - 1))
    }

    /// A key inside the region: the prefix bits followed by the remaining bits of `suffix`.
    ///
    /// With a uniformly random `suffix` this is a uniformly random key of the region.
    pub fn key_with_suffix(&self, suffix: &Key) -> Key {
        let len = self.len();
        let mut bytes = *self.bits.as_bytes();
        let rest = suffix.as_bytes();
        for (i, b) in bytes.iter_mut().enumerate() {
            let start = i * 8;
            if start >= len {
                *b = rest[i];
            } else if start + 8 > len {
                *b |= rest[i] & (0xff >> (len - start));
            }
        }
        Key::from_bytes(bytes)
    }

    /// The first `len` bits of this prefix.
    ///
    /// # Panics
    /// If `len > self.len()`.
    pub fn truncate(&self, len: usize) -> Prefix {
        assert!(len <= self.len(), "cannot extend a prefix by truncating it");
        Prefix::new(&self.bits, len)
    }
}

fn mask(key: &Key, len: usize) -> Key {
    let mut bytes = *key.as_bytes();
    for (i, b) in bytes.iter_mut().enumerate() {
        let start = i * 8;
        if start >= len {
            *b = 0;
        } else if start + 8 > len {
            *b &= !(0xff >> (len - start));
        }
    }
    Key::from_bytes(bytes)
}

impl Ord for Prefix {
    fn cmp(&self, other: &Self) -> Ordering {
        self.bits
            .cmp(&other.bits)
            .then_with(|| self.len.cmp(&other.len))
    }
}

impl PartialOrd for Prefix {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in 0..self.len() {
            f.write_str(if self.bits.bit(i) { "1" } else { "0" })?;
        }
        Ok(())
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Prefix(\"{self}\")")
    }
}

/// The error of parsing a [`Prefix`] from a string of `0` and `1` characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParsePrefixError {
    /// A character other than `0` or `1`.
    #[error("invalid character {0:?} in a prefix; only '0' and '1' are allowed")]
    InvalidChar(char),
    /// More than 256 bits.
    #[error("prefix of {0} bits is longer than 256")]
    TooLong(usize),
}

impl FromStr for Prefix {
    type Err = ParsePrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > KEY_BITS {
            return Err(ParsePrefixError::TooLong(s.len()));
        }
        let mut key = Key::ZERO;
        for (i, c) in s.chars().enumerate() {
            match c {
                '0' => {}
                '1' => key = key.with_bit(i, true),
                other => return Err(ParsePrefixError::InvalidChar(other)),
            }
        }
        Ok(Prefix::new(&key, s.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn root() {
        assert!(Prefix::ROOT.is_empty());
        assert_eq!(Prefix::ROOT.first_key(), Key::ZERO);
        assert_eq!(Prefix::ROOT.last_key(), Key::MAX);
        assert_eq!(Prefix::ROOT.sibling(), None);
        assert_eq!(Prefix::ROOT.parent(), None);
        assert_eq!(Prefix::ROOT.to_string(), "");
    }

    #[test]
    fn full_length() {
        let full = Prefix::new(&Key::MAX, 256);
        assert_eq!(full.children(), None);
        assert_eq!(full.first_key(), Key::MAX);
        assert_eq!(full.last_key(), Key::MAX);
        assert!(full.contains(&Key::MAX));
        assert!(!full.contains(&Key::MAX.with_bit(255, false)));
    }

    #[test]
    fn order_is_keyspace_order() {
        let mut v = [p("1"), p("01"), p("0"), p(""), p("011"), p("00")];
        v.sort();
        let s: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["", "0", "00", "01", "011", "1"]);
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            "012".parse::<Prefix>(),
            Err(ParsePrefixError::InvalidChar('2'))
        );
        assert_eq!(
            "0".repeat(257).parse::<Prefix>(),
            Err(ParsePrefixError::TooLong(257))
        );
    }

    #[test]
    fn suffix_fills_the_rest() {
        let k = p("101").key_with_suffix(&Key::ZERO);
        assert_eq!(k, p("101").first_key());
        let k = p("101").key_with_suffix(&Key::MAX);
        assert_eq!(k, p("101").last_key());
    }
}
