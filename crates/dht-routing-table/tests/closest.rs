//! Both tables through the public [`RoutingTable`] seam: `closest_peers` against a brute-force
//! sort by XOR distance over the peers each table holds, for random tables and keys.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use dht_proto::{Key, PeerInfo};
use dht_routing_table::{
    Direction, FullRoutingTable, KBucketConfig, KBucketTable, ManualClock, PeerEvent, RoutingTable,
};
use proptest::prelude::*;

fn peer(seed: u64) -> PeerInfo {
    let id = dht_test_kit::peer_id(seed);
    let addr = format!(
        "/ip4/{}.{}.{}.1/tcp/4001",
        1 + seed % 200,
        (seed >> 8) % 256,
        seed % 256
    );
    PeerInfo::new(id, vec![addr.parse().expect("valid multiaddr")])
}

/// Peers made once: hashing peer ids is slow in debug builds.
static POOL: std::sync::LazyLock<Vec<PeerInfo>> =
    std::sync::LazyLock::new(|| (0..4000).map(peer).collect());

/// The peers with their keys, for [`brute_force`].
fn keyed(peers: Vec<PeerInfo>) -> Vec<(Key, PeerInfo)> {
    peers.into_iter().map(|p| (p.key(), p)).collect()
}

fn brute_force(peers: &[(Key, PeerInfo)], key: &Key, n: usize) -> Vec<PeerInfo> {
    let mut v: Vec<(dht_proto::Distance, &PeerInfo)> =
        peers.iter().map(|(k, p)| (key.distance(k), p)).collect();
    v.sort_by_key(|x| x.0);
    v.into_iter().take(n).map(|x| x.1.clone()).collect()
}

fn target() -> impl Strategy<Value = Key> {
    any::<[u8; 32]>().prop_map(Key::from_bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn kbucket_closest_is_brute_force(
        local in target(),
        seeds in prop::collection::vec(0..4000usize, 0..600),
        keys in prop::collection::vec(target(), 1..8),
        n in 0..60usize,
        k in 1..25usize,
    ) {
        let config = KBucketConfig::default().with_bucket_size(k);
        let table = KBucketTable::new(local, config, ManualClock::new(0));
        for s in &seeds {
            table.update(&POOL[*s], PeerEvent::Seen(Direction::Outbound));
        }
        let held = keyed(table.peers());
        prop_assert_eq!(held.len(), table.len());
        for key in keys.iter().chain([&local]) {
            prop_assert_eq!(table.closest_peers(key, n), brute_force(&held, key, n));
        }
        // Keys close to the local key exercise the deep buckets.
        let mut rng = rand::rng();
        for cpl in [0, 1, 5, 9, 30] {
            let key = table.random_key_with_cpl(cpl, &mut rng).expect("in range");
            prop_assert_eq!(table.closest_peers(&key, n), brute_force(&held, &key, n));
        }
    }

    #[test]
    fn fullrt_closest_is_brute_force(
        seeds in prop::collection::vec(0..4000usize, 0..3000),
        extra in prop::collection::vec(0..4000usize, 0..100),
        removed in prop::collection::vec(0..4000usize, 0..100),
        keys in prop::collection::vec(target(), 1..8),
        n in 0..60usize,
    ) {
        let table = FullRoutingTable::new(Key::hash(b"local"), Default::default(), ManualClock::new(0));
        table.replace_all(seeds.iter().map(|s| POOL[*s].clone()), 0);
        for s in &extra {
            table.update(&POOL[*s], PeerEvent::Seen(Direction::Inbound));
        }
        for s in seeds.iter().take(50).chain(&removed) {
            table.update(&POOL[*s], PeerEvent::Removed);
        }
        let held = keyed(table.peers());
        prop_assert_eq!(held.len(), table.len());
        for key in &keys {
            prop_assert_eq!(table.closest_peers(key, n), brute_force(&held, key, n));
        }
        // A peer's own key: it comes first.
        if let Some((k, p)) = held.first() {
            prop_assert_eq!(&table.closest_peers(k, 1)[0], p);
        }
    }
}

/// The same code, generic over the trait, runs on both tables and on shared handles.
#[test]
fn one_seam_for_both_tables() {
    fn fill_and_ask(table: impl RoutingTable) -> (usize, bool, Vec<PeerInfo>) {
        for s in 0..100 {
            table.update(&peer(s), PeerEvent::Seen(Direction::Outbound));
        }
        (
            table.len(),
            table.is_complete(),
            table.closest_peers(&Key::ZERO, 5),
        )
    }
    let local = Key::hash(b"local");
    let all: Vec<PeerInfo> = (0..100).map(peer).collect();
    let expected = brute_force(&keyed(all.clone()), &Key::ZERO, 5);

    let kb = Arc::new(KBucketTable::new(
        local,
        Default::default(),
        ManualClock::new(0),
    ));
    let (len, complete, closest) = fill_and_ask(kb.clone());
    assert!(len <= 100 && !complete);
    assert_eq!(closest, brute_force(&keyed(kb.peers()), &Key::ZERO, 5));

    let full = FullRoutingTable::new(local, Default::default(), ManualClock::new(0));
    assert_eq!(fill_and_ask(&full), (100, false, expected.clone()));
    full.replace_all(all, 0);
    let shared: Box<dyn RoutingTable> = Box::new(full);
    assert!(shared.is_complete());
    assert_eq!(shared.closest_peers(&Key::ZERO, 5), expected);
}
