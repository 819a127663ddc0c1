//! The batched provide (`docs/specs/provide-batch.md`) through `Handler::provide_batch`:
//! stored and answered per key, each refusal of the spec, rate limits charged by the keys, and
//! the answer given only once the records are durable, against the in-memory and the RocksDB
//! stores (and a `GroupWriter` in front of RocksDB).
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use dht_handler::{Handler, HandlerConfig, RateLimit, Sender};
use dht_proto::batch::{Allowance, BatchError, KeyStatus, ProvideBatch, ProvideBatchResponse};
use dht_proto::{PeerInfo, ProviderRecord, Request, Response, UnixSecs};
use dht_provider_store::{
    Config, GroupWriter, MemoryStore, ProviderEntry, ProviderOutcome, ProviderStore, RocksStore,
    StoreError, ValueStore, WriterConfig,
};

fn key(i: u32) -> Vec<u8> {
    let mut k = b"\x12\x20provide-batch-test-key-".to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k.resize(34, 0);
    k
}

fn batch(provider: &PeerInfo, keys: Vec<Vec<u8>>) -> ProvideBatch {
    ProvideBatch {
        provider: provider.clone(),
        keys,
    }
}

/// The answer without the allowance it tells (checked on its own where it matters).
fn bare(answer: ProvideBatchResponse) -> ProvideBatchResponse {
    answer.with_allowance(None)
}

fn stored(n: usize) -> ProvideBatchResponse {
    ProvideBatchResponse::answered(vec![KeyStatus::Stored; n])
}

/// The peer ids the handler lists as providers of `key` (GET_PROVIDERS from a stranger).
fn providers_of(h: &TestHandler, key: &[u8]) -> Vec<PeerInfo> {
    let asker = Sender::client(peer(999));
    match h
        .handle(&asker, Request::GetProviders { key: key.to_vec() }, NOW + 1)
        .unwrap()
    {
        Some(Response::GetProviders { providers, .. }) => providers,
        other => panic!("GET_PROVIDERS answered {other:?}"),
    }
}

#[test]
fn a_batch_is_stored_and_answered_per_key() {
    for kind in &KINDS {
        let stores = Stores::new(kind);
        let h = handler(&stores, &[], HandlerConfig::default());
        let p = peer(7);
        let keys: Vec<Vec<u8>> = (0..100).map(key).collect();
        let answer =
            bare(h.provide_batch(&Sender::server(p.clone()), batch(&p, keys.clone()), NOW));
        assert_eq!(answer, stored(100), "{}", stores.name);
        for k in &keys {
            assert_eq!(providers_of(&h, k), vec![p.clone()], "{}", stores.name);
        }
    }
}

#[test]
fn a_key_listed_twice_is_stored_once_and_answered_twice() {
    for kind in &KINDS {
        let stores = Stores::new(kind);
        let h = handler(&stores, &[], HandlerConfig::default());
        let p = peer(7);
        let answer = bare(h.provide_batch(
            &Sender::server(p.clone()),
            batch(&p, vec![key(1), key(2), key(1)]),
            NOW,
        ));
        assert_eq!(answer, stored(3), "{}", stores.name);
        let held = stores.providers.providers(&key(1), 100, NOW).unwrap();
        assert_eq!(held.len(), 1, "{}", stores.name);
    }
}

#[test]
fn a_batch_naming_another_provider_is_refused_whole() {
    for kind in &KINDS {
        let stores = Stores::new(kind);
        let h = handler(&stores, &[], HandlerConfig::default());
        let answer = bare(h.provide_batch(
            &Sender::server(peer(7)),
            batch(&peer(8), vec![key(1), key(2)]),
            NOW,
        ));
        assert_eq!(
            answer,
            ProvideBatchResponse::refused(BatchError::ProviderNotSender),
            "{}",
            stores.name
        );
        assert!(providers_of(&h, &key(1)).is_empty(), "{}", stores.name);
    }
}

#[test]
fn a_batch_without_a_usable_address_is_refused_whole() {
    let mut p = peer(7);
    for addrs in [
        vec![],
        // Not dialable: the store and the answers drop it, as for ADD_PROVIDER.
        vec!["/unix/tmp%2Fsocket".parse().unwrap()],
    ] {
        for kind in &KINDS {
            let stores = Stores::new(kind);
            let h = handler(&stores, &[], HandlerConfig::default());
            p.addrs.clone_from(&addrs);
            let answer =
                bare(h.provide_batch(&Sender::server(p.clone()), batch(&p, vec![key(1)]), NOW));
            assert_eq!(
                answer,
                ProvideBatchResponse::refused(BatchError::NoAddresses),
                "{} {addrs:?}",
                stores.name
            );
            assert!(providers_of(&h, &key(1)).is_empty());
        }
    }
}

#[test]
fn a_key_the_rules_refuse_is_refused_alone() {
    for kind in &KINDS {
        let stores = Stores::new(kind);
        let h = handler(
            &stores,
            &[],
            HandlerConfig::default().with_max_provider_key_len(40),
        );
        let p = peer(7);
        let long = vec![7u8; 41];
        let answer = bare(h.provide_batch(
            &Sender::server(p.clone()),
            batch(&p, vec![key(1), long.clone(), vec![], key(2)]),
            NOW,
        ));
        assert_eq!(
            answer.statuses,
            vec![
                KeyStatus::Stored,
                KeyStatus::InvalidKey,
                KeyStatus::InvalidKey,
                KeyStatus::Stored
            ],
            "{}",
            stores.name
        );
        assert_eq!(answer.error, None);
        assert_eq!(providers_of(&h, &key(2)), vec![p.clone()]);
        assert!(
            stores
                .providers
                .providers(&long, 10, NOW)
                .unwrap()
                .is_empty()
        );
    }
}

#[test]
fn rate_limits_are_charged_per_key_all_or_nothing() {
    for kind in &KINDS {
        let stores = Stores::new(kind);
        let config = HandlerConfig::default()
            .with_rate_limit(Some(RateLimit::new(10, 100)))
            .with_batch_keys_per_request(1);
        let h = handler(&stores, &[], config);
        let p = peer(7);
        let from = Sender::server(p.clone());
        let limited = ProvideBatchResponse::refused(BatchError::RateLimited);
        // More keys than the burst: refused, nothing spent, nothing stored.
        let keys: Vec<Vec<u8>> = (0..101).map(key).collect();
        assert_eq!(bare(h.provide_batch(&from, batch(&p, keys), NOW)), limited);
        assert!(providers_of(&h, &key(0)).is_empty());
        // The whole burst in one batch, then nothing more in the same second.
        let keys: Vec<Vec<u8>> = (0..100).map(key).collect();
        assert_eq!(
            bare(h.provide_batch(&from, batch(&p, keys), NOW)),
            stored(100)
        );
        assert_eq!(
            bare(h.provide_batch(&from, batch(&p, vec![key(500)]), NOW)),
            limited
        );
        // A plain request is charged from the same bucket.
        let add = Request::AddProvider {
            key: key(501),
            providers: vec![p.clone()],
        };
        assert!(h.handle(&from, add, NOW).is_err(), "{}", stores.name);
        // Ten tokens a second later.
        let keys: Vec<Vec<u8>> = (600..610).map(key).collect();
        assert_eq!(
            bare(h.provide_batch(&from, batch(&p, keys), NOW + 1)),
            stored(10)
        );
    }
}

/// Every answer tells the sender its allowance (the tokens left, the rate, the burst), the
/// smaller of its peer's and its IP's, so that a client can pace its batches instead of
/// having them refused and sending them twice.
#[test]
fn answers_tell_the_sender_its_allowance() {
    let stores = Stores::new(&StoreKind::Memory);
    let config = HandlerConfig::default()
        .with_rate_limit(Some(RateLimit::new(10, 100)))
        .with_ip_rate_limit(Some(RateLimit::new(20, 60)))
        .with_batch_keys_per_request(1);
    let h = handler(&stores, &[], config);
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let p = peer(7);
    let from = Sender::server(p.clone()).from_ip(ip);
    let allowance = |keys, per_second, burst| {
        Some(Allowance {
            keys,
            per_second,
            burst,
        })
    };
    let keys: Vec<Vec<u8>> = (0..40).map(key).collect();
    let answer = h.provide_batch(&from, batch(&p, keys), NOW);
    assert_eq!(answer.statuses.len(), 40);
    // Peer: 60 of 100 left at 10/s; IP: 20 of 60 at 20/s: the smaller of each.
    assert_eq!(answer.allowance, allowance(20, 10, 60));
    // Refused for the rate: nothing spent, and the same allowance told.
    let keys: Vec<Vec<u8>> = (100..130).map(key).collect();
    let answer = h.provide_batch(&from, batch(&p, keys), NOW);
    assert_eq!(answer.error, Some(BatchError::RateLimited));
    assert_eq!(answer.allowance, allowance(20, 10, 60));
    // Two seconds later the IP has 60 again (capped), the peer 80.
    let keys: Vec<Vec<u8>> = (100..130).map(key).collect();
    let answer = h.provide_batch(&from, batch(&p, keys), NOW + 2);
    assert_eq!(bare(answer.clone()), stored(30));
    assert_eq!(answer.allowance, allowance(30, 10, 60));
    // Refused for another reason: the allowance is still told.
    let answer = h.provide_batch(&from, batch(&peer(8), vec![key(1)]), NOW + 2);
    assert_eq!(answer.error, Some(BatchError::ProviderNotSender));
    assert!(answer.allowance.is_some());
    // With no limit, nothing to tell.
    let h = handler(&stores, &[], HandlerConfig::default().with_rate_limit(None));
    let answer = h.provide_batch(&Sender::server(p.clone()), batch(&p, vec![key(1)]), NOW);
    assert_eq!(answer.allowance, None);
}

/// By default a token of the rate limits pays for 3 batched keys (a batched record costs the
/// server a fraction of a message): a batch spends its keys / 3 tokens, rounded up, and the
/// allowance is told in keys. A plain ADD_PROVIDER still costs a whole token.
#[test]
fn a_token_pays_for_several_batched_keys() {
    let stores = Stores::new(&StoreKind::Memory);
    let config = HandlerConfig::default()
        .with_rate_limit(Some(RateLimit::new(10, 100)))
        .with_ip_rate_limit(Some(RateLimit::new(20, 60)));
    assert_eq!(config.batch_keys_per_request, 3);
    let h = handler(&stores, &[], config);
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let p = peer(7);
    let from = Sender::server(p.clone()).from_ip(ip);
    // 120 keys: 40 tokens of each bucket. Peer: 60 of 100 left, at 10/s; IP: 20 of 60, at
    // 20/s; told in keys, the smaller of each.
    let keys: Vec<Vec<u8>> = (0..120).map(key).collect();
    let answer = h.provide_batch(&from, batch(&p, keys), NOW);
    assert_eq!(answer.statuses.len(), 120);
    let told = Allowance {
        keys: 60,
        per_second: 30,
        burst: 180,
    };
    assert_eq!(answer.allowance, Some(told));
    // 61 keys need 21 tokens: refused, nothing spent.
    let keys: Vec<Vec<u8>> = (200..261).map(key).collect();
    let answer = h.provide_batch(&from, batch(&p, keys.clone()), NOW);
    assert_eq!(answer.error, Some(BatchError::RateLimited));
    assert_eq!(answer.allowance, Some(told));
    // One key costs a whole token, as one ADD_PROVIDER: 19 left of the IP's 20.
    let answer = h.provide_batch(&from, batch(&p, vec![key(300)]), NOW);
    assert_eq!(answer.allowance.map(|a| a.keys), Some(57));
    for i in 0..19 {
        let add = Request::AddProvider {
            key: key(400 + i),
            providers: vec![p.clone()],
        };
        assert!(h.handle(&from, add, NOW).is_ok());
    }
    let add = Request::AddProvider {
        key: key(500),
        providers: vec![p.clone()],
    };
    assert!(h.handle(&from, add, NOW).is_err());
    // A second later the IP has 20 tokens again: 60 of the keys refused before go.
    let answer = h.provide_batch(&from, batch(&p, keys[..60].to_vec()), NOW + 1);
    assert_eq!(bare(answer), stored(60));
}

#[test]
fn the_ip_rate_is_charged_per_key_across_peer_ids() {
    let stores = Stores::new(&StoreKind::Memory);
    let config = HandlerConfig::default()
        .with_rate_limit(None)
        .with_ip_rate_limit(Some(RateLimit::new(10, 50)))
        .with_batch_keys_per_request(1);
    let h = handler(&stores, &[], config);
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let a = peer(7);
    let b = peer(8);
    let keys: Vec<Vec<u8>> = (0..40).map(key).collect();
    assert_eq!(
        bare(h.provide_batch(&Sender::server(a.clone()).from_ip(ip), batch(&a, keys), NOW)),
        stored(40)
    );
    // A fresh peer id from the same IP shares the bucket: 11 more keys are too many.
    let keys: Vec<Vec<u8>> = (0..11).map(key).collect();
    assert_eq!(
        bare(h.provide_batch(&Sender::server(b.clone()).from_ip(ip), batch(&b, keys), NOW)),
        ProvideBatchResponse::refused(BatchError::RateLimited)
    );
}

#[test]
fn a_key_at_its_provider_cap_is_answered_full() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::small()
        .with_sync_writes(false)
        .with_max_providers_per_key(2);
    let stores: [(&str, Arc<dyn ProviderStore>); 2] = [
        ("memory", Arc::new(MemoryStore::with_config(&config))),
        (
            "rocksdb",
            Arc::new(RocksStore::open(dir.path(), config).unwrap()),
        ),
    ];
    for (name, store) in stores {
        let h = handler_on(store);
        for seed in [7, 8] {
            let p = peer(seed);
            assert_eq!(
                bare(h.provide_batch(&Sender::server(p.clone()), batch(&p, vec![key(1)]), NOW)),
                stored(1),
                "{name}"
            );
        }
        let p = peer(9);
        let answer = bare(h.provide_batch(
            &Sender::server(p.clone()),
            batch(&p, vec![key(1), key(2)]),
            NOW,
        ));
        assert_eq!(
            answer.statuses,
            vec![KeyStatus::Full, KeyStatus::Stored],
            "{name}"
        );
        // A provider already held is refreshed, not refused.
        let q = peer(7);
        assert_eq!(
            bare(h.provide_batch(&Sender::server(q.clone()), batch(&q, vec![key(1)]), NOW + 5)),
            stored(1),
            "{name}"
        );
    }
}

/// A handler with default limits over `providers` (values in memory, an empty full table).
fn handler_on(providers: Arc<dyn ProviderStore>) -> TestHandler {
    let values: Arc<dyn ValueStore> = Arc::new(MemoryStore::new());
    Handler::new(
        local(),
        Arc::new(dht_routing_table::FullRoutingTable::new(
            local().key(),
            Default::default(),
            dht_routing_table::ManualClock::new(NOW),
        )),
        providers,
        values,
        HandlerConfig::default(),
    )
    .expect("valid settings")
}

/// A store that fails every write while `failing` is set, as a full disk does, and holds
/// every write while `held` is set, as a slow disk sync does.
struct Failing {
    inner: MemoryStore,
    failing: AtomicBool,
    held: parking_lot::Mutex<bool>,
    released: parking_lot::Condvar,
}

impl Failing {
    fn new(failing: bool, held: bool) -> Self {
        Failing {
            inner: MemoryStore::new(),
            failing: AtomicBool::new(failing),
            held: parking_lot::Mutex::new(held),
            released: parking_lot::Condvar::new(),
        }
    }

    fn release(&self) {
        *self.held.lock() = false;
        self.released.notify_all();
    }
}

impl ProviderStore for Failing {
    fn add_providers(&self, batch: &[ProviderRecord]) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::DiskFull);
        }
        self.inner.add_providers(batch)
    }

    fn providers(
        &self,
        key: &[u8],
        limit: usize,
        now: UnixSecs,
    ) -> Result<Vec<ProviderRecord>, StoreError> {
        self.inner.providers(key, limit, now)
    }

    fn remove_expired(&self, now: UnixSecs) -> Result<u64, StoreError> {
        self.inner.remove_expired(now)
    }

    fn add_provider_entries(
        &self,
        entries: &[ProviderEntry<'_>],
        durable: bool,
    ) -> Result<Vec<Result<ProviderOutcome, StoreError>>, StoreError> {
        let mut held = self.held.lock();
        while *held {
            self.released.wait(&mut held);
        }
        drop(held);
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::DiskFull);
        }
        self.inner.add_provider_entries(entries, durable)
    }
}

#[test]
fn a_store_that_cannot_write_gives_unavailable_and_a_later_batch_is_stored() {
    let store = Arc::new(Failing::new(true, false));
    let h = handler_on(store.clone());
    let p = peer(7);
    let from = Sender::server(p.clone());
    assert_eq!(
        bare(h.provide_batch(&from, batch(&p, vec![key(1), key(2)]), NOW)),
        ProvideBatchResponse::refused(BatchError::Unavailable)
    );
    assert!(providers_of(&h, &key(1)).is_empty());
    store.failing.store(false, Ordering::SeqCst);
    assert_eq!(
        bare(h.provide_batch(&from, batch(&p, vec![key(1), key(2)]), NOW + 1)),
        stored(2)
    );
    assert_eq!(providers_of(&h, &key(2)), vec![p]);
}

/// Through a `GroupWriter`, a batch is checked and handed to the store without waiting for
/// the commit: `submit_batch` returns while the disk is held, its answer comes once the
/// records are written, and nothing is answered stored before.
#[test]
fn a_batch_is_handed_to_a_group_writer_without_a_thread_waiting_for_its_commit() {
    let store = Arc::new(Failing::new(false, true));
    let writer = Arc::new(GroupWriter::new(store.clone(), WriterConfig::default()).unwrap());
    let h: Arc<TestHandler> = Arc::new(handler_on(writer));
    let p = peer(7);
    let from = Sender::server(p.clone());
    let keys: Vec<Vec<u8>> = (0..10).map(key).collect();
    // On another thread, so that a call that waits for the disk fails the test instead of
    // hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let submitting = {
        let (h, from, p) = (h.clone(), from.clone(), p.clone());
        std::thread::spawn(move || {
            tx.send(h.submit_batch(&from, batch(&p, keys), NOW))
                .unwrap()
        })
    };
    let mut answer = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("submit_batch waited for the held commit");
    submitting.join().unwrap();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(std::pin::Pin::new(&mut answer).poll(&mut cx).is_pending());
    assert!(providers_of(&h, &key(0)).is_empty());
    store.release();
    let answer = answer.wait();
    assert_eq!(bare(answer.clone()), stored(10));
    assert!(answer.allowance.is_some());
    assert_eq!(providers_of(&h, &key(9)), vec![p]);
}

/// Through a `GroupWriter` whose inbound ADD_PROVIDERs do not wait for their commit, a batch
/// still does: once answered, its records are in RocksDB itself (read past the writer).
#[test]
fn through_a_group_writer_the_answer_comes_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let rocks = Arc::new(RocksStore::open(dir.path(), Config::small()).unwrap());
    let writer = Arc::new(
        GroupWriter::new(
            rocks.clone(),
            WriterConfig::default().with_inbound_waits(false),
        )
        .unwrap(),
    );
    let h = handler_on(writer.clone());
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    for round in 0..20u32 {
        let p = peer(u64::from(round) + 7);
        let keys: Vec<Vec<u8>> = (round * 50..round * 50 + 50).map(key).collect();
        let from = Sender::server(p.clone()).from_ip(ip);
        assert_eq!(
            bare(h.provide_batch(&from, batch(&p, keys.clone()), NOW)),
            stored(50)
        );
        for k in &keys {
            let held = rocks.providers(k, 100, NOW).unwrap();
            assert!(
                held.iter().any(|r| r.provider == p.peer_id),
                "round {round}: an answered record is not in RocksDB yet"
            );
        }
    }
}
