//! `Key`, `Distance` and `Prefix` against a brute-force reference on bit vectors.
#![allow(clippy::unwrap_used)]

use dht_proto::{Key, Prefix};
use proptest::prelude::*;

/// The reference model: a key as 256 booleans, most significant first.
fn bits(k: &Key) -> Vec<bool> {
    (0..256)
        .map(|i| k.as_bytes()[i / 8] >> (7 - i % 8) & 1 == 1)
        .collect()
}

fn key_of(bits: &[bool]) -> Key {
    let mut b = [0u8; 32];
    for (i, &bit) in bits.iter().enumerate() {
        if bit {
            b[i / 8] |= 0x80 >> (i % 8);
        }
    }
    Key::from_bytes(b)
}

fn arb_key() -> impl Strategy<Value = Key> {
    // Mix uniform keys with keys that share long prefixes, where edge cases live.
    prop_oneof![
        any::<[u8; 32]>().prop_map(Key::from_bytes),
        (any::<[u8; 32]>(), 0usize..=256, any::<bool>()).prop_map(|(b, n, v)| {
            let mut bits = bits(&Key::from_bytes(b));
            for bit in bits.iter_mut().take(n) {
                *bit = v;
            }
            key_of(&bits)
        }),
    ]
}

fn arb_prefix() -> impl Strategy<Value = Prefix> {
    (arb_key(), 0usize..=256).prop_map(|(k, n)| Prefix::new(&k, n))
}

proptest! {
    #[test]
    fn cpl_and_distance_agree_with_bits(a in arb_key(), b in arb_key(), c in arb_key()) {
        let (ba, bb, bc) = (bits(&a), bits(&b), bits(&c));
        let cpl = ba.iter().zip(&bb).take_while(|(x, y)| x == y).count();
        prop_assert_eq!(a.common_prefix_len(&b), cpl);
        let xor_ab: Vec<bool> = ba.iter().zip(&bb).map(|(x, y)| x ^ y).collect();
        let xor_ac: Vec<bool> = ba.iter().zip(&bc).map(|(x, y)| x ^ y).collect();
        // Lexicographic order on bit vectors is numeric order.
        prop_assert_eq!(a.distance(&b).cmp(&a.distance(&c)), xor_ab.cmp(&xor_ac));
        prop_assert_eq!(a.distance(&b), b.distance(&a));
        prop_assert_eq!(a.distance(&b).leading_zeros(), cpl);
        prop_assert_eq!(a.cmp(&b), ba.cmp(&bb));
    }

    #[test]
    fn prefix_agrees_with_bits(p in arb_prefix(), k in arb_key(), suffix in arb_key()) {
        let n = p.len();
        let pb = bits(&p.first_key())[..n].to_vec();
        let kb = bits(&k);
        prop_assert_eq!(p.contains(&k), kb[..n] == pb[..]);

        let mut first = pb.clone();
        first.resize(256, false);
        let mut last = pb.clone();
        last.resize(256, true);
        prop_assert_eq!(p.first_key(), key_of(&first));
        prop_assert_eq!(p.last_key(), key_of(&last));
        prop_assert!(p.contains(&p.first_key()) && p.contains(&p.last_key()));

        let inside = p.key_with_suffix(&suffix);
        prop_assert!(p.contains(&inside));
        prop_assert_eq!(&bits(&inside)[n..], &bits(&suffix)[n..]);

        if let Some((l, r)) = p.children() {
            prop_assert_eq!(l.len(), n + 1);
            prop_assert!(!l.bit(n) && r.bit(n));
            prop_assert!(p.contains_prefix(&l) && p.contains_prefix(&r));
            prop_assert_eq!(p.contains(&k), l.contains(&k) || r.contains(&k));
            prop_assert!(!(l.contains(&k) && r.contains(&k)));
            prop_assert_eq!(l.sibling(), Some(r));
            prop_assert_eq!(r.parent(), Some(p));
            prop_assert!(p < l && l < r);
        } else {
            prop_assert_eq!(n, 256);
        }
        if let Some(s) = p.sibling() {
            let mut sb = pb.clone();
            sb[n - 1] = !sb[n - 1];
            prop_assert_eq!(bits(&s.first_key())[..n].to_vec(), sb);
            prop_assert!(!(s.contains(&k) && p.contains(&k)));
        }
        let text = p.to_string();
        prop_assert_eq!(text.parse::<Prefix>().unwrap(), p);
    }

    #[test]
    fn prefix_order_is_keyspace_order(a in arb_prefix(), b in arb_prefix()) {
        // Disjoint regions order by position; nested ones put the ancestor first.
        if a.contains_prefix(&b) && a != b {
            prop_assert!(a < b);
        } else if !b.contains_prefix(&a) {
            prop_assert_eq!(a < b, a.last_key() < b.first_key());
        }
    }
}
