//! A 10-million-key keystore: fresh open, region scans, and a full sweep of the keyspace
//! region by region, with the process's memory read from `/proc/self/status`.
//!
//! ```sh
//! AMINO_BENCH_10M=1 cargo bench -p dht-provider-store --bench keystore_10m
//! ```
//!
//! The database is built once, by a child process (so its memory is not counted), under
//! `$HOME/.cache/amino-dht/keystore-10m` (override with `KEYSTORE_10M_DIR`; the key count with
//! `KEYSTORE_10M_KEYS`), and reused by later runs. Without `AMINO_BENCH_10M=1` and with no
//! database built, the bench does nothing (so `cargo bench` stays quick).
#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dht_proto::{Key, Prefix};
use dht_provider_store::{Config, Keystore, Multihash, RocksStore};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Region prefix length: 10M / 2^12 ≈ 2,441 keys per region.
const REGION_BITS: usize = 12;

fn mh(i: u64) -> Multihash {
    Multihash::wrap(0x12, Key::hash(&i.to_be_bytes()).as_bytes()).unwrap()
}

fn proc_status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l.trim_start_matches(field).trim().to_string())
        })
        .unwrap_or_else(|| "n/a".into())
}

fn build(dir: &Path, n: u64) {
    let t = Instant::now();
    let store = RocksStore::open(
        dir,
        Config::default()
            .with_sync_writes(false)
            .with_write_buffer_bytes(256 << 20),
    )
    .unwrap();
    let batch = 100_000u64;
    let mut start = store.count().unwrap();
    // Resume a partial build: keys are put in order, so the count says where to go on.
    start -= start % batch;
    for b in (start..n).step_by(batch as usize) {
        let keys: Vec<Multihash> = (b..(b + batch).min(n)).map(mh).collect();
        store.put(&keys).unwrap();
        if (b / batch).is_multiple_of(10) {
            println!("  built {b} keys in {:.0?}", t.elapsed());
        }
    }
    store.flush().unwrap();
    println!("  compacting ({:.0?} so far)", t.elapsed());
    store.compact().unwrap();
    assert_eq!(store.count().unwrap(), n);
    drop(store);
    std::fs::write(dir.join("BUILT"), n.to_string()).unwrap();
    println!("built {n} keys in {:.1?}", t.elapsed());
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let q = |f: f64| v[((v.len() - 1) as f64 * f) as usize];
    format!(
        "median {:.3?}, p90 {:.3?}, max {:.3?} (n={})",
        q(0.5),
        q(0.9),
        q(1.0),
        v.len()
    )
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn measure(dir: &Path, n: u64) {
    println!(
        "before open: VmRSS {}, VmHWM {}",
        proc_status("VmRSS:"),
        proc_status("VmHWM:")
    );
    let t = Instant::now();
    let store = RocksStore::open(dir, Config::default()).unwrap();
    let open = t.elapsed();
    let count = store.count().unwrap();
    assert_eq!(count, n);
    println!(
        "open {open:.1?}; count {count}; database {:.0} MiB on disk; VmRSS {}",
        dir_size(dir) as f64 / (1 << 20) as f64,
        proc_status("VmRSS:")
    );

    // Random regions, first touch (RocksDB's block cache cold; the OS page cache may not be).
    let mut rng = SmallRng::seed_from_u64(1);
    let regions: Vec<Prefix> = (0..200)
        .map(|_| {
            let mut b = [0u8; 32];
            rng.fill(&mut b);
            Prefix::new(&Key::from_bytes(b), REGION_BITS)
        })
        .collect();
    let mut first = Vec::new();
    for p in &regions {
        let t = Instant::now();
        let got = store.scan(p, None, 2000).unwrap();
        first.push(t.elapsed());
        assert_eq!(got.len(), 2000);
    }
    println!("scan(region, limit 2000), first touch: {}", stats(first));
    let mut again = Vec::new();
    for _ in 0..3 {
        for p in &regions {
            let t = Instant::now();
            let got = store.scan(p, None, 2000).unwrap();
            again.push(t.elapsed());
            assert_eq!(got.len(), 2000);
        }
    }
    println!("scan(region, limit 2000), again:       {}", stats(again));

    // The sweep's access pattern: every region in keyspace order, each read in pages.
    let t = Instant::now();
    let mut total = 0u64;
    let mut region_times = Vec::new();
    for i in 0..(1u64 << REGION_BITS) {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&(i << (64 - REGION_BITS)).to_be_bytes());
        let p = Prefix::new(&Key::from_bytes(b), REGION_BITS);
        let tr = Instant::now();
        total += store.scan_all(&p, 1000).unwrap().len() as u64;
        region_times.push(tr.elapsed());
    }
    assert_eq!(total, n);
    println!(
        "full sweep: {} regions, {total} keys in {:.2?}; per region {}",
        1u64 << REGION_BITS,
        t.elapsed(),
        stats(region_times)
    );
    println!(
        "after sweep: VmRSS {}, VmHWM {} (peak resident memory of this process)",
        proc_status("VmRSS:"),
        proc_status("VmHWM:")
    );
}

fn main() {
    let n: u64 = std::env::var("KEYSTORE_10M_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir: PathBuf = std::env::var_os("KEYSTORE_10M_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
            PathBuf::from(home).join(format!(".cache/amino-dht/keystore-{n}"))
        });
    if std::env::args().any(|a| a == "--build-keystore") {
        build(&dir, n);
        return;
    }
    let built = std::fs::read_to_string(dir.join("BUILT")).ok();
    if built.as_deref() != Some(&n.to_string()) {
        if std::env::var("AMINO_BENCH_10M").as_deref() != Ok("1") {
            println!(
                "keystore_10m: no database at {}; set AMINO_BENCH_10M=1 to build it (once)",
                dir.display()
            );
            return;
        }
        println!("building {n} keys at {} (a child process)", dir.display());
        let status = Command::new(std::env::current_exe().unwrap())
            .arg("--build-keystore")
            .status()
            .unwrap();
        assert!(status.success(), "build failed");
    }
    measure(&dir, n);
}
