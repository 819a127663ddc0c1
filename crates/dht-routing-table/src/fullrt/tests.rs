use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::{Direction, ManualClock};
use dht_proto::Prefix;
use dht_test_kit::peer_with;

const T0: UnixSecs = dht_test_kit::EPOCH;

/// Peers made once (hashing peer ids is slow in debug builds), with their keys.
static POOL: std::sync::LazyLock<Vec<(Key, PeerInfo)>> = std::sync::LazyLock::new(|| {
    (0..1500u64)
        .map(|s| peer_with(s, &[]))
        .map(|p| (p.key(), p))
        .collect()
});

fn table(config: FullRtConfig) -> (FullRoutingTable, ManualClock) {
    let clock = ManualClock::new(T0);
    (
        FullRoutingTable::new(Key::ZERO, config, clock.clone()),
        clock,
    )
}

fn brute_force(peers: &[PeerInfo], key: &Key, n: usize) -> Vec<PeerInfo> {
    let mut v = peers.to_vec();
    v.sort_by_key(|p| key.distance(&p.key()));
    v.truncate(n);
    v
}

const OUT: PeerEvent = PeerEvent::Seen(Direction::Outbound);

#[test]
fn replace_all_dedups_and_skips_local() {
    let me = peer_with(0, &[]);
    let t = FullRoutingTable::new(me.key(), FullRtConfig::default(), ManualClock::new(T0));
    let crawl = vec![
        peer_with(1, &["/ip4/1.1.1.1/tcp/1"]),
        me.clone(),
        peer_with(2, &[]),
        peer_with(1, &["/ip4/2.2.2.2/tcp/1"]), // later occurrence wins
    ];
    assert_eq!(t.replace_all(crawl, T0), 2);
    assert_eq!(t.last_filled(), Some(T0));
    let stored: Vec<PeerInfo> = t.peers();
    let p1 = stored
        .iter()
        .find(|p| p.peer_id == peer_with(1, &[]).peer_id)
        .expect("peer 1");
    assert_eq!(
        p1.addrs,
        vec!["/ip4/2.2.2.2/tcp/1".parse::<Multiaddr>().expect("addr")]
    );
    assert!(!t.contains(&me.peer_id));
    assert_eq!(
        t.update(&me, OUT),
        UpdateOutcome::Rejected(RejectReason::LocalPeer)
    );
    t.check_invariants().expect("invariants");
}

#[test]
fn completeness() {
    // (peers filled, seconds since the fill, complete?)
    let check = |config: FullRtConfig, filled: Option<usize>, after: u64, expected: bool| {
        let (t, clock) = table(config.clone());
        if let Some(n) = filled {
            t.replace_all((0..n as u64).map(|s| peer_with(s, &[])), T0);
        }
        clock.advance(after);
        assert_eq!(
            t.is_complete(),
            expected,
            "{config:?} filled {filled:?} after {after}"
        );
        assert_eq!(t.is_complete_at(T0 + after), expected);
    };
    let d = FullRtConfig::default();
    check(d.clone(), None, 0, false);
    check(d.clone(), Some(0), 0, false);
    check(d.clone(), Some(19), 0, false);
    check(d.clone(), Some(20), 0, true);
    check(d.clone(), Some(20), 7200, true);
    check(d.clone(), Some(20), 7201, false);
    check(d.clone().with_min_peers(0), Some(0), 0, false);
    check(d.clone().with_min_peers(0), Some(1), 0, true);
    check(d.with_freshness(10), Some(50), 11, false);
}

#[test]
fn updates_between_crawls() {
    let (t, _) = table(FullRtConfig::default());
    let p = peer_with(1, &["/ip4/1.1.1.1/tcp/1"]);
    assert_eq!(t.update(&p, OUT), UpdateOutcome::Inserted);
    assert_eq!(
        t.update(&p, PeerEvent::Seen(Direction::Inbound)),
        UpdateOutcome::Updated
    );
    let moved = peer_with(1, &["/ip4/3.3.3.3/tcp/1"]);
    assert_eq!(t.update(&moved, OUT), UpdateOutcome::Updated);
    assert_eq!(t.peers(), vec![moved.clone()]);
    assert_eq!(t.update(&peer_with(1, &[]), OUT), UpdateOutcome::Updated);
    assert_eq!(
        t.peers(),
        vec![moved],
        "an empty address list keeps the known addresses"
    );
    assert_eq!(t.update(&p, PeerEvent::Unreachable), UpdateOutcome::Removed);
    assert_eq!(t.update(&p, PeerEvent::Removed), UpdateOutcome::Ignored);
    assert!(t.is_empty());
    assert!(t.closest_peers(&Key::ZERO, 20).is_empty());
    assert_eq!(t.last_filled(), None, "single updates are not a fill");
}

#[test]
fn chunks_split_and_vanish() {
    let (t, _) = table(FullRtConfig::default());
    let peers: Vec<PeerInfo> = (0..2000).map(|s| peer_with(s, &[])).collect();
    t.replace_all(peers[..300].to_vec(), T0);
    for p in &peers[300..] {
        assert_eq!(t.update(p, OUT), UpdateOutcome::Inserted);
    }
    t.check_invariants().expect("invariants after inserts");
    assert!(t.inner.read().store.chunks.len() > 2000 / CHUNK_MAX);
    let key = Key::hash(b"target");
    assert_eq!(t.closest_peers(&key, 20), brute_force(&peers, &key, 20));
    for p in &peers[..1990] {
        assert_eq!(t.update(p, PeerEvent::Removed), UpdateOutcome::Removed);
    }
    t.check_invariants().expect("invariants after removals");
    assert_eq!(t.len(), 10);
    assert_eq!(
        t.closest_peers(&key, 20),
        brute_force(&peers[1990..], &key, 20)
    );
    assert!(t.heap_size_estimate() > 0);
}

// ---- Property tests on the store, with keys chosen freely ----

/// Keys clustered around a few centres with random shared-prefix lengths, so the descent
/// meets lopsided splits, long shared prefixes and the target's own key.
fn clustered_key(centres: &[Key]) -> impl Strategy<Value = Key> + use<> {
    let centres = centres.to_vec();
    (0..centres.len(), 0..=256usize, any::<[u8; 32]>()).prop_map(move |(c, len, suffix)| {
        Prefix::new(&centres[c], len).key_with_suffix(&Key::from_bytes(suffix))
    })
}

fn centres() -> Vec<Key> {
    vec![Key::ZERO, Key::MAX, Key::hash(b"a"), Key::hash(b"b")]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The prefix descent returns exactly the brute-force answer, for any key distribution.
    #[test]
    fn store_closest_matches_brute_force(
        keys in prop::collection::vec(clustered_key(&centres()), 0..700),
        targets in prop::collection::vec(clustered_key(&centres()), 1..6),
        n in 0..50usize,
        inserts in prop::collection::vec(clustered_key(&centres()), 0..300),
    ) {
        // Payload peers are arbitrary; map them back to their keys.
        let mut by_peer: HashMap<PeerId, Key> = HashMap::new();
        let mut entries: Vec<(Key, PeerInfo)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let p = POOL[i].1.clone();
            by_peer.insert(p.peer_id, *k);
            entries.push((*k, p));
        }
        entries.sort_by_key(|a| a.0);
        entries.dedup_by(|a, b| a.0 == b.0);
        let mut store = Store::from_sorted(entries);
        for (i, k) in inserts.iter().enumerate() {
            let p = POOL[1000 + i].1.clone();
            if store.upsert(*k, &p) {
                by_peer.insert(p.peer_id, *k);
            }
        }
        let mut all: Vec<Key> = store.iter().map(|e| e.0).collect();
        prop_assert_eq!(all.len(), store.len);
        for t in targets {
            let got: Vec<Key> = store.closest(&t, n).iter().map(|p| by_peer[&p.peer_id]).collect();
            all.sort_by_cached_key(|k| t.distance(k));
            let expected: Vec<Key> = all.iter().take(n).copied().collect();
            prop_assert_eq!(got, expected);
        }
    }

    /// `Words` round-trips, orders like the key, its XOR like the distance, and its prefix
    /// bounds enclose exactly the keys sharing the prefix.
    #[test]
    fn words_follow_the_key(a: [u8; 32], b: [u8; 32], c: [u8; 32], len in 0..=256usize, share in 0..=256usize) {
        let (a, b) = (Key::from_bytes(a), Key::from_bytes(b));
        let c = Prefix::new(&a, share).key_with_suffix(&Key::from_bytes(c));
        let (wa, wb, wc) = (Words::of(&a), Words::of(&b), Words::of(&c));
        prop_assert_eq!(wa.key(), a);
        prop_assert_eq!(wa.cmp(&wb), a.cmp(&b));
        prop_assert_eq!(wa.cmp(&wc), a.cmp(&c));
        prop_assert_eq!(wa.xor(wb).cmp(&wa.xor(wc)), a.distance(&b).cmp(&a.distance(&c)));
        let (low, high) = (wa.prefix(len), wa.prefix_max(len));
        for (w, k) in [(wa, a), (wb, b), (wc, c)] {
            prop_assert_eq!(low <= w && w <= high, a.common_prefix_len(&k) >= len);
        }
        if len < 256 {
            prop_assert_eq!(wa.bit(len), a.bit(len));
            prop_assert_eq!(low.with_bit(len), Words::of(&Prefix::new(&a, len).key_with_suffix(&Key::MAX)).prefix(len + 1));
        }
    }

    /// Random inserts and removals keep the chunk invariants.
    #[test]
    fn store_invariants_hold(ops in prop::collection::vec((any::<bool>(), 0..600u64), 0..1500)) {
        let mut store = Store::default();
        let mut expected = std::collections::BTreeSet::new();
        for (insert, seed) in ops {
            let (key, p) = &POOL[seed as usize];
            if insert {
                prop_assert_eq!(store.upsert(*key, p), expected.insert(*key));
            } else {
                prop_assert_eq!(store.remove(key).is_some(), expected.remove(key));
            }
        }
        let checked = store.check_invariants(true);
        prop_assert!(checked.is_ok(), "{:?}", checked);
        let keys: Vec<Key> = store.iter().map(|e| e.0).collect();
        prop_assert_eq!(&keys, &expected.into_iter().collect::<Vec<_>>());
        for (k, _) in POOL.iter().take(600) {
            prop_assert_eq!(store.rank(k), keys.partition_point(|x| x < k));
        }
    }
}

/// Five keys share 8 bits with the target, a thousand share none: the descent takes the five
/// whole and continues in the far half, and the answer is still exact.
#[test]
fn lopsided_keys_take_the_near_half_whole() {
    let near = Prefix::new(&Key::ZERO, 8);
    let far = Prefix::new(&Key::MAX, 1);
    let mut by_peer = HashMap::new();
    let mut entries: Vec<(Key, PeerInfo)> = (0..1005u64)
        .map(|i| {
            let region = if i < 5 { near } else { far };
            let key = region.key_with_suffix(&Key::hash(&i.to_le_bytes()));
            let p = peer_with(i, &[]);
            by_peer.insert(p.peer_id, key);
            (key, p)
        })
        .collect();
    entries.sort_by_key(|e| e.0);
    let mut all: Vec<Key> = entries.iter().map(|e| e.0).collect();
    let store = Store::from_sorted(entries);
    store.check_invariants(false).expect("invariants");
    for target in [Key::ZERO, Key::MAX, Key::hash(b"t")] {
        let got: Vec<Key> = store
            .closest(&target, 20)
            .iter()
            .map(|p| by_peer[&p.peer_id])
            .collect();
        all.sort_by_key(|k| target.distance(k));
        assert_eq!(got, all[..20].to_vec(), "target {target}");
    }
}

/// Readers query while crawls replace the table: every answer is the exact answer of one of
/// the two crawls, never a mix.
#[test]
fn readers_see_whole_crawls() {
    let (t, _) = table(FullRtConfig::default());
    let crawl_a: Vec<PeerInfo> = POOL[..700].iter().map(|e| e.1.clone()).collect();
    let crawl_b: Vec<PeerInfo> = POOL[700..].iter().map(|e| e.1.clone()).collect();
    t.replace_all(crawl_a.clone(), T0);
    let targets: Vec<Key> = (0..64u64).map(|i| Key::hash(&i.to_le_bytes())).collect();
    let answers = |crawl: &[PeerInfo]| -> Vec<Vec<PeerInfo>> {
        targets.iter().map(|k| brute_force(crawl, k, 20)).collect()
    };
    let (expect_a, expect_b) = (answers(&crawl_a), answers(&crawl_b));
    let t = &t;
    std::thread::scope(|s| {
        for r in 0..3 {
            let (targets, expect_a, expect_b) = (&targets, &expect_a, &expect_b);
            s.spawn(move || {
                for i in 0..600 {
                    let j = (i * 7 + r) % targets.len();
                    let got = t.closest_peers(&targets[j], 20);
                    assert!(got == expect_a[j] || got == expect_b[j], "a mixed answer");
                }
            });
        }
        s.spawn(|| {
            for i in 0..20 {
                let crawl = if i % 2 == 0 { &crawl_b } else { &crawl_a };
                t.replace_all(crawl.clone(), T0 + i);
            }
        });
    });
    t.check_invariants().expect("invariants");
}

#[test]
fn a_request_sent_to_us_admits_nobody() {
    let (t, _) = table(FullRtConfig::default());
    let p = &POOL[0].1;
    assert_eq!(
        t.update(p, PeerEvent::Seen(Direction::Inbound)),
        UpdateOutcome::Ignored
    );
    assert_eq!(t.len(), 0);
    assert_eq!(
        t.update(p, PeerEvent::Seen(Direction::Outbound)),
        UpdateOutcome::Inserted
    );
    assert_eq!(
        t.update(p, PeerEvent::Seen(Direction::Inbound)),
        UpdateOutcome::Updated
    );
}

#[test]
fn the_table_is_bounded_in_peers_and_per_ip_group() {
    let (t, _) = table(
        FullRtConfig::default()
            .with_max_peers(10)
            .with_max_per_group(3),
    );
    let out = PeerEvent::Seen(Direction::Outbound);
    // Five peers of one /24: three fit.
    let same: Vec<UpdateOutcome> = (0..5u64)
        .map(|s| {
            t.update(
                &peer_with(10_000 + s, &[&format!("/ip4/203.0.113.{s}/tcp/1")]),
                out,
            )
        })
        .collect();
    let group = IpGroup::of("203.0.113.0".parse().expect("ip"));
    assert_eq!(
        same.iter()
            .filter(|o| **o == UpdateOutcome::Inserted)
            .count(),
        3
    );
    assert_eq!(
        same[3],
        UpdateOutcome::Rejected(RejectReason::TableDiversity { group })
    );
    // Peers of other groups fill the table up to ten, then are refused.
    let others: Vec<UpdateOutcome> = (0..10u64)
        .map(|s| {
            t.update(
                &peer_with(20_000 + s, &[&format!("/ip4/198.51.{s}.1/tcp/1")]),
                out,
            )
        })
        .collect();
    assert_eq!(t.len(), 10);
    assert_eq!(others[7], UpdateOutcome::Rejected(RejectReason::TableFull));
    // A removal frees a place in the group.
    t.update(&peer_with(10_000, &[]), PeerEvent::Removed);
    assert_eq!(
        t.update(&peer_with(10_004, &["/ip4/203.0.113.4/tcp/1"]), out),
        UpdateOutcome::Inserted
    );
    // A crawl is bounded the same way, and keeps an even sample of what it found.
    let crawl: Vec<PeerInfo> = POOL[..100].iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(t.replace_all(crawl.clone(), T0), 10);
    let mut keys: Vec<Key> = crawl.iter().map(PeerInfo::key).collect();
    keys.sort();
    let kept: Vec<Key> = t.peers().iter().map(PeerInfo::key).collect();
    assert!(
        kept[0] < keys[10] && kept[9] > keys[89],
        "spread over the keyspace"
    );
    let grouped: Vec<PeerInfo> = (0..10u64)
        .map(|s| peer_with(30_000 + s, &["/ip4/192.0.2.1/tcp/1"]))
        .collect();
    assert_eq!(t.replace_all(grouped, T0), 3);
    t.check_invariants().expect("invariants");
}

#[test]
fn a_timeout_counts_and_a_dial_failure_evicts() {
    let (t, _) = table(FullRtConfig::default());
    let (a, b) = (&POOL[0].1, &POOL[1].1);
    let out = PeerEvent::Seen(Direction::Outbound);
    t.update(a, out);
    t.update(b, out);
    let fail = |p| t.update(p, PeerEvent::Failed);
    assert_eq!([fail(a), fail(a)], [UpdateOutcome::Updated; 2]);
    t.update(a, out); // an answer resets the count
    assert_eq!(
        [fail(a), fail(a), fail(a)],
        [
            UpdateOutcome::Updated,
            UpdateOutcome::Updated,
            UpdateOutcome::Removed
        ]
    );
    assert_eq!(t.update(b, PeerEvent::Unreachable), UpdateOutcome::Removed);
    assert_eq!(t.len(), 0);
}
