//! One conformance suite, run against every implementation: `MemoryStore`, `RocksStore` with
//! its provider cache, and `RocksStore` without it. A model-based property test then checks
//! that RocksStore and MemoryStore agree on random operation sequences.
#![allow(clippy::unwrap_used)] // the suite's shared checks are plain functions called from tests

mod common;

use common::{H, T0, addr, dht_key, mh, peer_id, rec, summary};
use dht_proto::{
    Key, PROVIDER_ADDR_TTL_SECS, PROVIDER_RECORD_TTL_SECS, Prefix, Record, VALUE_RECORD_TTL_SECS,
};
use dht_provider_store::{
    Config, GroupWriter, Keystore, MemoryStore, Multihash, ProviderStore, RocksStore, SourceGroup,
    ValueStore, WriterConfig,
};

/// What the suite needs of a store.
trait Stores: ProviderStore + ValueStore + Keystore {}
impl<T: ProviderStore + ValueStore + Keystore> Stores for T {}

mod suite {
    use super::*;

    /// The providers of key `k` at `now`, sorted.
    fn sorted_peers(s: &impl Stores, k: u64, now: u64) -> Vec<dht_proto::PeerId> {
        let providers = s.providers(&dht_key(k), 20, now).unwrap();
        sorted(summary(&providers).into_iter().map(|(p, _)| p).collect())
    }

    fn sorted(mut v: Vec<dht_proto::PeerId>) -> Vec<dht_proto::PeerId> {
        v.sort();
        v
    }

    pub(crate) fn providers_read_back(s: &impl Stores) {
        s.add_providers(&[rec(1, 1, T0), rec(1, 2, T0 + 10), rec(2, 3, T0)])
            .unwrap();
        let now = T0 + 20;
        assert_eq!(
            s.providers(&dht_key(1), 20, now).unwrap(),
            vec![rec(1, 2, T0 + 10), rec(1, 1, T0)],
            "freshest first"
        );
        assert_eq!(
            summary(&s.providers(&dht_key(1), 1, now).unwrap()),
            vec![(peer_id(2), T0 + 10)]
        );
        assert!(s.providers(&dht_key(1), 0, now).unwrap().is_empty());
        assert_eq!(
            s.providers(&dht_key(2), 20, now).unwrap(),
            vec![rec(2, 3, T0)]
        );
        assert!(s.providers(&dht_key(3), 20, now).unwrap().is_empty());
        // Empty batches are fine.
        s.add_providers(&[]).unwrap();
        // Arbitrary (non-multihash) keys work too.
        let mut odd = rec(0, 9, T0);
        odd.key = Vec::new();
        s.add_provider(&odd).unwrap();
        assert_eq!(s.providers(&[], 20, now).unwrap(), vec![odd]);
    }

    pub(crate) fn providers_expire(s: &impl Stores) {
        s.add_providers(&[rec(1, 1, T0)]).unwrap();
        let check = |offset: u64, present: bool, with_addrs: bool| {
            let got = s.providers(&dht_key(1), 20, T0 + offset).unwrap();
            assert_eq!(got.len(), usize::from(present), "at +{offset}s");
            if let Some(r) = got.first() {
                assert_eq!(r.addrs.is_empty(), !with_addrs, "addresses at +{offset}s");
                assert_eq!((r.provider, r.received_at), (peer_id(1), T0));
            }
        };
        check(0, true, true);
        check(PROVIDER_ADDR_TTL_SECS - 1, true, true);
        check(PROVIDER_ADDR_TTL_SECS, true, false);
        check(PROVIDER_RECORD_TTL_SECS - 1, true, false);
        check(PROVIDER_RECORD_TTL_SECS, false, false);
        check(10 * PROVIDER_RECORD_TTL_SECS, false, false);
        // Reads before `received_at` (clock skew) still see it.
        assert_eq!(s.providers(&dht_key(1), 20, T0 - 5).unwrap().len(), 1);
    }

    pub(crate) fn reannounce_refreshes(s: &impl Stores) {
        s.add_providers(&[rec(1, 1, T0)]).unwrap();
        let mut again = rec(1, 1, T0 + H);
        again.addrs = vec![addr(77), addr(78)];
        s.add_providers(std::slice::from_ref(&again)).unwrap();
        assert_eq!(
            s.providers(&dht_key(1), 20, T0 + H).unwrap(),
            vec![again.clone()]
        );
        // The first announcement's expiry no longer applies.
        let first_expiry = T0 + PROVIDER_RECORD_TTL_SECS;
        assert_eq!(s.providers(&dht_key(1), 20, first_expiry).unwrap().len(), 1);
        assert_eq!(s.remove_expired(first_expiry).unwrap(), 0);
        assert_eq!(s.providers(&dht_key(1), 20, first_expiry).unwrap().len(), 1);
        assert_eq!(
            s.remove_expired(T0 + H + PROVIDER_RECORD_TTL_SECS).unwrap(),
            1
        );
        assert!(s.providers(&dht_key(1), 20, T0).unwrap().is_empty());
        // The same provider twice in one batch: the last wins.
        s.add_providers(&[rec(2, 1, T0), rec(2, 1, T0 + 5)])
            .unwrap();
        assert_eq!(
            summary(&s.providers(&dht_key(2), 20, T0 + 5).unwrap()),
            vec![(peer_id(1), T0 + 5)]
        );
        assert_eq!(s.remove_expired(T0 + PROVIDER_RECORD_TTL_SECS).unwrap(), 0);
        assert_eq!(
            s.remove_expired(T0 + 5 + PROVIDER_RECORD_TTL_SECS).unwrap(),
            1
        );
    }

    /// Store opened with `max_providers_per_key = 3`.
    pub(crate) fn cap_keeps_established(s: &impl Stores) {
        s.add_providers(&[rec(1, 1, T0), rec(1, 2, T0), rec(1, 3, T0)])
            .unwrap();
        let peers = |now| sorted_peers(s, 1, now);
        // A fourth provider is refused, the established ones kept.
        s.add_providers(&[rec(1, 4, T0 + 1)]).unwrap();
        assert_eq!(
            peers(T0 + 1),
            sorted(vec![peer_id(1), peer_id(2), peer_id(3)])
        );
        // A re-announce from an established provider is accepted.
        s.add_providers(&[rec(1, 2, T0 + 2)]).unwrap();
        assert_eq!(
            summary(&s.providers(&dht_key(1), 1, T0 + 2).unwrap()),
            vec![(peer_id(2), T0 + 2)]
        );
        // Within one batch, the first ones fill the key.
        s.add_providers(&[rec(2, 5, T0), rec(2, 6, T0), rec(2, 7, T0), rec(2, 8, T0)])
            .unwrap();
        let mut got = summary(&s.providers(&dht_key(2), 20, T0).unwrap());
        got.sort();
        let mut want = vec![(peer_id(5), T0), (peer_id(6), T0), (peer_id(7), T0)];
        want.sort();
        assert_eq!(got, want);
        // Expired providers do not count toward the cap, even before they are removed.
        let later = T0 + PROVIDER_RECORD_TTL_SECS + 1;
        s.add_providers(&[rec(1, 4, later)]).unwrap();
        assert_eq!(
            summary(&s.providers(&dht_key(1), 20, later).unwrap()),
            vec![(peer_id(4), later), (peer_id(2), T0 + 2)]
        );
        // Now peer 2 and 4 are live; one slot left.
        s.add_providers(&[rec(1, 9, later), rec(1, 10, later)])
            .unwrap();
        assert_eq!(
            peers(later),
            sorted(vec![peer_id(2), peer_id(4), peer_id(9)])
        );
    }

    /// Store opened with `max_providers_per_key = 3`.
    pub(crate) fn groups_keep_room_for_newcomers(s: &impl Stores) {
        let a = SourceGroup::from_bytes(&[4, 192, 0, 2]);
        let b = SourceGroup::from_bytes(&[4, 198, 51, 100]);
        let c = SourceGroup::from_bytes(&[4, 203, 0, 113]);
        let peers = |now| sorted_peers(s, 1, now);
        // Three squatters of one group fill the key.
        for (i, p) in [1, 2, 3].into_iter().enumerate() {
            s.add_inbound_provider(&rec(1, p, T0 + i as u64), a)
                .unwrap();
        }
        assert_eq!(
            peers(T0 + 3),
            sorted(vec![peer_id(1), peer_id(2), peer_id(3)])
        );
        // A newcomer of another group takes the oldest squatter's slot.
        s.add_inbound_provider(&rec(1, 4, T0 + 10), b).unwrap();
        assert_eq!(
            peers(T0 + 10),
            sorted(vec![peer_id(2), peer_id(3), peer_id(4)])
        );
        // The evicted squatter coming back replaces its own group's oldest, not the newcomer.
        s.add_inbound_provider(&rec(1, 1, T0 + 20), a).unwrap();
        assert_eq!(
            peers(T0 + 20),
            sorted(vec![peer_id(1), peer_id(3), peer_id(4)])
        );
        // Re-announces refresh, whatever the cap.
        s.add_inbound_provider(&rec(1, 4, T0 + 30), b).unwrap();
        s.add_inbound_provider(&rec(1, 3, T0 + 31), a).unwrap();
        assert_eq!(
            peers(T0 + 31),
            sorted(vec![peer_id(1), peer_id(3), peer_id(4)])
        );
        // A third group takes a slot of the only group holding two.
        s.add_inbound_provider(&rec(1, 5, T0 + 40), c).unwrap();
        assert_eq!(
            peers(T0 + 40),
            sorted(vec![peer_id(3), peer_id(4), peer_id(5)])
        );
        // Now every group holds one: a fourth group is refused, as are records without a
        // group, and a newcomer of a present group replaces that group's record only.
        let d = SourceGroup::from_bytes(&[4, 233, 252, 0]);
        s.add_inbound_provider(&rec(1, 6, T0 + 50), d).unwrap();
        s.add_providers(&[rec(1, 7, T0 + 50)]).unwrap();
        assert_eq!(
            peers(T0 + 50),
            sorted(vec![peer_id(3), peer_id(4), peer_id(5)])
        );
        s.add_inbound_provider(&rec(1, 8, T0 + 60), c).unwrap();
        assert_eq!(
            peers(T0 + 60),
            sorted(vec![peer_id(3), peer_id(4), peer_id(8)])
        );
        // Records without a group are never replaced by grouped ones beyond their share.
        s.add_providers(&[rec(2, 1, T0), rec(2, 2, T0), rec(2, 3, T0)])
            .unwrap();
        s.add_inbound_provider(&rec(2, 4, T0 + 1), a).unwrap();
        assert_eq!(
            sorted_peers(s, 2, T0 + 1),
            sorted(vec![peer_id(1), peer_id(2), peer_id(3)])
        );
    }

    pub(crate) fn remove_expired_counts(s: &impl Stores) {
        s.add_providers(&[rec(1, 1, T0), rec(1, 2, T0 + H), rec(2, 1, T0 + 2 * H)])
            .unwrap();
        assert_eq!(s.remove_expired(0).unwrap(), 0);
        assert_eq!(s.remove_expired(T0).unwrap(), 0);
        assert_eq!(s.remove_expired(T0 + PROVIDER_RECORD_TTL_SECS).unwrap(), 1);
        // Removed, even for a reader whose clock says it would still be valid.
        assert_eq!(
            summary(&s.providers(&dht_key(1), 20, T0).unwrap()),
            vec![(peer_id(2), T0 + H)]
        );
        assert_eq!(s.remove_expired(T0 + PROVIDER_RECORD_TTL_SECS).unwrap(), 0);
        assert_eq!(
            s.remove_expired(T0 + 2 * H + PROVIDER_RECORD_TTL_SECS)
                .unwrap(),
            2
        );
        assert!(s.providers(&dht_key(1), 20, T0).unwrap().is_empty());
        assert!(s.providers(&dht_key(2), 20, T0).unwrap().is_empty());
        assert_eq!(s.remove_expired(u64::MAX).unwrap(), 0);
    }

    /// More expired records than one sweep chunk, mixed with live ones.
    pub(crate) fn remove_expired_many(s: &impl Stores) {
        let batch: Vec<_> = (0..1000u64)
            .map(|i| rec(i % 300, i, T0 + (i % 2) * 10 * H))
            .collect();
        s.add_providers(&batch).unwrap();
        for k in 0..300 {
            s.providers(&dht_key(k), 20, T0).unwrap(); // warm any cache
        }
        assert_eq!(
            s.remove_expired(T0 + PROVIDER_RECORD_TTL_SECS).unwrap(),
            500
        );
        let left: usize = (0..300)
            .map(|k| s.providers(&dht_key(k), 20, T0).unwrap().len())
            .sum();
        assert_eq!(left, 500);
        assert_eq!(
            s.remove_expired(T0 + 10 * H + PROVIDER_RECORD_TTL_SECS)
                .unwrap(),
            500
        );
    }

    /// Reads see every write, whatever they read before (the cache is kept correct).
    pub(crate) fn reads_follow_writes(s: &impl Stores) {
        let k = dht_key(1);
        assert!(s.providers(&k, 20, T0).unwrap().is_empty());
        s.add_providers(&[rec(1, 1, T0)]).unwrap();
        assert_eq!(s.providers(&k, 20, T0).unwrap().len(), 1);
        s.add_providers(&[rec(1, 2, T0 + 1)]).unwrap();
        assert_eq!(s.providers(&k, 20, T0 + 1).unwrap().len(), 2);
        s.remove_expired(T0 + PROVIDER_RECORD_TTL_SECS).unwrap();
        assert_eq!(
            summary(&s.providers(&k, 20, T0 + 1).unwrap()),
            vec![(peer_id(2), T0 + 1)]
        );
    }

    pub(crate) fn values(s: &impl Stores) {
        assert_eq!(s.get_value(b"/pk/a", T0).unwrap(), None);
        let mut r1 = Record::new(b"/pk/a".to_vec(), b"one".to_vec());
        r1.time_received = "2023-11-14T22:13:20Z".into();
        s.put_value(&r1, T0).unwrap();
        assert_eq!(
            s.get_value(b"/pk/a", T0 + 1).unwrap(),
            Some((r1.clone(), T0))
        );
        let r2 = Record::new(b"/pk/a".to_vec(), b"two".to_vec());
        s.put_value(&r2, T0 + H).unwrap();
        assert_eq!(
            s.get_value(b"/pk/a", T0 + H).unwrap(),
            Some((r2.clone(), T0 + H))
        );
        let check = |offset: u64, present: bool| {
            assert_eq!(
                s.get_value(b"/pk/a", T0 + H + offset).unwrap().is_some(),
                present,
                "at +{offset}s"
            );
        };
        check(0, true);
        check(VALUE_RECORD_TTL_SECS - 1, true);
        check(VALUE_RECORD_TTL_SECS, false);
        // Replaced records don't expire on their old schedule.
        assert_eq!(
            s.remove_expired_values(T0 + VALUE_RECORD_TTL_SECS).unwrap(),
            0
        );
        s.put_value(&Record::new(b"/ipns/b".to_vec(), Vec::new()), T0)
            .unwrap();
        s.put_value(&Record::new(Vec::new(), b"empty key".to_vec()), T0 + 2 * H)
            .unwrap();
        assert_eq!(
            s.get_value(b"", T0).unwrap().map(|(r, _)| r.value),
            Some(b"empty key".to_vec())
        );
        assert_eq!(
            s.remove_expired_values(T0 + VALUE_RECORD_TTL_SECS).unwrap(),
            1
        );
        assert_eq!(s.get_value(b"/ipns/b", T0).unwrap(), None);
        assert_eq!(
            s.remove_expired_values(T0 + 2 * H + VALUE_RECORD_TTL_SECS)
                .unwrap(),
            2
        );
        assert_eq!(s.get_value(b"/pk/a", T0).unwrap(), None);
        assert_eq!(s.remove_expired_values(0).unwrap(), 0);
    }

    pub(crate) fn keystore_put_delete_count(s: &impl Stores) {
        let (a, b, c, d, e) = (mh(1), mh(2), mh(3), mh(4), mh(5));
        assert_eq!(s.count().unwrap(), 0);
        assert!(s.put(&[]).unwrap().is_empty());
        assert_eq!(s.put(&[a, b, a, c]).unwrap(), vec![a, b, c]);
        assert_eq!(s.put(&[b, d]).unwrap(), vec![d]);
        assert_eq!(s.count().unwrap(), 4);
        assert_eq!(s.delete(&[a, a, e]).unwrap(), 1);
        assert_eq!(s.delete(&[]).unwrap(), 0);
        assert_eq!(s.count().unwrap(), 3);
        assert_eq!(s.put(&[a]).unwrap(), vec![a]);
        assert_eq!(s.count().unwrap(), 4);
        // Other multihash codes and sizes.
        let id = Multihash::wrap(0x00, b"inline").unwrap();
        let big = Multihash::wrap(0x13, &[9u8; 64]).unwrap();
        assert_eq!(s.put(&[id, big]).unwrap(), vec![id, big]);
        assert_eq!(s.count().unwrap(), 6);
        let all = s.scan(&Prefix::ROOT, None, 100).unwrap();
        assert!(all.contains(&(Key::from_multihash(&id), id)));
        assert!(all.contains(&(Key::from_multihash(&big), big)));
    }

    pub(crate) fn keystore_scan(s: &impl Stores) {
        let keys: Vec<Multihash> = (0..400).map(mh).collect();
        for chunk in keys.chunks(64) {
            s.put(chunk).unwrap();
        }
        let mut model: Vec<(Key, Multihash)> =
            keys.iter().map(|m| (Key::from_multihash(m), *m)).collect();
        model.sort_by_key(|(k, _)| *k);

        let check = |prefix: &str, after: Option<Key>, limit: usize| {
            let p: Prefix = prefix.parse().unwrap();
            let want: Vec<_> = model
                .iter()
                .filter(|(k, _)| p.contains(k) && after.is_none_or(|a| *k > a))
                .take(limit)
                .copied()
                .collect();
            let got = s.scan(&p, after.as_ref(), limit).unwrap();
            assert_eq!(got, want, "prefix {prefix:?} after {after:?} limit {limit}");
        };
        for prefix in [
            "",
            "0",
            "1",
            "01",
            "110",
            "0000",
            "10101",
            "11111111",
            "0101010101",
        ] {
            check(prefix, None, 1000);
            check(prefix, None, 3);
            check(prefix, None, 0);
        }
        let mid = model[200].0;
        check("", Some(mid), 1000);
        check("", Some(mid), 5);
        check("", Some(Key::MAX), 10);
        check("", Some(Key::ZERO), 10);
        check("1", Some(Key::ZERO), 1000); // before the region: the whole region
        check("0", Some(Key::MAX), 1000); // after the region: nothing
        // A full-length prefix names one key.
        let (k, m) = model[17];
        assert_eq!(
            s.scan(&Prefix::new(&k, 256), None, 10).unwrap(),
            vec![(k, m)]
        );
        assert_eq!(s.scan(&Prefix::new(&k, 256), Some(&k), 10).unwrap(), vec![]);
        // Paging through a region gives the region.
        let p: Prefix = "1".parse().unwrap();
        let paged = s.scan_all(&p, 7).unwrap();
        assert_eq!(paged, s.scan(&p, None, usize::MAX).unwrap());
        assert!(paged.windows(2).all(|w| w[0].0 < w[1].0));
    }
}

macro_rules! conformance {
    ($name:ident, |$config:ident| $make:expr) => {
        mod $name {
            use super::*;

            fn make($config: Config) -> (Option<tempfile::TempDir>, impl Stores) {
                $make
            }

            #[test]
            fn providers_read_back() {
                let (_dir, s) = make(Config::small());
                suite::providers_read_back(&s);
            }
            #[test]
            fn providers_expire() {
                let (_dir, s) = make(Config::small());
                suite::providers_expire(&s);
            }
            #[test]
            fn reannounce_refreshes() {
                let (_dir, s) = make(Config::small());
                suite::reannounce_refreshes(&s);
            }
            #[test]
            fn cap_keeps_established() {
                let (_dir, s) = make(Config::small().with_max_providers_per_key(3));
                suite::cap_keeps_established(&s);
            }
            #[test]
            fn groups_keep_room_for_newcomers() {
                let (_dir, s) = make(Config::small().with_max_providers_per_key(3));
                suite::groups_keep_room_for_newcomers(&s);
            }
            #[test]
            fn remove_expired_counts() {
                let (_dir, s) = make(Config::small());
                suite::remove_expired_counts(&s);
            }
            #[test]
            fn remove_expired_many() {
                let (_dir, s) = make(Config::small().with_expiry_chunk(64));
                suite::remove_expired_many(&s);
            }
            #[test]
            fn reads_follow_writes() {
                let (_dir, s) = make(Config::small());
                suite::reads_follow_writes(&s);
            }
            #[test]
            fn values() {
                let (_dir, s) = make(Config::small());
                suite::values(&s);
            }
            #[test]
            fn keystore_put_delete_count() {
                let (_dir, s) = make(Config::small());
                suite::keystore_put_delete_count(&s);
            }
            #[test]
            fn keystore_scan() {
                let (_dir, s) = make(Config::small());
                suite::keystore_scan(&s);
            }
        }
    };
}

fn rocks(config: Config) -> (Option<tempfile::TempDir>, RocksStore) {
    let dir = tempfile::tempdir().unwrap();
    // Tests don't need fsync; the durability test covers the synced path.
    let store = RocksStore::open(dir.path(), config.with_sync_writes(false)).unwrap();
    (Some(dir), store)
}

conformance!(memory, |config| (None, MemoryStore::with_config(&config)));
conformance!(rocks_cached, |config| rocks(config));
conformance!(rocks_uncached, |config| rocks(config.with_cache_entries(0)));
// Provider writes through the grouped writer (one thread, one WriteBatch per commit).
conformance!(rocks_writer, |config| {
    let (dir, store) = rocks(config);
    let writer = GroupWriter::new(std::sync::Arc::new(store), WriterConfig::default()).unwrap();
    (dir, writer)
});
conformance!(memory_writer, |config| {
    let store = std::sync::Arc::new(MemoryStore::with_config(&config));
    (
        None,
        GroupWriter::new(store, WriterConfig::default()).unwrap(),
    )
});
// Through the blanket impls.
conformance!(arc_dyn_memory, |config| {
    (None, std::sync::Arc::new(MemoryStore::with_config(&config)))
});

/// RocksStore and MemoryStore agree on random sequences of operations.
mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Add(Vec<(u64, u64, u64)>),
        Providers(u64, usize, u64),
        RemoveExpired(u64),
        PutValue(u64, u8, u64),
        GetValue(u64, u64),
        RemoveExpiredValues(u64),
        KsPut(Vec<u64>),
        KsDelete(Vec<u64>),
        KsScan(u8, u8, Option<u64>, usize),
        Count,
    }

    fn time() -> impl Strategy<Value = u64> {
        (0u64..120).prop_map(|h| T0 + h * H)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => proptest::collection::vec((0u64..6, 0u64..8, time()), 0..8).prop_map(Op::Add),
            3 => (0u64..7, 0usize..6, time()).prop_map(|(k, l, t)| Op::Providers(k, l, t)),
            1 => time().prop_map(Op::RemoveExpired),
            1 => (0u64..4, any::<u8>(), time()).prop_map(|(k, v, t)| Op::PutValue(k, v, t)),
            1 => (0u64..5, time()).prop_map(|(k, t)| Op::GetValue(k, t)),
            1 => time().prop_map(Op::RemoveExpiredValues),
            2 => proptest::collection::vec(0u64..40, 0..10).prop_map(Op::KsPut),
            1 => proptest::collection::vec(0u64..40, 0..10).prop_map(Op::KsDelete),
            2 => (any::<u8>(), 0u8..5, proptest::option::of(0u64..40), 0usize..12)
                .prop_map(|(b, l, a, n)| Op::KsScan(b, l, a, n)),
            1 => Just(Op::Count),
        ]
    }

    fn apply(s: &impl Stores, op: &Op) -> String {
        match op {
            Op::Add(v) => {
                let batch: Vec<_> = v.iter().map(|&(k, p, t)| rec(k, p, t)).collect();
                format!("{:?}", s.add_providers(&batch).map_err(|e| e.to_string()))
            }
            Op::Providers(k, l, t) => format!("{:?}", s.providers(&dht_key(*k), *l, *t).unwrap()),
            Op::RemoveExpired(t) => format!("{:?}", s.remove_expired(*t).unwrap()),
            Op::PutValue(k, v, t) => {
                let r = Record::new(format!("/v/{k}").into_bytes(), vec![*v]);
                format!("{:?}", s.put_value(&r, *t).unwrap())
            }
            Op::GetValue(k, t) => {
                format!(
                    "{:?}",
                    s.get_value(format!("/v/{k}").as_bytes(), *t).unwrap()
                )
            }
            Op::RemoveExpiredValues(t) => format!("{:?}", s.remove_expired_values(*t).unwrap()),
            Op::KsPut(v) => format!(
                "{:?}",
                s.put(&v.iter().map(|&i| mh(i)).collect::<Vec<_>>())
                    .unwrap()
            ),
            Op::KsDelete(v) => {
                format!(
                    "{:?}",
                    s.delete(&v.iter().map(|&i| mh(i)).collect::<Vec<_>>())
                        .unwrap()
                )
            }
            Op::KsScan(bits, len, after, limit) => {
                let mut b = [0u8; 32];
                b[0] = *bits;
                let p = Prefix::new(&Key::from_bytes(b), usize::from(*len));
                let after = after.map(|i| Key::from_multihash(&mh(i)));
                format!("{:?}", s.scan(&p, after.as_ref(), *limit).unwrap())
            }
            Op::Count => format!("{:?}", s.count().unwrap()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn rocks_agrees_with_memory(ops in proptest::collection::vec(op(), 1..40)) {
            let config = Config::small().with_max_providers_per_key(3).with_expiry_chunk(3);
            let memory = MemoryStore::with_config(&config);
            let (_dir, rocks) = rocks(config.clone());
            // Provider writes through the grouped writer, in front of RocksDB.
            let (_dir2, second) = super::rocks(config);
            let writer = GroupWriter::new(std::sync::Arc::new(second), WriterConfig::default())
                .unwrap();
            for (i, op) in ops.iter().enumerate() {
                let want = apply(&memory, op);
                let got = apply(&rocks, op);
                prop_assert_eq!(&got, &want, "op #{}: {:?}", i, op);
                let through_writer = apply(&writer, op);
                prop_assert_eq!(through_writer, want, "writer, op #{}: {:?}", i, op);
            }
        }
    }
}
