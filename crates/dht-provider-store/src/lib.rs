#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

// Without RocksDB only the checks shared with `MemoryStore` are used.
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
mod codec;
mod config;
mod error;
mod memory;
#[cfg(feature = "rocksdb")]
mod rocks;
mod writer;

use std::{collections::HashMap, num::NonZeroU64, sync::Arc};

pub use config::Config;
pub use dht_proto::{Key, Prefix, ProviderRecord, Record, UnixSecs};
pub use error::StoreError;
pub use memory::MemoryStore;
#[cfg(feature = "rocksdb")]
pub use rocks::{RocksMemory, RocksStore, dir_bytes};
pub use writer::{Durability, GroupWriter, WriteAnswer, WriteTicket, WriterConfig, WriterStats};

/// The multihash type the keystore holds (up to 64-byte digests).
pub type Multihash = dht_proto::multihash::Multihash<64>;

/// The provider records a DHT server holds for others.
///
/// Records are valid for [`PROVIDER_RECORD_TTL_SECS`](dht_proto::PROVIDER_RECORD_TTL_SECS)
/// (48 h) after `received_at`; their addresses for
/// [`PROVIDER_ADDR_TTL_SECS`](dht_proto::PROVIDER_ADDR_TTL_SECS) (24 h).
pub trait ProviderStore: Send + Sync {
    /// Adds provider records (a batch), one atomic write.
    ///
    /// A provider already held for a key is refreshed (its record replaced). A new provider
    /// for a key that already holds `max_providers_per_key` unexpired providers is refused
    /// (silently: the established ones are kept). "Unexpired" is judged at the incoming
    /// record's `received_at`. Within a batch, records apply in order.
    fn add_providers(&self, batch: &[ProviderRecord]) -> Result<(), StoreError>;

    /// Valid providers of DHT key `key` (multihash bytes) at wall time `now`, at most `limit`;
    /// addresses omitted for records older than the address TTL.
    ///
    /// The most recently received come first (ties by peer id bytes).
    fn providers(
        &self,
        key: &[u8],
        limit: usize,
        now: UnixSecs,
    ) -> Result<Vec<ProviderRecord>, StoreError>;

    /// Removes records expired at `now`; returns how many were removed.
    fn remove_expired(&self, now: UnixSecs) -> Result<u64, StoreError>;

    /// [`ProviderStore::add_providers`] for records nobody is told were stored, without
    /// waiting for them to be durable: an inbound ADD_PROVIDER has no response, so an fsync
    /// per request would acknowledge nothing and only cost a disk flush. A store that syncs
    /// its writes skips the sync here; the records still survive the process being killed,
    /// not a machine crash (the provider re-announces within 22 h). Defaults to
    /// [`ProviderStore::add_providers`].
    fn add_providers_unsynced(&self, batch: &[ProviderRecord]) -> Result<(), StoreError> {
        self.add_providers(batch)
    }

    /// Adds one provider record; see [`ProviderStore::add_providers`].
    fn add_provider(&self, record: &ProviderRecord) -> Result<(), StoreError> {
        self.add_providers(std::slice::from_ref(record))
    }

    /// Adds a record a peer sent, from the network `group` its connection came from, without
    /// waiting for it to be durable (as [`ProviderStore::add_providers_unsynced`]).
    ///
    /// The group keeps room for newcomers: a key holding `max_providers_per_key` unexpired
    /// providers still admits a provider from a group it holds none of, in place of the
    /// oldest record of the group holding most (if one holds two or more), and a provider
    /// from a group it holds replaces that group's oldest record. So peer ids from one
    /// network, however many, cannot lock providers from other networks out of a key: under
    /// pressure each group keeps one slot. Records stored without a group count as a group
    /// each, and are refused or kept as [`ProviderStore::add_providers`] says.
    ///
    /// Stores that keep no groups (the default) treat it as
    /// [`ProviderStore::add_providers_unsynced`].
    fn add_inbound_provider(
        &self,
        record: &ProviderRecord,
        group: SourceGroup,
    ) -> Result<(), StoreError> {
        let _ = group;
        self.add_providers_unsynced(std::slice::from_ref(record))
    }

    /// Adds `entries`, from any number of callers, as one write: what the [`GroupWriter`]
    /// commits. Each entry follows the rules of [`ProviderStore::add_providers`] (no group)
    /// or [`ProviderStore::add_inbound_provider`] (a group), in order within a key; the
    /// write is synced as [`ProviderStore::add_providers`] is if `durable`, else not (as
    /// [`ProviderStore::add_providers_unsynced`]).
    ///
    /// The answer has one result per entry, in order: [`ProviderOutcome::Stored`],
    /// [`ProviderOutcome::Full`] (refused by the per-key cap), or the error that refused
    /// this entry alone (e.g. [`StoreError::InvalidRecord`]): an entry that cannot be stored
    /// does not refuse the others. The outer error is the write's: then nothing was stored.
    ///
    /// [`RocksStore`] and [`MemoryStore`] apply all entries in one atomic write (one
    /// RocksDB `WriteBatch`). The default calls the one-record methods entry by entry,
    /// cannot tell a refusal by the cap (it answers [`ProviderOutcome::Stored`]), and stores
    /// grouped entries unsynced, as [`ProviderStore::add_inbound_provider`] does.
    fn add_provider_entries(
        &self,
        entries: &[ProviderEntry<'_>],
        durable: bool,
    ) -> Result<Vec<Result<ProviderOutcome, StoreError>>, StoreError> {
        Ok(entries
            .iter()
            .map(|e| {
                let one = std::slice::from_ref(e.record);
                let added = match (e.group, durable) {
                    (Some(g), _) => self.add_inbound_provider(e.record, g),
                    (None, true) => self.add_providers(one),
                    (None, false) => self.add_providers_unsynced(one),
                };
                added.map(|()| ProviderOutcome::Stored)
            })
            .collect())
    }

    /// [`ProviderStore::add_provider_entries`] without waiting for the write: the answer
    /// comes as a [`WriteTicket`], a future (or [`WriteTicket::wait`]). A [`GroupWriter`]
    /// queues the entries and returns at once, and answers the ticket after their commit,
    /// so that a caller on an async task holds no thread while the disk syncs. By default
    /// the entries are written here ([`ProviderStore::add_provider_entries`], which may
    /// block) and the ticket comes answered.
    fn submit_provider_entries(&self, entries: &[ProviderEntry<'_>], durable: bool) -> WriteTicket {
        WriteTicket::ready(self.add_provider_entries(entries, durable))
    }
}

/// A provider record to add, and the network group it came from if a peer sent it (see
/// [`ProviderStore::add_provider_entries`]).
#[derive(Clone, Copy, Debug)]
pub struct ProviderEntry<'a> {
    /// The record.
    pub record: &'a ProviderRecord,
    /// The group of the connection it came from; `None` for a record stored as
    /// [`ProviderStore::add_providers`] stores it.
    pub group: Option<SourceGroup>,
}

/// What became of one provider record added by [`ProviderStore::add_provider_entries`] (or
/// a [`GroupWriter`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderOutcome {
    /// Stored, or refreshed (the provider was held already).
    Stored,
    /// Not stored: the key holds [`Config::max_providers_per_key`] unexpired providers and
    /// this one took no slot (see [`ProviderStore::add_inbound_provider`]).
    Full,
}

/// The network a provider record came from, as the node groups connections (e.g. the /24 of
/// an IPv4 address or the /48 of an IPv6 one): an opaque tag of at most 7 bytes, stored with
/// the record. See [`ProviderStore::add_inbound_provider`].
///
/// ```
/// use dht_provider_store::SourceGroup;
/// let a = SourceGroup::from_bytes(&[4, 192, 0, 2]);
/// assert_eq!(a, SourceGroup::from_bytes(&[4, 192, 0, 2]));
/// assert_ne!(a, SourceGroup::from_bytes(&[4, 192, 0, 3]));
/// assert_eq!(SourceGroup::from_u64(a.to_u64()), Some(a));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceGroup(NonZeroU64);

impl SourceGroup {
    /// The group named by `bytes` (only the first 7 count).
    pub fn from_bytes(bytes: &[u8]) -> SourceGroup {
        let used = bytes.get(..7).unwrap_or(bytes);
        // The top byte holds the length with its high bit set: never zero, and tags of
        // different lengths never collide.
        let mut v = 0x80u64 | used.len() as u64;
        for &b in used {
            v = (v << 8) | u64::from(b);
        }
        v <<= 8 * (7 - used.len() as u32);
        SourceGroup(NonZeroU64::new(v).unwrap_or(NonZeroU64::MIN))
    }

    /// The group as a number, to store it.
    pub fn to_u64(self) -> u64 {
        self.0.get()
    }

    /// The group a number stored by [`SourceGroup::to_u64`] names (`None` for 0).
    pub fn from_u64(v: u64) -> Option<SourceGroup> {
        NonZeroU64::new(v).map(SourceGroup)
    }
}

/// A key's stored provider, as the per-key cap sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub(crate) group: Option<SourceGroup>,
    pub(crate) received_at: UnixSecs,
}

/// What becomes of a new provider of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Stored beside the others.
    Add,
    /// Stored in place of the provider at this index.
    Replace(usize),
    /// Refused: the key is full.
    Refuse,
}

/// Whether a new provider from `group`, received at `at`, enters a key holding `held` (the
/// new provider not among them), at most `cap` unexpired; see
/// [`ProviderStore::add_inbound_provider`].
pub(crate) fn admit(
    held: &[Slot],
    group: Option<SourceGroup>,
    at: UnixSecs,
    cap: usize,
) -> Admission {
    let live = |s: &Slot| {
        at < s
            .received_at
            .saturating_add(dht_proto::PROVIDER_RECORD_TTL_SECS)
    };
    if held.iter().filter(|s| live(s)).count() < cap {
        return Admission::Add;
    }
    let Some(group) = group else {
        return Admission::Refuse;
    };
    let oldest_of = |g: SourceGroup| {
        held.iter()
            .enumerate()
            .filter(|(_, s)| live(s) && s.group == Some(g))
            .min_by_key(|(_, s)| s.received_at)
            .map(|(i, _)| i)
    };
    if let Some(i) = oldest_of(group) {
        return Admission::Replace(i);
    }
    let mut counts: HashMap<SourceGroup, usize> = HashMap::new();
    for g in held.iter().filter(|s| live(s)).filter_map(|s| s.group) {
        *counts.entry(g).or_default() += 1;
    }
    let crowded = counts
        .into_iter()
        .filter(|&(_, n)| n >= 2)
        .max_by_key(|&(g, n)| (n, std::cmp::Reverse(g)));
    match crowded.and_then(|(g, _)| oldest_of(g)) {
        Some(i) => Admission::Replace(i),
        None => Admission::Refuse,
    }
}

/// The value records (PUT_VALUE / GET_VALUE) a DHT server holds.
///
/// Records expire [`VALUE_RECORD_TTL_SECS`](dht_proto::VALUE_RECORD_TTL_SECS) (48 h) after
/// they were received. The store does not validate or select: the caller's validator decides
/// whether a record replaces the stored one, then puts it.
pub trait ValueStore: Send + Sync {
    /// Stores `record` under `record.key`, replacing any record stored there.
    fn put_value(&self, record: &Record, received_at: UnixSecs) -> Result<(), StoreError>;

    /// The stored record and when it was received, if not expired at `now`.
    fn get_value(
        &self,
        key: &[u8],
        now: UnixSecs,
    ) -> Result<Option<(Record, UnixSecs)>, StoreError>;

    /// Removes records expired at `now`; returns how many were removed.
    fn remove_expired_values(&self, now: UnixSecs) -> Result<u64, StoreError>;
}

/// The keys this node itself provides, ordered by Kademlia key (`sha256` of the multihash
/// bytes).
pub trait Keystore: Send + Sync {
    /// Adds keys; returns those that were not already present (in input order, deduplicated).
    fn put(&self, keys: &[Multihash]) -> Result<Vec<Multihash>, StoreError>;

    /// Removes keys; returns how many were present.
    fn delete(&self, keys: &[Multihash]) -> Result<u64, StoreError>;

    /// Number of keys held (O(1)).
    fn count(&self) -> Result<u64, StoreError>;

    /// Keys whose Kademlia key (sha256 of the multihash bytes) lies in `prefix`, in
    /// Kademlia-key order, starting strictly after `start_after` if given, at most `limit`.
    /// Pages through a region without loading all keys.
    fn scan(
        &self,
        prefix: &Prefix,
        start_after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Multihash)>, StoreError>;

    /// Every key of a region, read in pages of `page` keys (calls `scan` repeatedly).
    fn scan_all(&self, prefix: &Prefix, page: usize) -> Result<Vec<(Key, Multihash)>, StoreError> {
        let page = page.max(1);
        let mut out: Vec<(Key, Multihash)> = Vec::new();
        loop {
            let after = out.last().map(|(k, _)| *k);
            let got = self.scan(prefix, after.as_ref(), page)?;
            let done = got.len() < page;
            out.extend(got);
            if done {
                return Ok(out);
            }
        }
    }
}

macro_rules! forward_impls {
    ($($wrapper:ty),*) => {$(
        impl<T: ProviderStore + ?Sized> ProviderStore for $wrapper {
            fn add_providers(&self, batch: &[ProviderRecord]) -> Result<(), StoreError> {
                (**self).add_providers(batch)
            }
            fn add_providers_unsynced(&self, batch: &[ProviderRecord]) -> Result<(), StoreError> {
                (**self).add_providers_unsynced(batch)
            }
            fn providers(
                &self,
                key: &[u8],
                limit: usize,
                now: UnixSecs,
            ) -> Result<Vec<ProviderRecord>, StoreError> {
                (**self).providers(key, limit, now)
            }
            fn remove_expired(&self, now: UnixSecs) -> Result<u64, StoreError> {
                (**self).remove_expired(now)
            }
            fn add_inbound_provider(
                &self,
                record: &ProviderRecord,
                group: SourceGroup,
            ) -> Result<(), StoreError> {
                (**self).add_inbound_provider(record, group)
            }
            fn add_provider_entries(
                &self,
                entries: &[ProviderEntry<'_>],
                durable: bool,
            ) -> Result<Vec<Result<ProviderOutcome, StoreError>>, StoreError> {
                (**self).add_provider_entries(entries, durable)
            }
            fn submit_provider_entries(
                &self,
                entries: &[ProviderEntry<'_>],
                durable: bool,
            ) -> WriteTicket {
                (**self).submit_provider_entries(entries, durable)
            }
        }

        impl<T: ValueStore + ?Sized> ValueStore for $wrapper {
            fn put_value(&self, record: &Record, received_at: UnixSecs) -> Result<(), StoreError> {
                (**self).put_value(record, received_at)
            }
            fn get_value(
                &self,
                key: &[u8],
                now: UnixSecs,
            ) -> Result<Option<(Record, UnixSecs)>, StoreError> {
                (**self).get_value(key, now)
            }
            fn remove_expired_values(&self, now: UnixSecs) -> Result<u64, StoreError> {
                (**self).remove_expired_values(now)
            }
        }

        impl<T: Keystore + ?Sized> Keystore for $wrapper {
            fn put(&self, keys: &[Multihash]) -> Result<Vec<Multihash>, StoreError> {
                (**self).put(keys)
            }
            fn delete(&self, keys: &[Multihash]) -> Result<u64, StoreError> {
                (**self).delete(keys)
            }
            fn count(&self) -> Result<u64, StoreError> {
                (**self).count()
            }
            fn scan(
                &self,
                prefix: &Prefix,
                start_after: Option<&Key>,
                limit: usize,
            ) -> Result<Vec<(Key, Multihash)>, StoreError> {
                (**self).scan(prefix, start_after, limit)
            }
        }
    )*};
}

forward_impls!(Arc<T>, &T, Box<T>);

/// Filters and orders a key's stored provider records for a read at `now`: drops expired
/// records and records of another DHT key, strips expired addresses, freshest first, at most
/// `limit`. `records` must already be in read order (see [`sort_for_read`]).
pub(crate) fn select_providers(
    records: &[ProviderRecord],
    key: &[u8],
    limit: usize,
    now: UnixSecs,
) -> Vec<ProviderRecord> {
    records
        .iter()
        .filter(|r| !r.is_expired(now) && r.key == key)
        .take(limit)
        .map(|r| {
            if r.addrs_expired(now) {
                ProviderRecord {
                    key: r.key.clone(),
                    provider: r.provider,
                    addrs: Vec::new(),
                    received_at: r.received_at,
                }
            } else {
                r.clone()
            }
        })
        .collect()
}

/// Read order: most recently received first, ties by peer id bytes.
pub(crate) fn sort_for_read(records: &mut [ProviderRecord]) {
    records.sort_by(|a, b| {
        b.received_at
            .cmp(&a.received_at)
            .then_with(|| a.provider.to_bytes().cmp(&b.provider.to_bytes()))
    });
}

/// The README's example, compiled and run as a doctest.
#[cfg(all(doctest, feature = "rocksdb"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
