//! Benches: closest-20 queries and inserts at 1k, 10k and 100k peers, for `KBucketTable` and
//! `FullRoutingTable`, each beside a brute-force baseline measured in the same run; and the
//! memory held by a 100k-peer `FullRoutingTable`.
//!
//! - `closest20/<table>/<n>`: 20 closest peers to a random key. The brute-force baseline
//!   (`<table>_brute`) computes the distance to every peer the table holds (keys precomputed),
//!   selects the 20 smallest and sorts them.
//! - `insert_remove/<table>/<n>`: a `Seen` of a peer the table does not know followed by its
//!   `Removed`, so the table keeps its size; both steps hash the peer id, as the trait's callers
//!   pay that too. The baseline is an unsorted `Vec` with a linear duplicate check.
//!
//! At the end, `summary` prints every median beside its baseline's and the ratio, read from
//! the estimates criterion wrote in this run.
//!
//! `n` is the number of peers offered to the table: a `KBucketTable` keeps about
//! `20 * log2(n / 20)` of them, a `FullRoutingTable` all of them.
#![allow(clippy::unwrap_used)]
#![allow(clippy::print_stdout)] // A bench binary reports on stdout, as criterion does.

use std::{hint::black_box, path::PathBuf, sync::LazyLock, time::SystemTime};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dht_proto::{Distance, Key, PeerInfo};
use dht_routing_table::{
    Direction, FullRoutingTable, KBucketTable, ManualClock, PeerEvent, RoutingTable,
};
use dht_test_kit::internet_peer;

const SIZES: [(usize, &str); 3] = [(1_000, "1k"), (10_000, "10k"), (100_000, "100k")];
const N: usize = 20;

fn targets() -> Vec<Key> {
    (0..1024u64)
        .map(|i| Key::hash(&(u64::MAX - i).to_le_bytes()))
        .collect()
}

/// The baseline: an unsorted list with the keys precomputed.
struct BruteForce {
    entries: Vec<(Key, PeerInfo)>,
}

impl BruteForce {
    fn new(peers: impl IntoIterator<Item = PeerInfo>) -> Self {
        BruteForce {
            entries: peers.into_iter().map(|p| (p.key(), p)).collect(),
        }
    }

    fn closest(&self, key: &Key, n: usize) -> Vec<PeerInfo> {
        let mut d: Vec<(Distance, &PeerInfo)> = self
            .entries
            .iter()
            .map(|(k, p)| (key.distance(k), p))
            .collect();
        if d.len() > n && n > 0 {
            d.select_nth_unstable_by(n - 1, |a, b| a.0.cmp(&b.0));
        }
        d.truncate(n);
        d.sort_unstable_by_key(|a| a.0);
        d.into_iter().map(|(_, p)| p.clone()).collect()
    }

    fn insert(&mut self, peer: &PeerInfo) {
        let key = peer.key();
        if !self.entries.iter().any(|(k, _)| *k == key) {
            self.entries.push((key, peer.clone()));
        }
    }

    fn remove(&mut self, peer: &PeerInfo) {
        let key = peer.key();
        if let Some(i) = self.entries.iter().position(|(k, _)| *k == key) {
            self.entries.swap_remove(i);
        }
    }
}

fn kbucket_table(n: usize) -> KBucketTable {
    let table = KBucketTable::new(Key::hash(b"local"), Default::default(), ManualClock::new(0));
    for s in 0..n as u64 {
        table.update(&internet_peer(s), PeerEvent::Seen(Direction::Outbound));
    }
    table
}

fn full_table(n: usize) -> FullRoutingTable {
    let table = FullRoutingTable::new(Key::hash(b"local"), Default::default(), ManualClock::new(0));
    table.replace_all((0..n as u64).map(internet_peer), 0);
    table
}

/// Resident memory of this process in bytes, from `/proc/self/statm` (Linux; 4 KiB pages).
fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn memory(_c: &mut Criterion) {
    let before = rss_bytes();
    let table = full_table(100_000);
    let after = rss_bytes();
    let estimate = table.heap_size_estimate();
    println!(
        "memory/fullrt/100k: heap estimate {:.1} MiB ({} B/peer; entry {} B inline); RSS growth {}",
        estimate as f64 / (1 << 20) as f64,
        estimate / table.len(),
        std::mem::size_of::<(Key, PeerInfo)>(),
        match (before, after) {
            (Some(b), Some(a)) =>
                format!("{:.1} MiB", a.saturating_sub(b) as f64 / (1 << 20) as f64),
            _ => "unavailable".to_string(),
        },
    );
    let kb = kbucket_table(100_000);
    println!("kbucket/100k: holds {} of 100000 offered peers", kb.len());
}

fn closest(c: &mut Criterion) {
    let targets = targets();
    let mut group = c.benchmark_group("closest20");
    for (n, label) in SIZES {
        let kb = kbucket_table(n);
        let kb_brute = BruteForce::new(kb.peers());
        let full = full_table(n);
        let full_brute = BruteForce::new(full.peers());
        // The tables answer what brute force answers.
        for t in targets.iter().take(64) {
            assert_eq!(kb.closest_peers(t, N), kb_brute.closest(t, N));
            assert_eq!(full.closest_peers(t, N), full_brute.closest(t, N));
        }
        let mut i = 0;
        let mut next = || {
            i = (i + 1) % targets.len();
            &targets[i]
        };
        group.bench_function(BenchmarkId::new("kbucket", label), |b| {
            b.iter(|| black_box(kb.closest_peers(next(), N)))
        });
        group.bench_function(BenchmarkId::new("kbucket_brute", label), |b| {
            b.iter(|| black_box(kb_brute.closest(next(), N)))
        });
        group.bench_function(BenchmarkId::new("fullrt", label), |b| {
            b.iter(|| black_box(full.closest_peers(next(), N)))
        });
        group.bench_function(BenchmarkId::new("fullrt_brute", label), |b| {
            b.iter(|| black_box(full_brute.closest(next(), N)))
        });
    }
    // The same 100k peers without addresses: how much of a query is cloning the answer.
    let bare = FullRoutingTable::new(Key::hash(b"local"), Default::default(), ManualClock::new(0));
    bare.replace_all(
        (0..100_000u64).map(|s| PeerInfo::new(internet_peer(s).peer_id, vec![])),
        0,
    );
    let mut i = 0;
    group.bench_function(BenchmarkId::new("fullrt_no_addrs", "100k"), |b| {
        b.iter(|| {
            i = (i + 1) % targets.len();
            black_box(bare.closest_peers(&targets[i], N))
        })
    });
    group.finish();
}

fn insert(c: &mut Criterion) {
    let fresh: Vec<PeerInfo> = (0..4096u64).map(|s| internet_peer(1 << 40 | s)).collect();
    let mut group = c.benchmark_group("insert_remove");
    for (n, label) in SIZES {
        let kb = kbucket_table(n);
        let mut kb_brute = BruteForce::new(kb.peers());
        let full = full_table(n);
        let mut full_brute = BruteForce::new(full.peers());
        let mut i = 0;
        let mut next = || {
            i = (i + 1) % fresh.len();
            &fresh[i]
        };
        group.bench_function(BenchmarkId::new("kbucket", label), |b| {
            b.iter(|| {
                let p = next();
                black_box(kb.update(p, PeerEvent::Seen(Direction::Outbound)));
                black_box(kb.update(p, PeerEvent::Removed));
            })
        });
        group.bench_function(BenchmarkId::new("kbucket_brute", label), |b| {
            b.iter(|| {
                let p = next();
                kb_brute.insert(p);
                kb_brute.remove(p);
            })
        });
        group.bench_function(BenchmarkId::new("fullrt", label), |b| {
            b.iter(|| {
                let p = next();
                black_box(full.update(p, PeerEvent::Seen(Direction::Outbound)));
                black_box(full.update(p, PeerEvent::Removed));
            })
        });
        group.bench_function(BenchmarkId::new("fullrt_brute", label), |b| {
            b.iter(|| {
                let p = next();
                full_brute.insert(p);
                full_brute.remove(p);
            })
        });
        assert_eq!(full.len(), n);
    }
    group.finish();
}

/// The median of one bench as criterion recorded it in this run, in nanoseconds: from
/// `<criterion home>/<group>/<id>/<size>/new/estimates.json`, if written since `since`.
fn median_ns(group: &str, id: &str, size: &str, since: SystemTime) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("criterion"))
        })
        .unwrap_or_else(|| PathBuf::from("target/criterion"));
    let path = home
        .join(group)
        .join(id)
        .join(size)
        .join("new/estimates.json");
    let fresh = std::fs::metadata(&path).and_then(|m| m.modified()).ok()? >= since;
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    fresh.then(|| json["median"]["point_estimate"].as_f64())?
}

fn format_ns(ns: f64) -> String {
    match ns {
        ns if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        ns if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
        ns => format!("{ns:.0} ns"),
    }
}

/// Prints each table's median beside its brute-force baseline and the ratio, for the benches
/// that ran in this process (a name filter may have skipped some).
fn summary(_c: &mut Criterion) {
    let since = *START;
    println!("summary: medians (criterion's median estimate) vs brute force, this run");
    for group in ["closest20", "insert_remove"] {
        for table in ["kbucket", "fullrt"] {
            for (_, size) in SIZES {
                let brute = format!("{table}_brute");
                match (
                    median_ns(group, table, size, since),
                    median_ns(group, &brute, size, since),
                ) {
                    (Some(t), Some(b)) => println!(
                        "  {group}/{table}/{size}: {} vs {brute} {}: brute/table = {:.1}",
                        format_ns(t),
                        format_ns(b),
                        b / t
                    ),
                    (Some(t), None) => println!(
                        "  {group}/{table}/{size}: {} (no baseline in this run)",
                        format_ns(t)
                    ),
                    _ => {}
                }
            }
        }
    }
}

/// When this bench process started: `summary` reads only estimates written since.
static START: LazyLock<SystemTime> = LazyLock::new(SystemTime::now);

fn start_clock(_c: &mut Criterion) {
    LazyLock::force(&START);
}

criterion_group!(benches, start_clock, memory, closest, insert, summary);
criterion_main!(benches);
