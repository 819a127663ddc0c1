//! The k-bucket routing table.

use std::fmt;

use std::{
    net::IpAddr,
    sync::{Arc, OnceLock},
};

use dht_proto::{K_VALUE, KEY_BITS, Key, PeerId, PeerInfo, Prefix, UnixSecs};
use parking_lot::RwLock;

use crate::{
    AddressBook, Clock, Direction, DiversityConfig, DiversityFilter, Error, IpGroup, PeerEvent,
    RejectReason, RoutingTable, UpdateOutcome, Xor, keep_closest, vouched,
};

/// Settings of a [`KBucketTable`]; `Default` gives the Amino DHT's values.
///
/// ```
/// use dht_routing_table::{DiversityConfig, KBucketConfig};
/// let config = KBucketConfig::default()
///     .with_max_failures(2)
///     .with_diversity(Some(DiversityConfig::default().with_local_network(true)));
/// assert_eq!(config.bucket_size, 20);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KBucketConfig {
    /// Peers per bucket, k (default [`K_VALUE`], 20). A value of 0 is treated as 1.
    pub bucket_size: usize,
    /// Peers kept per bucket in the replacement cache, waiting for a member to fail
    /// (default 20). 0 turns the cache off: a newcomer to a full bucket is then rejected with
    /// [`RejectReason::BucketFull`] unless it may replace a member.
    pub replacement_cache_size: usize,
    /// Consecutive failed requests ([`PeerEvent::Failed`]: a timeout or error on a live
    /// connection) after which a member is dropped and replaced from the cache (default 3).
    /// A dial failure ([`PeerEvent::Unreachable`]) drops it at once. 0 is treated as 1.
    pub max_failures: u32,
    /// The usefulness rule (default one hour): a member that has not answered one of our
    /// requests (a [`Direction::Outbound`] sighting) for this many seconds, counted from when
    /// it joined if it never has, may be replaced by a newcomer to its full bucket. `None`
    /// keeps Kademlia's pure rule: members leave only by failing or being removed.
    pub usefulness_grace: Option<u64>,
    /// A bucket not looked up for this many seconds is due for refresh (default 600, ten
    /// minutes, as go-libp2p-kad-dht).
    pub refresh_interval: u64,
    /// The IP diversity filter, or `None` for no filter (default: on, with
    /// [`DiversityConfig::default`]).
    pub diversity: Option<DiversityConfig>,
}

impl Default for KBucketConfig {
    fn default() -> Self {
        KBucketConfig {
            bucket_size: K_VALUE,
            replacement_cache_size: K_VALUE,
            max_failures: 3,
            usefulness_grace: Some(3600),
            refresh_interval: 600,
            diversity: Some(DiversityConfig::default()),
        }
    }
}

impl KBucketConfig {
    /// Sets [`KBucketConfig::bucket_size`].
    #[must_use]
    pub fn with_bucket_size(mut self, k: usize) -> Self {
        self.bucket_size = k;
        self
    }

    /// Sets [`KBucketConfig::replacement_cache_size`].
    #[must_use]
    pub fn with_replacement_cache_size(mut self, size: usize) -> Self {
        self.replacement_cache_size = size;
        self
    }

    /// Sets [`KBucketConfig::max_failures`].
    #[must_use]
    pub fn with_max_failures(mut self, failures: u32) -> Self {
        self.max_failures = failures;
        self
    }

    /// Sets [`KBucketConfig::usefulness_grace`].
    #[must_use]
    pub fn with_usefulness_grace(mut self, secs: Option<u64>) -> Self {
        self.usefulness_grace = secs;
        self
    }

    /// Sets [`KBucketConfig::refresh_interval`].
    #[must_use]
    pub fn with_refresh_interval(mut self, secs: u64) -> Self {
        self.refresh_interval = secs;
        self
    }

    /// Sets [`KBucketConfig::diversity`].
    #[must_use]
    pub fn with_diversity(mut self, diversity: Option<DiversityConfig>) -> Self {
        self.diversity = diversity;
        self
    }

    /// `Ok` when `bucket_size` and `max_failures` are above zero (the table reads a zero
    /// as 1; a node or simulator built from these settings refuses them instead).
    ///
    /// # Errors
    /// [`InvalidSetting`](dht_proto::InvalidSetting) naming the first that is zero.
    pub fn validate(&self) -> Result<(), dht_proto::InvalidSetting> {
        dht_proto::InvalidSetting::at_least_one("bucket_size", self.bucket_size as u64)?;
        dht_proto::InvalidSetting::at_least_one("max_failures", u64::from(self.max_failures))
    }

    fn k(&self) -> usize {
        self.bucket_size.max(1)
    }

    fn failure_limit(&self) -> u32 {
        self.max_failures.max(1)
    }
}

/// Kademlia's k-bucket routing table, keyed by common prefix length (CPL) with the local key.
///
/// Bucket `i` holds up to k peers whose key shares exactly `i` leading bits with the local key
/// (so bucket 0 covers half the keyspace, bucket 1 a quarter, …), up to bucket 255.
///
/// # Who stays in a full bucket
///
/// Kademlia's rule is to prefer long-lived peers: they are the likeliest to stay online. In a
/// sans-IO table that cannot ping the oldest member before deciding, the rule becomes:
///
/// - A newcomer to a full bucket goes to the bucket's **replacement cache**
///   ([`UpdateOutcome::Pending`]); the oldest cache entry makes room when the cache is full.
/// - A member that **fails** [`KBucketConfig::max_failures`] requests in a row (a successful
///   exchange resets the count) is dropped and replaced by the most recently seen cache entry
///   that passes the diversity filter. [`PeerEvent::Removed`] does the same at once.
/// - The **usefulness rule** of go-libp2p-kbucket: a member that has not answered one of our
///   requests for [`KBucketConfig::usefulness_grace`] may be replaced by a newcomer, the least
///   recently useful first. Peers we only ever saw as requesters do not crowd out peers that
///   could answer us, yet a member that keeps answering is never displaced. Set the grace to
///   `None` for pure Kademlia.
///
/// # What `update` returns
///
/// | event | member | in the cache | unknown |
/// |---|---|---|---|
/// | `Seen(Outbound)` | `Updated` | `Inserted` if it may join now, else `Pending` | `Inserted`, `Pending`, or `Rejected` |
/// | `Seen(Inbound)` | `Updated` | `Ignored` | `Ignored` |
/// | `Failed` | `Updated`, or `Removed` at the failure limit | `Removed` | `Ignored` |
/// | `Unreachable`, `Removed` | `Removed` | `Removed` | `Ignored` |
///
/// `Seen` refreshes a member's addresses when the peer lists any (kept unchanged if the new
/// ones would break the diversity limits) and, for [`Direction::Outbound`], its usefulness.
/// `Seen(`[`Direction::Inbound`]`)` of a peer that is not a member is `Ignored`: a request
/// sent to us admits nobody. The local peer is `Rejected` ([`RejectReason::LocalPeer`]).
/// At most [`MAX_PEER_ADDRS`](crate::MAX_PEER_ADDRS) addresses are kept per peer.
///
/// # First-hand knowledge
///
/// With an [`AddressBook`] ([`with_address_book`](Self::with_address_book)), a `Seen` peer
/// is grouped by the IP its connection comes from and keeps only the addresses it announced
/// about itself (see [`Observed`](crate::Observed)), whatever the reporter lists for it; a
/// peer the book does not know (not connected) is not added, and a member keeps its
/// addresses.
///
/// # Diversity
///
/// With [`KBucketConfig::diversity`] set (the default), a [`DiversityFilter`] limits the peers
/// of one IP group per bucket and per table; a peer that would break a limit is rejected, also
/// from the replacement cache, and cache entries are checked again when promoted.
///
/// # Refresh
///
/// [`stale_buckets`](Self::stale_buckets) lists the buckets not looked up for
/// [`KBucketConfig::refresh_interval`]; [`random_key_with_cpl`](Self::random_key_with_cpl)
/// gives a key to look up for one (any CPL up to 255); [`record_lookup`](Self::record_lookup)
/// or [`mark_refreshed`](Self::mark_refreshed) resets its timer.
///
/// # Time
///
/// The table never reads the system clock: [`RoutingTable::update`] asks the [`Clock`] given
/// to [`new`](Self::new), and [`update_at`](Self::update_at) takes `now` directly.
///
/// ```
/// use dht_proto::{Key, PeerId, PeerInfo};
/// use dht_routing_table::{
///     Direction, KBucketTable, ManualClock, PeerEvent, RoutingTable, UpdateOutcome,
/// };
///
/// let clock = ManualClock::new(1_700_000_000);
/// let table = KBucketTable::new(Key::hash(b"me"), Default::default(), clock.clone());
/// let peer = PeerInfo::new(PeerId::random(), vec!["/ip4/198.51.100.1/tcp/4001".parse()?]);
/// assert_eq!(table.update(&peer, PeerEvent::Seen(Direction::Outbound)), UpdateOutcome::Inserted);
/// assert_eq!(table.closest_peers(&Key::hash(b"x"), 20), vec![peer.clone()]);
/// assert_eq!(table.update(&peer, PeerEvent::Failed), UpdateOutcome::Updated); // counts
/// assert_eq!(table.update(&peer, PeerEvent::Unreachable), UpdateOutcome::Removed);
/// assert!(table.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KBucketTable {
    local_key: Key,
    config: KBucketConfig,
    clock: Box<dyn Clock>,
    book: OnceLock<Arc<dyn AddressBook>>,
    inner: RwLock<Inner>,
}

#[derive(Clone, Debug)]
struct Entry {
    key: Key,
    peer: PeerInfo,
    /// The peer's IP groups as the diversity filter counts them (empty without a filter).
    groups: Vec<IpGroup>,
    /// Whether `groups` is the group of the peer's connection, not of its addresses.
    by_ip: bool,
    /// When the peer became a member (or entered the cache).
    added_at: UnixSecs,
    /// The last exchange in either direction.
    last_seen: UnixSecs,
    /// The last time the peer answered one of our requests.
    last_useful: Option<UnixSecs>,
    /// Consecutive failed requests.
    failures: u32,
}

impl Entry {
    fn useful_since(&self) -> UnixSecs {
        self.last_useful.unwrap_or(self.added_at)
    }
}

#[derive(Clone, Debug, Default)]
struct Bucket {
    /// At most k members, in no particular order.
    members: Vec<Entry>,
    /// The replacement cache, least recently seen first. Non-empty only when `members` is full.
    cache: Vec<Entry>,
}

#[derive(Debug)]
struct Inner {
    /// One bucket per CPL 0..=255.
    buckets: Vec<Bucket>,
    /// Bit `i` is set when bucket `i` has members.
    nonempty: [u64; 4],
    len: usize,
    diversity: Option<DiversityFilter>,
    /// When each bucket was last looked up; `None` for never.
    refreshed_at: Vec<Option<UnixSecs>>,
}

impl KBucketTable {
    /// An empty table for the node whose Kademlia key is `local_key`, reading time from
    /// `clock` (a [`SystemClock`](crate::SystemClock) in a real node, a
    /// [`ManualClock`](crate::ManualClock) or a closure over virtual time in a simulator).
    pub fn new(local_key: Key, config: KBucketConfig, clock: impl Clock + 'static) -> Self {
        let diversity = config.diversity.map(DiversityFilter::new);
        KBucketTable {
            local_key,
            config,
            clock: Box::new(clock),
            book: OnceLock::new(),
            inner: RwLock::new(Inner {
                buckets: vec![Bucket::default(); KEY_BITS],
                nonempty: [0; 4],
                len: 0,
                diversity,
                refreshed_at: vec![None; KEY_BITS],
            }),
        }
    }

    /// This table, grouping and addressing the peers it admits by what `book` knows
    /// first-hand of them (see [First-hand knowledge](Self#first-hand-knowledge)).
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
    pub fn config(&self) -> &KBucketConfig {
        &self.config
    }

    /// The current time by the table's clock.
    pub fn now(&self) -> UnixSecs {
        self.clock.now()
    }

    /// [`RoutingTable::update`] at an explicit time `now`.
    pub fn update_at(&self, peer: &PeerInfo, event: PeerEvent, now: UnixSecs) -> UpdateOutcome {
        let key = peer.key();
        let cpl = self.local_key.common_prefix_len(&key);
        if cpl >= KEY_BITS {
            return match event {
                PeerEvent::Seen(_) => UpdateOutcome::Rejected(RejectReason::LocalPeer),
                _ => UpdateOutcome::Ignored,
            };
        }
        let mut inner = self.inner.write();
        match event {
            PeerEvent::Seen(direction) => {
                let (peer, ip, admit) = match vouched(self.book.get().map(|b| b.as_ref()), peer) {
                    Some((peer, ip)) => (peer, ip, direction == Direction::Outbound),
                    None => (PeerInfo::new(peer.peer_id, Vec::new()), None, false),
                };
                let seen = Seen {
                    cpl,
                    key,
                    peer: &peer,
                    ip,
                    admit,
                    direction,
                };
                inner.seen(&self.config, seen, now)
            }
            PeerEvent::Failed => inner.failed(&self.config, cpl, &key, now),
            PeerEvent::Removed | PeerEvent::Unreachable => {
                inner.forget(&self.config, cpl, &key, now)
            }
        }
    }

    /// Every peer in the table (members of the buckets, not the replacement caches), from
    /// bucket 0 upwards.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let inner = self.inner.read();
        inner
            .buckets
            .iter()
            .flat_map(|b| b.members.iter().map(|e| e.peer.clone()))
            .collect()
    }

    /// Whether `peer` is a member of the table (not counting the replacement caches).
    pub fn contains(&self, peer: &PeerId) -> bool {
        let key = Key::from_peer_id(peer);
        let cpl = self.local_key.common_prefix_len(&key);
        let inner = self.inner.read();
        inner
            .buckets
            .get(cpl)
            .is_some_and(|b| b.members.iter().any(|e| e.key == key))
    }

    /// The number of members of bucket `cpl` (0 for `cpl > 255`).
    pub fn bucket_len(&self, cpl: usize) -> usize {
        self.inner
            .read()
            .buckets
            .get(cpl)
            .map_or(0, |b| b.members.len())
    }

    /// The number of peers waiting in bucket `cpl`'s replacement cache.
    pub fn replacement_len(&self, cpl: usize) -> usize {
        self.inner
            .read()
            .buckets
            .get(cpl)
            .map_or(0, |b| b.cache.len())
    }

    /// The highest CPL of any member, or `None` for an empty table.
    pub fn max_cpl(&self) -> Option<usize> {
        self.inner.read().max_cpl()
    }

    /// The buckets due for a refresh lookup at `now`: every CPL from 0 to the highest CPL of
    /// any member (0 for an empty table) not looked up for
    /// [`KBucketConfig::refresh_interval`] seconds, or never.
    ///
    /// go-libp2p-kad-dht stops at CPL 15; this table tracks every bucket up to 255.
    pub fn stale_buckets(&self, now: UnixSecs) -> Vec<usize> {
        let inner = self.inner.read();
        let max = inner.max_cpl().unwrap_or(0);
        inner
            .refreshed_at
            .iter()
            .take(max + 1)
            .enumerate()
            .filter(|(_, at)| {
                at.is_none_or(|t| now.saturating_sub(t) >= self.config.refresh_interval)
            })
            .map(|(cpl, _)| cpl)
            .collect()
    }

    /// Records that bucket `cpl` was looked up at `now` (ignored for `cpl > 255`).
    pub fn mark_refreshed(&self, cpl: usize, now: UnixSecs) {
        if let Some(at) = self.inner.write().refreshed_at.get_mut(cpl) {
            *at = Some(now);
        }
    }

    /// Records a lookup of `key` at `now`: it refreshes the bucket of `key`'s CPL with the
    /// local key. A lookup of the local key itself refreshes no bucket.
    pub fn record_lookup(&self, key: &Key, now: UnixSecs) {
        self.mark_refreshed(self.local_key.common_prefix_len(key), now);
    }

    /// A uniformly random key sharing exactly `cpl` leading bits with the local key: the
    /// target of a refresh lookup for bucket `cpl`.
    ///
    /// # Errors
    /// [`Error::CplOutOfRange`] for `cpl > 255`.
    ///
    /// ```
    /// use dht_proto::Key;
    /// use dht_routing_table::{KBucketTable, SystemClock};
    /// let table = KBucketTable::new(Key::hash(b"me"), Default::default(), SystemClock);
    /// let key = table.random_key_with_cpl(200, &mut rand::rng())?;
    /// assert_eq!(key.common_prefix_len(&table.local_key()), 200);
    /// # Ok::<(), dht_routing_table::Error>(())
    /// ```
    pub fn random_key_with_cpl<R: rand::RngCore + ?Sized>(
        &self,
        cpl: usize,
        rng: &mut R,
    ) -> Result<Key, Error> {
        if cpl >= KEY_BITS {
            return Err(Error::CplOutOfRange(cpl));
        }
        let flipped = self.local_key.with_bit(cpl, !self.local_key.bit(cpl));
        let mut suffix = [0u8; 32];
        rng.fill_bytes(&mut suffix);
        Ok(Prefix::new(&flipped, cpl + 1).key_with_suffix(&Key::from_bytes(suffix)))
    }
}

impl fmt::Debug for KBucketTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KBucketTable")
            .field("local_key", &self.local_key)
            .field("len", &self.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RoutingTable for KBucketTable {
    /// Walks the buckets outward from the target's CPL with the local key, sorting only the
    /// buckets it needs.
    ///
    /// With `c` the CPL of `key` with the local key, a peer in bucket `i` shares with `key`:
    /// more than `c` bits if `i == c`; exactly `c` bits if `i > c`; exactly `i` bits if
    /// `i < c`. So bucket `c` holds the closest peers, then all buckets above `c` taken
    /// together, then buckets `c - 1`, `c - 2`, … 0, each farther than the one before.
    fn closest_peers(&self, key: &Key, n: usize) -> Vec<PeerInfo> {
        let inner = self.inner.read();
        let n = n.min(inner.len);
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let c = self.local_key.common_prefix_len(key);
        let mut scratch: Vec<(Xor, &Entry)> = Vec::with_capacity(2 * K_VALUE);
        let take = |scratch: &mut Vec<(Xor, &Entry)>, out: &mut Vec<PeerInfo>| {
            keep_closest(scratch, n - out.len());
            out.extend(scratch.drain(..).map(|(_, e)| e.peer.clone()));
        };
        if let Some(bucket) = inner.buckets.get(c) {
            scratch.extend(
                bucket
                    .members
                    .iter()
                    .map(|e| (Xor::between(key, &e.key), e)),
            );
            take(&mut scratch, &mut out);
        }
        if out.len() < n {
            for i in inner.nonempty_above(c) {
                if let Some(bucket) = inner.buckets.get(i) {
                    scratch.extend(
                        bucket
                            .members
                            .iter()
                            .map(|e| (Xor::between(key, &e.key), e)),
                    );
                }
            }
            take(&mut scratch, &mut out);
        }
        for i in (0..c.min(KEY_BITS)).rev() {
            if out.len() >= n {
                break;
            }
            if let Some(bucket) = inner.buckets.get(i).filter(|b| !b.members.is_empty()) {
                scratch.extend(
                    bucket
                        .members
                        .iter()
                        .map(|e| (Xor::between(key, &e.key), e)),
                );
                take(&mut scratch, &mut out);
            }
        }
        out
    }

    fn update(&self, peer: &PeerInfo, event: PeerEvent) -> UpdateOutcome {
        self.update_at(peer, event, self.clock.now())
    }

    fn len(&self) -> usize {
        self.inner.read().len
    }
}

/// The groups of a peer connected from `ip`, or else with these addresses; `None` when
/// there is neither (nothing to group by: keep what was known).
fn groups_of(
    filter: Option<&DiversityFilter>,
    peer: &PeerInfo,
    ip: Option<IpAddr>,
) -> Option<Vec<IpGroup>> {
    match (filter, ip) {
        (None, _) => Some(Vec::new()),
        (Some(f), Some(ip)) => Some(f.groups_of_ip(ip)),
        (Some(_), None) if peer.addrs.is_empty() => None,
        (Some(f), None) => Some(f.groups(&peer.addrs)),
    }
}

/// A `Seen` event as [`Inner::seen`] applies it.
struct Seen<'a> {
    cpl: usize,
    key: Key,
    /// The peer with the addresses to keep.
    peer: &'a PeerInfo,
    /// The IP of its connection, when the table groups by it.
    ip: Option<IpAddr>,
    /// Whether a peer that is not a member may join.
    admit: bool,
    direction: Direction,
}

impl Inner {
    fn max_cpl(&self) -> Option<usize> {
        (0..4)
            .rev()
            .find(|&w| self.nonempty[w] != 0)
            .map(|w| w * 64 + 63 - self.nonempty[w].leading_zeros() as usize)
    }

    /// The non-empty buckets with a CPL above `c`, in increasing order.
    fn nonempty_above(&self, c: usize) -> impl Iterator<Item = usize> + '_ {
        (c.saturating_add(1)..KEY_BITS)
            .filter(move |&i| self.nonempty[i / 64] & (1 << (i % 64)) != 0)
    }

    fn sync_bit(&mut self, cpl: usize) {
        let nonempty = self.buckets.get(cpl).is_some_and(|b| !b.members.is_empty());
        let (w, bit) = (cpl / 64, 1u64 << (cpl % 64));
        if let Some(word) = self.nonempty.get_mut(w) {
            if nonempty {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    fn seen(&mut self, config: &KBucketConfig, seen: Seen<'_>, now: UnixSecs) -> UpdateOutcome {
        let Seen {
            cpl,
            key,
            peer,
            ip,
            admit,
            direction,
        } = seen;
        let Inner {
            buckets, diversity, ..
        } = self;
        let Some(bucket) = buckets.get_mut(cpl) else {
            return UpdateOutcome::Ignored;
        };

        // A member: refresh its record.
        if let Some(e) = bucket.members.iter_mut().find(|e| e.key == key) {
            e.last_seen = now;
            e.failures = 0;
            if direction == Direction::Outbound {
                e.last_useful = Some(now);
            }
            e.peer.connection = peer.connection;
            let groups = groups_of(diversity.as_ref(), peer, ip);
            match (diversity.as_mut(), groups) {
                (Some(filter), Some(groups)) if groups != e.groups => {
                    filter.remove(cpl, &e.groups);
                    if filter.check(cpl, &groups).is_ok() {
                        filter.add(cpl, &groups);
                        e.groups = groups;
                        e.by_ip = ip.is_some();
                        if !peer.addrs.is_empty() {
                            e.peer.addrs.clone_from(&peer.addrs);
                        }
                    } else {
                        filter.add(cpl, &e.groups);
                        tracing::debug!(peer = %e.peer.peer_id, "new addresses break the diversity limits; keeping the old ones");
                    }
                }
                _ if !peer.addrs.is_empty() => e.peer.addrs.clone_from(&peer.addrs),
                _ => {}
            }
            return UpdateOutcome::Updated;
        }
        if !admit {
            return UpdateOutcome::Ignored;
        }

        // Known from the cache or new: build its entry and try to place it.
        let mut entry = Entry {
            key,
            peer: peer.clone(),
            groups: Vec::new(),
            by_ip: ip.is_some(),
            added_at: now,
            last_seen: now,
            last_useful: (direction == Direction::Outbound).then_some(now),
            failures: 0,
        };
        if let Some(i) = bucket.cache.iter().position(|e| e.key == key) {
            let old = bucket.cache.remove(i);
            if entry.peer.addrs.is_empty() {
                entry.peer.addrs = old.peer.addrs;
            }
            entry.last_useful = entry.last_useful.or(old.last_useful);
            entry.added_at = old.added_at;
        }
        entry.groups = groups_of(diversity.as_ref(), &entry.peer, ip).unwrap_or_default();

        let k = config.k();
        if bucket.members.len() < k {
            if let Some(filter) = diversity.as_mut() {
                if let Err(reason) = filter.check(cpl, &entry.groups) {
                    return UpdateOutcome::Rejected(reason);
                }
                filter.add(cpl, &entry.groups);
            }
            entry.added_at = now;
            bucket.members.push(entry);
            self.len += 1;
            self.sync_bit(cpl);
            return UpdateOutcome::Inserted;
        }

        // The bucket is full. The usefulness rule: replace the least recently useful member
        // if it has not been useful for the grace period.
        if let Some(grace) = config.usefulness_grace {
            let stale = bucket
                .members
                .iter()
                .enumerate()
                .filter(|(_, e)| now.saturating_sub(e.useful_since()) >= grace)
                .min_by_key(|(_, e)| e.useful_since())
                .map(|(i, _)| i);
            if let Some(i) = stale {
                if let (Some(filter), Some(old)) = (diversity.as_mut(), bucket.members.get(i)) {
                    filter.remove(cpl, &old.groups);
                    if let Err(reason) = filter.check(cpl, &entry.groups) {
                        filter.add(cpl, &old.groups);
                        return UpdateOutcome::Rejected(reason);
                    }
                    filter.add(cpl, &entry.groups);
                }
                if let Some(slot) = bucket.members.get_mut(i) {
                    entry.added_at = now;
                    let old = std::mem::replace(slot, entry);
                    tracing::debug!(evicted = %old.peer.peer_id, by = %slot.peer.peer_id, cpl, "replaced a member not useful for the grace period");
                }
                return UpdateOutcome::Inserted;
            }
        }

        // Otherwise wait in the replacement cache.
        if config.replacement_cache_size == 0 {
            return UpdateOutcome::Rejected(RejectReason::BucketFull);
        }
        if let Some(filter) = diversity.as_ref()
            && let Err(reason) = filter.check(cpl, &entry.groups)
        {
            return UpdateOutcome::Rejected(reason);
        }
        if bucket.cache.len() >= config.replacement_cache_size {
            bucket.cache.remove(0);
        }
        bucket.cache.push(entry);
        UpdateOutcome::Pending
    }

    fn failed(
        &mut self,
        config: &KBucketConfig,
        cpl: usize,
        key: &Key,
        now: UnixSecs,
    ) -> UpdateOutcome {
        let Some(bucket) = self.buckets.get_mut(cpl) else {
            return UpdateOutcome::Ignored;
        };
        if let Some(i) = bucket.members.iter().position(|e| e.key == *key) {
            let failures = bucket.members.get_mut(i).map_or(u32::MAX, |e| {
                e.failures = e.failures.saturating_add(1);
                e.failures
            });
            if failures < config.failure_limit() {
                return UpdateOutcome::Updated;
            }
            self.remove_member(config, cpl, i, now);
            return UpdateOutcome::Removed;
        }
        self.forget_cached(cpl, key)
    }

    fn forget(
        &mut self,
        config: &KBucketConfig,
        cpl: usize,
        key: &Key,
        now: UnixSecs,
    ) -> UpdateOutcome {
        let Some(bucket) = self.buckets.get(cpl) else {
            return UpdateOutcome::Ignored;
        };
        if let Some(i) = bucket.members.iter().position(|e| e.key == *key) {
            self.remove_member(config, cpl, i, now);
            return UpdateOutcome::Removed;
        }
        self.forget_cached(cpl, key)
    }

    fn forget_cached(&mut self, cpl: usize, key: &Key) -> UpdateOutcome {
        let Some(bucket) = self.buckets.get_mut(cpl) else {
            return UpdateOutcome::Ignored;
        };
        match bucket.cache.iter().position(|e| e.key == *key) {
            Some(i) => {
                bucket.cache.remove(i);
                UpdateOutcome::Removed
            }
            None => UpdateOutcome::Ignored,
        }
    }

    /// Drops member `i` of bucket `cpl` and fills the bucket from its replacement cache, most
    /// recently seen first, skipping (and dropping) entries the diversity filter refuses.
    fn remove_member(&mut self, config: &KBucketConfig, cpl: usize, i: usize, now: UnixSecs) {
        let Inner {
            buckets, diversity, ..
        } = self;
        let Some(bucket) = buckets.get_mut(cpl) else {
            return;
        };
        if i >= bucket.members.len() {
            return;
        }
        let old = bucket.members.swap_remove(i);
        self.len -= 1;
        if let Some(filter) = diversity.as_mut() {
            filter.remove(cpl, &old.groups);
        }
        while bucket.members.len() < config.k() {
            let Some(mut entry) = bucket.cache.pop() else {
                break;
            };
            if let Some(filter) = diversity.as_mut() {
                if filter.check(cpl, &entry.groups).is_err() {
                    tracing::trace!(peer = %entry.peer.peer_id, "cache entry now breaks the diversity limits; dropped");
                    continue;
                }
                filter.add(cpl, &entry.groups);
            }
            entry.added_at = now;
            entry.failures = 0;
            bucket.members.push(entry);
            self.len += 1;
        }
        self.sync_bit(cpl);
    }

    /// Checks every invariant of the table; for tests. Without `hash`, trusts that each
    /// entry's key is its peer's (hashing every peer id at every step is slow in debug builds).
    #[cfg(test)]
    fn check_invariants(
        &self,
        local: &Key,
        config: &KBucketConfig,
        hash: bool,
    ) -> Result<(), String> {
        let mut total = 0;
        let mut seen = std::collections::HashSet::new();
        let mut filter = config.diversity.map(DiversityFilter::new);
        for (cpl, b) in self.buckets.iter().enumerate() {
            if b.members.len() > config.k() {
                return Err(format!("bucket {cpl} has {} members", b.members.len()));
            }
            if b.cache.len() > config.replacement_cache_size {
                return Err(format!("bucket {cpl} has {} cached", b.cache.len()));
            }
            if !b.cache.is_empty() && b.members.len() < config.k() {
                return Err(format!("bucket {cpl} is not full but has a cache"));
            }
            let bit = self.nonempty[cpl / 64] & (1 << (cpl % 64)) != 0;
            if bit == b.members.is_empty() {
                return Err(format!("non-empty bit of bucket {cpl} is wrong"));
            }
            for e in b.members.iter().chain(&b.cache) {
                if (hash && e.key != e.peer.key()) || local.common_prefix_len(&e.key) != cpl {
                    return Err(format!("{} is in the wrong bucket {cpl}", e.peer.peer_id));
                }
                if !seen.insert(e.key) {
                    return Err(format!("{} is twice in the table", e.peer.peer_id));
                }
            }
            for e in &b.members {
                if let Some(f) = filter.as_mut() {
                    if !e.by_ip && e.groups != f.groups(&e.peer.addrs) {
                        return Err(format!("stale groups of {}", e.peer.peer_id));
                    }
                    f.check(cpl, &e.groups)
                        .map_err(|r| format!("{} breaks diversity: {r}", e.peer.peer_id))?;
                    f.add(cpl, &e.groups);
                }
            }
            total += b.members.len();
        }
        if total != self.len {
            return Err(format!("len {} but {total} members", self.len));
        }
        if let (Some(f), Some(ours)) = (filter.as_ref(), self.diversity.as_ref()) {
            for e in self.buckets.iter().flat_map(|b| &b.members) {
                for g in &e.groups {
                    if f.table_count(*g) != ours.table_count(*g) {
                        return Err(format!("diversity count of {g} drifted"));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
