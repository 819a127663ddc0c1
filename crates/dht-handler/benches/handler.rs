//! Requests handled per second, each beside a baseline measured in the same run:
//!
//! - `find_node/<n>`: FIND_NODE for a random target on a `FullRoutingTable` of `n` peers
//!   (the "full routing table"), from a client (no table update). Baseline `table_only`:
//!   the table's own `closest_peers(target, 22)`, which the handler calls.
//! - `get_providers/<store>`: GET_PROVIDERS for a random stored key, on a store of 1,000,000
//!   provider records (one per key) and a 10,000-peer full routing table. Baseline
//!   `store_only`: the store's own `providers(key, 20, now)`. `memory` is `MemoryStore`;
//!   `rocksdb` is `RocksStore` with the default config (64 MiB block cache, 65,536-key LRU,
//!   filled once per run in batches of 10,000, unsynced writes); every key asked for is one
//!   of 4,096, so after the first pass its list is in the store's LRU cache: these are cached
//!   GET_PROVIDERS. `rocksdb_1m_grouped` is the same store behind the `GroupWriter`, as
//!   `dht-node` composes it (writes grouped into shared commits, reads passed through): the
//!   writer must not slow the read path.
//! - `rate_limiter`: FIND_NODE on 10k peers with the rate limiter on (limits too high to
//!   refuse), senders rotating among 1,000 peers: the limiter's cost.
//!
//! Throughput is reported as elements (requests) per second.
#![allow(clippy::print_stdout, clippy::unwrap_used)] // A bench binary reports on stdout.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dht_handler::{Handler, HandlerConfig, RateLimit, Sender};
use dht_proto::{Key, PeerInfo, ProviderRecord, Request};
use dht_provider_store::{
    Config, GroupWriter, MemoryStore, ProviderStore, RocksStore, ValueStore, WriterConfig,
};
use dht_routing_table::{FullRoutingTable, ManualClock, RoutingTable};
use dht_test_kit::internet_peer;

const NOW: u64 = dht_test_kit::EPOCH;
const RECORDS: u64 = 1_000_000;
const PROVIDERS: u64 = 1_000;

/// The DHT key of content `i`: a sha256 multihash.
fn content_key(i: u64) -> Vec<u8> {
    let mut k = vec![0x12, 0x20];
    k.extend_from_slice(Key::hash(&(i ^ 0x5555_5555).to_le_bytes()).as_bytes());
    k
}

fn table(n: u64) -> Arc<FullRoutingTable> {
    let t = Arc::new(FullRoutingTable::new(
        Key::hash(b"local"),
        Default::default(),
        ManualClock::new(NOW),
    ));
    t.replace_all((1..=n).map(internet_peer), NOW);
    t
}

fn handler<P: ProviderStore, V: ValueStore>(
    table: Arc<FullRoutingTable>,
    providers: P,
    values: V,
    config: HandlerConfig,
) -> Handler<Arc<FullRoutingTable>, P, V> {
    Handler::new(internet_peer(0), table, providers, values, config).expect("valid settings")
}

fn fill(store: &impl ProviderStore) {
    let start = Instant::now();
    let providers: Vec<PeerInfo> = (0..PROVIDERS)
        .map(|i| internet_peer(1_000_000 + i))
        .collect();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..RECORDS {
        let p = &providers[(i % PROVIDERS) as usize];
        batch.push(ProviderRecord {
            key: content_key(i),
            provider: p.peer_id,
            addrs: p.addrs.clone(),
            received_at: NOW,
        });
        if batch.len() == 10_000 {
            store.add_providers(&batch).unwrap();
            batch.clear();
        }
    }
    store.add_providers(&batch).unwrap();
    println!(
        "filled {RECORDS} provider records in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

fn targets() -> Vec<Vec<u8>> {
    (0..4096u64)
        .map(|i| Key::hash(&(u64::MAX - i).to_le_bytes()).as_bytes().to_vec())
        .collect()
}

/// Stored keys in a random order (a multiplicative walk over the 1M keys).
fn stored_keys() -> Vec<Vec<u8>> {
    (0..4096u64)
        .map(|i| content_key((i * 2_654_435_761) % RECORDS))
        .collect()
}

fn no_limit() -> HandlerConfig {
    HandlerConfig::default().with_rate_limit(None)
}

fn bench_find_node(c: &mut Criterion) {
    let mut g = c.benchmark_group("find_node");
    g.throughput(Throughput::Elements(1));
    let targets = targets();
    let client = Sender::client(internet_peer(u64::MAX));
    let store = MemoryStore::new();
    for (n, name) in [(10_000u64, "10k"), (100_000, "100k")] {
        let t = table(n);
        let h = handler(t.clone(), &store, &store, no_limit());
        let mut i = 0;
        g.bench_function(BenchmarkId::new("handler", name), |b| {
            b.iter(|| {
                i = (i + 1) % targets.len();
                let key = targets[i].clone();
                black_box(h.handle(&client, Request::FindNode { key }, NOW).unwrap())
            })
        });
        let mut i = 0;
        g.bench_function(BenchmarkId::new("table_only", name), |b| {
            b.iter(|| {
                i = (i + 1) % targets.len();
                black_box(t.closest_peers(&Key::hash(&targets[i]), 22))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("rate_limiter");
    g.throughput(Throughput::Elements(1));
    let t = table(10_000);
    let h = handler(
        t,
        &store,
        &store,
        HandlerConfig::default().with_rate_limit(Some(RateLimit::new(u32::MAX, u32::MAX))),
    );
    let senders: Vec<Sender> = (0..1000)
        .map(|i| Sender::client(internet_peer(5_000_000 + i)))
        .collect();
    let mut i = 0;
    g.bench_function("find_node/10k", |b| {
        b.iter(|| {
            i = (i + 1) % targets.len();
            let key = targets[i].clone();
            let from = &senders[i % senders.len()];
            black_box(h.handle(from, Request::FindNode { key }, NOW).unwrap())
        })
    });
    g.finish();
}

fn bench_get_providers_on<P: ProviderStore, V: ValueStore>(
    c: &mut Criterion,
    name: &str,
    store: &P,
    values: &V,
) {
    let mut g = c.benchmark_group("get_providers");
    g.throughput(Throughput::Elements(1));
    let keys = stored_keys();
    let client = Sender::client(internet_peer(u64::MAX));
    let h = handler(table(10_000), store, values, no_limit());
    // Every key has its provider.
    assert!(!store.providers(&keys[0], 20, NOW + 1).unwrap().is_empty());
    let mut i = 0;
    g.bench_function(BenchmarkId::new("handler", name), |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let key = keys[i].clone();
            black_box(
                h.handle(&client, Request::GetProviders { key }, NOW + 1)
                    .unwrap(),
            )
        })
    });
    let mut i = 0;
    g.bench_function(BenchmarkId::new("store_only", name), |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(store.providers(&keys[i], 20, NOW + 1).unwrap())
        })
    });
    g.finish();
}

fn bench_get_providers(c: &mut Criterion) {
    {
        let store = MemoryStore::new();
        fill(&store);
        bench_get_providers_on(c, "memory_1m", &store, &store);
    }
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(RocksStore::open(dir.path(), Config::default().with_sync_writes(false)).unwrap());
    fill(&*store);
    store.flush().unwrap();
    bench_get_providers_on(c, "rocksdb_1m", &*store, &*store);
    let grouped = GroupWriter::new(
        Arc::clone(&store),
        WriterConfig::default().with_inbound_waits(false),
    )
    .unwrap();
    bench_get_providers_on(c, "rocksdb_1m_grouped", &grouped, &*store);
}

criterion_group!(benches, bench_find_node, bench_get_providers);
criterion_main!(benches);
