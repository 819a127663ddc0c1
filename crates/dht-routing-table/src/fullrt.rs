//! The full routing table ("fullrt"): every known DHT server, filled by a crawl.

use std::{
    collections::HashMap,
    fmt,
    mem::size_of,
    net::IpAddr,
    sync::{Arc, OnceLock},
};

use dht_proto::{K_VALUE, Key, Multiaddr, PeerId, PeerInfo, UnixSecs};
use parking_lot::RwLock;

use crate::{
    AddressBook, Clock, Direction, IpGroup, MAX_PEER_ADDRS, PeerEvent, RejectReason, RoutingTable,
    UpdateOutcome, diversity::ips, is_local_ip, keep_closest, vouched,
};

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
    /// The most peers the table holds (default 250,000, about ten times the servers of the
    /// Amino DHT): a newcomer to a full table is rejected ([`RejectReason::TableFull`]), and a
    /// crawl that found more keeps an even sample of them across the keyspace.
    pub max_peers: usize,
    /// The most peers of one IP group (a `/24` or `/48`, see [`IpGroup`]) the table holds
    /// (default 256): one host, or one attacker's subnet, cannot fill the table with free
    /// peer ids. Local addresses ([`is_local_ip`]) are not counted, for devnets and LANs.
    pub max_per_group: usize,
}

impl Default for FullRtConfig {
    fn default() -> Self {
        FullRtConfig {
            freshness: 2 * 3600,
            min_peers: K_VALUE,
            max_peers: 250_000,
            max_per_group: 256,
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

    /// Sets [`FullRtConfig::max_peers`].
    #[must_use]
    pub fn with_max_peers(mut self, n: usize) -> Self {
        self.max_peers = n;
        self
    }

    /// Sets [`FullRtConfig::max_per_group`].
    #[must_use]
    pub fn with_max_per_group(mut self, n: usize) -> Self {
        self.max_per_group = n;
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
/// Between crawls, [`PeerEvent::Seen`]`(`[`Direction::Outbound`]`)` adds or updates a peer,
/// `Seen(`[`Direction::Inbound`]`)` only updates one the table holds, and
/// [`PeerEvent::Unreachable`] and [`PeerEvent::Removed`] remove it, as do three
/// [`PeerEvent::Failed`] in a row ([`FULLRT_MAX_FAILURES`]; the next crawl brings it back
/// if it is still a server).
///
/// # Bounds
///
/// The table holds at most [`FullRtConfig::max_peers`] peers, at most
/// [`FullRtConfig::max_per_group`] of one IP group, and at most
/// [`MAX_PEER_ADDRS`] addresses per peer. A peer's group is that of the IP its
/// connection comes from when an [`AddressBook`] knows it
/// ([`with_address_book`](Self::with_address_book), which also keeps only the addresses the
/// peer announced about itself, as in [`KBucketTable`](crate::KBucketTable)), else that of
/// its first IP address.
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
/// outside, one of the first `L` bits differs, so it is at least `2^(256-L)`). The query
/// descends the binary trie that the sorted keys form implicitly: it finds, by binary search,
/// a prefix range of the target holding at least `n` peers (starting at the depth the table's
/// density predicts), narrows it bit by bit while it is much larger than `n`, computes the
/// distances of the remaining few times `n` keys from the packed key array, and clones only
/// the `n` winners. The argument is spelled out on the private `Store::closest`; property
/// tests check it against brute force on uniform and on clustered, lopsided key sets.
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
    book: OnceLock<Arc<dyn AddressBook>>,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    store: Store,
    last_filled: Option<UnixSecs>,
    /// The group each peer counts in (peers without one are absent).
    group_of: HashMap<Key, IpGroup>,
    /// Peers per group.
    per_group: HashMap<IpGroup, usize>,
    /// Consecutive failed requests of peers the table holds (those with none are absent).
    failures: HashMap<Key, u32>,
}

impl Inner {
    fn count(&self, group: IpGroup) -> usize {
        self.per_group.get(&group).copied().unwrap_or(0)
    }

    fn set_group(&mut self, key: Key, group: Option<IpGroup>) {
        if let Some(old) = self.group_of.remove(&key)
            && let Some(n) = self.per_group.get_mut(&old)
        {
            *n -= 1;
            if *n == 0 {
                self.per_group.remove(&old);
            }
        }
        if let Some(group) = group {
            self.group_of.insert(key, group);
            *self.per_group.entry(group).or_insert(0) += 1;
        }
    }

    fn remove(&mut self, key: &Key) -> Option<PeerInfo> {
        let peer = self.store.remove(key)?;
        self.set_group(*key, None);
        self.failures.remove(key);
        Some(peer)
    }
}

/// The group a peer counts in: its connection's IP's when known, else its first IP
/// address's; `None` for a local address or none.
fn group_for(peer: &PeerInfo, ip: Option<IpAddr>) -> Option<IpGroup> {
    let ip = match ip {
        Some(ip) => ip,
        None => peer.addrs.iter().flat_map(ips).next()?,
    };
    (!is_local_ip(ip)).then(|| IpGroup::of(ip))
}

/// Consecutive [`PeerEvent::Failed`] after which a [`FullRoutingTable`] drops a peer (3, as
/// [`KBucketConfig::max_failures`](crate::KBucketConfig::max_failures) by default).
pub const FULLRT_MAX_FAILURES: u32 = 3;

/// Entries per chunk after a bulk fill, leaving room for inserts.
const CHUNK_FILL: usize = 128;
/// A chunk that grows past this splits in two.
const CHUNK_MAX: usize = 256;

/// A key as four big-endian 64-bit words. It orders exactly as the key's bytes do, but a
/// comparison is almost always decided by the first word instead of a 32-byte `memcmp`; the
/// XOR of two `Words` orders as their [`Distance`](dht_proto::Distance).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Words([u64; 4]);

impl Words {
    fn of(key: &Key) -> Words {
        let mut words = [0u64; 4];
        for (word, bytes) in words.iter_mut().zip(key.as_bytes().chunks_exact(8)) {
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            *word = u64::from_be_bytes(be);
        }
        Words(words)
    }

    fn key(self) -> Key {
        let mut bytes = [0u8; 32];
        for (be, word) in bytes.chunks_exact_mut(8).zip(self.0) {
            be.copy_from_slice(&word.to_be_bytes());
        }
        Key::from_bytes(bytes)
    }

    fn xor(self, other: Words) -> Words {
        let [a, b, c, d] = self.0;
        let [e, f, g, h] = other.0;
        Words([a ^ e, b ^ f, c ^ g, d ^ h])
    }

    /// Bit `i`, counting from the most significant (bit 0); false from bit 256 on.
    fn bit(self, i: usize) -> bool {
        self.0
            .get(i / 64)
            .is_some_and(|w| (w >> (63 - i % 64)) & 1 == 1)
    }

    /// The key with bit `i` set (unchanged from bit 256 on).
    fn with_bit(mut self, i: usize) -> Words {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (63 - i % 64);
        }
        self
    }

    /// The first `len` bits, the rest zero: the smallest key with this prefix.
    fn prefix(self, len: usize) -> Words {
        let mut out = self;
        for (i, w) in out.0.iter_mut().enumerate() {
            *w &= Self::mask(len, i);
        }
        out
    }

    /// The first `len` bits, the rest one: the largest key with this prefix.
    fn prefix_max(self, len: usize) -> Words {
        let mut out = self;
        for (i, w) in out.0.iter_mut().enumerate() {
            *w |= !Self::mask(len, i);
        }
        out
    }

    /// The bits of word `i` that lie within the first `len` bits of the key.
    fn mask(len: usize, i: usize) -> u64 {
        match len.saturating_sub(64 * i).min(64) {
            0 => 0,
            keep => u64::MAX << (64 - keep),
        }
    }
}

/// A run of consecutive entries, keys and peers in parallel vectors: searches and distance
/// scans read only the densely packed keys, and only the answer's peers are touched.
#[derive(Debug, Default)]
struct Chunk {
    keys: Vec<Words>,
    peers: Vec<PeerInfo>,
}

/// A position in the store: the global index, and the chunk and offset holding it (the chunk
/// count and 0 at the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pos {
    at: usize,
    chunk: usize,
    off: usize,
}

/// A candidate of a query: its distance to the target, and where it is (chunk, offset).
type Candidate = (Words, (usize, usize));

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
    lasts: Vec<Words>,
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
                chunk.keys.push(Words::of(&key));
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
        self.lasts.resize(n, Words::default());
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
            *last = chunk.keys.last().copied().unwrap_or_default();
            acc += chunk.keys.len();
        }
    }

    fn start(&self) -> Pos {
        Pos {
            at: 0,
            chunk: 0,
            off: 0,
        }
    }

    fn end(&self) -> Pos {
        Pos {
            at: self.len,
            chunk: self.chunks.len(),
            off: 0,
        }
    }

    /// The first position whose key fails `below`, a predicate that holds for a prefix of the
    /// sorted order (`key < x` or `key <= x`). The caller knows the answer lies in chunks
    /// `from..=to`: only their part of the index is searched.
    fn partition(&self, from: usize, to: usize, below: impl Fn(&Words) -> bool) -> Pos {
        let to = to.min(self.chunks.len());
        let lasts = self.lasts.get(from..to).unwrap_or_default();
        let chunk = from + lasts.partition_point(&below);
        let (Some(c), Some(&start)) = (self.chunks.get(chunk), self.starts.get(chunk)) else {
            return self.end();
        };
        let off = c.keys.partition_point(&below);
        if off < c.keys.len() {
            Pos {
                at: start + off,
                chunk,
                off,
            }
        } else {
            // Only when the caller's bound was loose: the position opens the next chunk.
            Pos {
                at: start + off,
                chunk: chunk + 1,
                off: 0,
            }
        }
    }

    /// The range of entries whose keys share their first `len` bits with `target`.
    fn prefix_range(&self, target: Words, len: usize) -> (Pos, Pos) {
        let (low, high) = (target.prefix(len), target.prefix_max(len));
        let lo = self.partition(0, self.chunks.len(), |k| *k < low);
        let hi = self.partition(lo.chunk, self.chunks.len(), |k| *k <= high);
        (lo, hi)
    }

    /// How many entries have a key below `key`.
    #[cfg(test)]
    fn rank(&self, key: &Key) -> usize {
        let key = Words::of(key);
        self.partition(0, self.chunks.len(), |k| *k < key).at
    }

    /// The chunk that holds `key` or would hold it: the first whose last key is `>= key`,
    /// or the last chunk. `None` when empty.
    fn chunk_for(&self, key: &Words) -> Option<usize> {
        let i = self.lasts.partition_point(|last| last < key);
        (!self.chunks.is_empty()).then(|| i.min(self.chunks.len() - 1))
    }

    fn find(&self, key: &Words) -> Option<(usize, usize)> {
        let ci = self.chunk_for(key)?;
        let pos = self.chunks.get(ci)?.keys.binary_search(key).ok()?;
        Some((ci, pos))
    }

    /// Inserts the peer, or updates its addresses (when `peer` lists any) and connection type.
    /// Returns whether it was new.
    fn upsert(&mut self, key: Key, peer: &PeerInfo) -> bool {
        let key = Words::of(&key);
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
        let (ci, pos) = self.find(&Words::of(key))?;
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

    /// Pushes the entries at positions `from..to` with their distance to `target`.
    fn scan(&self, from: Pos, to: usize, target: Words, out: &mut Vec<Candidate>) {
        let mut left = to.saturating_sub(from.at);
        let mut off = from.off;
        for (ci, chunk) in self.chunks.iter().enumerate().skip(from.chunk) {
            if left == 0 {
                break;
            }
            let keys = chunk.keys.get(off..).unwrap_or_default();
            let take = left.min(keys.len());
            out.extend(
                keys.iter()
                    .take(take)
                    .enumerate()
                    .map(|(i, k)| (k.xor(target), (ci, off + i))),
            );
            left -= take;
            off = 0;
        }
    }

    /// The `n` entries closest to `target`, closest first.
    ///
    /// A descent of the binary trie that the sorted keys form implicitly:
    ///
    /// 1. The keys sharing their first `L` bits with the target form one contiguous range of
    ///    the sorted order, `R(L)`, found by two binary searches (for the smallest and the
    ///    largest key with that prefix).
    /// 2. Every entry of `R(L)` is strictly closer to the target than every entry outside it:
    ///    inside, the distance has `L` leading zeros, so it is below `2^(256-L)`; outside, one
    ///    of the first `L` bits differs, so it is at least `2^(256-L)`. So once `R(L)` holds
    ///    at least `n` entries, the answer lies in it.
    /// 3. Start from a depth where the table's density predicts a few times `n` entries
    ///    (`log2(len / n) - 1`; uniformly spread keys rarely miss); if that range holds fewer
    ///    than `n`, binary-search the depth between 0 and the guess.
    /// 4. While the range is much larger than needed (clustered keys), split it at the next
    ///    bit, itself one binary search: the half on the target's side ("near") is closer than
    ///    the other ("far") by the same argument. If near holds at least the `need` entries
    ///    still wanted, continue in it; else all of near belongs to the answer, and the rest
    ///    is the `need - |near|` closest of far: continue there.
    /// 5. Scan the final range (and the near halves taken whole): compute their distances
    ///    from the packed keys, select the `n` smallest, sort them, and only then clone
    ///    those `n` peers.
    ///
    /// With keys spread uniformly: two or three binary searches over the chunk index and a
    /// chunk, and a scan of a few times `n` keys. Clustered keys cost one binary search per
    /// level of the descent, at most 256.
    fn closest(&self, target: &Key, n: usize) -> Vec<PeerInfo> {
        let n = n.min(self.len);
        if n == 0 {
            return Vec::new();
        }
        let t = Words::of(target);
        let guess = ((self.len / n).ilog2() as usize).saturating_sub(1).min(255);
        let (mut lo, mut hi) = self.prefix_range(t, guess);
        let mut depth = guess;
        if hi.at - lo.at < n {
            // R(0) is everything (at least n entries); R(guess) is too small.
            let (mut good, mut bad) = (0, guess);
            (lo, hi) = (self.start(), self.end());
            while bad - good > 1 {
                let mid = good + (bad - good) / 2;
                let (a, b) = self.prefix_range(t, mid);
                if b.at - a.at >= n {
                    (good, lo, hi) = (mid, a, b);
                } else {
                    bad = mid;
                }
            }
            depth = good;
        }
        let scan_limit = |need: usize| 3 * need + 32;
        let mut prefix = t.prefix(depth);
        let mut need = n;
        let mut candidates: Vec<Candidate> = Vec::with_capacity(scan_limit(n) + n);
        while hi.at - lo.at > scan_limit(need) && depth < 256 {
            let split = prefix.with_bit(depth);
            let mid = self.partition(lo.chunk, hi.chunk, |k| *k < split);
            let one = t.bit(depth);
            let (near, far) = if one {
                ((mid, hi), (lo, mid))
            } else {
                ((lo, mid), (mid, hi))
            };
            let near_len = near.1.at - near.0.at;
            let go_one = if near_len >= need {
                (lo, hi) = near;
                one
            } else {
                self.scan(near.0, near.1.at, t, &mut candidates);
                need -= near_len;
                (lo, hi) = far;
                !one
            };
            if go_one {
                prefix = split;
            }
            depth += 1;
        }
        self.scan(lo, hi.at, t, &mut candidates);
        keep_closest(&mut candidates, n);
        candidates
            .iter()
            .filter_map(|&(_, (ci, off))| self.chunks.get(ci)?.peers.get(off).cloned())
            .collect()
    }

    fn heap_size_estimate(&self) -> usize {
        let mut bytes = self.chunks.capacity() * size_of::<Chunk>()
            + self.starts.capacity() * size_of::<usize>()
            + self.lasts.capacity() * size_of::<Words>();
        for chunk in &self.chunks {
            bytes += chunk.keys.capacity() * size_of::<Words>();
            bytes += chunk.peers.capacity() * size_of::<PeerInfo>();
            for peer in &chunk.peers {
                bytes += peer.addrs.capacity() * size_of::<Multiaddr>();
                bytes += peer.addrs.iter().map(Multiaddr::len).sum::<usize>();
            }
        }
        bytes
    }

    /// Every entry, in key order.
    fn iter(&self) -> impl Iterator<Item = (Key, &PeerInfo)> {
        self.chunks
            .iter()
            .flat_map(|c| c.keys.iter().map(|k| k.key()).zip(&c.peers))
    }

    /// Checks the invariants; with `keyed`, also that each key is its peer's key.
    #[cfg(test)]
    fn check_invariants(&self, keyed: bool) -> Result<(), String> {
        if self.starts.len() != self.chunks.len() || self.lasts.len() != self.chunks.len() {
            return Err("index and chunks differ in length".into());
        }
        let mut acc = 0;
        let mut prev: Option<Words> = None;
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
                if keyed && key.key() != peer.key() {
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
            book: OnceLock::new(),
            inner: RwLock::new(Inner::default()),
        }
    }

    /// This table, grouping and addressing the peers it is told about by what `book` knows
    /// first-hand of them (see [Bounds](Self#bounds)).
    #[must_use]
    pub fn with_address_book(self, book: Arc<dyn AddressBook>) -> Self {
        self.set_address_book(book);
        self
    }

    /// Gives the table its [`AddressBook`] once it exists (the node's transport starts after
    /// the table); `false`, and the book is dropped, when the table already has one.
    pub fn set_address_book(&self, book: Arc<dyn AddressBook>) -> bool {
        self.book.set(book).is_ok()
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
    /// one meanwhile. The addresses are copied into fresh allocations in key order, so that
    /// the peers of one answer lie close together in memory (a parse and two small allocations
    /// per address, once per crawl); the table shares no address buffer with `peers`.
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
        let max = self.config.max_peers;
        if entries.len() > max {
            // An even sample across the keyspace, not its lower part.
            let len = entries.len();
            let mut i = 0;
            entries.retain(|_| {
                i += 1;
                (i - 1) * max / len != i * max / len
            });
        }
        let mut group_of = HashMap::new();
        let mut per_group: HashMap<IpGroup, usize> = HashMap::new();
        entries.retain_mut(|(key, peer)| {
            let ip = self
                .book
                .get()
                .map(|b| b.as_ref())
                .and_then(|b| b.observed(&peer.peer_id))
                .map(|o| o.remote_ip);
            peer.addrs.truncate(MAX_PEER_ADDRS);
            let Some(group) = group_for(peer, ip) else {
                return true;
            };
            let n = per_group.entry(group).or_insert(0);
            if *n >= self.config.max_per_group {
                return false;
            }
            *n += 1;
            group_of.insert(*key, group);
            true
        });
        for (_, peer) in &mut entries {
            peer.addrs = relocated(&peer.addrs);
        }
        let store = Store::from_sorted(entries);
        let len = store.len;
        let old = {
            let mut inner = self.inner.write();
            inner.last_filled = Some(now);
            inner.group_of = group_of;
            inner.per_group = per_group;
            inner.failures.clear();
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
            .find(&Words::of(&Key::from_peer_id(peer)))
            .is_some()
    }

    /// An estimate of the heap memory the table holds, in bytes: the chunk buffers (by
    /// capacity), the index, each peer's address list and the bytes of each address.
    /// Allocator overhead and the reference-counted headers that cloned addresses share are
    /// not counted.
    pub fn heap_size_estimate(&self) -> usize {
        let inner = self.inner.read();
        inner.store.heap_size_estimate()
            + inner.group_of.capacity() * size_of::<(Key, IpGroup)>()
            + inner.per_group.capacity() * size_of::<(IpGroup, usize)>()
    }

    #[cfg(test)]
    fn check_invariants(&self) -> Result<(), String> {
        self.inner.read().store.check_invariants(true)
    }
}

/// A copy of `addrs` in fresh allocations: the list, and each address's bytes with their
/// shared reference count.
///
/// A bulk fill copies the address lists in key order, so the peers of one answer (neighbours
/// in key order) have their addresses close together in memory. Cloning an answer touches the
/// reference count of every address it returns; with the crawl's own allocations, in crawl
/// order, that is one scattered cache miss per address, the larger part of a query at 100,000
/// peers. An address that does not parse back (impossible for a valid `Multiaddr`) is shared
/// instead.
fn relocated(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    addrs
        .iter()
        .map(|addr| match Multiaddr::try_from(addr.to_vec()) {
            Ok(copy) => {
                // The first clone of freshly built bytes allocates their shared reference
                // count: do it now, beside the bytes, rather than during some later query.
                drop(copy.clone());
                copy
            }
            Err(_) => addr.clone(),
        })
        .collect()
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

impl FullRoutingTable {
    fn seen(&self, key: Key, peer: &PeerInfo, direction: Direction) -> UpdateOutcome {
        let vouched = vouched(self.book.get().map(|b| b.as_ref()), peer);
        let mut inner = self.inner.write();
        let known = inner.store.find(&Words::of(&key)).is_some();
        let Some((peer, ip)) = vouched else {
            // Not connected: nothing first-hand to add or update.
            return if known {
                UpdateOutcome::Updated
            } else {
                UpdateOutcome::Ignored
            };
        };
        if !known && direction == Direction::Inbound {
            return UpdateOutcome::Ignored;
        }
        let group = match (ip, peer.addrs.is_empty()) {
            (None, true) => inner.group_of.get(&key).copied(),
            _ => group_for(&peer, ip),
        };
        let old = inner.group_of.get(&key).copied();
        if let Some(g) = group
            && group != old
            && inner.count(g) >= self.config.max_per_group
        {
            if known {
                // Keep the old addresses rather than break the group limit.
                return UpdateOutcome::Updated;
            }
            return UpdateOutcome::Rejected(RejectReason::TableDiversity { group: g });
        }
        if !known && inner.store.len >= self.config.max_peers {
            return UpdateOutcome::Rejected(RejectReason::TableFull);
        }
        inner.set_group(key, group);
        inner.failures.remove(&key);
        if inner.store.upsert(key, &peer) {
            UpdateOutcome::Inserted
        } else {
            UpdateOutcome::Updated
        }
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
        match event {
            PeerEvent::Seen(direction) => self.seen(key, peer, direction),
            PeerEvent::Failed => {
                let mut inner = self.inner.write();
                if inner.store.find(&Words::of(&key)).is_none() {
                    return UpdateOutcome::Ignored;
                }
                let n = inner.failures.entry(key).or_insert(0);
                *n += 1;
                if *n < FULLRT_MAX_FAILURES {
                    return UpdateOutcome::Updated;
                }
                inner.remove(&key);
                UpdateOutcome::Removed
            }
            _ => match self.inner.write().remove(&key) {
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
