//! The diversity filter's limits are never exceeded, whatever a random sequence of sightings,
//! failures, removals and address changes does to a `KBucketTable`; counted from the outside,
//! through the public API.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use dht_proto::{Key, Multiaddr, PeerId, PeerInfo};
use dht_routing_table::{
    Direction, DiversityConfig, DiversityFilter, IpGroup, KBucketConfig, KBucketTable, ManualClock,
    PeerEvent, RoutingTable,
};
use dht_test_kit::peer_id;
use proptest::prelude::*;

const POOL: usize = 64;

/// Few groups, so the limits bite: loopback, private, a name, and public /24s and /48s; a
/// peer may list two addresses in different groups.
fn addr(g: u8) -> Multiaddr {
    let s = match g {
        0 => "/ip4/127.0.0.1/tcp/1".to_string(),
        1 => "/ip4/192.168.1.9/tcp/1".to_string(),
        2 => "/dns4/example.com/tcp/1".to_string(),
        3 => "/ip6/2001:db8:1:2::9/udp/1/quic-v1".to_string(),
        4 => "/ip6/2001:db8:1:ff::1/tcp/1".to_string(), // same /48 as 3
        g => format!("/ip4/198.51.{}.{g}/tcp/1", g % 4),
    };
    s.parse().expect("valid multiaddr")
}

#[derive(Clone, Debug)]
enum Op {
    Seen(usize, bool, Vec<u8>),
    Failed(usize),
    Removed(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..POOL, any::<bool>(), prop::collection::vec(0..12u8, 0..3))
            .prop_map(|(p, out, g)| Op::Seen(p, out, g)),
        1 => (0..POOL).prop_map(Op::Failed),
        1 => (0..POOL).prop_map(Op::Removed),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn limits_are_never_exceeded(
        per_bucket in 1..4usize,
        per_table in 1..6usize,
        local_network in any::<bool>(),
        k in 1..30usize,
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let diversity = DiversityConfig::default()
            .with_max_per_bucket(per_bucket)
            .with_max_per_table(per_table)
            .with_local_network(local_network);
        let local = Key::hash(b"local");
        let config = KBucketConfig::default().with_bucket_size(k).with_diversity(Some(diversity));
        let table = KBucketTable::new(local, config, ManualClock::new(0));
        let ids: Vec<PeerId> = (0..POOL as u64).map(peer_id).collect();
        // Groups as an independent filter computes them.
        let grouper = DiversityFilter::new(diversity);
        for op in ops {
            match op {
                Op::Seen(i, out, groups) => {
                    let dir = if out { Direction::Outbound } else { Direction::Inbound };
                    let p = PeerInfo::new(ids[i], groups.into_iter().map(addr).collect());
                    table.update(&p, PeerEvent::Seen(dir));
                }
                Op::Failed(i) => {
                    table.update(&PeerInfo::new(ids[i], vec![]), PeerEvent::Failed);
                }
                Op::Removed(i) => {
                    table.update(&PeerInfo::new(ids[i], vec![]), PeerEvent::Removed);
                }
            }
            let mut in_bucket: HashMap<(usize, IpGroup), usize> = HashMap::new();
            let mut in_table: HashMap<IpGroup, usize> = HashMap::new();
            for p in table.peers() {
                let cpl = local.common_prefix_len(&p.key());
                for g in grouper.groups(&p.addrs) {
                    *in_bucket.entry((cpl, g)).or_default() += 1;
                    *in_table.entry(g).or_default() += 1;
                }
            }
            prop_assert!(in_bucket.values().all(|&n| n <= per_bucket), "{in_bucket:?}");
            prop_assert!(in_table.values().all(|&n| n <= per_table), "{in_table:?}");
            prop_assert!((0..256).all(|cpl| table.bucket_len(cpl) <= k));
        }
    }
}
