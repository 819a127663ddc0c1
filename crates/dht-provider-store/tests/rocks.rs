//! RocksStore only: persistence across reopen, durability across SIGKILL, locking,
//! corrupt data, and the provider cache under concurrent readers and writers.
//!
//! Child processes are this test binary re-executed with an environment variable naming
//! the role (`--exact <test name>`); without the variable those tests return at once.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    DIR, H, ROLE, SYNC, T0, dht_key, filler_batch, lines, mh, parse_ack, rec, spawn_child,
};
use dht_proto::{Key, Prefix, ProviderRecord, Record};
use dht_provider_store::{
    Config, Keystore, Multihash, ProviderStore, RocksStore, StoreError, ValueStore,
};

// ---------------------------------------------------------------- durability

/// What batch `i` of the durability child writes: 10 provider records, 10 keystore keys and
/// one value record.
fn durability_batch(i: u64) -> (Vec<dht_proto::ProviderRecord>, Vec<Multihash>, Record) {
    let providers = (0..10).map(|j| rec(i * 10 + j, j, T0 + i)).collect();
    let keys = (0..10).map(|j| mh(1_000_000 + i * 10 + j)).collect();
    let value = Record::new(format!("/v/{i}").into_bytes(), i.to_be_bytes().to_vec());
    (providers, keys, value)
}

/// The child: writes batches forever (bounded), printing `ack i` after each acknowledged one.
#[test]
fn durability_child() {
    if std::env::var(ROLE).as_deref() != Ok("durability") {
        return;
    }
    let dir = std::env::var(DIR).unwrap();
    let sync = std::env::var(SYNC).as_deref() == Ok("1");
    let store = RocksStore::open(&dir, Config::small().with_sync_writes(sync)).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0..100_000 {
        let (providers, keys, value) = durability_batch(i);
        store.add_providers(&providers).unwrap();
        store.put(&keys).unwrap();
        store.put_value(&value, T0 + i).unwrap();
        writeln!(out, "ack {i}").unwrap();
        out.flush().unwrap();
    }
}

/// Kills the writer with SIGKILL after `min_acks` acknowledgements, reopens, and checks
/// that every acknowledged batch is there.
fn kill_and_verify(sync: bool, min_acks: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child("durability_child", "durability", dir.path(), sync);
    let (rx, reader) = lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acked: Option<u64> = None;
    while acked.is_none_or(|a| a + 1 < min_acks) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(n) = parse_ack(&line) {
                    acked = Some(n);
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the writer stopped after {acked:?} acks");
            }
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix: no destructors, no flush.
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child must have been killed");
    reader.join().unwrap();
    // Acks printed before the kill may still be in the pipe.
    for line in rx.try_iter() {
        acked = acked.max(parse_ack(&line));
    }
    let acked = acked.unwrap();

    let store = RocksStore::open(dir.path(), Config::small()).unwrap();
    let now = T0 + acked + 1;
    for i in 0..=acked {
        let (providers, keys, value) = durability_batch(i);
        for r in &providers {
            assert_eq!(
                store.providers(&r.key, 20, now).unwrap(),
                vec![r.clone()],
                "batch {i} of {acked} acknowledged"
            );
        }
        for k in &keys {
            let kad = Key::from_multihash(k);
            assert_eq!(
                store.scan(&Prefix::new(&kad, 256), None, 2).unwrap(),
                vec![(kad, *k)],
                "batch {i}"
            );
        }
        assert_eq!(
            store.get_value(&value.key, now).unwrap(),
            Some((value, T0 + i))
        );
    }
    // The count is written in the keys' batch: it matches the keys found.
    let n = store.count().unwrap();
    assert!(n >= (acked + 1) * 10, "count {n} after {acked} acks");
    assert_eq!(
        store.scan(&Prefix::ROOT, None, usize::MAX).unwrap().len() as u64,
        n
    );
}

/// Acknowledged writes survive SIGKILL with the default options (`sync_writes = true`: the
/// WAL is fsynced before a write returns, which also covers power loss).
#[test]
fn acknowledged_writes_survive_sigkill() {
    kill_and_verify(true, 30);
}

/// With `sync_writes = false`, acknowledged writes still survive the *process* being killed:
/// RocksDB has written the WAL to the OS before returning. (Not a machine crash: untested.)
#[test]
fn acknowledged_writes_survive_sigkill_without_fsync() {
    kill_and_verify(false, 200);
}

// ---------------------------------------------------------------- persistence

#[test]
fn a_setting_that_cannot_work_is_refused_before_the_directory_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    for (config, setting) in [
        (Config::default().with_expiry_chunk(0), "expiry_chunk"),
        (
            Config::default().with_max_providers_per_key(0),
            "max_providers_per_key",
        ),
        (
            Config::default().with_write_buffer_bytes(0),
            "write_buffer_bytes",
        ),
        (
            Config::default().with_max_background_jobs(0),
            "max_background_jobs",
        ),
    ] {
        match RocksStore::open(&path, config) {
            Err(StoreError::InvalidSetting(e)) => assert_eq!(e.setting, setting),
            Err(e) => panic!("{setting}: refused for another reason: {e}"),
            Ok(_) => panic!("{setting} 0 was taken"),
        }
        assert!(!path.exists(), "{setting}: the directory was made");
    }
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = RocksStore::open(dir.path(), Config::small()).unwrap();
        s.add_providers(&[rec(1, 1, T0), rec(1, 2, T0 + 1)])
            .unwrap();
        s.put_value(&Record::new(b"/pk/a".to_vec(), b"v".to_vec()), T0)
            .unwrap();
        s.put(&[mh(1), mh(2), mh(3)]).unwrap();
        s.delete(&[mh(2)]).unwrap();
        s.flush().unwrap();
        s.put(&[mh(4)]).unwrap(); // in the WAL only
    }
    let s = RocksStore::open(dir.path(), Config::small()).unwrap();
    assert_eq!(
        s.providers(&dht_key(1), 20, T0 + 2).unwrap(),
        vec![rec(1, 2, T0 + 1), rec(1, 1, T0)]
    );
    assert!(s.get_value(b"/pk/a", T0).unwrap().is_some());
    assert_eq!(s.count().unwrap(), 3);
    assert_eq!(s.put(&[mh(1), mh(2)]).unwrap(), vec![mh(2)]);
    // Expiry state persists too.
    assert_eq!(s.remove_expired(T0 + 1 + 48 * H).unwrap(), 2);
    assert_eq!(s.remove_expired_values(T0 + 48 * H).unwrap(), 1);
    s.compact().unwrap();
    assert!(s.providers(&dht_key(1), 20, T0).unwrap().is_empty());
}

#[test]
fn rocksdb_memory_follows_memtables_and_the_block_cache() {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksStore::open(dir.path(), Config::small()).unwrap();
    let empty = s.rocksdb_memory().unwrap();
    let keys: Vec<Multihash> = (0..20_000).map(mh).collect();
    s.put(&keys).unwrap();
    let written = s.rocksdb_memory().unwrap();
    // 20,000 keys of 66 bytes each (Kademlia key and multihash) sit in the memtables.
    assert!(
        written.memtables_bytes >= empty.memtables_bytes + 20_000 * 66,
        "{empty:?} then {written:?}"
    );
    s.flush().unwrap();
    let flushed = s.rocksdb_memory().unwrap();
    assert!(
        flushed.memtables_bytes < written.memtables_bytes / 2,
        "{written:?} then {flushed:?}"
    );
    // Reading the keys back brings their blocks into the cache.
    let all = s.scan_all(&Prefix::ROOT, 1000).unwrap();
    assert_eq!(all.len(), 20_000);
    let read = s.rocksdb_memory().unwrap();
    assert!(
        read.block_cache_bytes > flushed.block_cache_bytes,
        "{flushed:?} then {read:?}"
    );
    assert_eq!(
        read.total_bytes(),
        read.memtables_bytes + read.block_cache_bytes + read.table_readers_bytes
    );
}

// ---------------------------------------------------------------- locking

#[test]
fn second_open_in_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RocksStore::open(dir.path(), Config::small()).unwrap();
    match RocksStore::open(dir.path(), Config::small()) {
        Err(StoreError::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
}

/// The child: holds the database open until killed (at most 30 s).
#[test]
fn lock_holder_child() {
    if std::env::var(ROLE).as_deref() != Ok("lock") {
        return;
    }
    let _store = RocksStore::open(std::env::var(DIR).unwrap(), Config::small()).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "opened").unwrap();
    out.flush().unwrap();
    std::thread::sleep(Duration::from_secs(30));
}

#[test]
fn open_held_by_another_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child("lock_holder_child", "lock", dir.path(), false);
    let (rx, _reader) = lines(&mut child);
    let opened = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.ends_with("opened") => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    let result = RocksStore::open(dir.path(), Config::small());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(opened, "the child did not open the database");
    assert!(
        matches!(result, Err(StoreError::Locked { .. })),
        "expected Locked, got {result:?}"
    );
    // Once the holder is gone the lock is released.
    RocksStore::open(dir.path(), Config::small()).unwrap();
}

// ---------------------------------------------------------------- full disk

/// Size of the tmpfs the full-disk child writes to, and the size it grows to afterwards.
const SMALL_FS: &str = "size=24m";
const LARGER_FS: &str = "size=256m";

/// Writes [`filler_batch`]es until the disk is full; checks the error is
/// [`StoreError::DiskFull`] and returns how many batches were acknowledged.
fn fill_until_full(store: &RocksStore) -> u64 {
    let mut acked = 0;
    let err = loop {
        assert!(acked < 2_000, "24 MiB never filled up");
        match store.add_providers(&filler_batch(acked)) {
            Ok(()) => acked += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, StoreError::DiskFull), "{err:?}");
    acked
}

/// Grows the child's tmpfs at `dir` to [`LARGER_FS`].
fn grow_tmpfs(dir: &str) {
    let grown = Command::new("mount")
        .args(["-o", &format!("remount,{LARGER_FS}"), dir])
        .status()
        .unwrap();
    assert!(grown.success(), "remount failed");
}

/// The child, run by [`a_full_disk_is_an_error_and_loses_nothing`] in its own user and mount
/// namespaces, on a small tmpfs mounted at the test directory: writes until the disk is full,
/// checks the error and that every acknowledged record still reads, then grows the tmpfs,
/// reopens and checks them all again. Prints `ok <acknowledged batches>` at the end.
#[test]
fn disk_full_child() {
    if std::env::var(ROLE).as_deref() != Ok("disk_full") {
        return;
    }
    let dir = std::env::var(DIR).unwrap();
    let store = RocksStore::open(&dir, Config::small()).unwrap();
    let acked = fill_until_full(&store);
    assert!(acked > 0, "the store could not write anything");
    // Later writes fail too (RocksDB stops writing), and nothing acknowledged is lost.
    assert!(store.add_providers(&filler_batch(acked)).is_err());
    let check = |store: &RocksStore| {
        for i in 0..acked {
            for r in filler_batch(i) {
                assert_eq!(store.providers(&r.key, 20, T0).unwrap(), vec![r]);
            }
        }
    };
    check(&store);
    drop(store);

    grow_tmpfs(&dir);
    let store = RocksStore::open(&dir, Config::small()).unwrap();
    check(&store);
    store.add_providers(&filler_batch(acked)).unwrap();
    println!("ok {acked}");
}

/// A full disk is [`StoreError::DiskFull`], never a panic, and loses nothing acknowledged;
/// with space again, the store reopens with every record and takes writes. The child runs on
/// a real (small) filesystem: a tmpfs mounted in a user namespace (`unshare`), which needs no
/// privileges where unprivileged user namespaces are enabled.
#[test]
fn a_full_disk_is_an_error_and_loses_nothing() {
    if !common::user_namespaces() {
        eprintln!("skipped: `unshare --user --map-root-user --mount` is not available here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let acked = common::run_on_tmpfs(SMALL_FS, "disk_full_child", "disk_full", dir.path());
    assert!(acked > 0);
}

/// The child of [`a_disk_that_frees_again_takes_writes_without_a_reopen`]: fills the disk,
/// grows the tmpfs with the store still open, and writes again until a write is taken
/// (bounded: 30 s). Prints `ok <milliseconds until the first write taken>`.
#[test]
fn disk_frees_child() {
    if std::env::var(ROLE).as_deref() != Ok("disk_frees") {
        return;
    }
    let dir = std::env::var(DIR).unwrap();
    let store = RocksStore::open(&dir, Config::small()).unwrap();
    let acked = fill_until_full(&store);
    grow_tmpfs(&dir);
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(30) {
        match store.add_providers(&filler_batch(acked)) {
            Ok(()) => {
                for i in 0..=acked {
                    for r in filler_batch(i) {
                        assert_eq!(store.providers(&r.key, 20, T0).unwrap(), vec![r]);
                    }
                }
                println!("ok {}", start.elapsed().as_millis());
                return;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no write taken 30 s after the disk had room again: {last:?}");
}

/// A disk that fills and then has room again takes writes again without the store being
/// reopened: the node keeps serving and storing once an operator frees space.
#[test]
fn a_disk_that_frees_again_takes_writes_without_a_reopen() {
    if !common::user_namespaces() {
        eprintln!("skipped: `unshare --user --map-root-user --mount` is not available here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ms = common::run_on_tmpfs(SMALL_FS, "disk_frees_child", "disk_frees", dir.path());
    eprintln!("first write taken {ms} ms after the disk had room again");
}

// ---------------------------------------------------------------- corruption

/// Writes raw bytes into a column family, bypassing the store.
fn raw_put(dir: &Path, cf: &str, key: &[u8], value: &[u8]) {
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).unwrap();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, &cfs).unwrap();
    let handle = db.cf_handle(cf).unwrap();
    db.put_cf(handle, key, value).unwrap();
}

fn raw_get(dir: &Path, cf: &str, key: &[u8]) -> Option<Vec<u8>> {
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).unwrap();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, &cfs).unwrap();
    let handle = db.cf_handle(cf).unwrap();
    db.get_cf(handle, key).unwrap()
}

fn assert_corrupt<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    assert!(
        matches!(r, Err(StoreError::Corrupt { .. })),
        "expected Corrupt, got {r:?}"
    );
}

#[test]
fn corrupt_provider_value_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = rec(1, 1, T0);
    drop(RocksStore::open(dir.path(), Config::small()).unwrap());
    let mut key = r.kad_key().as_bytes().to_vec();
    key.extend_from_slice(&r.provider.to_bytes());
    // (garbage, whether its header (version, received_at) still decodes)
    for (garbage, header_ok) in [
        (&b""[..], false),
        (b"\x01", false),
        (b"\x07garbage", false),
        (b"\x01\0\0\0\0\0\0\0\x01\xff\xff", true),
    ] {
        raw_put(dir.path(), "providers", &key, garbage);
        let s = RocksStore::open(dir.path(), Config::small()).unwrap();
        assert_corrupt(s.providers(&r.key, 20, T0));
        // Writers to that key need the header (for the cap): without it they fail too,
        // rather than guessing.
        let added = s.add_providers(&[rec(1, 2, T0)]);
        if header_ok {
            added.unwrap();
        } else {
            assert_corrupt(added);
        }
    }
    // A key that is not kad key ‖ peer id.
    let mut bad_peer = r.kad_key().as_bytes().to_vec();
    bad_peer.extend_from_slice(b"not a peer id");
    raw_put(dir.path(), "providers", &bad_peer, b"");
    let s = RocksStore::open(dir.path(), Config::small()).unwrap();
    assert_corrupt(s.providers(&r.key, 20, T0));
}

#[test]
fn corrupt_value_record_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(RocksStore::open(dir.path(), Config::small()).unwrap());
    let dht = b"/pk/x";
    let mut key = Key::hash(dht).as_bytes().to_vec();
    key.extend_from_slice(dht);
    raw_put(dir.path(), "values", &key, b"\x01\0\0");
    let s = RocksStore::open(dir.path(), Config::small()).unwrap();
    assert_corrupt(s.get_value(dht, T0));
    // Overwriting replaces it.
    s.put_value(&Record::new(dht.to_vec(), b"ok".to_vec()), T0)
        .unwrap();
    assert!(s.get_value(dht, T0).unwrap().is_some());
}

#[test]
fn corrupt_keystore_entry_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(RocksStore::open(dir.path(), Config::small()).unwrap());
    let mut key = [0u8; 32].to_vec();
    key.extend_from_slice(b"\xff\xff\xff not a multihash");
    raw_put(dir.path(), "keystore", &key, b"");
    raw_put(dir.path(), "keystore", &[1, 2, 3], b""); // shorter than a kad key
    let s = RocksStore::open(dir.path(), Config::small()).unwrap();
    assert_corrupt(s.scan(&Prefix::ROOT, None, 10));
}

/// Opening `dir` fails with UnsupportedFormat naming `found` (and this build's format, 4).
fn assert_refused_as_format(dir: &Path, found: u32) {
    let r = RocksStore::open(dir, Config::small()).map(drop);
    assert!(
        matches!(r, Err(StoreError::UnsupportedFormat { found: f, expected: 4 }) if f == found),
        "{r:?}"
    );
}

#[test]
fn corrupt_metadata_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(RocksStore::open(dir.path(), Config::small()).unwrap());
    raw_put(dir.path(), "default", b"keystore/count", b"\x01\x02");
    assert_corrupt(RocksStore::open(dir.path(), Config::small()));

    let dir = tempfile::tempdir().unwrap();
    drop(RocksStore::open(dir.path(), Config::small()).unwrap());
    raw_put(dir.path(), "default", b"format", &99u32.to_be_bytes());
    assert_refused_as_format(dir.path(), 99);
}

/// A new store's directory, holding `r`, closed.
fn closed_store_holding(r: &dht_proto::ProviderRecord) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksStore::open(dir.path(), Config::small()).unwrap();
    s.add_providers(std::slice::from_ref(r)).unwrap();
    dir
}

/// A format-1 database (with its expiry indexes) opens: the indexes are dropped, the records
/// kept, and expiry works on them.
#[test]
fn format_1_is_upgraded() {
    let r = rec(1, 1, T0);
    let dir = closed_store_holding(&r);
    {
        let mut opts = rocksdb::Options::default();
        opts.create_missing_column_families(true);
        let cfs = [
            "default",
            "providers",
            "values",
            "keystore",
            "provider_expiry",
            "value_expiry",
        ];
        let db = rocksdb::DB::open_cf(&opts, dir.path(), cfs).unwrap();
        let index = db.cf_handle("provider_expiry").unwrap();
        db.put_cf(index, T0.to_be_bytes(), b"").unwrap();
        db.put(b"format", 1u32.to_be_bytes()).unwrap();
    }
    let s = RocksStore::open(dir.path(), Config::small()).unwrap();
    assert_eq!(s.providers(&r.key, 20, T0).unwrap(), vec![r.clone()]);
    drop(s);
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    assert!(!cfs.iter().any(|c| c.ends_with("_expiry")), "{cfs:?}");
    let s = RocksStore::open(dir.path(), Config::small()).unwrap();
    assert_eq!(s.remove_expired(T0 + 48 * H).unwrap(), 1);
    assert!(s.providers(&r.key, 20, T0).unwrap().is_empty());
}

/// A format-2 database, whose provider records (version 1) hold their DHT key, opens as
/// format 3 without a rewrite: its records are served, refreshed in the new encoding, and
/// expire.
#[test]
fn format_2_is_upgraded() {
    let (old, new) = (rec(1, 1, T0), rec(2, 2, T0));
    let dir = closed_store_holding(&new);
    let mut primary = old.kad_key().as_bytes().to_vec();
    primary.extend_from_slice(&old.provider.to_bytes());
    // Version 1: 1 ‖ received_at u64 ‖ key_len u16 ‖ key ‖ n_addrs u16 ‖ (len u16 ‖ addr)*.
    let mut v1 = vec![1];
    v1.extend_from_slice(&old.received_at.to_be_bytes());
    v1.extend_from_slice(&u16::try_from(old.key.len()).unwrap().to_be_bytes());
    v1.extend_from_slice(&old.key);
    v1.extend_from_slice(&u16::try_from(old.addrs.len()).unwrap().to_be_bytes());
    for a in &old.addrs {
        v1.extend_from_slice(&u16::try_from(a.as_ref().len()).unwrap().to_be_bytes());
        v1.extend_from_slice(a.as_ref());
    }
    raw_put(dir.path(), "providers", &primary, &v1);
    raw_put(dir.path(), "default", b"format", &2u32.to_be_bytes());

    let s = RocksStore::open(dir.path(), Config::small()).unwrap();
    assert_eq!(s.providers(&old.key, 20, T0).unwrap(), vec![old.clone()]);
    assert_eq!(s.providers(&new.key, 20, T0).unwrap(), vec![new.clone()]);
    let refreshed = ProviderRecord {
        received_at: T0 + H,
        ..old.clone()
    };
    s.add_providers(std::slice::from_ref(&refreshed)).unwrap();
    assert_eq!(s.providers(&old.key, 20, T0 + H).unwrap(), vec![refreshed]);
    drop(s);
    let raw = raw_get(dir.path(), "providers", &primary).unwrap();
    assert_eq!(raw.first(), Some(&2), "refreshed in the version-2 encoding");
    assert_eq!(
        raw_get(dir.path(), "default", b"format").unwrap(),
        4u32.to_be_bytes()
    );
    let s = RocksStore::open(dir.path(), Config::small()).unwrap();
    assert_eq!(s.remove_expired(T0 + 49 * H).unwrap(), 2);
}

/// A database of an unknown format with column families this build does not know is
/// refused by its format, not by RocksDB's column-family check.
#[test]
fn unknown_format_with_unknown_column_families_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(RocksStore::open(dir.path(), Config::small()).unwrap());
    {
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
        let mut db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), &cfs).unwrap();
        db.create_cf("from_the_future", &rocksdb::Options::default())
            .unwrap();
        db.put(b"format", 5u32.to_be_bytes()).unwrap();
    }
    assert_refused_as_format(dir.path(), 5);
}

/// A record that does not decode is swept away (it cannot be served, and its age is unknown)
/// rather than blocking the sweep.
#[test]
fn sweep_removes_undecodable_records() {
    let r = rec(1, 1, T0);
    let dir = closed_store_holding(&r);
    let mut key = r.kad_key().as_bytes().to_vec();
    key.extend_from_slice(&r.provider.to_bytes());
    raw_put(dir.path(), "providers", &key, b"\x09junk");
    let s = RocksStore::open(dir.path(), Config::small()).unwrap();
    assert_corrupt(s.providers(&r.key, 20, T0));
    assert_eq!(s.remove_expired(T0 + 48 * H).unwrap(), 1);
    assert!(s.providers(&r.key, 20, T0).unwrap().is_empty());
}

// ---------------------------------------------------------------- concurrency

/// Readers never see a provider list older than one they could have seen before: the cache
/// is not repopulated with data read before a concurrent write.
#[test]
fn cache_never_serves_stale_lists_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        RocksStore::open(
            dir.path(),
            Config::small()
                .with_sync_writes(false)
                .with_max_providers_per_key(1000),
        )
        .unwrap(),
    );
    let written = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, written, reads, done) =
                (store.clone(), written.clone(), reads.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Acquire) {
                    let before = written.load(Ordering::Acquire);
                    let got = store.providers(&dht_key(7), 1000, T0 + 1).unwrap().len();
                    assert!(
                        got >= before,
                        "read {got} providers after {before} were written"
                    );
                    reads.fetch_add(1, Ordering::AcqRel);
                }
            })
        })
        .collect();
    // Every 30 writes the writer waits until a reader has read again, so reads and writes
    // interleave however a loaded machine schedules the threads (bounded: 10 s per wait).
    for p in 0..300u64 {
        store.add_providers(&[rec(7, p, T0)]).unwrap();
        written.store(p as usize + 1, Ordering::Release);
        if p % 30 == 29 {
            let seen = reads.load(Ordering::Acquire);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while reads.load(Ordering::Acquire) <= seen {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no reader read in 10 s"
                );
                std::thread::yield_now();
            }
        }
    }
    done.store(true, Ordering::Release);
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(
        store.providers(&dht_key(7), 1000, T0 + 1).unwrap().len(),
        300
    );
}

/// A record refreshed while an expiry sweep runs is kept: the sweep scans a snapshot, but
/// re-checks each chunk's candidates under the write lock before deleting.
#[test]
fn sweep_keeps_records_refreshed_while_it_runs() {
    const KEYS: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        RocksStore::open(
            dir.path(),
            Config::small().with_sync_writes(false).with_expiry_chunk(8),
        )
        .unwrap(),
    );
    let old: Vec<_> = (0..KEYS).map(|k| rec(k, 1, T0)).collect();
    store.add_providers(&old).unwrap();
    let now = T0 + 48 * H;
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for ks in (0..KEYS).collect::<Vec<_>>().chunks(10) {
                let fresh: Vec<_> = ks.iter().map(|&k| rec(k, 1, now)).collect();
                store.add_providers(&fresh).unwrap();
            }
        })
    };
    let removed = store.remove_expired(now).unwrap();
    writer.join().unwrap();
    assert!(removed <= KEYS);
    for k in 0..KEYS {
        assert_eq!(
            store.providers(&dht_key(k), 20, now).unwrap(),
            vec![rec(k, 1, now)],
            "key {k} (the sweep removed {removed})"
        );
    }
    // Nothing is left to expire, and a later sweep removes nothing that was refreshed.
    assert_eq!(store.remove_expired(now).unwrap(), 0);
}

/// Writers of different keys run together (their writes share a commit group), and writers of
/// one key still see each other: concurrent single-record adds to one key stop at the cap,
/// and every add to the other keys lands.
#[test]
fn concurrent_writers_keep_the_cap_and_every_record() {
    const THREADS: u64 = 8;
    const EACH: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        RocksStore::open(dir.path(), Config::small().with_max_providers_per_key(20)).unwrap(),
    );
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let p = t * EACH + i;
                    // One contested key, and one key of this writer's own.
                    store.add_providers(&[rec(0, p, T0)]).unwrap();
                    store.add_providers(&[rec(1 + p, p, T0)]).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(store.providers(&dht_key(0), 100, T0).unwrap().len(), 20);
    for p in 0..THREADS * EACH {
        assert_eq!(
            store.providers(&dht_key(1 + p), 100, T0).unwrap(),
            vec![rec(1 + p, p, T0)]
        );
    }
}

/// What `n` addresses of `len` bytes each look like: `/dns4/<name>/tcp/4001`, distinct per `i`.
fn long_addrs(i: usize, n: usize, len: usize) -> Vec<dht_proto::Multiaddr> {
    (0..n)
        .map(|j| {
            let name = format!("{i:05}-{j:03}-{}", "a".repeat(len.saturating_sub(17)));
            format!("/dns4/{name}/tcp/4001").parse().unwrap()
        })
        .collect()
}

#[test]
fn the_provider_cache_is_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 256 * 1024;
    let store = RocksStore::open(
        dir.path(),
        Config::small()
            .with_sync_writes(false)
            .with_cache_bytes(budget),
    )
    .unwrap();
    // 200 keys whose lists hold 20 KB of addresses each (4 MB in all), every one read once.
    let now = T0;
    for i in 0..200 {
        let key = format!("key {i:05} ...........................").into_bytes();
        let record = dht_proto::ProviderRecord {
            key: key.clone(),
            provider: dht_proto::PeerId::random(),
            addrs: long_addrs(i, 100, 200),
            received_at: now,
        };
        store.add_provider(&record).unwrap();
        assert_eq!(store.providers(&key, 20, now).unwrap(), vec![record]);
    }
    let held = store.provider_cache_bytes();
    assert!(
        held > budget / 2 && held <= budget,
        "the cache holds {held} bytes for a budget of {budget}"
    );
    // A list larger than the whole budget is served but not cached.
    let key = b"one big list ........................".to_vec();
    let records: Vec<_> = (0..20)
        .map(|i| dht_proto::ProviderRecord {
            key: key.clone(),
            provider: dht_proto::PeerId::random(),
            addrs: long_addrs(1000 + i, 128, 200),
            received_at: now,
        })
        .collect();
    store.add_providers(&records).unwrap();
    assert_eq!(store.providers(&key, 20, now).unwrap().len(), 20);
    assert!(store.provider_cache_bytes() <= budget);
}

#[test]
fn unacknowledged_provider_records_are_not_fsynced() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(
        dir.path(),
        Config::small().with_sync_writes(true).with_statistics(true),
    )
    .unwrap();
    let record = |i: u64| ProviderRecord {
        key: format!("key {i} ..............................").into_bytes(),
        provider: dht_proto::PeerId::random(),
        addrs: vec!["/ip4/192.0.2.1/tcp/4001".parse().unwrap()],
        received_at: T0,
    };
    let base = store.wal_syncs().unwrap();
    for i in 0..20 {
        store.add_providers_unsynced(&[record(i)]).unwrap();
    }
    assert_eq!(
        store.wal_syncs(),
        Some(base),
        "no fsync for unacknowledged records"
    );
    assert_eq!(
        store
            .providers(&record(3).key, 20, 1_700_000_001)
            .unwrap()
            .len(),
        1,
        "they are stored all the same"
    );
    store.add_provider(&record(100)).unwrap();
    assert!(
        store.wal_syncs().unwrap() > base,
        "acknowledged writes are synced"
    );
}

// ---------------------------------------------------------------- disk quota

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// A record of about 4 KiB of addresses, as the largest a server keeps.
fn large_rec(k: u64, p: u64, at: dht_proto::UnixSecs) -> ProviderRecord {
    let mut r = rec(k, p, at);
    r.addrs = (0..16)
        .map(|i| {
            format!("/dns4/{}-{k}-{i}.example.org/tcp/4001", "a".repeat(200))
                .parse()
                .unwrap()
        })
        .collect();
    r
}

/// Other peers' records are refused once the directory holds the quota, the node's own
/// records and keys are not, and expiry gives the space back without a reopen.
#[test]
fn the_disk_quota_bounds_inbound_records_and_expiry_frees_it() {
    const QUOTA: u64 = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(
        dir.path(),
        Config::small()
            .with_sync_writes(false)
            .with_max_disk_bytes(Some(QUOTA)),
    )
    .unwrap();
    let group = dht_provider_store::SourceGroup::from_bytes(&[4, 198, 51, 100]);
    // A provider whose record is held before the quota fills.
    store
        .add_inbound_provider(&rec(9_000_000, 3, T0), group)
        .unwrap();
    let mut stored = 0u64;
    let mut refused = None;
    for i in 0..20_000u64 {
        match store.add_inbound_provider(&large_rec(i, i % 7, T0), group) {
            Ok(()) => stored += 1,
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (at, err) = refused.expect("20,000 records of 4 KiB (80 MB) fit a quota of 8 MiB");
    assert!(
        matches!(err, StoreError::QuotaExceeded { quota: QUOTA, .. }),
        "{err}"
    );
    assert!(stored > 200, "only {stored} records before the quota");
    // A memtable flush or compaction under way holds records twice for a moment: the
    // directory settles within the quota once it is done.
    let settle = Instant::now() + Duration::from_secs(15);
    let mut used = dir_size(dir.path());
    while used > QUOTA + (1 << 20) && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(200));
        used = dir_size(dir.path());
    }
    assert!(
        used <= QUOTA + (1 << 20),
        "the directory takes {used} bytes after {at} records, quota {QUOTA}"
    );
    // Later inbound records are refused too; the node's own are stored, and so are its keys.
    assert!(matches!(
        store.add_inbound_provider(&large_rec(1_000_000, 1, T0), group),
        Err(StoreError::QuotaExceeded { .. })
    ));
    store.add_providers(&[large_rec(2_000_000, 1, T0)]).unwrap();
    // A held provider's re-announce is taken: its record is refreshed.
    store
        .add_inbound_provider(&rec(9_000_000, 3, T0 + 60), group)
        .unwrap();
    let held = store.providers(&dht_key(9_000_000), 20, T0 + 60).unwrap();
    assert_eq!(
        held.iter().map(|r| r.received_at).collect::<Vec<_>>(),
        vec![T0 + 60]
    );
    assert_eq!(store.put(&[mh(3_000_000)]).unwrap().len(), 1);

    // Every inbound record expires; the sweep compacts them away and inbound writes resume.
    let later = T0 + 49 * 3600;
    let removed = store.remove_expired(later).unwrap();
    assert!(removed >= stored, "removed {removed} of {stored}");
    let after = dir_size(dir.path());
    assert!(after < QUOTA / 2, "{after} bytes after expiry");
    store
        .add_inbound_provider(&large_rec(4_000_000, 1, later), group)
        .unwrap();
    assert_eq!(
        store
            .providers(&dht_key(4_000_000), 20, later)
            .unwrap()
            .len(),
        1
    );
}
