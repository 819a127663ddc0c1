//! In-memory implementations of the three stores, for tests and the simulator.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use dht_proto::{Key, PeerId, Prefix, ProviderRecord, Record, UnixSecs, VALUE_RECORD_TTL_SECS};
use parking_lot::RwLock;

use crate::codec::scan_bounds;
use crate::{
    Admission, Config, Keystore, Multihash, ProviderEntry, ProviderOutcome, ProviderStore, Slot,
    SourceGroup, StoreError, ValueStore, admit, select_providers, sort_for_read,
};

/// One key's provider records, in read order, and the groups they came from.
#[derive(Debug, Default)]
struct KeyProviders {
    records: Vec<ProviderRecord>,
    groups: HashMap<PeerId, SourceGroup>,
}

/// All three stores in memory, with the same semantics as [`RocksStore`](crate::RocksStore)
/// (the same conformance suite runs against both). Nothing is persisted.
///
/// ```
/// use dht_provider_store::{MemoryStore, ValueStore};
/// use dht_proto::Record;
///
/// let store = MemoryStore::new();
/// store.put_value(&Record::new(b"/pk/x".to_vec(), b"v".to_vec()), 100)?;
/// let (rec, at) = store.get_value(b"/pk/x", 200)?.expect("stored");
/// assert_eq!((rec.value.as_slice(), at), (&b"v"[..], 100));
/// # Ok::<(), dht_provider_store::StoreError>(())
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    max_providers_per_key: Option<usize>,
    /// Kademlia key → the key's provider records.
    providers: RwLock<HashMap<Key, KeyProviders>>,
    /// DHT key → record and when it was received.
    values: RwLock<HashMap<Vec<u8>, (Record, UnixSecs)>>,
    /// (Kademlia key, multihash bytes) → multihash.
    keys: RwLock<BTreeMap<(Key, Vec<u8>), Multihash>>,
}

impl MemoryStore {
    /// An empty store with the default [`Config`].
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// An empty store; of `config` only [`Config::max_providers_per_key`] applies.
    pub fn with_config(config: &Config) -> Self {
        MemoryStore {
            max_providers_per_key: Some(config.max_providers_per_key),
            ..MemoryStore::default()
        }
    }

    fn cap(&self) -> usize {
        self.max_providers_per_key
            .unwrap_or(Config::default().max_providers_per_key)
    }
}

impl MemoryStore {
    /// Adds `batch`, each record from `group`: all or nothing, so a record that cannot be
    /// stored refuses the batch.
    fn add(&self, batch: &[ProviderRecord], group: Option<SourceGroup>) -> Result<(), StoreError> {
        for r in batch {
            crate::codec::check_provider(r)?;
        }
        let entries: Vec<ProviderEntry<'_>> = batch
            .iter()
            .map(|record| ProviderEntry { record, group })
            .collect();
        for outcome in self.add_entries(&entries) {
            outcome?;
        }
        Ok(())
    }

    /// The add path of every provider write (see
    /// [`ProviderStore::add_provider_entries`]): entries in order, under one write lock; an
    /// entry that cannot be stored is refused alone.
    fn add_entries(
        &self,
        entries: &[ProviderEntry<'_>],
    ) -> Vec<Result<ProviderOutcome, StoreError>> {
        let cap = self.cap();
        let mut map = self.providers.write();
        let mut out = Vec::with_capacity(entries.len());
        for &ProviderEntry { record: r, group } in entries {
            if let Err(err) = crate::codec::check_provider(r) {
                out.push(Err(err));
                continue;
            }
            let kad = r.kad_key();
            let list = map.entry(kad).or_default();
            if let Some(existing) = list.records.iter_mut().find(|e| e.provider == r.provider) {
                *existing = r.clone();
            } else {
                let slots: Vec<Slot> = list
                    .records
                    .iter()
                    .map(|e| Slot {
                        group: list.groups.get(&e.provider).copied(),
                        received_at: e.received_at,
                    })
                    .collect();
                match admit(&slots, group, r.received_at, cap) {
                    Admission::Add => list.records.push(r.clone()),
                    Admission::Replace(i) => {
                        if let Some(slot) = list.records.get_mut(i) {
                            tracing::debug!(provider = %r.provider, evicted = %slot.provider, "provider replaces one of a crowded group");
                            list.groups.remove(&slot.provider);
                            *slot = r.clone();
                        }
                    }
                    Admission::Refuse => {
                        tracing::debug!(provider = %r.provider, "provider refused: key is full");
                        if list.records.is_empty() {
                            map.remove(&kad);
                        }
                        out.push(Ok(ProviderOutcome::Full));
                        continue;
                    }
                }
            }
            match group {
                Some(g) => list.groups.insert(r.provider, g),
                None => list.groups.remove(&r.provider),
            };
            sort_for_read(&mut list.records);
            out.push(Ok(ProviderOutcome::Stored));
        }
        out
    }
}

impl ProviderStore for MemoryStore {
    fn add_providers(&self, batch: &[ProviderRecord]) -> Result<(), StoreError> {
        self.add(batch, None)
    }

    fn add_inbound_provider(
        &self,
        record: &ProviderRecord,
        group: SourceGroup,
    ) -> Result<(), StoreError> {
        self.add(std::slice::from_ref(record), Some(group))
    }

    /// All `entries` under one write lock (nothing is persisted: `durable` changes nothing).
    fn add_provider_entries(
        &self,
        entries: &[ProviderEntry<'_>],
        durable: bool,
    ) -> Result<Vec<Result<ProviderOutcome, StoreError>>, StoreError> {
        let _ = durable;
        Ok(self.add_entries(entries))
    }

    fn providers(
        &self,
        key: &[u8],
        limit: usize,
        now: UnixSecs,
    ) -> Result<Vec<ProviderRecord>, StoreError> {
        let map = self.providers.read();
        Ok(map
            .get(&Key::hash(key))
            .map(|l| select_providers(&l.records, key, limit, now))
            .unwrap_or_default())
    }

    fn remove_expired(&self, now: UnixSecs) -> Result<u64, StoreError> {
        let mut map = self.providers.write();
        let mut removed = 0u64;
        map.retain(|_, list| {
            let before = list.records.len();
            let groups = &mut list.groups;
            list.records.retain(|r| {
                let keep = !r.is_expired(now);
                if !keep {
                    groups.remove(&r.provider);
                }
                keep
            });
            removed += (before - list.records.len()) as u64;
            !list.records.is_empty()
        });
        Ok(removed)
    }
}

fn value_expired(received_at: UnixSecs, now: UnixSecs) -> bool {
    now >= received_at.saturating_add(VALUE_RECORD_TTL_SECS)
}

impl ValueStore for MemoryStore {
    fn put_value(&self, record: &Record, received_at: UnixSecs) -> Result<(), StoreError> {
        self.values
            .write()
            .insert(record.key.clone(), (record.clone(), received_at));
        Ok(())
    }

    fn get_value(
        &self,
        key: &[u8],
        now: UnixSecs,
    ) -> Result<Option<(Record, UnixSecs)>, StoreError> {
        Ok(self
            .values
            .read()
            .get(key)
            .filter(|(_, at)| !value_expired(*at, now))
            .cloned())
    }

    fn remove_expired_values(&self, now: UnixSecs) -> Result<u64, StoreError> {
        let mut map = self.values.write();
        let before = map.len();
        map.retain(|_, (_, at)| !value_expired(*at, now));
        Ok((before - map.len()) as u64)
    }
}

impl Keystore for MemoryStore {
    fn put(&self, keys: &[Multihash]) -> Result<Vec<Multihash>, StoreError> {
        let mut map = self.keys.write();
        let mut new = Vec::new();
        for mh in keys {
            let bytes = mh.to_bytes();
            if let std::collections::btree_map::Entry::Vacant(slot) =
                map.entry((Key::hash(&bytes), bytes))
            {
                slot.insert(*mh);
                new.push(*mh);
            }
        }
        Ok(new)
    }

    fn delete(&self, keys: &[Multihash]) -> Result<u64, StoreError> {
        let mut map = self.keys.write();
        let mut seen = HashSet::new();
        let mut removed = 0;
        for mh in keys {
            let bytes = mh.to_bytes();
            if seen.insert(bytes.clone()) && map.remove(&(Key::hash(&bytes), bytes)).is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn count(&self) -> Result<u64, StoreError> {
        Ok(self.keys.read().len() as u64)
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
        let map = self.keys.read();
        Ok(map
            .range((Bound::Included((lower, Vec::new())), Bound::Unbounded))
            .take_while(|((k, _), _)| *k <= last)
            .take(limit)
            .map(|((k, _), mh)| (*k, *mh))
            .collect())
    }
}
