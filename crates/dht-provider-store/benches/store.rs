//! Criterion benches of the stores, each beside libp2p-kad's `MemoryStore` where it can do
//! the same operation, in the same run:
//!
//! - `ingest_1000`: a batch of 1,000 provider records for new keys; `ingest_10000`: batches
//!   of 10,000 into RocksDB (a bulk import).
//! - `providers_cached`: `providers(key)` for keys whose list is in the LRU cache.
//! - `providers_uncached`: `providers(key)` with the cache off, 100k keys flushed to SST files.
//! - `keystore_scan`: one region (prefix of 6 bits, ~1,560 keys) of a 100k-key keystore.
//!   libp2p-kad has no region read: its baseline walks `provided()` and hashes every key.
//!
//! `cargo bench -p dht-provider-store --bench store -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dht_proto::{Key, Multiaddr, PeerId, Prefix, ProviderRecord};
use dht_provider_store::{Config, Keystore, MemoryStore, Multihash, ProviderStore, RocksStore};
use libp2p_kad::store::{MemoryStore as KadStore, MemoryStoreConfig, RecordStore};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const NOW: u64 = dht_test_kit::EPOCH;
const BATCH: usize = 1000;

struct Gen {
    rng: SmallRng,
    peers: Vec<(PeerId, Vec<Multiaddr>)>,
}

impl Gen {
    fn new() -> Self {
        let mut rng = SmallRng::seed_from_u64(7);
        let peers = (0..1000u32)
            .map(|i| {
                let n = 1 + (i % 2) as usize;
                let addrs = (0..n)
                    .map(|j| {
                        format!("/ip4/10.{}.{}.{}/tcp/{}", i >> 8, i & 255, j, 4001 + j)
                            .parse()
                            .expect("valid address")
                    })
                    .collect();
                let mut digest = [0u8; 32];
                rng.fill(&mut digest);
                let mh = Multihash::wrap(0x12, &digest).expect("fits");
                (PeerId::from_multihash(mh).expect("sha256 peer id"), addrs)
            })
            .collect();
        Gen { rng, peers }
    }

    fn key(&mut self) -> Vec<u8> {
        let mut digest = [0u8; 32];
        self.rng.fill(&mut digest);
        Multihash::wrap(0x12, &digest).expect("fits").to_bytes()
    }

    fn record(&mut self, key: Vec<u8>) -> ProviderRecord {
        let peer = self.rng.random_range(0..self.peers.len());
        self.record_by(key, peer)
    }

    /// The record of peer number `peer` (modulo the peer count) for `key`.
    fn record_by(&self, key: Vec<u8>, peer: usize) -> ProviderRecord {
        let (provider, addrs) = self.peers[peer % self.peers.len()].clone();
        ProviderRecord {
            key,
            provider,
            addrs,
            received_at: NOW,
        }
    }

    fn batch(&mut self, n: usize) -> Vec<ProviderRecord> {
        (0..n)
            .map(|_| {
                let k = self.key();
                self.record(k)
            })
            .collect()
    }
}

fn to_kad(r: &ProviderRecord) -> libp2p_kad::ProviderRecord {
    libp2p_kad::ProviderRecord::new(
        libp2p_kad::RecordKey::new(&r.key),
        r.provider,
        r.addrs.clone(),
    )
}

fn kad_store() -> KadStore {
    KadStore::with_config(
        PeerId::random(),
        MemoryStoreConfig {
            max_provided_keys: usize::MAX,
            max_records: usize::MAX,
            ..MemoryStoreConfig::default()
        },
    )
}

fn rocks(config: Config) -> (tempfile::TempDir, RocksStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RocksStore::open(dir.path(), config).expect("open");
    (dir, store)
}

fn ingest(c: &mut Criterion) {
    let mut g = c.benchmark_group("ingest_1000");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut generator = Gen::new();
    for (name, sync) in [("rocks_nosync", false), ("rocks_fsync", true)] {
        let (_dir, store) = rocks(Config::default().with_sync_writes(sync));
        g.bench_function(name, |b| {
            b.iter_batched(
                || generator.batch(BATCH),
                |batch| store.add_providers(&batch).expect("add"),
                BatchSize::SmallInput,
            )
        });
    }
    let memory = MemoryStore::new();
    g.bench_function("memory", |b| {
        b.iter_batched(
            || generator.batch(BATCH),
            |batch| memory.add_providers(&batch).expect("add"),
            BatchSize::SmallInput,
        )
    });
    let mut kad = kad_store();
    g.bench_function("libp2p_kad_memory", |b| {
        b.iter_batched(
            || {
                generator
                    .batch(BATCH)
                    .iter()
                    .map(to_kad)
                    .collect::<Vec<_>>()
            },
            |batch| {
                for r in batch {
                    kad.add_provider(r).expect("add");
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // Bulk import: batches of 10,000 (the existence checks walk the key space in order).
    let mut g = c.benchmark_group("ingest_10000");
    g.throughput(Throughput::Elements(10 * BATCH as u64));
    g.sample_size(20);
    let (_dir, store) = rocks(Config::default().with_sync_writes(false));
    g.bench_function("rocks_nosync", |b| {
        b.iter_batched(
            || generator.batch(10 * BATCH),
            |batch| store.add_providers(&batch).expect("add"),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// `keys` keys with 3 distinct providers each, in every store.
fn filled(
    generator: &mut Gen,
    keys: usize,
    config: Config,
) -> (
    Vec<Vec<u8>>,
    (tempfile::TempDir, RocksStore),
    MemoryStore,
    KadStore,
) {
    let keys: Vec<Vec<u8>> = (0..keys).map(|_| generator.key()).collect();
    // Three distinct providers a key.
    let mut records = Vec::with_capacity(keys.len() * 3);
    for k in &keys {
        let first = generator.rng.random_range(0..generator.peers.len());
        for j in 0..3 {
            records.push(generator.record_by(k.clone(), first + j));
        }
    }
    let (dir, store) = rocks(config.with_sync_writes(false));
    let memory = MemoryStore::new();
    let mut kad = kad_store();
    for chunk in records.chunks(10_000) {
        store.add_providers(chunk).expect("add");
        memory.add_providers(chunk).expect("add");
    }
    for r in &records {
        kad.add_provider(to_kad(r)).expect("add");
    }
    store.flush().expect("flush");
    (keys, (dir, store), memory, kad)
}

fn providers_reads(c: &mut Criterion) {
    let mut generator = Gen::new();

    // Cached: 10k keys, a hot set of 1,000 in the cache.
    let (keys, (_dir, store), memory, kad) = filled(&mut generator, 10_000, Config::default());
    let hot: Vec<&Vec<u8>> = keys.iter().take(1000).collect();
    let kad_hot: Vec<libp2p_kad::RecordKey> = hot.iter().map(libp2p_kad::RecordKey::new).collect();
    for k in &hot {
        assert_eq!(store.providers(k, 20, NOW).expect("read").len(), 3);
    }
    let mut g = c.benchmark_group("providers_cached");
    let mut i = 0usize;
    g.bench_function("rocks_lru", |b| {
        b.iter(|| {
            i = (i + 1) % hot.len();
            black_box(store.providers(hot[i], 20, NOW).expect("read"))
        })
    });
    g.bench_function("memory", |b| {
        b.iter(|| {
            i = (i + 1) % hot.len();
            black_box(memory.providers(hot[i], 20, NOW).expect("read"))
        })
    });
    g.bench_function("libp2p_kad_memory", |b| {
        b.iter(|| {
            i = (i + 1) % kad_hot.len();
            black_box(kad.providers(&kad_hot[i]))
        })
    });
    g.finish();
    drop((store, memory, kad));

    // Uncached: 100k keys, cache off, data in SST files (block cache warm after warm-up).
    let (keys, (_dir2, store), _memory, kad) = filled(
        &mut generator,
        100_000,
        Config::default().with_cache_entries(0),
    );
    let kad_keys: Vec<libp2p_kad::RecordKey> =
        keys.iter().map(libp2p_kad::RecordKey::new).collect();
    let absent: Vec<Vec<u8>> = (0..1000).map(|_| generator.key()).collect();
    let mut rng = SmallRng::seed_from_u64(9);
    let order: Vec<usize> = (0..4096).map(|_| rng.random_range(0..keys.len())).collect();
    let mut g = c.benchmark_group("providers_uncached");
    let mut j = 0usize;
    g.bench_function("rocks_hit", |b| {
        b.iter(|| {
            j = (j + 1) % order.len();
            black_box(store.providers(&keys[order[j]], 20, NOW).expect("read"))
        })
    });
    g.bench_function("rocks_miss", |b| {
        b.iter(|| {
            j = (j + 1) % absent.len();
            black_box(store.providers(&absent[j], 20, NOW).expect("read"))
        })
    });
    g.bench_function("libp2p_kad_memory_hit", |b| {
        b.iter(|| {
            j = (j + 1) % order.len();
            black_box(kad.providers(&kad_keys[order[j]]))
        })
    });
    g.finish();
}

fn keystore_scan(c: &mut Criterion) {
    const KEYS: u64 = 100_000;
    let mhs: Vec<Multihash> = (0..KEYS)
        .map(|i| Multihash::wrap(0x12, Key::hash(&i.to_be_bytes()).as_bytes()).expect("fits"))
        .collect();
    let (_dir, store) = rocks(Config::default().with_sync_writes(false));
    let memory = MemoryStore::new();
    let local = PeerId::random();
    let mut kad = KadStore::with_config(
        local,
        MemoryStoreConfig {
            max_provided_keys: usize::MAX,
            ..MemoryStoreConfig::default()
        },
    );
    for chunk in mhs.chunks(10_000) {
        store.put(chunk).expect("put");
        memory.put(chunk).expect("put");
    }
    for m in &mhs {
        kad.add_provider(libp2p_kad::ProviderRecord::new(
            libp2p_kad::RecordKey::new(&m.to_bytes()),
            local,
            Vec::new(),
        ))
        .expect("add");
    }
    store.flush().expect("flush");
    let prefixes: Vec<Prefix> = (0u8..64)
        .map(|i| {
            let mut b = [0u8; 32];
            b[0] = i << 2;
            Prefix::new(&Key::from_bytes(b), 6)
        })
        .collect();

    let mut g = c.benchmark_group("keystore_scan_100k_region6");
    let mut i = 0usize;
    g.bench_function("rocks", |b| {
        b.iter(|| {
            i = (i + 1) % prefixes.len();
            black_box(store.scan(&prefixes[i], None, 10_000).expect("scan"))
        })
    });
    g.bench_function("memory", |b| {
        b.iter(|| {
            i = (i + 1) % prefixes.len();
            black_box(memory.scan(&prefixes[i], None, 10_000).expect("scan"))
        })
    });
    g.sample_size(10);
    g.bench_function("libp2p_kad_memory_provided_filter", |b| {
        b.iter(|| {
            i = (i + 1) % prefixes.len();
            let p = prefixes[i];
            black_box(
                kad.provided()
                    .filter(|r| p.contains(&Key::hash(r.key.as_ref())))
                    .count(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, ingest, providers_reads, keystore_scan);
criterion_main!(benches);
