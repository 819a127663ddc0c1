//! The grouped writer beside today's store calls, 64 sender threads on one RocksDB store
//! (the server's default [`Config`], fsync on), in the same run:
//!
//! - `plain`: one record per call, unsynced, from a network group: today
//!   `RocksStore::add_inbound_provider` (an inbound ADD_PROVIDER), against
//!   `GroupWriter::submit_inbound` and waiting for the answer.
//! - `durable`: one record per call, synced: today `RocksStore::add_providers`, against
//!   `GroupWriter::submit(.., Durability::Durable)` and waiting.
//! - `batch100_durable`: 100 records per call, synced (a batched provide): today
//!   `RocksStore::add_providers` of the batch, against one durable submission of it.
//!
//! Every sender waits for each call's answer before its next, so a writer commit holds at
//! most 64 submissions. Each variant writes new keys into a store of its own. After the
//! criterion runs it prints records per second of each and the writer's ratio to today.
//!
//! `cargo bench -p dht-provider-store --bench group_writer -- --warm-up-time 1 --measurement-time 3`
//! (or `cargo test` in place of `cargo bench`, with `-- --bench`, to reuse the test profile's build)
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use dht_proto::{Key, Multiaddr, PeerId, ProviderRecord};
use dht_provider_store::{
    Config, Durability, GroupWriter, Multihash, ProviderOutcome, ProviderStore, RocksStore,
    SourceGroup, WriterConfig,
};

const NOW: u64 = dht_test_kit::EPOCH;
const SENDERS: usize = 64;

/// Records each sender writes per iteration, one call at a time.
const SINGLE_PER_SENDER: usize = 64;
/// Batches each sender writes per iteration, and their size.
const BATCHES_PER_SENDER: usize = 4;
const BATCH: usize = 100;

/// The peers that provide (with an address and the group of their /24).
struct Peers(Vec<(PeerId, Vec<Multiaddr>, SourceGroup)>);

impl Peers {
    fn new() -> Self {
        Peers(
            (0..1024u32)
                .map(|i| {
                    let digest = Key::hash(&i.to_be_bytes());
                    let mh = Multihash::wrap(0x12, digest.as_bytes()).unwrap();
                    let (a, b) = ((i >> 8) as u8, (i & 255) as u8);
                    let addr = format!("/ip4/10.{a}.{b}.1/tcp/4001").parse().unwrap();
                    let group = SourceGroup::from_bytes(&[4, 10, a, b]);
                    (PeerId::from_multihash(mh).unwrap(), vec![addr], group)
                })
                .collect(),
        )
    }

    /// The record of a new key (number `n`) from a peer, and the peer's group.
    fn record(&self, n: u64) -> (ProviderRecord, SourceGroup) {
        let digest = Key::hash(&n.to_be_bytes());
        let key = Multihash::wrap(0x12, digest.as_bytes()).unwrap().to_bytes();
        let (peer, addrs, group) = &self.0[(n % self.0.len() as u64) as usize];
        let record = ProviderRecord {
            key,
            provider: *peer,
            addrs: addrs.clone(),
            received_at: NOW,
        };
        (record, *group)
    }
}

/// How one sender writes its share of an iteration: records `first..first + n`.
type Sender = dyn Fn(&Peers, u64, usize) + Send + Sync;

/// Runs `iters` rounds of `SENDERS` threads, each calling `send` for its share of
/// `per_sender` records, and returns the time taken; adds the records and time to `totals`.
fn rounds(
    iters: u64,
    per_sender: usize,
    peers: &Arc<Peers>,
    next: &AtomicU64,
    send: &Arc<Sender>,
    totals: &Mutex<(u64, Duration)>,
) -> Duration {
    let mut elapsed = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        let threads: Vec<_> = (0..SENDERS)
            .map(|_| {
                let first = next.fetch_add(per_sender as u64, Ordering::Relaxed);
                let (peers, send) = (Arc::clone(peers), Arc::clone(send));
                std::thread::spawn(move || send(&peers, first, per_sender))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        elapsed += start.elapsed();
    }
    let mut t = totals.lock().unwrap();
    t.0 += iters * (SENDERS * per_sender) as u64;
    t.1 += elapsed;
    elapsed
}

fn stored(answer: Vec<Result<ProviderOutcome, dht_provider_store::StoreError>>) {
    assert!(
        answer
            .iter()
            .all(|o| matches!(o, Ok(ProviderOutcome::Stored)))
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let peers = Arc::new(Peers::new());
    let totals: BTreeMap<&'static str, Arc<Mutex<(u64, Duration)>>> = [
        "plain/today",
        "plain/writer",
        "durable/today",
        "durable/writer",
        "batch100_durable/today",
        "batch100_durable/writer",
    ]
    .into_iter()
    .map(|n| (n, Arc::new(Mutex::new((0, Duration::ZERO)))))
    .collect();
    let mut dirs = Vec::new();
    let mut open = || {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RocksStore::open(dir.path(), Config::default()).unwrap());
        dirs.push(dir);
        store
    };

    for (name, per_sender) in [
        ("plain", SINGLE_PER_SENDER),
        ("durable", SINGLE_PER_SENDER),
        ("batch100_durable", BATCHES_PER_SENDER * BATCH),
    ] {
        let today = open();
        let writer = Arc::new(GroupWriter::new(open(), WriterConfig::default()).unwrap());
        let today_send: Arc<Sender> = match name {
            "plain" => Arc::new(move |p: &Peers, first: u64, n: usize| {
                for i in 0..n as u64 {
                    let (r, g) = p.record(first + i);
                    today.add_inbound_provider(&r, g).unwrap();
                }
            }),
            "durable" => Arc::new(move |p: &Peers, first: u64, n: usize| {
                for i in 0..n as u64 {
                    let (r, _) = p.record(first + i);
                    today.add_providers(std::slice::from_ref(&r)).unwrap();
                }
            }),
            _ => Arc::new(move |p: &Peers, first: u64, n: usize| {
                for b in 0..(n / BATCH) as u64 {
                    let batch: Vec<_> = (0..BATCH as u64)
                        .map(|i| p.record(first + b * BATCH as u64 + i).0)
                        .collect();
                    today.add_providers(&batch).unwrap();
                }
            }),
        };
        let w = Arc::clone(&writer);
        let writer_send: Arc<Sender> = match name {
            "plain" => Arc::new(move |p: &Peers, first: u64, n: usize| {
                for i in 0..n as u64 {
                    let (r, g) = p.record(first + i);
                    stored(w.submit_inbound(r, g).unwrap().wait().unwrap());
                }
            }),
            "durable" => Arc::new(move |p: &Peers, first: u64, n: usize| {
                for i in 0..n as u64 {
                    let (r, g) = p.record(first + i);
                    let t = w.submit(vec![r], Some(g), Durability::Durable).unwrap();
                    stored(t.wait().unwrap());
                }
            }),
            _ => Arc::new(move |p: &Peers, first: u64, n: usize| {
                for b in 0..(n / BATCH) as u64 {
                    let (batch, groups): (Vec<_>, Vec<_>) = (0..BATCH as u64)
                        .map(|i| p.record(first + b * BATCH as u64 + i))
                        .unzip();
                    let t = w.submit(batch, groups.first().copied(), Durability::Durable);
                    stored(t.unwrap().wait().unwrap());
                }
            }),
        };

        let mut group = c.benchmark_group(format!("group_writer/{name}"));
        group.throughput(Throughput::Elements((SENDERS * per_sender) as u64));
        // Iterations take tenths of a second: the same number in every sample.
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
        let next = AtomicU64::new(0);
        for (side, send) in [("today", &today_send), ("writer", &writer_send)] {
            let total = Arc::clone(&totals[format!("{name}/{side}").as_str()]);
            group.bench_function(side, |b| {
                b.iter_custom(|iters| rounds(iters, per_sender, &peers, &next, send, &total))
            });
        }
        group.finish();
        let s = writer.stats();
        println!(
            "  {name} writer: {} commits ({} synced) of {} records, {:.1} records a commit, largest {}",
            s.commits,
            s.synced_commits,
            s.records,
            s.records as f64 / s.commits.max(1) as f64,
            s.largest_commit
        );
    }
    c.final_summary();

    let rate = |n: &str| {
        let t = totals[n].lock().unwrap();
        t.0 as f64 / t.1.as_secs_f64().max(1e-9)
    };
    println!("\nrecords stored per second, {SENDERS} senders, each waiting for its answers:");
    for name in ["plain", "durable", "batch100_durable"] {
        let (today, writer) = (
            rate(&format!("{name}/today")),
            rate(&format!("{name}/writer")),
        );
        println!(
            "  {name:<17} today {today:>9.0}/s   writer {writer:>9.0}/s   ratio {:.2}x",
            writer / today.max(1e-9)
        );
    }
}
