//! The RocksDB implementation of the three stores: one database, a column family per store.

use std::collections::HashSet;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dht_proto::{
    Key, PROVIDER_RECORD_TTL_SECS, Prefix, ProviderRecord, Record, UnixSecs, VALUE_RECORD_TTL_SECS,
};
use lru::LruCache;
use parking_lot::{Mutex, MutexGuard};
use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB,
    DBCompressionType, MemtableFactory, Options, ReadOptions, SliceTransform, WriteBatch,
    WriteOptions,
};

use crate::codec::{
    check_provider, decode_provider, decode_u32, decode_u64, decode_value, encode_provider_from,
    encode_value, kad_prefixed, key_successor, provider_received_at, provider_slot, scan_bounds,
    split_kad, value_received_at,
};
use crate::{
    Admission, Config, Keystore, Multihash, ProviderEntry, ProviderOutcome, ProviderStore, Slot,
    SourceGroup, StoreError, ValueStore, admit, select_providers, sort_for_read,
};

const CF_PROVIDERS: &str = "providers";
const CF_VALUES: &str = "values";
const CF_KEYSTORE: &str = "keystore";
/// The expiry indexes of format 1 (`received_at ‖ primary key`), dropped on opening.
const FORMAT_1_CFS: [&str; 2] = ["provider_expiry", "value_expiry"];

/// Keys of the `default` column family.
const META_FORMAT: &[u8] = b"format";
const META_KEY_COUNT: &[u8] = b"keystore/count";
/// The on-disk format this build writes. Format 1 had expiry indexes; opening it drops them.
/// Formats 1 and 2 wrote provider records of version 1, which also hold the DHT key; format 3
/// writes version 2, without it. Both record versions are read, so opening an older format
/// rewrites nothing: it records format 3 (which older builds refuse) before any write, and
/// version-1 records give way as they are refreshed or expire (48 h). Format 4 adds provider
/// records of version 3, which carry the group they came from (older builds cannot read
/// them); opening format 3 rewrites nothing either.
const FORMAT_VERSION: u32 = 4;

/// Number of write epochs the provider cache keeps (see [`ProviderCache`]).
const EPOCH_STRIPES: usize = 4096;
/// Number of write locks of the provider and value stores (see [`KeyLocks`]).
const LOCK_STRIPES: usize = 4096;

/// The three stores in one RocksDB database, with an LRU cache in front of provider reads.
///
/// | column family     | key                                   | value |
/// |-------------------|---------------------------------------|-------|
/// | `providers`       | sha256(DHT key) ‖ peer id bytes       | version, received_at, addresses |
/// | `values`          | sha256(DHT key) ‖ DHT key             | version, received_at, time_received, value |
/// | `keystore`        | sha256(multihash) ‖ multihash bytes   | empty |
/// | `default`         | `format`, `keystore/count`            | u32 BE, u64 BE |
///
/// All providers of a key are one prefix range read; all provided keys of a [`Prefix`]
/// region are one ordered range read. Every trait method that writes applies one atomic
/// `WriteBatch`, fsynced when [`Config::sync_writes`] is set (default).
///
/// Opening a path already open (in this or another process) fails with
/// [`StoreError::Locked`].
///
/// Design notes:
/// - Expiry is a sweep that scans the records in key order, from a snapshot and without a
///   lock, and removes the expired ones in chunks: each chunk re-reads its candidates and
///   deletes those still expired in one write under their keys' write locks, so a writer
///   waits for one chunk at most and readers never wait. It returns exact counts and keeps
///   the LRU cache correct (a compaction filter runs inside RocksDB, at a time of its
///   choosing, and can do neither). Format 1 kept an index ordered by time instead, so a sweep read only
///   what had expired; but the index doubled the writes of every ADD_PROVIDER, the hot path
///   of a DHT server, to save work in a sweep that runs hourly. Call
///   [`ProviderStore::remove_expired`] from a background thread, e.g. hourly.
/// - The cap per key counts only providers unexpired at the incoming record's `received_at`,
///   so a key whose providers all lapsed accepts new ones before the sweep has run.
/// - Writes that must read first (the cap) hold the write locks of their keys (striped) for
///   the read and the write; value puts take them too, so a sweep's check and delete are
///   atomic. Writers of different keys proceed together, so RocksDB commits concurrent
///   ADD_PROVIDERs as one group with one fsync. The keystore's writes hold one lock (each
///   changes the count) and check which keys are new with one batched `multi_get` (bloom
///   filters make misses cheap).
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    config: Config,
    /// Options of acknowledged writes (`sync` = [`Config::sync_writes`]).
    write_opts: WriteOptions,
    /// Options of expiry removals and unacknowledged provider records (never synced: redone
    /// if lost).
    sweep_opts: WriteOptions,
    /// RocksDB's statistics, when [`Config::statistics`] is on.
    stats: Option<Options>,
    /// Serialise the read-modify-write of each key (providers, values) or of the whole store
    /// (the keystore, whose count every put changes); reads never take them.
    provider_locks: KeyLocks,
    value_locks: KeyLocks,
    keystore_lock: Mutex<()>,
    /// The keystore's count, mirrored from `keystore/count`; written under `keystore_lock`.
    key_count: AtomicU64,
    cache: Option<ProviderCache>,
    /// What the directory takes, for [`Config::max_disk_bytes`].
    disk: DiskUse,
}

/// The database directory's size as the quota sees it: measured from its files once per
/// [`DiskUse::MEASURE_EVERY`] or per 1/64 of the quota written, plus the bytes written since.
#[derive(Debug)]
struct DiskUse {
    measured: AtomicU64,
    written_since: AtomicU64,
    /// When `measured` was taken; also serialises measuring.
    at: Mutex<std::time::Instant>,
    /// When the quota last flushed the memtables.
    flushed_at: Mutex<Option<std::time::Instant>>,
}

impl DiskUse {
    const MEASURE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

    fn new(path: &Path) -> DiskUse {
        DiskUse {
            measured: AtomicU64::new(dir_bytes(path)),
            written_since: AtomicU64::new(0),
            at: Mutex::new(std::time::Instant::now()),
            flushed_at: Mutex::new(None),
        }
    }

    /// Whether a flush for the quota may run now: at most one a second.
    fn may_flush(&self) -> bool {
        let mut last = self.flushed_at.lock();
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Self::MEASURE_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// The use now: measured again if the last measure is older than a second, if more
    /// than `remeasure_after` bytes were written since, or if `force`; else the last measure
    /// plus what was written since. (What RocksDB writes is more than the records: the
    /// write-ahead log and the tables hold them both for a while.)
    fn current(&self, path: &Path, remeasure_after: u64, force: bool) -> u64 {
        let stale = || self.written_since.load(Ordering::Relaxed) >= remeasure_after;
        if let Some(mut at) = self.at.try_lock()
            && (force || stale() || at.elapsed() >= Self::MEASURE_EVERY)
        {
            self.measured.store(dir_bytes(path), Ordering::Relaxed);
            self.written_since.store(0, Ordering::Relaxed);
            *at = std::time::Instant::now();
        }
        self.measured
            .load(Ordering::Relaxed)
            .saturating_add(self.written_since.load(Ordering::Relaxed))
    }
}

/// The bytes of the files under `dir` (recursively); unreadable entries count 0. What the
/// store's disk quota measures of its directory, for an operator or a bench measuring the
/// same from outside.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// About what a provider record takes on disk (its key, its addresses, the header).
fn record_bytes(r: &ProviderRecord) -> u64 {
    let addrs: usize = r.addrs.iter().map(|a| a.as_ref().len()).sum();
    (r.key.len() + addrs + 96) as u64
}

impl fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The memory RocksDB holds, from [`RocksStore::rocksdb_memory`], in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RocksMemory {
    /// Active and unflushed memtables of every column family
    /// (`rocksdb.cur-size-all-mem-tables`).
    pub memtables_bytes: u64,
    /// The block cache's use (`rocksdb.block-cache-usage`): blocks, indexes and filters.
    pub block_cache_bytes: u64,
    /// Index and filter blocks held by open SST files outside the block cache
    /// (`rocksdb.estimate-table-readers-mem`).
    pub table_readers_bytes: u64,
}

impl RocksMemory {
    /// The three together.
    pub fn total_bytes(&self) -> u64 {
        self.memtables_bytes + self.block_cache_bytes + self.table_readers_bytes
    }
}

/// Write locks of Kademlia keys, striped. A writer holds the stripes of the keys it reads and
/// writes, taken in stripe order (so writers never deadlock). Writers of different keys go on
/// together, and RocksDB commits their writes as one group: one WAL write and one fsync for
/// many ADD_PROVIDERs arriving at once, where one store-wide lock made each wait for the
/// fsync of the one before.
struct KeyLocks {
    stripes: Box<[Mutex<()>]>,
}

impl KeyLocks {
    fn new() -> Self {
        KeyLocks {
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Locks the stripes of `keys` (Kademlia keys, or column-family keys that start with
    /// one), each once, in stripe order.
    fn lock<'a, 'k>(&'a self, keys: impl IntoIterator<Item = &'k [u8]>) -> Vec<MutexGuard<'a, ()>> {
        let mut stripes: Vec<usize> = keys
            .into_iter()
            .map(|k| {
                let b = |i: usize| k.get(i).copied().unwrap_or(0);
                usize::from(u16::from_be_bytes([b(0), b(1)])) % self.stripes.len()
            })
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|i| self.stripes[i].lock())
            .collect()
    }
}

/// The LRU cache of provider lists: Kademlia key → every stored record of the key (expired
/// ones included; reads filter at their `now`), in read order. Empty lists are cached too, so
/// repeated misses for keys nobody provides stay cheap. Bounded by entries and by bytes
/// ([`list_bytes`]): least recently used lists go first, and a list larger than the whole
/// budget is not cached.
///
/// A read that missed must not put a list it read before a concurrent write into the cache
/// after that write invalidated it. Writers bump a per-stripe epoch after their write lands,
/// under the LRU lock; a reader notes the epoch before reading the database and inserts only
/// if it is unchanged.
struct ProviderCache {
    lru: Mutex<Lists>,
    max_bytes: usize,
    epochs: Vec<AtomicU64>,
}

/// The cached lists and the bytes they take.
struct Lists {
    lru: LruCache<Key, Arc<Vec<ProviderRecord>>>,
    bytes: usize,
}

impl Lists {
    fn pop(&mut self, key: &Key) {
        if let Some(list) = self.lru.pop(key) {
            self.bytes = self.bytes.saturating_sub(list_bytes(&list));
        }
    }
}

/// What a cached list takes in memory, about: each record's allocations and bookkeeping,
/// each address's, and the cache entry's own.
fn list_bytes(list: &[ProviderRecord]) -> usize {
    const ENTRY: usize = 96;
    const RECORD: usize = std::mem::size_of::<ProviderRecord>() + 16;
    const ADDR: usize = 48;
    ENTRY
        + list
            .iter()
            .map(|r| {
                RECORD
                    + r.key.len()
                    + r.addrs
                        .iter()
                        .map(|a| ADDR + a.as_ref().len())
                        .sum::<usize>()
            })
            .sum::<usize>()
}

impl ProviderCache {
    fn new(entries: NonZeroUsize, max_bytes: usize) -> Self {
        ProviderCache {
            lru: Mutex::new(Lists {
                lru: LruCache::new(entries),
                bytes: 0,
            }),
            max_bytes,
            epochs: (0..EPOCH_STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn bytes(&self) -> usize {
        self.lru.lock().bytes
    }

    fn stripe(&self, key: &Key) -> &AtomicU64 {
        let b = key.as_bytes();
        let i = usize::from(u16::from_be_bytes([b[0], b[1]])) % EPOCH_STRIPES;
        &self.epochs[i]
    }

    fn get(&self, key: &Key) -> Option<Arc<Vec<ProviderRecord>>> {
        self.lru.lock().lru.get(key).cloned()
    }

    fn epoch(&self, key: &Key) -> u64 {
        self.stripe(key).load(Ordering::Acquire)
    }

    fn insert_if_unchanged(&self, key: Key, epoch: u64, list: Arc<Vec<ProviderRecord>>) {
        let size = list_bytes(&list);
        let mut lists = self.lru.lock();
        if self.stripe(&key).load(Ordering::Acquire) != epoch || size > self.max_bytes {
            return;
        }
        // Replaces the key's list, or evicts the least recently used at the entry cap.
        if let Some((_, old)) = lists.lru.push(key, list) {
            lists.bytes = lists.bytes.saturating_sub(list_bytes(&old));
        }
        lists.bytes += size;
        while lists.bytes > self.max_bytes {
            match lists.lru.pop_lru() {
                Some((_, old)) => lists.bytes = lists.bytes.saturating_sub(list_bytes(&old)),
                None => break,
            }
        }
    }

    fn invalidate<'a>(&self, keys: impl IntoIterator<Item = &'a Key>) {
        let mut lists = self.lru.lock();
        for k in keys {
            self.stripe(k).fetch_add(1, Ordering::AcqRel);
            lists.pop(k);
        }
    }
}

impl RocksStore {
    /// Opens (creating if needed) the database at `path`.
    ///
    /// Errors: [`StoreError::Locked`] if the database is open elsewhere,
    /// [`StoreError::UnsupportedFormat`] if another format version wrote it,
    /// [`StoreError::InvalidSetting`] if a setting cannot work ([`Config::validate`]); then
    /// nothing is created.
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<Self, StoreError> {
        config.validate()?;
        let path = path.as_ref();
        std::fs::create_dir_all(path)?;

        let block_cache = Cache::new_lru_cache(config.block_cache_bytes);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_open_files(config.max_open_files);
        db_opts.set_max_background_jobs(config.max_background_jobs);
        db_opts.set_db_write_buffer_size(config.write_buffer_bytes);
        // A rarely written column family (values) must not pin old WAL files forever.
        // Under a disk quota, also a quarter of it: a flushed memtable's log file is deleted
        // only once every family's memtable that has records in it is flushed, and until then
        // those records take the disk twice.
        let max_wal = (config.write_buffer_bytes as u64).saturating_mul(4);
        db_opts.set_max_total_wal_size(match config.max_disk_bytes {
            Some(quota) => max_wal.min((quota / 4).max(1 << 20)),
            None => max_wal,
        });
        db_opts.set_keep_log_file_num(2);
        // The hash memtable below takes one writer at a time (RocksDB's write group leader
        // applies the batches of concurrent writers in turn).
        db_opts.set_allow_concurrent_memtable_write(false);
        db_opts.set_max_log_file_size(1 << 20);
        if config.statistics {
            db_opts.enable_statistics();
        }

        let cf = |name: &str, reads: Reads| {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&block_cache);
            table.set_bloom_filter(10.0, false);
            // The providers family is only read by prefix seeks: its filter holds prefixes.
            table.set_whole_key_filtering(reads == Reads::Point);
            // Partitioned index and filters: a large SST file's filter is read and cached in
            // small partitions. A whole filter of such a file outgrows a block-cache shard and
            // would be read from the file again on every seek.
            table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
            table.set_partition_filters(true);
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_top_level_index_and_filter(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            // Levels 0 and 1 are rewritten soonest and hold little: compressing them costs
            // more CPU than it saves space.
            o.set_compression_per_level(&[
                DBCompressionType::None,
                DBCompressionType::None,
                DBCompressionType::Lz4,
                DBCompressionType::Lz4,
                DBCompressionType::Lz4,
                DBCompressionType::Lz4,
                DBCompressionType::Lz4,
            ]);
            let memtable_bytes = (config.write_buffer_bytes / 4).max(1 << 20);
            o.set_write_buffer_size(memtable_bytes);
            // Up to three full memtables wait for the flush thread while a fourth fills (all
            // within `db_write_buffer_size`): a burst of writes goes on while one is flushed.
            o.set_max_write_buffer_number(4);
            if reads == Reads::Prefix {
                // Seeks for a key's providers skip SST files and memtables without that
                // 32-byte Kademlia-key prefix (prefix bloom filters).
                o.set_prefix_extractor(SliceTransform::create_fixed_prefix(32));
                o.set_memtable_prefix_bloom_ratio(0.05);
                // Every read is within one prefix: a hash of prefixes to short lists makes
                // inserts and the add path's seeks O(1) in the memtable's size.
                // A bucket per ~256 bytes of memtable (a record takes about 150).
                o.set_memtable_factory(MemtableFactory::HashLinkList {
                    bucket_count: (memtable_bytes / 256)
                        .next_power_of_two()
                        .clamp(1 << 10, 1 << 20),
                });
            }
            ColumnFamilyDescriptor::new(name, o)
        };
        let mut cfs = vec![
            cf(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, Reads::Point),
            cf(CF_PROVIDERS, Reads::Prefix),
            cf(CF_VALUES, Reads::Point),
            // Point reads: which keys of a put are new.
            cf(CF_KEYSTORE, Reads::Point),
        ];
        // RocksDB opens a database only with all of its column families: those of other
        // formats are opened too, so the format check below can name the format.
        let ours: Vec<String> = cfs.iter().map(|d| d.name().to_owned()).collect();
        // (None for a new database; any other failure, open reports below.)
        let existing = DB::list_cf(&db_opts, path).unwrap_or_default();
        let others: Vec<String> = existing.into_iter().filter(|n| !ours.contains(n)).collect();
        cfs.extend(
            others
                .iter()
                .map(|n| ColumnFamilyDescriptor::new(n, Options::default())),
        );
        let mut db = DB::open_cf_descriptors(&db_opts, path, cfs)
            .map_err(|e| StoreError::from_rocks_open(e, path))?;

        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(config.sync_writes);
        let mut sweep_opts = WriteOptions::default();
        sweep_opts.set_sync(false);

        let format = match db.get(META_FORMAT).map_err(StoreError::from_rocks)? {
            Some(v) => Some(decode_u32(&v, "format version")?),
            None => None,
        };
        match format {
            Some(FORMAT_VERSION) => {}
            Some(old @ 1..=3) => {
                // Drop format 1's expiry indexes (the sweep scans the records now), then
                // record the new format, synced before any record of the new version is
                // written. A crash in between leaves the old format, and the next open
                // finishes.
                for name in others.iter().filter(|n| FORMAT_1_CFS.contains(&n.as_str())) {
                    db.drop_cf(name).map_err(StoreError::from_rocks)?;
                }
                let mut sync = WriteOptions::default();
                sync.set_sync(true);
                db.put_opt(META_FORMAT, FORMAT_VERSION.to_be_bytes(), &sync)
                    .map_err(StoreError::from_rocks)?;
                tracing::info!(
                    path = %path.display(),
                    from = old,
                    to = FORMAT_VERSION,
                    "upgraded provider store format"
                );
            }
            Some(found) => {
                return Err(StoreError::UnsupportedFormat {
                    found,
                    expected: FORMAT_VERSION,
                });
            }
            None => db
                .put_opt(META_FORMAT, FORMAT_VERSION.to_be_bytes(), &write_opts)
                .map_err(StoreError::from_rocks)?,
        }
        let key_count = match db.get(META_KEY_COUNT).map_err(StoreError::from_rocks)? {
            Some(v) => decode_u64(&v, "keystore count")?,
            None => 0,
        };

        let cache = NonZeroUsize::new(config.cache_entries)
            .filter(|_| config.cache_bytes > 0)
            .map(|entries| ProviderCache::new(entries, config.cache_bytes));
        let stats = config.statistics.then_some(db_opts);
        tracing::debug!(path = %path.display(), keys = key_count, "opened provider store");
        Ok(RocksStore {
            db,
            path: path.to_path_buf(),
            config,
            write_opts,
            sweep_opts,
            stats,
            provider_locks: KeyLocks::new(),
            value_locks: KeyLocks::new(),
            keystore_lock: Mutex::new(()),
            key_count: AtomicU64::new(key_count),
            cache,
            disk: DiskUse::new(path),
        })
    }

    /// Whether `bytes` more of what other peers send fit [`Config::max_disk_bytes`]; if they
    /// do, they are counted as written.
    fn take_quota(&self, bytes: u64) -> Result<(), StoreError> {
        let Some(quota) = self.config.max_disk_bytes else {
            return Ok(());
        };
        let mut used = self.disk.current(&self.path, quota / 64, false);
        if used.saturating_add(bytes) > quota && self.disk.may_flush() {
            // Log files of flushed memtables may be what fills it: flush every family so
            // that RocksDB deletes them, and measure again.
            self.db.flush().map_err(StoreError::from_rocks)?;
            for name in [CF_KEYSTORE, CF_PROVIDERS, CF_VALUES] {
                self.db
                    .flush_cf(self.cf(name)?)
                    .map_err(StoreError::from_rocks)?;
            }
            used = self.disk.current(&self.path, 0, true);
        }
        if used.saturating_add(bytes) > quota {
            return Err(StoreError::QuotaExceeded { used, quota });
        }
        self.disk.written_since.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// After an expiry sweep that removed records: if the use is at half the quota or more,
    /// flush and compact, so that the space comes back now rather than
    /// at some later compaction, and measure again.
    fn reclaim_for_quota(&self, removed: u64) -> Result<(), StoreError> {
        let Some(quota) = self.config.max_disk_bytes else {
            return Ok(());
        };
        if removed == 0 || self.disk.current(&self.path, 0, true) < quota / 2 {
            return Ok(());
        }
        // Every family flushed first, so that no write-ahead log file is kept for a
        // memtable; then the records and their deletions compacted away together.
        self.db.flush().map_err(StoreError::from_rocks)?;
        for name in [CF_KEYSTORE, CF_PROVIDERS, CF_VALUES] {
            self.db
                .flush_cf(self.cf(name)?)
                .map_err(StoreError::from_rocks)?;
        }
        for name in [CF_PROVIDERS, CF_VALUES] {
            self.db
                .compact_range_cf(self.cf(name)?, None::<&[u8]>, None::<&[u8]>);
        }
        let used = self.disk.current(&self.path, 0, true);
        tracing::info!(
            removed,
            used,
            quota,
            "expired records compacted away for the disk quota"
        );
        Ok(())
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How many times RocksDB has synced its write-ahead log (an fsync each), when
    /// [`Config::statistics`] is on.
    pub fn wal_syncs(&self) -> Option<u64> {
        self.stats
            .as_ref()
            .map(|o| o.get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced))
    }

    /// About how many bytes the provider lists in the LRU cache take now (at most
    /// [`Config::cache_bytes`]; 0 without a cache).
    pub fn provider_cache_bytes(&self) -> usize {
        self.cache.as_ref().map_or(0, ProviderCache::bytes)
    }

    /// The memory RocksDB itself holds now, from its properties (its allocations are C++'s,
    /// not seen by Rust's allocator): the memtables and table readers of every column
    /// family, and the shared block cache.
    pub fn rocksdb_memory(&self) -> Result<RocksMemory, StoreError> {
        let mut memory = RocksMemory::default();
        for name in [
            rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
            CF_PROVIDERS,
            CF_VALUES,
            CF_KEYSTORE,
        ] {
            let cf = self.cf(name)?;
            let read = |property| {
                self.db
                    .property_int_value_cf(cf, property)
                    .map(Option::unwrap_or_default)
                    .map_err(StoreError::from_rocks)
            };
            memory.memtables_bytes += read(rocksdb::properties::CUR_SIZE_ALL_MEM_TABLES)?;
            memory.table_readers_bytes += read(rocksdb::properties::ESTIMATE_TABLE_READERS_MEM)?;
            // One cache for all column families: each reports the whole of it.
            memory.block_cache_bytes = read(rocksdb::properties::BLOCK_CACHE_USAGE)?;
        }
        Ok(memory)
    }

    /// Flushes every memtable to SST files (and so the WAL is no longer needed).
    pub fn flush(&self) -> Result<(), StoreError> {
        for name in [
            rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
            CF_PROVIDERS,
            CF_VALUES,
            CF_KEYSTORE,
        ] {
            self.db
                .flush_cf(self.cf(name)?)
                .map_err(StoreError::from_rocks)?;
        }
        Ok(())
    }

    /// Compacts every column family fully (reclaims the space of removed records now rather
    /// than when RocksDB gets to it). Slow on large stores; reads are not blocked.
    pub fn compact(&self) -> Result<(), StoreError> {
        for name in [CF_PROVIDERS, CF_VALUES, CF_KEYSTORE] {
            self.db
                .compact_range_cf(self.cf(name)?, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or(StoreError::MissingColumnFamily(name))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.db
            .write_opt(batch, &self.write_opts)
            .map_err(StoreError::from_rocks)
    }

    /// Every stored provider record of DHT key `key`, whose Kademlia key is `kad` (expired
    /// ones included), in read order.
    fn read_providers(&self, key: &[u8], kad: &Key) -> Result<Vec<ProviderRecord>, StoreError> {
        let cf = self.cf(CF_PROVIDERS)?;
        let mut ro = ReadOptions::default();
        ro.set_prefix_same_as_start(true);
        if let Some(upper) = key_successor(kad) {
            ro.set_iterate_upper_bound(upper.to_vec());
        }
        let mut it = self.db.raw_iterator_cf_opt(cf, ro);
        it.seek(kad.as_bytes());
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(kad.as_bytes()) {
                break;
            }
            out.push(decode_provider(key, k, v)?);
            it.next();
        }
        it.status().map_err(StoreError::from_rocks)?;
        sort_for_read(&mut out);
        Ok(out)
    }

    /// Removes the records of `data_cf` received at or before `now - ttl` (and those whose
    /// header no longer decodes), and returns how many it removed.
    ///
    /// One iterator scans a snapshot in key order without a lock and gathers candidates.
    /// Each chunk of candidates is then re-read and its still-expired records deleted in one
    /// write under their keys' `locks`, which every writer of `data_cf` holds: a record
    /// refreshed after the snapshot is kept. Reads never wait. `on_removed` gets each chunk's removed keys
    /// after the chunk's write.
    fn sweep(
        &self,
        locks: &KeyLocks,
        data_cf: &'static str,
        ttl: u64,
        now: UnixSecs,
        received_at: fn(&[u8]) -> Result<UnixSecs, StoreError>,
        mut on_removed: impl FnMut(&[Vec<u8>]),
    ) -> Result<u64, StoreError> {
        // Expired iff now >= received_at + ttl, i.e. received_at <= now - ttl.
        let Some(cutoff) = now.checked_sub(ttl) else {
            return Ok(0);
        };
        let expired = |v: &[u8]| !matches!(received_at(v), Ok(at) if at > cutoff);
        let chunk = self.config.expiry_chunk.max(1);
        let data = self.cf(data_cf)?;
        let mut ro = ReadOptions::default();
        // Across all prefixes (the providers family has a prefix extractor), and without
        // filling the block cache with a pass over everything.
        ro.set_total_order_seek(true);
        ro.fill_cache(false);
        ro.set_readahead_size(1 << 20);
        let mut it = self.db.raw_iterator_cf_opt(data, ro);
        it.seek_to_first();
        let mut removed_total = 0u64;
        loop {
            let mut candidates: Vec<Vec<u8>> = Vec::new();
            while candidates.len() < chunk {
                let (Some(k), Some(v)) = (it.key(), it.value()) else {
                    break;
                };
                if expired(v) {
                    candidates.push(k.to_vec());
                }
                it.next();
            }
            it.status().map_err(StoreError::from_rocks)?;
            if candidates.is_empty() {
                return Ok(removed_total);
            }
            let more = candidates.len() == chunk;

            let guard = locks.lock(candidates.iter().map(Vec::as_slice));
            let current = self.db.batched_multi_get_cf(data, candidates.iter(), true);
            let mut batch = WriteBatch::default();
            let mut removed: Vec<Vec<u8>> = Vec::new();
            for (key, value) in candidates.into_iter().zip(current) {
                // Gone already, or refreshed since the snapshot: kept.
                let Some(v) = value.map_err(StoreError::from_rocks)? else {
                    continue;
                };
                if expired(&v) {
                    if let Err(err) = received_at(&v) {
                        tracing::warn!(%err, "removing a record that does not decode");
                    }
                    batch.delete_cf(data, &key);
                    removed.push(key);
                }
            }
            self.db
                .write_opt(batch, &self.sweep_opts)
                .map_err(StoreError::from_rocks)?;
            drop(guard);
            removed_total += removed.len() as u64;
            on_removed(&removed);
            if !more {
                return Ok(removed_total);
            }
        }
    }
}

/// How a column family is read, which decides its filters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Point lookups of whole keys: bloom filters of whole keys.
    Point,
    /// Seeks within a 32-byte Kademlia-key prefix: bloom filters of prefixes.
    Prefix,
}

/// An existing provider of a key, as the add path needs it.
struct Held {
    peer: Vec<u8>,
    slot: Slot,
}

impl ProviderStore for RocksStore {
    fn add_providers(&self, batch: &[ProviderRecord]) -> Result<(), StoreError> {
        self.add_providers_with(batch, None, &self.write_opts)
    }

    fn add_providers_unsynced(&self, batch: &[ProviderRecord]) -> Result<(), StoreError> {
        self.add_providers_with(batch, None, &self.sweep_opts)
    }

    fn add_inbound_provider(
        &self,
        record: &ProviderRecord,
        group: SourceGroup,
    ) -> Result<(), StoreError> {
        self.add_providers_with(std::slice::from_ref(record), Some(group), &self.sweep_opts)
    }

    /// One `WriteBatch` and one commit for all `entries`, synced (as
    /// [`ProviderStore::add_providers`], per [`Config::sync_writes`]) if `durable`.
    fn add_provider_entries(
        &self,
        entries: &[ProviderEntry<'_>],
        durable: bool,
    ) -> Result<Vec<Result<ProviderOutcome, StoreError>>, StoreError> {
        let opts = if durable {
            &self.write_opts
        } else {
            &self.sweep_opts
        };
        self.add_entries(entries, opts)
    }

    fn providers(
        &self,
        key: &[u8],
        limit: usize,
        now: UnixSecs,
    ) -> Result<Vec<ProviderRecord>, StoreError> {
        let kad = Key::hash(key);
        let Some(cache) = &self.cache else {
            return Ok(select_providers(
                &self.read_providers(key, &kad)?,
                key,
                limit,
                now,
            ));
        };
        if let Some(list) = cache.get(&kad) {
            return Ok(select_providers(&list, key, limit, now));
        }
        let epoch = cache.epoch(&kad);
        let list = self.read_providers(key, &kad)?;
        let out = select_providers(&list, key, limit, now);
        cache.insert_if_unchanged(kad, epoch, Arc::new(list));
        Ok(out)
    }

    fn remove_expired(&self, now: UnixSecs) -> Result<u64, StoreError> {
        let removed = self.sweep(
            &self.provider_locks,
            CF_PROVIDERS,
            PROVIDER_RECORD_TTL_SECS,
            now,
            provider_received_at,
            |removed| {
                if let Some(cache) = &self.cache {
                    let kads: Vec<Key> = removed
                        .iter()
                        .filter_map(|p| split_kad(p, "provider key").ok().map(|(k, _)| k))
                        .collect();
                    cache.invalidate(&kads);
                }
            },
        )?;
        self.reclaim_for_quota(removed)?;
        Ok(removed)
    }
}

impl RocksStore {
    /// [`ProviderStore::add_providers`] with these write options (synced or not), each
    /// record from `group` (see [`ProviderStore::add_inbound_provider`]): all or nothing,
    /// so a record that cannot be stored refuses the batch.
    fn add_providers_with(
        &self,
        batch: &[ProviderRecord],
        group: Option<SourceGroup>,
        opts: &WriteOptions,
    ) -> Result<(), StoreError> {
        for r in batch {
            check_provider(r)?;
        }
        let entries: Vec<ProviderEntry<'_>> = batch
            .iter()
            .map(|record| ProviderEntry { record, group })
            .collect();
        for outcome in self.add_entries(&entries, opts)? {
            outcome?;
        }
        Ok(())
    }

    /// The add path of every provider write: `entries` (of one or many submissions) in one
    /// `WriteBatch` and one commit with `opts`, under the write locks of their keys. Entries
    /// apply in order within a key. An entry that cannot be encoded, or whose key's stored
    /// records do not decode, is refused alone (its error in its place of the answer); the
    /// outer error is the commit's, and then nothing was written.
    fn add_entries(
        &self,
        entries: &[ProviderEntry<'_>],
        opts: &WriteOptions,
    ) -> Result<Vec<Result<ProviderOutcome, StoreError>>, StoreError> {
        let mut out: Vec<Result<ProviderOutcome, StoreError>> = entries
            .iter()
            .map(|e| check_provider(e.record).map(|()| ProviderOutcome::Stored))
            .collect();
        if entries.is_empty() {
            return Ok(out);
        }
        let cap = self.config.max_providers_per_key;
        let cf_p = self.cf(CF_PROVIDERS)?;

        // Group by Kademlia key, keeping the input order within a key; seeks then go forward.
        let mut items: Vec<(Key, usize)> = entries
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(out.get(*i), Some(Ok(_))))
            .map(|(i, e)| (e.record.kad_key(), i))
            .collect();
        items.sort_unstable();

        let mut wb = WriteBatch::default();
        let mut touched: Vec<Key> = Vec::new();
        let mut refused = 0usize;
        let mut replaced = 0usize;
        let guard = self
            .provider_locks
            .lock(items.iter().map(|(kad, _)| kad.as_bytes().as_slice()));
        {
            let mut ro = ReadOptions::default();
            ro.set_prefix_same_as_start(true);
            let mut it = self.db.raw_iterator_cf_opt(cf_p, ro);
            for same_key in items.chunk_by(|a, b| a.0 == b.0) {
                let Some(&(kad, _)) = same_key.first() else {
                    continue;
                };
                let mut held = match held_providers(&mut it, &kad) {
                    Ok(held) => held,
                    Err(err) => {
                        // The key's stored records do not decode: its entries are refused,
                        // the other keys' go on.
                        tracing::warn!(%err, "provider records of a key do not decode");
                        for &(_, i) in same_key {
                            if let Some(slot) = out.get_mut(i) {
                                *slot = Err(err.duplicate());
                            }
                        }
                        continue;
                    }
                };
                let mut changed = false;
                for &(_, i) in same_key {
                    let (Some(e), Some(slot)) = (entries.get(i), out.get_mut(i)) else {
                        continue;
                    };
                    let r = e.record;
                    let encoded = match encode_provider_from(r, e.group) {
                        Ok(v) => v,
                        Err(err) => {
                            *slot = Err(err);
                            continue;
                        }
                    };
                    let peer = r.provider.to_bytes();
                    let primary = kad_prefixed(&kad, &peer);
                    let new_slot = Slot {
                        group: e.group,
                        received_at: r.received_at,
                    };
                    // A new record from another peer (one with a group) must fit the disk
                    // quota; a re-announce of a held one is taken whatever the quota (its
                    // record replaces the old one), and the node's own always are.
                    let held_already = held.iter().any(|h| h.peer == peer);
                    if e.group.is_some() && self.config.max_disk_bytes.is_some() {
                        let bytes = record_bytes(r);
                        if held_already {
                            self.disk.written_since.fetch_add(bytes, Ordering::Relaxed);
                        } else if let Err(err) = self.take_quota(bytes) {
                            *slot = Err(err);
                            continue;
                        }
                    }
                    if let Some(h) = held.iter_mut().find(|h| h.peer == peer) {
                        // A re-announce refreshes, whatever the cap.
                        h.slot = new_slot;
                    } else {
                        let slots: Vec<Slot> = held.iter().map(|h| h.slot).collect();
                        match admit(&slots, e.group, r.received_at, cap) {
                            Admission::Add => {}
                            Admission::Replace(j) => {
                                let evicted = held.swap_remove(j);
                                wb.delete_cf(cf_p, kad_prefixed(&kad, &evicted.peer));
                                replaced += 1;
                            }
                            Admission::Refuse => {
                                refused += 1;
                                *slot = Ok(ProviderOutcome::Full);
                                continue;
                            }
                        }
                        held.push(Held {
                            peer,
                            slot: new_slot,
                        });
                    }
                    wb.put_cf(cf_p, &primary, encoded);
                    changed = true;
                }
                if changed {
                    touched.push(kad);
                }
            }
        }
        if !wb.is_empty() {
            self.db
                .write_opt(wb, opts)
                .map_err(StoreError::from_rocks)?;
        }
        drop(guard);
        if let Some(cache) = &self.cache {
            cache.invalidate(&touched);
        }
        if refused > 0 || replaced > 0 {
            tracing::debug!(
                refused,
                replaced,
                "provider records refused or replacing others: keys at their cap"
            );
        }
        Ok(out)
    }
}

/// The stored providers of Kademlia key `kad`, read with `it` (a prefix iterator of the
/// providers family).
fn held_providers(it: &mut rocksdb::DBRawIterator<'_>, kad: &Key) -> Result<Vec<Held>, StoreError> {
    let mut held: Vec<Held> = Vec::new();
    it.seek(kad.as_bytes());
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        let Some(peer) = k.strip_prefix(kad.as_bytes()) else {
            break;
        };
        held.push(Held {
            peer: peer.to_vec(),
            slot: provider_slot(v)?,
        });
        it.next();
    }
    it.status().map_err(StoreError::from_rocks)?;
    Ok(held)
}

impl ValueStore for RocksStore {
    fn put_value(&self, record: &Record, received_at: UnixSecs) -> Result<(), StoreError> {
        let cf_v = self.cf(CF_VALUES)?;
        let primary = kad_prefixed(&Key::hash(&record.key), &record.key);
        let encoded = encode_value(record, received_at)?;
        self.take_quota((primary.len() + encoded.len()) as u64)?;
        let mut wb = WriteBatch::default();
        wb.put_cf(cf_v, &primary, encoded);
        // Held so that an expiry sweep's check and delete of this record are atomic.
        let _guard = self.value_locks.lock([primary.as_slice()]);
        self.write(wb)
    }

    fn get_value(
        &self,
        key: &[u8],
        now: UnixSecs,
    ) -> Result<Option<(Record, UnixSecs)>, StoreError> {
        let primary = kad_prefixed(&Key::hash(key), key);
        let Some(v) = self
            .db
            .get_pinned_cf(self.cf(CF_VALUES)?, &primary)
            .map_err(StoreError::from_rocks)?
        else {
            return Ok(None);
        };
        let (record, at) = decode_value(key, &v)?;
        if now >= at.saturating_add(VALUE_RECORD_TTL_SECS) {
            return Ok(None);
        }
        Ok(Some((record, at)))
    }

    fn remove_expired_values(&self, now: UnixSecs) -> Result<u64, StoreError> {
        let removed = self.sweep(
            &self.value_locks,
            CF_VALUES,
            VALUE_RECORD_TTL_SECS,
            now,
            value_received_at,
            |_| {},
        )?;
        self.reclaim_for_quota(removed)?;
        Ok(removed)
    }
}

/// How many keystore keys one existence check reads at once (one `MultiGet`). RocksDB's
/// `MultiGet` takes a few hundred bytes per key for its contexts and results, so a provide
/// call of 100,000 keys read at once took about 50 MB for a moment; in chunks it takes
/// this many keys' worth.
const KEYSTORE_READ_CHUNK: usize = 1024;

impl RocksStore {
    /// Calls `f(keystore key, multihash, held)` for the first occurrence of each of `keys`,
    /// in input order, reading the keystore in chunks of [`KEYSTORE_READ_CHUNK`].
    fn keystore_presence(
        &self,
        cf: &ColumnFamily,
        keys: &[Multihash],
        mut f: impl FnMut(Vec<u8>, &Multihash, bool),
    ) -> Result<(), StoreError> {
        // A key's keystore key starts with the SHA-256 of its bytes: equal hashes, equal keys.
        let mut seen: HashSet<Key> = HashSet::with_capacity(keys.len());
        let mut chunk: Vec<(Vec<u8>, &Multihash)> = Vec::with_capacity(KEYSTORE_READ_CHUNK);
        for part in keys.chunks(KEYSTORE_READ_CHUNK) {
            chunk.clear();
            for mh in part {
                let bytes = mh.to_bytes();
                let kad = Key::hash(&bytes);
                if seen.insert(kad) {
                    chunk.push((kad_prefixed(&kad, &bytes), mh));
                }
            }
            let found = self
                .db
                .batched_multi_get_cf(cf, chunk.iter().map(|(k, _)| k), false);
            for ((k, mh), held) in chunk.drain(..).zip(found) {
                f(k, mh, held.map_err(StoreError::from_rocks)?.is_some());
            }
        }
        Ok(())
    }
}

impl Keystore for RocksStore {
    fn put(&self, keys: &[Multihash]) -> Result<Vec<Multihash>, StoreError> {
        let cf = self.cf(CF_KEYSTORE)?;
        let _guard = self.keystore_lock.lock();
        let mut wb = WriteBatch::default();
        let mut new = Vec::new();
        self.keystore_presence(cf, keys, |k, mh, held| {
            if !held {
                wb.put_cf(cf, k, b"");
                new.push(*mh);
            }
        })?;
        if new.is_empty() {
            return Ok(new);
        }
        let count = self
            .key_count
            .load(Ordering::Acquire)
            .saturating_add(new.len() as u64);
        wb.put(META_KEY_COUNT, count.to_be_bytes());
        self.write(wb)?;
        self.key_count.store(count, Ordering::Release);
        Ok(new)
    }

    fn delete(&self, keys: &[Multihash]) -> Result<u64, StoreError> {
        let cf = self.cf(CF_KEYSTORE)?;
        let _guard = self.keystore_lock.lock();
        let mut wb = WriteBatch::default();
        let mut removed = 0u64;
        self.keystore_presence(cf, keys, |k, _, held| {
            if held {
                wb.delete_cf(cf, k);
                removed += 1;
            }
        })?;
        if removed == 0 {
            return Ok(0);
        }
        let count = self
            .key_count
            .load(Ordering::Acquire)
            .saturating_sub(removed);
        wb.put(META_KEY_COUNT, count.to_be_bytes());
        self.write(wb)?;
        self.key_count.store(count, Ordering::Release);
        Ok(removed)
    }

    fn count(&self) -> Result<u64, StoreError> {
        Ok(self.key_count.load(Ordering::Acquire))
    }

    fn scan(
        &self,
        prefix: &Prefix,
        start_after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Multihash)>, StoreError> {
        let Some((lower, last)) = scan_bounds(prefix, start_after, limit) else {
            return Ok(Vec::new());
        };
        let mut ro = ReadOptions::default();
        if let Some(upper) = key_successor(&last) {
            ro.set_iterate_upper_bound(upper.to_vec());
        }
        // A page of keys is contiguous in each file: read it in one go rather than block by
        // block when it is not in the OS page cache (an entry takes ~70 bytes on disk).
        ro.set_readahead_size(limit.saturating_mul(96).clamp(16 << 10, 1 << 20));
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_KEYSTORE)?, ro);
        it.seek(lower.as_bytes());
        let mut out = Vec::with_capacity(limit.min(4096));
        while let Some(k) = it.key() {
            if out.len() == limit {
                break;
            }
            let (kad, mh) = split_kad(k, "keystore key")?;
            let mh = Multihash::from_bytes(mh)
                .map_err(|e| StoreError::corrupt_because("keystore key: bad multihash", e))?;
            out.push((kad, mh));
            it.next();
        }
        it.status().map_err(StoreError::from_rocks)?;
        Ok(out)
    }
}
