//! Sustained provider ingest, as a DHT server taking ADD_PROVIDERs for hours sees it, where
//! the criterion bench (`store`, `ingest_1000`) sees a few seconds: millions of records in
//! batches of 1,000 into `RocksStore` (fsynced, on disk) and, in the same run, into this
//! crate's `MemoryStore` and libp2p-kad's `MemoryStore`. Then the RocksDB store's steady
//! state: every record re-announced (a refresh of a held record), and the hourly expiry sweep
//! with nothing expired and with everything expired. Last, a DHT server's own write pattern:
//! single-record ADD_PROVIDERs from many connections at once, each fsynced, by 1, 8 and 32
//! threads (writers of different keys share RocksDB's commit groups).
//!
//! ```sh
//! cargo bench -p dht-provider-store --bench provider_bulk
//! ```
//!
//! `PROVIDER_BULK_RECORDS` sets the record count (default 2,000,000).
#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dht_proto::{Multiaddr, PeerId, ProviderRecord};
use dht_provider_store::{Config, MemoryStore, Multihash, ProviderStore, RocksStore};
use libp2p_kad::store::{MemoryStore as KadStore, MemoryStoreConfig, RecordStore};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const BATCH: usize = 1000;
const T0: u64 = dht_test_kit::EPOCH;
const H: u64 = 3600;

/// `n` records for random keys, each from one of 1,000 peers with one or two addresses.
fn records(n: usize) -> Vec<ProviderRecord> {
    let mut rng = SmallRng::seed_from_u64(7);
    let peers: Vec<(PeerId, Vec<Multiaddr>)> = (0..1000u32)
        .map(|i| {
            let addrs = (0..1 + i % 2)
                .map(|j| {
                    format!("/ip4/10.{}.{}.{j}/tcp/4001", i >> 8, i & 255)
                        .parse()
                        .unwrap()
                })
                .collect();
            let mut digest = [0u8; 32];
            rng.fill(&mut digest);
            let mh = Multihash::wrap(0x12, &digest).unwrap();
            (PeerId::from_multihash(mh).unwrap(), addrs)
        })
        .collect();
    (0..n)
        .map(|_| {
            let mut digest = [0u8; 32];
            rng.fill(&mut digest);
            let (provider, addrs) = peers[rng.random_range(0..peers.len())].clone();
            ProviderRecord {
                key: Multihash::wrap(0x12, &digest).unwrap().to_bytes(),
                provider,
                addrs,
                received_at: T0,
            }
        })
        .collect()
}

/// Records per second of `add` over all of `recs` in batches, with the slowest tenth's rate.
fn ingest(recs: &[ProviderRecord], mut add: impl FnMut(&[ProviderRecord])) -> (f64, f64) {
    let t = Instant::now();
    let tenth = recs.len().div_ceil(10);
    let mut slowest = Duration::ZERO;
    for part in recs.chunks(tenth) {
        let t = Instant::now();
        for batch in part.chunks(BATCH) {
            add(batch);
        }
        slowest = slowest.max(t.elapsed());
    }
    let rate = recs.len() as f64 / t.elapsed().as_secs_f64();
    (rate, tenth as f64 / slowest.as_secs_f64())
}

fn main() {
    let n: usize = std::env::var("PROVIDER_BULK_RECORDS")
        .ok()
        .map(|v| v.parse().expect("PROVIDER_BULK_RECORDS: a number"))
        .unwrap_or(2_000_000);
    let recs = records(n);
    println!("provider_bulk: {n} records in batches of {BATCH}");

    let dir = tempfile::tempdir().unwrap();
    let rocks = RocksStore::open(dir.path(), Config::default()).unwrap();
    let (rocks_rate, rocks_slow) = ingest(&recs, |b| rocks.add_providers(b).unwrap());
    println!(
        "  rocks (fsync)      ingest {rocks_rate:>9.0} records/s (slowest tenth {rocks_slow:.0}/s)"
    );

    let memory = MemoryStore::new();
    let (mem_rate, mem_slow) = ingest(&recs, |b| memory.add_providers(b).unwrap());
    println!(
        "  memory             ingest {mem_rate:>9.0} records/s (slowest tenth {mem_slow:.0}/s)"
    );
    drop(memory);

    let mut kad = KadStore::with_config(
        PeerId::random(),
        MemoryStoreConfig {
            max_provided_keys: usize::MAX,
            max_records: usize::MAX,
            ..MemoryStoreConfig::default()
        },
    );
    let (kad_rate, kad_slow) = ingest(&recs, |b| {
        for r in b {
            let rec = libp2p_kad::ProviderRecord::new(
                libp2p_kad::RecordKey::new(&r.key),
                r.provider,
                r.addrs.clone(),
            );
            kad.add_provider(rec).unwrap();
        }
    });
    println!(
        "  libp2p-kad memory  ingest {kad_rate:>9.0} records/s (slowest tenth {kad_slow:.0}/s)"
    );
    drop(kad);
    println!(
        "  rocks / memory {:.2}x, rocks / libp2p-kad memory {:.2}x",
        rocks_rate / mem_rate,
        rocks_rate / kad_rate
    );

    // Steady state of a DHT server: the same providers re-announce 22 h later.
    let again: Vec<ProviderRecord> = recs
        .iter()
        .map(|r| ProviderRecord {
            received_at: T0 + 22 * H,
            ..r.clone()
        })
        .collect();
    let (re_rate, re_slow) = ingest(&again, |b| rocks.add_providers(b).unwrap());
    println!("  rocks re-announce  {re_rate:>9.0} records/s (slowest tenth {re_slow:.0}/s)");

    drop(again);
    let t = Instant::now();
    assert_eq!(rocks.remove_expired(T0 + 48 * H).unwrap(), 0);
    let scan = t.elapsed();
    let t = Instant::now();
    assert_eq!(rocks.remove_expired(T0 + 70 * H).unwrap(), n as u64);
    let all = t.elapsed();
    println!(
        "  rocks sweep: nothing expired {scan:.2?} ({:.0} records/s), all expired {all:.2?} ({:.0} records/s)",
        n as f64 / scan.as_secs_f64(),
        n as f64 / all.as_secs_f64()
    );
    drop(rocks);

    // One record per call, fsynced, from `threads` threads: the server's inbound pattern.
    let single = |threads: usize| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RocksStore::open(dir.path(), Config::default()).unwrap());
        let per = 4000 / threads;
        let parts: Vec<Vec<ProviderRecord>> = recs[..per * threads]
            .chunks(per)
            .map(<[ProviderRecord]>::to_vec)
            .collect();
        let t = Instant::now();
        let writers: Vec<_> = parts
            .into_iter()
            .map(|part| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for r in part {
                        store.add_providers(&[r]).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        (per * threads) as f64 / t.elapsed().as_secs_f64()
    };
    let one = single(1);
    for threads in [1, 8, 32] {
        let rate = if threads == 1 { one } else { single(threads) };
        println!(
            "  rocks single-record fsynced adds, {threads:>2} threads: {rate:>7.0} records/s ({:.2}x one thread)",
            rate / one
        );
    }
}
