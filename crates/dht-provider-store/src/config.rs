//! Settings of the stores.

use dht_proto::{InvalidSetting, K_VALUE};

/// Settings of [`RocksStore`](crate::RocksStore) (all of them) and
/// [`MemoryStore`](crate::MemoryStore) (only [`Config::max_providers_per_key`]).
///
/// `Default` is a sensible server configuration; the setters chain:
///
/// ```
/// use dht_provider_store::Config;
/// let config = Config::default()
///     .with_cache_entries(10_000)
///     .with_max_providers_per_key(20)
///     .with_sync_writes(true)
///     .with_block_cache_bytes(32 << 20);
/// assert_eq!(config.cache_entries, 10_000);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Number of DHT keys whose provider lists the LRU cache holds (0 disables the cache).
    /// Default 65,536.
    pub cache_entries: usize,
    /// Most bytes the provider lists in the LRU cache take, about (0 disables the cache).
    /// Default 64 MiB. Lists are evicted least recently used first, whichever of this and
    /// [`Config::cache_entries`] is reached first; a list larger than this is never cached.
    pub cache_bytes: usize,
    /// The most providers kept per key (default 20, as libp2p-kad). When a key holds this many
    /// unexpired providers, new providers are refused and the established ones kept (a flood of
    /// fake providers cannot evict real ones); a provider already held is always refreshed.
    /// Records a peer sent, stored with the network group they came from
    /// ([`ProviderStore::add_inbound_provider`](crate::ProviderStore::add_inbound_provider)),
    /// keep room for newcomers of other groups: a crowded group gives up its oldest slot.
    pub max_providers_per_key: usize,
    /// Whether acknowledged writes are fsynced (RocksDB `WriteOptions::sync`), default `true`.
    ///
    /// With `true` an acknowledged write survives a power loss or a kernel crash. With `false`
    /// it still survives the process being killed (the WAL is written to the OS before the call
    /// returns), but not a machine crash. Removals of expired data are never synced: if lost,
    /// they are redone by the next sweep.
    pub sync_writes: bool,
    /// Size of RocksDB's block cache, shared by all column families; index and filter blocks
    /// are charged to it too, so it bounds most of the read-side memory. Default 64 MiB.
    pub block_cache_bytes: usize,
    /// Total memtable budget across column families (RocksDB `db_write_buffer_size`); each
    /// column family's memtable is a quarter of it, and up to four of a family's (one
    /// filling, three waiting for the flush) stay within it. Default 256 MiB: with small
    /// memtables, records pile up in many small level-0 files, and every new record's
    /// existence check seeks each of them. Memory is only taken as records arrive.
    pub write_buffer_bytes: usize,
    /// Most SST files RocksDB keeps open (`max_open_files`); each open file holds a table
    /// reader. Default 512.
    pub max_open_files: i32,
    /// Whether RocksDB keeps statistics (default `false`: they cost a little on every
    /// operation); [`RocksStore::wal_syncs`](crate::RocksStore::wal_syncs) reads them.
    pub statistics: bool,
    /// RocksDB background flush and compaction threads. Default 2.
    pub max_background_jobs: i32,
    /// How many expired records an expiry sweep removes per write (and per hold of their
    /// keys' write locks); the scan that finds them holds no lock, and reads never wait.
    /// Default 4,096.
    pub expiry_chunk: usize,
    /// The most disk the database directory may take before records that other peers send
    /// are refused ([`StoreError::QuotaExceeded`](crate::StoreError::QuotaExceeded)), in
    /// bytes; `None` (the default) for no quota.
    ///
    /// It bounds what others can make this node store: inbound provider records (those
    /// added from a [`SourceGroup`](crate::SourceGroup)) and values. The node's own records
    /// and its keystore are never refused for it, nor is a provider's re-announce of a record
    /// the store holds (it replaces the old one). The use is measured from the directory's
    /// files at most once a second and counted forward by the bytes written in between; an
    /// expiry sweep that removes records while the use is at half the quota or more compacts the
    /// database, so that the space comes back and writes are taken again without a reopen.
    pub max_disk_bytes: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cache_entries: 65_536,
            cache_bytes: 64 << 20,
            max_providers_per_key: K_VALUE,
            sync_writes: true,
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 256 << 20,
            max_open_files: 512,
            max_background_jobs: 2,
            statistics: false,
            expiry_chunk: 4096,
            max_disk_bytes: None,
        }
    }
}

impl Config {
    /// Sets [`Config::cache_entries`].
    #[must_use]
    pub fn with_cache_entries(mut self, n: usize) -> Self {
        self.cache_entries = n;
        self
    }

    /// Sets [`Config::cache_bytes`].
    #[must_use]
    pub fn with_cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Sets [`Config::max_providers_per_key`].
    #[must_use]
    pub fn with_max_providers_per_key(mut self, n: usize) -> Self {
        self.max_providers_per_key = n;
        self
    }

    /// Sets [`Config::sync_writes`].
    #[must_use]
    pub fn with_sync_writes(mut self, sync: bool) -> Self {
        self.sync_writes = sync;
        self
    }

    /// Sets [`Config::block_cache_bytes`].
    #[must_use]
    pub fn with_block_cache_bytes(mut self, bytes: usize) -> Self {
        self.block_cache_bytes = bytes;
        self
    }

    /// Sets [`Config::write_buffer_bytes`].
    #[must_use]
    pub fn with_write_buffer_bytes(mut self, bytes: usize) -> Self {
        self.write_buffer_bytes = bytes;
        self
    }

    /// Sets [`Config::max_open_files`] (`-1`: no limit).
    #[must_use]
    pub fn with_max_open_files(mut self, n: i32) -> Self {
        self.max_open_files = n;
        self
    }

    /// Sets [`Config::max_disk_bytes`].
    #[must_use]
    pub fn with_max_disk_bytes(mut self, bytes: Option<u64>) -> Self {
        self.max_disk_bytes = bytes;
        self
    }

    /// Sets [`Config::statistics`].
    #[must_use]
    pub fn with_statistics(mut self, on: bool) -> Self {
        self.statistics = on;
        self
    }

    /// Sets [`Config::max_background_jobs`].
    #[must_use]
    pub fn with_max_background_jobs(mut self, n: i32) -> Self {
        self.max_background_jobs = n;
        self
    }

    /// `Ok` when every setting can work: `max_providers_per_key`, `write_buffer_bytes`,
    /// `max_background_jobs` and `expiry_chunk` above zero.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming the first setting that cannot work.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        InvalidSetting::at_least_one("max_providers_per_key", self.max_providers_per_key as u64)?;
        InvalidSetting::at_least_one("write_buffer_bytes", self.write_buffer_bytes as u64)?;
        InvalidSetting::at_least_one(
            "max_background_jobs",
            u64::try_from(self.max_background_jobs).unwrap_or(0),
        )?;
        InvalidSetting::at_least_one("expiry_chunk", self.expiry_chunk as u64)
    }

    /// Sets [`Config::expiry_chunk`] (at least 1).
    #[must_use]
    pub fn with_expiry_chunk(mut self, n: usize) -> Self {
        self.expiry_chunk = n;
        self
    }

    /// A small-memory profile: 8 MiB block cache, 16 MiB of memtables, 128 open files, a
    /// provider cache of 4,096 lists and 8 MiB.
    /// Suits tests, the simulator and keystores read in regions.
    #[must_use]
    pub fn small() -> Self {
        Config::default()
            .with_block_cache_bytes(8 << 20)
            .with_write_buffer_bytes(16 << 20)
            .with_max_open_files(128)
            .with_cache_entries(4096)
            .with_cache_bytes(8 << 20)
    }
}
