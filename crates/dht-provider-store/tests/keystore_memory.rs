//! The memory one keystore call takes does not grow with all the keys it is given at once.
//!
//! Its own test binary (one test, one process), so that the peak resident set it reads
//! (`VmHWM` of `/proc/self/status`) is this test's alone. Linux only.

#![cfg(target_os = "linux")]

mod common;

use common::mh;
use dht_provider_store::{Config, Keystore, Multihash, RocksStore};

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("the field is in /proc/self/status")
}

/// 100,000 keys in one `put` (a provide call of the HTTP API hands the keystore all its
/// keys at once) and again in one `delete`: the peak resident set may grow by the keys'
/// own size and what RocksDB holds of them (its memtable), not by a read of all of them
/// at once (one `MultiGet` over 100,000 keys took about 50 MB, measured with heaptrack on
/// `dht-node`).
#[test]
fn one_large_put_reads_the_keystore_in_chunks() {
    const KEYS: u64 = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RocksStore::open(dir.path(), Config::small()).expect("open");
    let keys: Vec<Multihash> = (0..KEYS).map(mh).collect();
    // Warm up: RocksDB's first write allocates its arenas, the WAL writer and so on.
    store.put(&[mh(KEYS + 1)]).expect("put");

    // The inputs are 100,000 × 72 bytes; the batch written, the memtable and the returned
    // list of new keys take about as much each. Before, the one read of all keys at once
    // took about 50 MB more.
    let before = status_kib("VmHWM:");
    let new = store.put(&keys).expect("put");
    assert_eq!(new.len(), keys.len());
    drop(new);
    let put_mib = status_kib("VmHWM:").saturating_sub(before) / 1024;
    let before = status_kib("VmHWM:");
    assert_eq!(store.delete(&keys).expect("delete"), KEYS);
    let delete_mib = status_kib("VmHWM:").saturating_sub(before) / 1024;
    assert!(
        put_mib <= 40 && delete_mib <= 40,
        "the peak resident set grew by {put_mib} MiB over one put and {delete_mib} MiB over \
         one delete of {KEYS} keys"
    );
    assert_eq!(store.count().expect("count"), 1);
}
