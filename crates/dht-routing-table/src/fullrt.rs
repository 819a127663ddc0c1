//! The full routing table ("fullrt"): every known DHT server, filled by a crawl.

use std::{fmt, mem::size_of};

use dht_proto::{K_VALUE, Key, Multiaddr, PeerId, PeerInfo, UnixSecs};
use parking_lot::RwLock;

use crate::{Clock, PeerEvent, RejectReason, RoutingTable, UpdateOutcome, Xor, keep_closest};

/// Settings of a [`FullRoutingTable`].
///
/// ```
/// use dht_routing_table::FullRtConfig;
/// let config = FullRtConfig::default().with_freshness(3600).with_min_peers(1000);
/// assert_eq!(config.freshness, 3600);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FullRtConfig {
    /// How long after a bulk fill ([`FullRoutingTable::replace_all`]) the table still counts
    /// as complete, in seconds (default 7200: two crawls at go-libp2p-kad-dht's fullrt crawl
    /// interval of one hour, so one late crawl does not demote the table).
    pub freshness: u64,
    /// The fewest peers a complete table holds (default [`K_VALUE`], 20): a crawl that found
    /// almost nothing is not trusted to be the whole network.
    pub min_peers: usize,
}

impl Default for FullRtConfig {
    fn default() -> Self {
        FullRtConfig {
            freshness: 2 * 3600,
            min_peers: K_VALUE,
        }
    }
}

impl FullRtConfig {
    /// Sets [`FullRtConfig::freshness`].
    #[must_use]
    pub fn with_freshness(mut self, secs: u64) -> Self {
        self.freshness = secs;
        self
    }

    /// Sets [`FullRtConfig::min_peers`].
    #[must_use]
    pub fn with_min_peers(mut self, n: usize) -> Self {
        self.min_peers = n;
        self
    }
}

/// A routing table holding every known DHT server, ordered by Kademlia key.
///
/// It is filled in bulk from a crawl with [`replace_all`](Self::replace_all) and answers
/// closest-peer questions locally in O(log n) plus the size of the answer. Within
/// [`FullRtConfig::freshness`] of a fill it reports itself [complete](RoutingTable::is_complete),
/// so routing may answer closest-peer questions from it without a network walk.
///
/// Between crawls, [`PeerEvent::Seen`] adds or updates a peer, and [`PeerEvent::Failed`] and
/// [`PeerEvent::Removed`] remove it (the next crawl brings it back if it is still a server).
///
/// # Layout and locking
///
/// The peers live in sorted chunks of at most 256 entries, keys and peers in separate arrays,
/// with an index of each chunk's first position and last key (a two-level B-tree). A single
/// insert or removal moves at most one chunk; a position is found by two binary searches.
/// Queries take a shared read lock and never block each other;
/// [`replace_all`](Self::replace_all) builds the new table outside the lock and holds the
/// write lock only to swap it in; single updates hold it for microseconds.
///
/// # Closest peers
///
/// Walking outward from the target's sorted position in key order is *not* XOR order. What
/// holds: the keys sharing their first `L` bits with the target form one contiguous range of
/// the sorted order, and every peer inside that range is strictly closer than every peer
/// outside it (inside, the distance has `L` leading zeros, so it is below `2^(256-L)`;
/// outside, one of the first `L` bits differs, so it is at least `2^(256-L)`). The query finds
/// the target's position, takes a window of a few times `n` keys around it, and checks from
/// the keys just outside the window that the target's longest prefix range holding at least
/// `n` peers lies inside it; then the answer is the window's `n` closest, else the window
/// doubles. The argument is spelled out on the private `Store::closest`; a property test
/// checks it against brute force on clustered, lopsided key sets.
///
/// ```
/// use dht_proto::{Key, PeerId, PeerInfo};
/// use dht_routing_table::{Clock, FullRoutingTable, ManualClock, RoutingTable};
///
/// let clock = ManualClock::new(1_000);
/// let table = FullRoutingTable::new(Key::hash(b"me"), Default::default(), clock.clone());
/// let crawl: Vec<PeerInfo> = (0..100).map(|_| PeerInfo::new(PeerId::random(), vec![])).collect();
/// table.replace_all(crawl.clone(), clock.now());
/// assert_eq!(table.len(), 100);
/// assert!(table.is_complete());
///
/// let key = Key::hash(b"content");
/// let mut expected = crawl;
/// expected.sort_by_key(|p| key.distance(&p.key()));
/// expected.truncate(20);
/// assert_eq!(table.closest_peers(&key, 20), expected);
///
/// clock.advance(3 * 3600); // no crawl for three hours
/// assert!(!table.is_complete());
/// ```
pub struct FullRoutingTable {
    local_key: Key,
    config: FullRtConfig,
    clock: Box<dyn Clock>,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    store: Store,
    last_filled: Option<UnixSecs>,
}

/// Entries per chunk after a bulk fill, leaving room for inserts.
const CHUNK_FILL: usize = 128;
/// A chunk that grows past this splits in two.
const CHUNK_MAX: usize = 256;

/// A run of consecutive entries, keys and peers in parallel vectors: searches and distance
/// scans read only the densely packed keys.
#[derive(Debug, Default)]
struct Chunk {
    keys: Vec<Key>,
    peers: Vec<PeerInfo>,
}

/// Peers sorted by key, in chunks.
///
/// Invariants: no chunk is empty; `keys` and `peers` of a chunk have the same length; the
/// concatenation of the chunks' keys is strictly increasing; `starts[i]` is the global
/// position of the first entry of `chunks[i]` and `lasts[i]` its last key; `len` is the
/// total.
#[derive(Debug, Default)]
struct Store {
    chunks: Vec<Chunk>,
    starts: Vec<usize>,
    lasts: Vec<Key>,
    len: usize,
}

impl Store {
    /// A store of entries already sorted by key without duplicates.
    fn from_sorted(entries: Vec<(Key, PeerInfo)>) -> Store {
        let len = entries.len();
        let mut chunks = Vec::with_capacity(len.div_ceil(CHUNK_FILL));
        let mut it = entries.into_iter().peekable();
        while it.peek().is_some() {
            let mut chunk = Chunk {
                keys: Vec::with_capacity(CHUNK_FILL),
                peers: Vec::with_capacity(CHUNK_FILL),
            };
            for (key, peer) in it.by_ref().take(CHUNK_FILL) {
                chunk.keys.push(key);
                chunk.peers.push(peer);
            }
            chunks.push(chunk);
        }
        let mut store = Store {
            chunks,
            starts: Vec::new(),
            lasts: Vec::new(),
            len,
        };
        store.reindex(0);
        store
    }

    /// Recomputes `starts` and `lasts` from chunk `from` on.
    fn reindex(&mut self, from: usize) {
        let n = self.chunks.len();
        self.starts.resize(n, 0);
        self.lasts.resize(n, Key::ZERO);
        let mut acc = match from.checked_sub(1) {
            Some(prev) => {
                self.starts.get(prev).copied().unwrap_or(0)
                    + self.chunks.get(prev).map_or(0, |c| c.keys.len())
            }
            None => 0,
        };
        let index = self.starts.iter_mut().zip(self.lasts.iter_mut());
        for ((start, last), chunk) in index.zip(&self.chunks).skip(from) {
            *start = acc;
            *last = chunk.keys.last().copied().unwrap_or(Key::ZERO);
            acc += chunk.keys.len();
        }
    }

    /// The chunk that holds `key` or would hold it: the first whose last key is `>= key`,
    /// or the last chunk. `None` when empty.
    fn chunk_for(&self, key: &Key) -> Option<usize> {
        let i = self.lasts.partition_point(|last| last < key);
        (!self.chunks.is_empty()).then(|| i.min(self.chunks.len() - 1))
    }

    /// How many entries have a key below `key`.
    fn rank(&self, key: &Key) -> usize {
        let i = self.lasts.partition_point(|last| last < key);
        match (self.chunks.get(i), self.starts.get(i)) {
            (Some(chunk), Some(start)) => start + chunk.keys.partition_point(|k| k < key),
            _ => self.len,
        }
    }

    /// The chunk holding global position `i`, and the offset in it.
    fn locate(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.len {
            return None;
        }
        let ci = self.starts.partition_point(|&s| s <= i).checked_sub(1)?;
        Some((ci, i - self.starts.get(ci)?))
    }

    fn key_at(&self, i: usize) -> Option<&Key> {
        let (ci, offset) = self.locate(i)?;
        self.chunks.get(ci)?.keys.get(offset)
    }

    fn find(&self, key: &Key) -> Option<(usize, usize)> {
        let ci = self.chunk_for(key)?;
        let pos = self.chunks.get(ci)?.keys.binary_search(key).ok()?;
        Some((ci, pos))
    }

    /// Inserts the peer, or updates its addresses (when `peer` lists any) and connection type.
    /// Returns whether it was new.
    fn upsert(&mut self, key: Key, peer: &PeerInfo) -> bool {
        let Some(ci) = self.chunk_for(&key) else {
            self.chunks.push(Chunk {
                keys: vec![key],
                peers: vec![peer.clone()],
            });
            self.len = 1;
            self.reindex(0);
            return true;
        };
        let Some(chunk) = self.chunks.get_mut(ci) else {
            return false;
        };
        match chunk.keys.binary_search(&key) {
            Ok(pos) => {
                if let Some(old) = chunk.peers.get_mut(pos) {
                    if !peer.addrs.is_empty() {
                        old.addrs.clone_from(&peer.addrs);
                    }
                    old.connection = peer.connection;
                }
                false
            }
            Err(pos) => {
                chunk.keys.insert(pos, key);
                chunk.peers.insert(pos, peer.clone());
                if chunk.keys.len() > CHUNK_MAX {
                    let mid = chunk.keys.len() / 2;
                    let tail = Chunk {
                        keys: chunk.keys.split_off(mid),
                        peers: chunk.peers.split_off(mid),
                    };
                    self.chunks.insert(ci + 1, tail);
                }
                self.len += 1;
                self.reindex(ci);
                true
            }
        }
    }

    fn remove(&mut self, key: &Key) -> Option<PeerInfo> {
        let (ci, pos) = self.find(key)?;
        let chunk = self.chunks.get_mut(ci)?;
        chunk.keys.remove(pos);
        let peer = chunk.peers.remove(pos);
        if chunk.keys.is_empty() {
            self.chunks.remove(ci);
        }
        self.len -= 1;
        self.reindex(ci);
        Some(peer)
    }

    /// Pushes `(distance to target, peer)` for the entries at global positions `lo..hi`.
    fn collect<'a>(
        &'a self,
        lo: usize,
        hi: usize,
        target: &Key,
        out: &mut Vec<(Xor, &'a PeerInfo)>,
    ) {
        let Some((first, mut skip)) = self.locate(lo) else {
            return;
        };
        let mut left = hi.min(self.len).saturating_sub(lo);
        for chunk in self.chunks.iter().skip(first) {
            if left == 0 {
                break;
            }
            let keys = chunk.keys.get(skip..).unwrap_or_default();
            let peers = chunk.peers.get(skip..).unwrap_or_default();
            skip = 0;
            let take = left.min(keys.len());
            out.extend(
                keys.iter()
                    .zip(peers)
                    .take(take)
                    .map(|(key, peer)| (Xor::between(target, key), peer)),
            );
            left -= take;
        }
    }

    /// The `n` entries closest to `target`, closest first.
    ///
    /// Why a window around the target's sorted position works, although walking outward from
    /// that position in key order is not XOR order:
    ///
    /// 1. The keys sharing their first `L` bits with the target form one contiguous range of
    ///    the sorted order, `R(L)`, and the target's own position `pos` (its rank) lies within
    ///    or at the edge of it.
    /// 2. Every entry of `R(L)` is strictly closer to the target than every entry outside it:
    ///    inside, the distance has `L` leading zeros, so it is below `2^(256-L)`; outside, one
    ///    of the first `L` bits differs, so it is at least `2^(256-L)`.
    /// 3. Take a window `W = lo..hi` of positions with `lo <= pos <= hi`, and let `c` be the
    ///    largest common prefix length of the target with the entries just outside it (at
    ///    `lo - 1` and `hi`, where they exist; with none, `L = 0` below). Then `R(c + 1)` lies
    ///    inside `W`: it is an interval reaching `pos`, so if it stuck out of `W` it would
    ///    contain `lo - 1` or `hi`, which share only `c` bits with the target.
    /// 4. So if `W` holds at least `n` entries sharing `L = c + 1` bits with the target, all of
    ///    `R(L)` is in `W`, it has at least `n` entries, and by (2) the `n` closest entries
    ///    overall are in it: they are the `n` closest entries of `W`.
    /// 5. Otherwise the window doubles; once it covers everything, `L = 0` and the test of (4)
    ///    holds since `n <= len`.
    ///
    /// One binary search, then a scan of a few times `n` densely packed keys for uniformly
    /// spread keys; O(len) at worst.
    fn closest(&self, target: &Key, n: usize) -> Vec<PeerInfo> {
        let n = n.min(self.len);
        if n == 0 {
            return Vec::new();
        }
        let pos = self.rank(target);
        let mut scratch: Vec<(Xor, &PeerInfo)> = Vec::with_capacity(4 * n);
        let mut half = 2 * n;
        loop {
            let lo = pos.saturating_sub(half);
            let hi = pos.saturating_add(half).min(self.len);
            let outside = [lo.checked_sub(1), (hi < self.len).then_some(hi)];
            let shared = outside
                .into_iter()
                .flatten()
                .filter_map(|i| self.key_at(i))
                .map(|k| target.common_prefix_len(k) + 1)
                .max()
                .unwrap_or(0);
            scratch.clear();
            self.collect(lo, hi, target, &mut scratch);
            let inside = scratch
                .iter()
                .filter(|(d, _)| d.leading_zeros() >= shared)
                .count();
            if inside >= n || (lo == 0 && hi == self.len) {
                keep_closest(&mut scratch, n);
                return scratch.into_iter().map(|(_, p)| p.clone()).collect();
            }
            half = half.saturating_mul(2);
        }
    }

    fn heap_size_estimate(&self) -> usize {
        let mut bytes = self.chunks.capacity() * size_of::<Chunk>()
            + self.starts.capacity() * size_of::<usize>()
            + self.lasts.capacity() * size_of::<Key>();
        for chunk in &self.chunks {
            bytes += chunk.keys.capacity() * size_of::<Key>();
            bytes += chunk.peers.capacity() * size_of::<PeerInfo>();
            for peer in &chunk.peers {
                bytes += peer.addrs.capacity() * size_of::<Multiaddr>();
                bytes += peer.addrs.iter().map(Multiaddr::len).sum::<usize>();
            }
        }
        bytes
    }

    /// Every entry, in key order.
    fn iter(&self) -> impl Iterator<Item = (&Key, &PeerInfo)> {
        self.chunks.iter().flat_map(|c| c.keys.iter().zip(&c.peers))
    }

    /// Checks the invariants; with `keyed`, also that each key is its peer's key.
    #[cfg(test)]
    fn check_invariants(&self, keyed: bool) -> Result<(), String> {
        if self.starts.len() != self.chunks.len() || self.lasts.len() != self.chunks.len() {
            return Err("index and chunks differ in length".into());
        }
        let mut acc = 0;
        let mut prev: Option<Key> = None;
        for ((chunk, start), last) in self.chunks.iter().zip(&self.starts).zip(&self.lasts) {
            if chunk.keys.is_empty() || chunk.keys.len() > CHUNK_MAX {
                return Err(format!("chunk of {} entries", chunk.keys.len()));
            }
            if chunk.keys.len() != chunk.peers.len() {
                return Err("keys and peers differ in length".into());
            }
            if *start != acc || chunk.keys.last() != Some(last) {
                return Err(format!("stale index at position {acc}"));
            }
            for (key, peer) in chunk.keys.iter().zip(&chunk.peers) {
                if prev.is_some_and(|p| p >= *key) {
                    return Err("keys out of order".into());
                }
                if keyed && *key != peer.key() {
                    return Err("key of the wrong peer".into());
                }
                prev = Some(*key);
            }
            acc += chunk.keys.len();
        }
        if acc != self.len {
            return Err(format!("len {} but {acc} entries", self.len));
        }
        Ok(())
    }
}

impl FullRoutingTable {
    /// An empty table for the node whose Kademlia key is `local_key` (never stored in the
    /// table), reading time from `clock` for [`RoutingTable::is_complete`].
    pub fn new(local_key: Key, config: FullRtConfig, clock: impl Clock + 'static) -> Self {
        FullRoutingTable {
            local_key,
            config,
            clock: Box::new(clock),
            inner: RwLock::new(Inner::default()),
        }
    }

    /// The local node's Kademlia key.
    pub fn local_key(&self) -> Key {
        self.local_key
    }

    /// The table's settings.
    pub fn config(&self) -> &FullRtConfig {
        &self.config
    }

    /// Replaces the whole table with `peers` (a crawl result) filled at `now`; returns how many
    /// peers it now holds.
    ///
    /// The local node is left out; when a peer appears several times, its last occurrence
    /// wins. The new table is built before the lock is taken, so readers keep reading the old
    /// one meanwhile.
    pub fn replace_all<I>(&self, peers: I, now: UnixSecs) -> usize
    where
        I: IntoIterator<Item = PeerInfo>,
    {
        let mut entries: Vec<(Key, PeerInfo)> = peers
            .into_iter()
            .map(|p| (p.key(), p))
            .filter(|(k, _)| *k != self.local_key)
            .collect();
        // A stable sort keeps equal keys in input order; `dedup_by` then moves the later
        // duplicate into the kept slot, so the last occurrence wins.
        entries.sort_by_key(|a| a.0);
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        let store = Store::from_sorted(entries);
        let len = store.len;
        let old = {
            let mut inner = self.inner.write();
            inner.last_filled = Some(now);
            std::mem::replace(&mut inner.store, store)
        };
        drop(old); // Freed outside the lock.
        tracing::debug!(peers = len, "full routing table replaced");
        len
    }

    /// When the table was last filled by [`replace_all`](Self::replace_all), or `None`.
    pub fn last_filled(&self) -> Option<UnixSecs> {
        self.inner.read().last_filled
    }

    /// Whether the table is complete at `now`: filled within [`FullRtConfig::freshness`]
    /// seconds and holding at least [`FullRtConfig::min_peers`] peers (and at least one).
    pub fn is_complete_at(&self, now: UnixSecs) -> bool {
        let inner = self.inner.read();
        inner
            .last_filled
            .is_some_and(|t| now.saturating_sub(t) <= self.config.freshness)
            && inner.store.len >= self.config.min_peers.max(1)
    }

    /// Every peer in the table, in key order.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let inner = self.inner.read();
        inner.store.iter().map(|(_, p)| p.clone()).collect()
    }

    /// Whether `peer` is in the table.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.inner
            .read()
            .store
            .find(&Key::from_peer_id(peer))
            .is_some()
    }

    /// An estimate of the heap memory the table holds, in bytes: the chunk buffers (by
    /// capacity), the index, each peer's address list and the bytes of each address.
    /// Allocator overhead and the reference-counted headers that cloned addresses share are
    /// not counted.
    pub fn heap_size_estimate(&self) -> usize {
        self.inner.read().store.heap_size_estimate()
    }

    #[cfg(test)]
    fn check_invariants(&self) -> Result<(), String> {
        self.inner.read().store.check_invariants(true)
    }
}

impl fmt::Debug for FullRoutingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.read();
        f.debug_struct("FullRoutingTable")
            .field("local_key", &self.local_key)
            .field("len", &inner.store.len)
            .field("last_filled", &inner.last_filled)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RoutingTable for FullRoutingTable {
    fn closest_peers(&self, key: &Key, n: usize) -> Vec<PeerInfo> {
        self.inner.read().store.closest(key, n)
    }

    fn update(&self, peer: &PeerInfo, event: PeerEvent) -> UpdateOutcome {
        let key = peer.key();
        if key == self.local_key {
            return match event {
                PeerEvent::Seen(_) => UpdateOutcome::Rejected(RejectReason::LocalPeer),
                _ => UpdateOutcome::Ignored,
            };
        }
        let mut inner = self.inner.write();
        match event {
            PeerEvent::Seen(_) => {
                if inner.store.upsert(key, peer) {
                    UpdateOutcome::Inserted
                } else {
                    UpdateOutcome::Updated
                }
            }
            PeerEvent::Failed | PeerEvent::Removed => match inner.store.remove(&key) {
                Some(_) => UpdateOutcome::Removed,
                None => UpdateOutcome::Ignored,
            },
        }
    }

    fn len(&self) -> usize {
        self.inner.read().store.len
    }

    fn is_complete(&self) -> bool {
        self.is_complete_at(self.clock.now())
    }
}

#[cfg(test)]
mod tests;
