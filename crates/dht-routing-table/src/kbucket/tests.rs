use std::collections::HashMap;

use dht_proto::Multiaddr;
use proptest::prelude::*;
use rand::{SeedableRng, rngs::SmallRng};

use super::*;
use crate::ManualClock;
use dht_test_kit::peer_with;

const LOCAL: Key = Key::ZERO;
const T0: UnixSecs = dht_test_kit::EPOCH;

/// The first `count` peers (by seed, from `from`) that fall in bucket `cpl` of `LOCAL`, each
/// with its own /24.
fn peers_in_bucket(cpl: usize, count: usize, from: u64) -> Vec<PeerInfo> {
    (from..)
        .map(|s| {
            peer_with(
                s,
                &[&format!(
                    "/ip4/{}.{}.{}.1/tcp/4001",
                    11 + s % 200,
                    (s / 200) % 256,
                    s % 256
                )],
            )
        })
        .filter(|p| LOCAL.common_prefix_len(&p.key()) == cpl)
        .take(count)
        .collect()
}

fn table(config: KBucketConfig) -> (KBucketTable, ManualClock) {
    let clock = ManualClock::new(T0);
    (KBucketTable::new(LOCAL, config, clock.clone()), clock)
}

fn invariants(t: &KBucketTable) {
    if let Err(e) = t
        .inner
        .read()
        .check_invariants(&t.local_key, &t.config, true)
    {
        panic!("invariant broken: {e}");
    }
}

const IN: PeerEvent = PeerEvent::Seen(Direction::Inbound);
const OUT: PeerEvent = PeerEvent::Seen(Direction::Outbound);

/// Runs `(peer index, event, outcome)` steps against a table with bucket size 2, cache 2, no
/// usefulness rule and no diversity filter, on peers all in bucket 0.
fn check_steps(config: KBucketConfig, steps: &[(usize, PeerEvent, UpdateOutcome)]) {
    let (t, _) = table(config);
    let peers = peers_in_bucket(0, 8, 0);
    for (i, (p, event, expected)) in steps.iter().enumerate() {
        let got = t.update(&peers[*p], *event);
        assert_eq!(got, *expected, "step {i}: peer {p} {event:?}");
        invariants(&t);
    }
}

fn small() -> KBucketConfig {
    KBucketConfig::default()
        .with_bucket_size(2)
        .with_replacement_cache_size(2)
        .with_usefulness_grace(None)
        .with_diversity(None)
        .with_max_failures(1)
}

#[test]
fn bucket_and_cache_lifecycle() {
    use UpdateOutcome::*;
    check_steps(
        small(),
        &[
            (0, IN, Ignored), // a request sent to us admits nobody
            (0, OUT, Inserted),
            (0, IN, Updated),
            (1, OUT, Inserted),
            (2, OUT, Pending), // bucket full
            (3, OUT, Pending),
            (3, IN, Ignored),                 // nor promotes a cache entry
            (2, OUT, Pending),                // seen again: now the most recent in the cache
            (4, OUT, Pending),                // cache full: drops 3, the least recently seen
            (0, PeerEvent::Failed, Removed),  // replaced by 4, the most recent
            (0, OUT, Pending),                // back, but only to the cache
            (1, PeerEvent::Removed, Removed), // replaced by 0
            (2, PeerEvent::Removed, Removed), // from the cache
            (3, PeerEvent::Removed, Ignored), // dropped from the cache earlier
            (5, PeerEvent::Failed, Ignored),
        ],
    );
}

#[test]
fn promotion_order_is_most_recent_first() {
    let (t, _) = table(small());
    let p = peers_in_bucket(0, 5, 0);
    for x in &p {
        t.update(x, OUT);
    }
    // Members 0 and 1; cache holds 3 then 4 (2 was dropped when 4 arrived).
    assert_eq!(t.replacement_len(0), 2);
    t.update(&p[0], PeerEvent::Failed);
    assert!(t.contains(&p[4].peer_id));
    t.update(&p[1], PeerEvent::Failed);
    assert!(t.contains(&p[3].peer_id));
    assert!(!t.contains(&p[2].peer_id));
    assert_eq!((t.bucket_len(0), t.replacement_len(0)), (2, 0));
    invariants(&t);
}

#[test]
fn consecutive_failures() {
    use UpdateOutcome::*;
    check_steps(
        small().with_max_failures(2),
        &[
            (0, OUT, Inserted),
            (0, PeerEvent::Failed, Updated),
            (0, IN, Updated), // success resets the count
            (0, PeerEvent::Failed, Updated),
            (0, PeerEvent::Failed, Removed),
            (0, PeerEvent::Failed, Ignored),
        ],
    );
}

#[test]
fn no_cache_rejects_newcomers_to_full_bucket() {
    use UpdateOutcome::*;
    check_steps(
        small().with_replacement_cache_size(0),
        &[
            (0, OUT, Inserted),
            (1, OUT, Inserted),
            (2, OUT, Rejected(RejectReason::BucketFull)),
        ],
    );
}

#[test]
fn usefulness_rule_replaces_the_least_recently_useful() {
    let (t, clock) = table(small().with_usefulness_grace(Some(100)));
    let p = peers_in_bucket(0, 5, 0);
    assert_eq!(t.update(&p[0], OUT), UpdateOutcome::Inserted); // useful at T0
    assert_eq!(t.update(&p[1], OUT), UpdateOutcome::Inserted); // useful at T0
    clock.advance(50);
    assert_eq!(
        t.update(&p[2], OUT),
        UpdateOutcome::Pending,
        "within the grace period"
    );
    clock.advance(30);
    t.update(&p[1], OUT); // p1 useful again at T0 + 80
    clock.advance(20); // T0 + 100: p0 is 100 s without use, p1 20 s
    assert_eq!(t.update(&p[3], OUT), UpdateOutcome::Inserted);
    assert!(!t.contains(&p[0].peer_id));
    assert!(t.contains(&p[1].peer_id) && t.contains(&p[3].peer_id));
    // p3 just joined: it has its own grace period.
    assert_eq!(t.update(&p[4], OUT), UpdateOutcome::Pending);
    invariants(&t);
}

#[test]
fn pure_kademlia_keeps_old_members() {
    let (t, clock) = table(small());
    let p = peers_in_bucket(0, 3, 0);
    t.update(&p[0], OUT);
    t.update(&p[1], OUT);
    clock.advance(1_000_000);
    assert_eq!(t.update(&p[2], OUT), UpdateOutcome::Pending);
}

#[test]
fn local_peer_is_rejected() {
    let me = peer_with(42, &[]);
    let t = KBucketTable::new(me.key(), KBucketConfig::default(), ManualClock::new(T0));
    assert_eq!(
        t.update(&me, OUT),
        UpdateOutcome::Rejected(RejectReason::LocalPeer)
    );
    assert_eq!(t.update(&me, PeerEvent::Removed), UpdateOutcome::Ignored);
    assert!(t.is_empty());
}

#[test]
fn diversity_limits_per_bucket_and_table() {
    let config = small()
        .with_bucket_size(20)
        .with_diversity(Some(DiversityConfig::default()));
    let (t, _) = table(config);
    let same = "/ip4/203.0.113.1/tcp/4001";
    let b0: Vec<PeerInfo> = peers_in_bucket(0, 3, 0)
        .into_iter()
        .map(|p| PeerInfo::new(p.peer_id, vec![same.parse().expect("addr")]))
        .collect();
    let b1: Vec<PeerInfo> = peers_in_bucket(1, 2, 0)
        .into_iter()
        .map(|p| PeerInfo::new(p.peer_id, vec![same.parse().expect("addr")]))
        .collect();
    let group = IpGroup::of("203.0.113.9".parse().expect("ip"));
    assert_eq!(t.update(&b0[0], OUT), UpdateOutcome::Inserted);
    assert_eq!(t.update(&b0[1], OUT), UpdateOutcome::Inserted);
    assert_eq!(
        t.update(&b0[2], OUT),
        UpdateOutcome::Rejected(RejectReason::BucketDiversity { group, bucket: 0 })
    );
    assert_eq!(t.update(&b1[0], OUT), UpdateOutcome::Inserted);
    assert_eq!(
        t.update(&b1[1], OUT),
        UpdateOutcome::Rejected(RejectReason::TableDiversity { group })
    );
    // A peer with no IP address is always welcome.
    let dns = PeerInfo::new(
        peers_in_bucket(0, 4, 0)[3].peer_id,
        vec!["/dns4/example.com/tcp/4001".parse().expect("addr")],
    );
    assert_eq!(t.update(&dns, OUT), UpdateOutcome::Inserted);
    // Removing one makes room again.
    t.update(&b0[0], PeerEvent::Removed);
    assert_eq!(t.update(&b1[1], OUT), UpdateOutcome::Inserted);
    invariants(&t);
}

#[test]
fn local_network_exempts_loopback() {
    let lan = DiversityConfig::default().with_local_network(true);
    for (diversity, expected_len) in [
        (Some(DiversityConfig::default()), 2),
        (Some(lan), 10),
        (None, 10),
    ] {
        let (t, _) = table(KBucketConfig::default().with_diversity(diversity));
        for p in peers_in_bucket(0, 10, 0) {
            t.update(
                &PeerInfo::new(
                    p.peer_id,
                    vec!["/ip4/127.0.0.1/tcp/4001".parse().expect("addr")],
                ),
                OUT,
            );
        }
        assert_eq!(t.len(), expected_len, "{diversity:?}");
        invariants(&t);
    }
}

#[test]
fn address_change_respects_diversity() {
    let config = small()
        .with_bucket_size(20)
        .with_diversity(Some(DiversityConfig::default()));
    let (t, _) = table(config);
    let p = peers_in_bucket(0, 3, 0);
    let crowded: Multiaddr = "/ip4/203.0.113.1/tcp/1".parse().expect("addr");
    t.update(&PeerInfo::new(p[0].peer_id, vec![crowded.clone()]), OUT);
    t.update(&PeerInfo::new(p[1].peer_id, vec![crowded.clone()]), OUT);
    t.update(&p[2], OUT);
    // p2 moves into the crowded group: refused, its old address is kept.
    assert_eq!(
        t.update(&PeerInfo::new(p[2].peer_id, vec![crowded.clone()]), OUT),
        UpdateOutcome::Updated
    );
    let stored = t
        .peers()
        .into_iter()
        .find(|x| x.peer_id == p[2].peer_id)
        .expect("p2 is a member");
    assert_eq!(stored.addrs, p[2].addrs);
    // p0 moves out of it: accepted, and p2 may now move in.
    t.update(
        &PeerInfo::new(
            p[0].peer_id,
            vec!["/ip4/198.51.100.1/tcp/1".parse().expect("addr")],
        ),
        OUT,
    );
    t.update(&PeerInfo::new(p[2].peer_id, vec![crowded.clone()]), OUT);
    let stored = t
        .peers()
        .into_iter()
        .find(|x| x.peer_id == p[2].peer_id)
        .expect("p2 is a member");
    assert_eq!(stored.addrs, vec![crowded]);
    // An empty address list keeps the known addresses.
    t.update(&PeerInfo::new(p[2].peer_id, vec![]), IN);
    assert_eq!(
        t.peers()
            .into_iter()
            .find(|x| x.peer_id == p[2].peer_id)
            .map(|x| x.addrs.len()),
        Some(1)
    );
    invariants(&t);
}

#[test]
fn refresh_bookkeeping() {
    let (t, _) = table(KBucketConfig::default());
    assert_eq!(
        t.stale_buckets(T0),
        vec![0],
        "an empty table refreshes bucket 0"
    );
    for p in peers_in_bucket(3, 1, 0) {
        t.update(&p, OUT);
    }
    assert_eq!(t.max_cpl(), Some(3));
    assert_eq!(t.stale_buckets(T0), vec![0, 1, 2, 3]);
    t.mark_refreshed(1, T0);
    let mut rng = SmallRng::seed_from_u64(1);
    let key = t.random_key_with_cpl(2, &mut rng).expect("cpl in range");
    t.record_lookup(&key, T0 + 100);
    assert_eq!(t.stale_buckets(T0 + 100), vec![0, 3]);
    assert_eq!(t.stale_buckets(T0 + 599), vec![0, 3]);
    assert_eq!(t.stale_buckets(T0 + 600), vec![0, 1, 3]);
    assert_eq!(t.stale_buckets(T0 + 700), vec![0, 1, 2, 3]);
    // Out-of-range CPLs are ignored, not a panic.
    t.mark_refreshed(300, T0);
    t.record_lookup(&LOCAL, T0);
}

#[test]
fn random_keys_have_the_requested_cpl() {
    let (t, _) = table(KBucketConfig::default());
    let mut rng = SmallRng::seed_from_u64(7);
    for cpl in 0..KEY_BITS {
        let key = t.random_key_with_cpl(cpl, &mut rng).expect("cpl in range");
        assert_eq!(LOCAL.common_prefix_len(&key), cpl);
    }
    assert_eq!(
        t.random_key_with_cpl(256, &mut rng),
        Err(Error::CplOutOfRange(256))
    );
    // The suffix is random: two keys of a low CPL differ.
    let a = t.random_key_with_cpl(10, &mut rng).expect("in range");
    let b = t.random_key_with_cpl(10, &mut rng).expect("in range");
    assert_ne!(a, b);
}

#[test]
fn closest_walks_buckets_in_distance_order() {
    let (t, _) = table(KBucketConfig::default().with_diversity(None));
    let mut all = Vec::new();
    for cpl in 0..6 {
        all.extend(peers_in_bucket(cpl, 5, 0));
    }
    for p in &all {
        t.update(p, OUT);
    }
    let mut rng = SmallRng::seed_from_u64(3);
    for cpl in 0..8 {
        let key = t.random_key_with_cpl(cpl, &mut rng).expect("in range");
        for n in [0, 1, 5, 7, 12, 30, 100] {
            assert_eq!(
                t.closest_peers(&key, n),
                brute_force(&all, &key, n),
                "cpl {cpl} n {n}"
            );
        }
    }
    assert_eq!(t.closest_peers(&LOCAL, 9), brute_force(&all, &LOCAL, 9));
}

fn brute_force(peers: &[PeerInfo], key: &Key, n: usize) -> Vec<PeerInfo> {
    let mut v = peers.to_vec();
    v.sort_by_key(|p| key.distance(&p.key()));
    v.truncate(n);
    v
}

// ---- Property tests ----

#[derive(Clone, Debug)]
enum Op {
    Seen(usize, bool),
    Failed(usize),
    Removed(usize),
    NewAddr(usize, u8),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..POOL, any::<bool>()).prop_map(|(p, out)| Op::Seen(p, out)),
        2 => (0..POOL).prop_map(Op::Failed),
        1 => (0..POOL).prop_map(Op::Removed),
        1 => (0..POOL, 0..6u8).prop_map(|(p, g)| Op::NewAddr(p, g)),
        1 => (0..200u64).prop_map(Op::Advance),
    ]
}

const POOL: usize = 48;

/// Addresses drawn from few /24s (some loopback), so the diversity limits bite.
fn pool_addr(g: u8) -> Multiaddr {
    let s = match g {
        0 => "/ip4/127.0.0.1/tcp/1".to_string(),
        1 => "/dns4/example.com/tcp/1".to_string(),
        g => format!("/ip4/203.0.{g}.{}/tcp/1", g * 3),
    };
    s.parse().expect("valid multiaddr")
}

fn config_strategy() -> impl Strategy<Value = KBucketConfig> {
    (
        1..5usize,
        0..4usize,
        1..3u32,
        prop::option::of(50..400u64),
        prop::option::of((1..4usize, 1..6usize, any::<bool>())),
    )
        .prop_map(|(k, cache, failures, grace, div)| {
            KBucketConfig::default()
                .with_bucket_size(k)
                .with_replacement_cache_size(cache)
                .with_max_failures(failures)
                .with_usefulness_grace(grace)
                .with_diversity(div.map(|(b, t, lan)| {
                    DiversityConfig::default()
                        .with_max_per_bucket(b)
                        .with_max_per_table(t)
                        .with_local_network(lan)
                }))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Bucket invariants (size, cache only beside a full bucket, right bucket, no duplicate,
    /// length, diversity counts and limits) hold after every step of a random sequence; and
    /// outcomes agree with membership.
    #[test]
    fn invariants_hold_after_random_ops(
        config in config_strategy(),
        addr_groups in prop::collection::vec(0..6u8, POOL),
        ops in prop::collection::vec(op(), 1..250),
    ) {
        let (t, clock) = table(config);
        let mut peers: Vec<PeerInfo> = (0..POOL as u64)
            .map(|s| {
                let mut p = peer_with(s, &[]);
                p.addrs = vec![pool_addr(addr_groups[s as usize])];
                p
            })
            .collect();
        for op in ops {
            match op {
                Op::Seen(i, out) => {
                    let dir = if out { Direction::Outbound } else { Direction::Inbound };
                    let was = t.contains(&peers[i].peer_id);
                    let outcome = t.update(&peers[i], PeerEvent::Seen(dir));
                    match outcome {
                        UpdateOutcome::Inserted => prop_assert!(!was && t.contains(&peers[i].peer_id)),
                        UpdateOutcome::Updated => prop_assert!(was),
                        UpdateOutcome::Ignored => prop_assert!(!was && !out),
                        UpdateOutcome::Pending | UpdateOutcome::Rejected(_) => {
                            prop_assert!(!was && !t.contains(&peers[i].peer_id))
                        }
                        other => prop_assert!(false, "unexpected {other:?}"),
                    }
                }
                Op::Failed(i) => {
                    let outcome = t.update(&peers[i], PeerEvent::Failed);
                    if outcome == UpdateOutcome::Removed {
                        prop_assert!(!t.contains(&peers[i].peer_id));
                    }
                }
                Op::Removed(i) => {
                    t.update(&peers[i], PeerEvent::Removed);
                    prop_assert!(!t.contains(&peers[i].peer_id));
                }
                Op::NewAddr(i, g) => {
                    peers[i].addrs = vec![pool_addr(g)];
                }
                Op::Advance(s) => clock.advance(s),
            }
            let checked = t.inner.read().check_invariants(&t.local_key, &t.config, false);
            prop_assert!(checked.is_ok(), "{:?}", checked);
        }
        let checked = t.inner.read().check_invariants(&t.local_key, &t.config, true);
        prop_assert!(checked.is_ok(), "{:?}", checked);
        let members = t.peers();
        prop_assert_eq!(members.len(), t.len());
        let mut rng = SmallRng::seed_from_u64(5);
        for cpl in 0..10 {
            let key = t.random_key_with_cpl(cpl, &mut rng).expect("in range");
            prop_assert_eq!(t.closest_peers(&key, 7), brute_force(&members, &key, 7));
        }
    }
}

#[test]
fn concurrent_readers_and_writers() {
    let t = std::sync::Arc::new(table(KBucketConfig::default().with_diversity(None)).0);
    let peers: Vec<PeerInfo> = (0..2000).map(|s| peer_with(s, &[])).collect();
    std::thread::scope(|s| {
        for r in 0..3u64 {
            let t = t.clone();
            s.spawn(move || {
                for i in 0..2000u64 {
                    let got = t.closest_peers(&Key::hash(&(r * 10_000 + i).to_le_bytes()), 20);
                    assert!(got.len() <= 20);
                }
            });
        }
        let t = t.clone();
        let peers = &peers;
        s.spawn(move || {
            for p in peers {
                t.update(p, OUT);
            }
        });
    });
    invariants(&t);
    let counts: HashMap<usize, usize> = (0..KEY_BITS).map(|c| (c, t.bucket_len(c))).collect();
    assert_eq!(counts.values().sum::<usize>(), t.len());
}

/// An [`AddressBook`](crate::AddressBook) over a fixed map.
#[derive(Default)]
struct Book(parking_lot::Mutex<HashMap<PeerId, crate::Observed>>);

impl Book {
    fn connect(&self, peer: &PeerInfo, ip: &str, listen: &[&str]) {
        self.0.lock().insert(
            peer.peer_id,
            crate::Observed {
                remote_ip: ip.parse().expect("ip"),
                listen_addrs: listen.iter().map(|a| a.parse().expect("addr")).collect(),
            },
        );
    }
}

impl crate::AddressBook for Book {
    fn observed(&self, peer: &PeerId) -> Option<crate::Observed> {
        self.0.lock().get(peer).cloned()
    }
}

#[test]
fn a_request_sent_to_us_admits_nobody() {
    let (t, _) = table(KBucketConfig::default());
    let p = &peers_in_bucket(0, 1, 0)[0];
    assert_eq!(t.update(p, IN), UpdateOutcome::Ignored);
    assert!(t.is_empty());
    assert_eq!(t.update(p, OUT), UpdateOutcome::Inserted);
    assert_eq!(t.update(p, IN), UpdateOutcome::Updated);
    invariants(&t);
}

#[test]
fn peers_are_grouped_by_the_ip_they_connect_from() {
    let book = Arc::new(Book::default());
    let (t, _) = table(KBucketConfig::default());
    let t = t.with_address_book(book.clone());
    // Three peers of one bucket connect from one /24, each claiming another /24, or only
    // a DNS name: the connection decides, so two fit in the bucket (the default limit).
    let peers = peers_in_bucket(0, 3, 0);
    let claims = [
        "/ip4/198.51.100.1/tcp/4001",
        "/ip4/192.0.2.1/tcp/4001",
        "/dns4/example.com/tcp/4001",
    ];
    let mut outcomes = Vec::new();
    for (i, (p, claim)) in peers.iter().zip(claims).enumerate() {
        book.connect(p, &format!("203.0.113.{}", i + 1), &[claim]);
        outcomes.push(t.update(p, OUT));
    }
    let group = IpGroup::of("203.0.113.1".parse().expect("ip"));
    assert_eq!(
        outcomes,
        [
            UpdateOutcome::Inserted,
            UpdateOutcome::Inserted,
            UpdateOutcome::Rejected(RejectReason::BucketDiversity { group, bucket: 0 })
        ]
    );
    invariants(&t);
}

#[test]
fn only_addresses_a_peer_gave_about_itself_are_kept_and_capped() {
    let book = Arc::new(Book::default());
    let (t, _) = table(KBucketConfig::default());
    let t = t.with_address_book(book.clone());
    let peers = peers_in_bucket(0, 3, 0);
    let third_party = |p: &PeerInfo| {
        let mut p = p.clone();
        p.addrs = vec![
            "/ip4/192.0.2.9/tcp/1".parse().expect("addr"),
            "/ip4/203.0.113.5/tcp/4001".parse().expect("addr"),
        ];
        p
    };
    // Not connected: nothing first-hand, not added.
    assert_eq!(
        t.update(&third_party(&peers[0]), OUT),
        UpdateOutcome::Ignored
    );
    // Connected, nothing announced yet: only the listed address at its connection's IP.
    book.connect(&peers[0], "203.0.113.5", &[]);
    assert_eq!(
        t.update(&third_party(&peers[0]), OUT),
        UpdateOutcome::Inserted
    );
    // Announced: its own addresses, at most MAX_PEER_ADDRS of them.
    let own: Vec<String> = (0..20)
        .map(|i| format!("/ip4/203.0.113.6/tcp/{i}"))
        .collect();
    let own: Vec<&str> = own.iter().map(String::as_str).collect();
    book.connect(&peers[1], "203.0.113.6", &own);
    assert_eq!(
        t.update(&third_party(&peers[1]), OUT),
        UpdateOutcome::Inserted
    );
    let kept: HashMap<PeerId, Vec<Multiaddr>> = t
        .peers()
        .into_iter()
        .map(|p| (p.peer_id, p.addrs))
        .collect();
    assert_eq!(
        kept[&peers[0].peer_id],
        vec![
            "/ip4/203.0.113.5/tcp/4001"
                .parse::<Multiaddr>()
                .expect("addr")
        ]
    );
    let expected: Vec<Multiaddr> = own[..crate::MAX_PEER_ADDRS]
        .iter()
        .map(|a| a.parse().expect("addr"))
        .collect();
    assert_eq!(kept[&peers[1].peer_id], expected);
    // Without a book, addresses are capped too.
    let (plain, _) = table(KBucketConfig::default().with_diversity(None));
    let mut many = peers[2].clone();
    many.addrs = expected.iter().chain(&expected).cloned().collect();
    plain.update(&many, OUT);
    assert_eq!(plain.peers()[0].addrs.len(), crate::MAX_PEER_ADDRS);
    invariants(&t);
}

#[test]
fn a_timeout_counts_and_a_dial_failure_evicts() {
    use UpdateOutcome::*;
    // The defaults: three failed requests in a row on a live connection, or one dial failure.
    check_steps(
        small().with_max_failures(KBucketConfig::default().max_failures),
        &[
            (0, OUT, Inserted),
            (0, PeerEvent::Failed, Updated),
            (0, PeerEvent::Failed, Updated),
            (0, OUT, Updated), // an answer resets the count
            (0, PeerEvent::Failed, Updated),
            (0, PeerEvent::Failed, Updated),
            (0, PeerEvent::Failed, Removed),
            (1, OUT, Inserted),
            (1, PeerEvent::Unreachable, Removed),
            (1, PeerEvent::Unreachable, Ignored),
        ],
    );
}
