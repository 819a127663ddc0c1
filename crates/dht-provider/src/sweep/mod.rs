//! The sweeping provider: keys in a keystore, reprovided slice by slice over the interval.
//!
//! Workers take jobs as [`jobs::choose`](crate::jobs::choose) says: some are reserved for the
//! reprovide schedule's due slices, the others take whichever work waited longest (a failed
//! slice whose retry time came, the oldest slice with new keys, or the schedule). A job
//! learns the servers around the slice (from a complete routing table, or with a
//! [`RegionExplorer`](crate::explore::RegionExplorer) seeded with the servers of the slice before, which are close), then reads
//! the slice's keys a page (`scan_page` keys) at a time and sends each page's keys to their k
//! closest servers before reading the next, re-exploring past servers that fail or are too
//! slow. What a job keeps is one page and the keys that failed, whatever the slice holds.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use dht_proto::{Key, PeerInfo, Prefix, Request, Response, UnixSecs};
use dht_provider_store::Keystore;
use dht_routing::Network;
use dht_routing_table::{Clock, RoutingTable};
use parking_lot::Mutex;
use tokio::sync::Notify;

mod assign;
mod batch;
mod cache;
mod config;
mod send;

use assign::NetworkQuality;
use cache::ExplorationCache;
pub use config::{BATCH_ANSWER_TIMEOUT, SweepConfig};
use send::JobOutcome;

use crate::{
    DhtProvider, Multihash,
    error::ProviderError,
    jobs::{JobKind, Waiting, Workers, choose, oldest_slices, queued_within, slices_per_job},
    schedule::{Progress, Schedule, slice_len_for},
    size::SizeEstimator,
    state::{SliceRetry, StateStore, SweepState, Unsent, WeakKey},
    stats::{Connectivity, ProviderStats, RegionTimes},
};

/// A batch of keys whose first provide a caller waits for.
#[derive(Debug, Default)]
struct Batch {
    remaining: AtomicUsize,
    failed: Mutex<Vec<Multihash>>,
    done: Notify,
    cancelled: AtomicBool,
}

impl Batch {
    fn report(&self, key: Multihash, ok: bool) {
        if !ok {
            self.failed.lock().push(key);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_waiters();
            self.done.notify_one();
        }
    }
}

/// Cancels a batch's first provide if the waiting call is dropped first.
struct CancelOnDrop(Arc<Batch>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.0.remaining.load(Ordering::Acquire) > 0 {
            self.0.cancelled.store(true, Ordering::Release);
        }
    }
}

#[derive(Debug, Clone)]
struct Queued {
    key: Multihash,
    batch: Option<Arc<Batch>>,
    /// Kept in the keystore (false for `provide_once`).
    kept: bool,
}

/// Keys retried one by one in a slice; past this many, the whole slice is retried.
const MAX_RETRY_KEYS: usize = 4096;

/// Keys retried one by one over all slices; past this many, a slice that fails is retried
/// whole (the retries are persisted after every job, so they stay small).
const MAX_RETRY_KEYS_IN_ALL: usize = 4 * MAX_RETRY_KEYS;

/// Keys of one slice waiting for their first provide.
#[derive(Debug)]
struct QueuedSlice {
    /// When the oldest of them arrived.
    since: UnixSecs,
    /// The keys held in memory: those a caller waits for, those not kept in the keystore,
    /// and others while few keys are queued.
    keys: Vec<Queued>,
    /// The other keys, marked only: they are read back from the keystore.
    marked: Option<Marker>,
}

/// Keys queued in a slice without being held: a 32-bit fingerprint of each Kademlia key
/// (uniform hashes already), or, once `all`, every key of the slice. The job reads the
/// slice back from the keystore and sends the keys whose fingerprint the marker holds. A key
/// provided before matches by chance with odds of the marked keys over 2^32: next to none is
/// sent again.
#[derive(Clone, Debug, Default)]
struct Marker {
    fingerprints: Vec<u32>,
    /// Keys marked (fingerprints held, or counted only once `all`).
    count: u64,
    /// Every key of the slice is to be sent (the marker gave up its fingerprints).
    all: bool,
}

impl Marker {
    fn fingerprint(key: &Key) -> u32 {
        // Past the first bytes, which the keys of one slice share.
        let b = key.as_bytes();
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }

    fn insert(&mut self, key: &Key) {
        if !self.all {
            self.fingerprints.push(Self::fingerprint(key));
        }
        self.count += 1;
    }

    /// Gives up the fingerprints: every key of the slice matches. Returns how many it held.
    fn mark_all(&mut self) -> usize {
        self.all = true;
        let held = self.fingerprints.len();
        self.fingerprints = Vec::new();
        held
    }

    /// Sorts the fingerprints, for [`Marker::contains`]: once, when a job takes the marker.
    fn seal(&mut self) {
        self.fingerprints.sort_unstable();
        self.fingerprints.dedup();
        self.fingerprints.shrink_to_fit();
    }

    /// Whether `key` was marked (or matches by chance); the marker must be sealed.
    fn contains(&self, key: &Key) -> bool {
        self.all
            || self
                .fingerprints
                .binary_search(&Self::fingerprint(key))
                .is_ok()
    }
}

#[derive(Debug)]
enum Job {
    /// New keys of one slice: those held, and those `marked` read back from the keystore
    /// (or, with `whole`, every key of the slice).
    Provide {
        slice: Prefix,
        keys: Vec<Queued>,
        whole: bool,
        marked: Option<Marker>,
    },
    /// Every key of a slice, as the schedule says, and first the keys queued in it (`keys`
    /// held in memory, of the queued slices `taken`), whose first provide this is.
    Reprovide {
        slice: Prefix,
        cycle: u64,
        keys: Vec<Queued>,
        taken: Vec<Prefix>,
    },
    /// What failed in a slice: the keys that reached too few servers, and the keys of the
    /// keystore that were not sent.
    Retry {
        slice: Prefix,
        keys: Vec<WeakKey>,
        unsent: Unsent,
    },
    /// While disconnected: one FIND_NODE to see whether the network answers again.
    Probe,
}

impl Job {
    /// Whether the job is a retry or a provide (one of the work that may not take the
    /// workers reserved for the schedule).
    fn is_other(&self) -> bool {
        matches!(self, Job::Provide { .. } | Job::Retry { .. })
    }
}

/// Keys of one queued slice taken by a job: those held, whether the slice is to be provided
/// whole, and the marker of the others.
type TakenKeys = (Vec<Queued>, bool, Option<Marker>);

/// Takes the queued keys of `slice` for a job that provides them (counted as a provide of
/// the slice running until the job ends); `None` if none are queued.
fn take_queued(shared: &mut Shared, slice: Prefix) -> Option<TakenKeys> {
    let QueuedSlice { keys, marked, .. } = shared.queue.remove(&slice)?;
    let marked_count = marked.as_ref().map_or(0, |m| m.count) as usize;
    let fingerprints = marked.as_ref().map_or(0, |m| m.fingerprints.len());
    shared.marked_keys = shared.marked_keys.saturating_sub(fingerprints);
    shared.queued_keys = shared.queued_keys.saturating_sub(keys.len() + marked_count);
    shared.queued_in_memory = shared.queued_in_memory.saturating_sub(keys.len());
    let whole = shared.whole.remove(&slice);
    *shared.providing.entry(slice).or_default() += 1;
    Some((keys, whole, marked))
}

/// Ends a provide of the queued keys of `slice`: unless more wait or are being sent, a
/// restart need not provide the slice whole (what failed is in the persisted retries).
fn provided(shared: &mut Shared, slice: Prefix) {
    let running = shared.providing.get(&slice).copied().unwrap_or(0);
    if running <= 1 {
        shared.providing.remove(&slice);
    } else {
        shared.providing.insert(slice, running - 1);
    }
    if running <= 1 && !shared.queue.contains_key(&slice) {
        shared.state.pending.remove(&slice);
    }
}

/// The keys of `queued` to send first (each once), and the batches waiting for each. It takes
/// `queued`, so that a job holds its keys once.
fn first_keys(queued: Vec<Queued>) -> (Vec<WeakKey>, HashMap<Multihash, Vec<Arc<Batch>>>) {
    let mut seen = HashSet::with_capacity(queued.len());
    let mut first = Vec::with_capacity(queued.len());
    let mut batches: HashMap<Multihash, Vec<Arc<Batch>>> = HashMap::new();
    for q in queued {
        // A cancelled batch: nobody waits any more, but the key is still provided now.
        if let Some(b) = q.batch
            && !b.cancelled.load(Ordering::Acquire)
        {
            batches.entry(q.key).or_default().push(b);
        }
        if seen.insert(q.key) {
            first.push(WeakKey {
                key: q.key,
                reached: Vec::new(),
            });
        }
    }
    (first, batches)
}

#[derive(Debug, Default)]
struct Counters {
    find_node: AtomicU64,
    add_provider: AtomicU64,
    add_provider_failed: AtomicU64,
    batches_sent: AtomicU64,
    batch_records: AtomicU64,
    batch_stored: AtomicU64,
    batch_refused: AtomicU64,
    batches_failed: AtomicU64,
    batches_deferred: AtomicU64,
    batch_waits: AtomicU64,
    batch_fallbacks: AtomicU64,
    regions_explored: AtomicU64,
    region_prefix_bits: AtomicU64,
    keys_provided: AtomicU64,
    keys_failed: AtomicU64,
    scan_errors: AtomicU64,
    region_jobs: AtomicU64,
    region_job_millis: AtomicU64,
    region_servers: AtomicU64,
    record_holders: AtomicU64,
    state_save_errors: AtomicU64,
}

struct Shared {
    state: SweepState,
    schedule: Schedule,
    /// Reprovide slices being worked on, with their cycle.
    claimed: BTreeSet<(u64, Prefix)>,
    /// The next slice to claim for reprovide.
    cursor: Progress,
    queue: BTreeMap<Prefix, QueuedSlice>,
    queued_keys: usize,
    /// Queued keys held in memory (the others are marked).
    queued_in_memory: usize,
    /// Fingerprints held by the markers of all queued slices (at most
    /// [`SweepConfig::max_marked`]).
    marked_keys: usize,
    /// Slices whose whole content must be provided (recovered after a restart).
    whole: BTreeSet<Prefix>,
    /// Slices whose retry runs now (their entry stays in the persisted retries until it
    /// ends, so that a crash meanwhile loses nothing).
    retrying: BTreeSet<Prefix>,
    /// Provide jobs running now, per slice.
    providing: BTreeMap<Prefix, usize>,
    /// The explorations kept for reuse, one per region.
    cache: ExplorationCache,
    size: SizeEstimator,
    /// What explorations showed of silent servers and answers that leave peers out.
    quality: NetworkQuality,
    connectivity: Connectivity,
    /// Since when `connectivity` holds.
    connectivity_since: UnixSecs,
    /// When the provider started.
    started: UnixSecs,
    last_answer: UnixSecs,
    /// When the last probe was sent (or the provider found itself disconnected).
    last_probe: UnixSecs,
    probing: bool,
    busy: usize,
    /// Workers running a retry or a provide (not the schedule's work).
    busy_other: usize,
    /// Records sent and failed in the cycle being walked, and in the last full cycle.
    cycle_sent: (u64, u64),
    last_cycle_sent: (u64, u64),
    /// Peers sent to in the cycle being walked, and in the last full cycle.
    cycle_tried: (u64, u64),
    cycle_started: UnixSecs,
    last_cycle_secs: Option<u64>,
    /// When each region's last job ended (for the stats).
    region_times: RegionTimes,
}

impl Shared {
    /// Sets the connectivity, noting when it changed.
    fn set_connectivity(&mut self, connectivity: Connectivity, now: UnixSecs) {
        if self.connectivity != connectivity {
            self.connectivity = connectivity;
            self.connectivity_since = now;
        }
    }

    /// Drops the fingerprints of the queued slice that holds the most: it is provided whole,
    /// so that the markers' memory stays under [`SweepConfig::max_marked`].
    fn mark_largest_all(&mut self) {
        let largest = self
            .queue
            .values_mut()
            .filter_map(|q| q.marked.as_mut())
            .max_by_key(|m| m.fingerprints.len());
        if let Some(marker) = largest {
            let held = marker.mark_all();
            self.marked_keys = self.marked_keys.saturating_sub(held);
        }
    }

    /// How far the walk got: the oldest slice being worked on, or the cursor.
    fn progress(&self) -> Progress {
        self.claimed
            .first()
            .map(|(cycle, slice)| Progress {
                cycle: *cycle,
                next: slice.first_key(),
            })
            .unwrap_or(self.cursor)
    }
}

/// The parts a [`SweepingProvider`] works with.
pub struct SweepParts<N, T, K> {
    /// This node, as it announces itself in provider records (its addresses must be dialable).
    pub local: PeerInfo,
    /// How requests reach other peers.
    pub network: N,
    /// Where the first seeds of an exploration come from.
    pub table: T,
    /// The keys this node provides.
    pub keystore: K,
    /// Where the sweep's progress is kept across restarts.
    pub state: Box<dyn StateStore>,
    /// Wall-clock time (virtual in the simulator).
    pub clock: Arc<dyn Clock>,
}

struct Inner<N, T, K> {
    parts: SweepParts<N, T, K>,
    config: SweepConfig,
    shared: Mutex<Shared>,
    wake: Notify,
    closed: AtomicBool,
    counters: Counters,
    /// The servers' rate limits as their last batch answers told them, and when: the next
    /// slice or page sends them batches sized and paced to it at once, not a small first
    /// batch to learn it again. At most [`batch::ALLOWANCES_KEPT`] servers.
    allowances: Mutex<lru::LruCache<dht_proto::PeerId, batch::Told>>,
}

/// Provides keys to the DHT and reprovides them every interval by sweeping the keyspace.
///
/// Keys are held in a [`Keystore`] in Kademlia-key order; nothing in memory grows with their
/// number. A cheap handle: clones share the provider. Needs a tokio runtime (it spawns its
/// workers on the current one).
pub struct SweepingProvider<N, T, K> {
    inner: Arc<Inner<N, T, K>>,
    workers: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl<N, T, K> Clone for SweepingProvider<N, T, K> {
    fn clone(&self) -> Self {
        SweepingProvider {
            inner: self.inner.clone(),
            workers: self.workers.clone(),
        }
    }
}

impl<N, T, K> SweepingProvider<N, T, K>
where
    N: Network + 'static,
    T: RoutingTable + 'static,
    K: Keystore + 'static,
{
    /// Loads the persisted state (or starts a first cycle now) and starts the workers.
    ///
    /// Slices whose first provide had not finished when the provider last stopped are queued
    /// again, whole; the reprovide schedule resumes where it stopped.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] when a setting cannot work
    /// ([`SweepConfig::validate`]); the state store's and the keystore's errors.
    pub fn start(parts: SweepParts<N, T, K>, config: SweepConfig) -> Result<Self, ProviderError> {
        config.validate()?;
        let now = parts.clock.now();
        let interval = config.interval.as_secs();
        let mut state = match parts.state.load()? {
            Some(bytes) => SweepState::from_bytes(&bytes)?,
            None => {
                let servers = table_servers(&parts.table, &parts.local, config.k);
                let len = slice_len_for(servers, config.k);
                let mut state = SweepState::new(now, interval, len);
                let schedule = Schedule::new(now, interval, len);
                // The cycle starts now, at the first slice: keys added from here on are
                // provided when added, so that slice waits for the next cycle.
                schedule.complete(&mut state.progress, &schedule.slice_of(&Key::ZERO));
                // Keys held without a state (a lost state file): provide them all once.
                if parts.keystore.count()? > 0 {
                    state.pending = all_slices(len);
                }
                parts.state.save(&state.to_bytes())?;
                state
            }
        };
        if state.interval != 0 && state.interval != interval {
            // The operator changed the interval: rescale rather than keep the epoch.
            let old = Schedule::new(state.epoch, state.interval, state.slice_len);
            let (schedule, progress) = old.with_interval(&state.progress, interval);
            tracing::info!(
                from = state.interval,
                to = interval,
                "reprovide interval changed; schedule rescaled"
            );
            state.epoch = schedule.epoch();
            state.progress = progress;
        }
        state.interval = interval;
        // What failed before the stop is retried at once.
        for retry in state.retries.values_mut() {
            retry.at = retry.at.min(now);
        }
        let schedule = Schedule::new(state.epoch, interval, state.slice_len);
        let whole = state.pending.clone();
        let shared = Shared {
            cursor: state.progress,
            schedule,
            claimed: BTreeSet::new(),
            queue: whole
                .iter()
                .map(|p| {
                    let queued = QueuedSlice {
                        since: now,
                        keys: Vec::new(),
                        marked: None,
                    };
                    (*p, queued)
                })
                .collect(),
            queued_keys: 0,
            queued_in_memory: 0,
            marked_keys: 0,
            whole,
            retrying: BTreeSet::new(),
            providing: BTreeMap::new(),
            cache: ExplorationCache::default(),
            size: SizeEstimator::new(),
            quality: NetworkQuality::default(),
            connectivity: Connectivity::Online,
            connectivity_since: now,
            started: now,
            last_answer: now,
            last_probe: now,
            probing: false,
            busy: 0,
            busy_other: 0,
            cycle_sent: (0, 0),
            last_cycle_sent: (0, 0),
            cycle_tried: (0, 0),
            cycle_started: now,
            last_cycle_secs: None,
            region_times: RegionTimes::default(),
            state,
        };
        let inner = Arc::new(Inner {
            parts,
            config,
            shared: Mutex::new(shared),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            counters: Counters::default(),
            allowances: Mutex::new(lru::LruCache::new(batch::ALLOWANCES_KEPT)),
        });
        let workers = (0..inner.config.workers)
            .map(|i| {
                let inner = inner.clone();
                tokio::spawn(async move { inner.worker(i).await })
            })
            .collect();
        Ok(SweepingProvider {
            inner,
            workers: Arc::new(Mutex::new(workers)),
        })
    }
}

impl<N, T, K> DhtProvider for SweepingProvider<N, T, K>
where
    N: Network + 'static,
    T: RoutingTable + 'static,
    K: Keystore + 'static,
{
    /// Adds `keys` to the keystore and returns once their first provide succeeded or failed.
    /// With `force`, keys already held are provided again too.
    ///
    /// Dropping the returned future only stops the wait: the keys are still provided now, and
    /// reprovided on schedule. Keys whose first provide failed are retried (the failed keys
    /// alone) until it succeeds, across restarts too.
    ///
    /// The keys are written to the keystore on the blocking pool
    /// ([`tokio::task::spawn_blocking`]), not on the caller's async thread: a keystore write
    /// waits for the disk.
    async fn start_providing(&self, force: bool, keys: &[Multihash]) -> Result<(), ProviderError> {
        let inner = self.inner.clone();
        let keys = keys.to_vec();
        let batch =
            crate::error::off_async(move || inner.enqueue(force, &keys, true, true)).await?;
        match batch {
            Some(batch) => self.inner.wait(batch).await,
            None => Ok(()),
        }
    }

    /// Like [`start_providing`](Self::start_providing) without waiting for the first provide.
    fn start_providing_async(&self, force: bool, keys: &[Multihash]) -> Result<(), ProviderError> {
        self.inner.enqueue(force, keys, true, false).map(drop)
    }

    /// Removes `keys` from the keystore: they are no longer reprovided, and their records
    /// expire on their own.
    ///
    /// A caller still waiting for the first provide of some of them is answered: the stopped
    /// keys count as not provided.
    fn stop_providing(&self, keys: &[Multihash]) -> Result<(), ProviderError> {
        self.inner.parts.keystore.delete(keys)?;
        let gone: HashSet<&Multihash> = keys.iter().collect();
        let mut stopped = Vec::new();
        {
            let mut shared = self.inner.shared.lock();
            let mut removed = 0;
            for queued in shared.queue.values_mut() {
                let queued = &mut queued.keys;
                let before = queued.len();
                queued.retain(|q| {
                    let stop = q.kept && gone.contains(&q.key);
                    if stop {
                        stopped.push(q.clone());
                    }
                    !stop
                });
                removed += before - queued.len();
            }
            shared.queued_keys = shared.queued_keys.saturating_sub(removed);
            shared.queued_in_memory = shared.queued_in_memory.saturating_sub(removed);
            // Nor are they retried.
            let mut retries_changed = false;
            for retry in shared.state.retries.values_mut() {
                let before = retry.keys.len();
                retry.keys.retain(|w| !gone.contains(&w.key));
                retries_changed |= retry.keys.len() != before;
            }
            shared
                .state
                .retries
                .retain(|_, r| !r.keys.is_empty() || r.unsent != Unsent::Nothing);
            if retries_changed {
                self.inner.persist(&shared)?;
            }
        }
        // Outside the lock: a report may wake the waiting caller.
        for q in stopped {
            if let Some(batch) = q.batch {
                batch.report(q.key, false);
            }
        }
        Ok(())
    }

    /// Provides `keys` once, without keeping them; returns when done.
    async fn provide_once(&self, keys: &[Multihash]) -> Result<(), ProviderError> {
        match self.inner.enqueue(true, keys, false, true)? {
            Some(batch) => self.inner.wait(batch).await,
            None => Ok(()),
        }
    }

    /// The keys provided, in keyspace order; see [`DhtProvider::provide_list`](crate::DhtProvider::provide_list).
    fn provide_list(
        &self,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Multihash)>, ProviderError> {
        crate::api::list_page(&self.inner.parts.keystore, after, limit)
    }

    /// What an operator needs to know.
    fn stats(&self) -> ProviderStats {
        self.inner.stats()
    }

    /// Saves the state and stops the workers. Keys whose first provide had not finished are
    /// provided after the next start.
    async fn close(&self) -> Result<(), ProviderError> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake.notify_waiters();
        let workers: Vec<_> = self.workers.lock().drain(..).collect();
        for w in workers {
            w.abort();
            let _ = w.await;
        }
        let shared = self.inner.shared.lock();
        self.inner.persist(&shared)
    }
}

/// The number of servers the routing table shows: those it holds, or, from the k closest
/// peers to ourselves (who share about log2(servers / k) bits with us), more.
fn table_servers<T: RoutingTable>(table: &T, local: &PeerInfo, k: usize) -> u64 {
    let held = table.len() as u64;
    let me = local.key();
    let closest = table.closest_peers(&me, k);
    if closest.len() < k || closest.is_empty() {
        // Too few peers to tell (a failed bootstrap): explorations correct it.
        return held;
    }
    let mean_cpl = closest
        .iter()
        .map(|p| p.key().common_prefix_len(&me))
        .sum::<usize>()
        / closest.len();
    (k as u64)
        .saturating_mul(1u64 << mean_cpl.min(40))
        .max(held)
}

impl<N, T, K> Inner<N, T, K>
where
    N: Network + 'static,
    T: RoutingTable + 'static,
    K: Keystore + 'static,
{
    fn now(&self) -> UnixSecs {
        self.parts.clock.now()
    }

    fn persist(&self, shared: &Shared) -> Result<(), ProviderError> {
        let mut state = shared.state.clone();
        state.progress = shared.progress();
        state.slice_len = shared.schedule.slice_len();
        self.parts.state.save(&state.to_bytes())
    }

    fn enqueue(
        &self,
        force: bool,
        keys: &[Multihash],
        keep: bool,
        wait: bool,
    ) -> Result<Option<Arc<Batch>>, ProviderError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ProviderError::Closed);
        }
        let fresh = if keep {
            let new = self.parts.keystore.put(keys)?;
            if force { dedup(keys) } else { new }
        } else {
            dedup(keys)
        };
        if fresh.is_empty() {
            return Ok(None);
        }
        let batch = wait.then(|| {
            Arc::new(Batch {
                remaining: AtomicUsize::new(fresh.len()),
                ..Batch::default()
            })
        });
        let now = self.now();
        let mut shared = self.shared.lock();
        let mut slices = BTreeSet::new();
        let room = self.config.queued_in_memory;
        for key in fresh {
            let kad = Key::from_multihash(&key);
            let slice = shared.schedule.slice_of(&kad);
            slices.insert(slice);
            // A key nobody waits for, already in the keystore, is only marked once many are
            // queued: the queue's memory does not grow with the keys.
            let in_memory = batch.is_some() || !keep || shared.queued_in_memory < room;
            let queued = shared.queue.entry(slice).or_insert_with(|| QueuedSlice {
                since: now,
                keys: Vec::new(),
                marked: None,
            });
            if in_memory {
                queued.keys.push(Queued {
                    key,
                    batch: batch.clone(),
                    kept: keep,
                });
            } else {
                let marker = queued.marked.get_or_insert_with(Marker::default);
                let all = marker.all;
                marker.insert(&kad);
                if !all {
                    shared.marked_keys += 1;
                    if shared.marked_keys > self.config.max_marked {
                        shared.mark_largest_all();
                    }
                }
            }
            shared.queued_keys += 1;
            shared.queued_in_memory += usize::from(in_memory);
        }
        if keep {
            let before = shared.state.pending.len();
            shared.state.pending.extend(slices);
            if shared.state.pending.len() != before {
                self.persist(&shared)?;
            }
        }
        drop(shared);
        self.wake.notify_waiters();
        Ok(batch)
    }

    async fn wait(&self, batch: Arc<Batch>) -> Result<(), ProviderError> {
        let guard = CancelOnDrop(batch.clone());
        loop {
            let notified = batch.done.notified();
            if batch.remaining.load(Ordering::Acquire) == 0 {
                break;
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(ProviderError::Closed);
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        drop(guard);
        let failed = std::mem::take(&mut *batch.failed.lock());
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::ProvideFailed { failed })
        }
    }

    async fn worker(self: Arc<Self>, id: usize) {
        while !self.closed.load(Ordering::Acquire) {
            let notified = self.wake.notified();
            let (jobs, wake_at) = self.next_job();
            match jobs.first().map(Job::is_other) {
                Some(other) => {
                    tracing::debug!(worker = id, ?jobs, "job");
                    // The slices of a provide job are sent side by side.
                    futures::future::join_all(jobs.into_iter().map(|job| self.run(job))).await;
                    let mut shared = self.shared.lock();
                    shared.busy = shared.busy.saturating_sub(1);
                    if other {
                        shared.busy_other = shared.busy_other.saturating_sub(1);
                    }
                    drop(shared);
                    self.wake.notify_waiters();
                }
                None => {
                    let now = self.now();
                    let secs = wake_at.map_or(60, |t| t.saturating_sub(now).clamp(1, 60));
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep(Duration::from_secs(secs)) => {}
                    }
                }
            }
        }
    }

    /// The next job (several slices' provides, sent side by side, or one other job), or
    /// when to look again.
    fn next_job(&self) -> (Vec<Job>, Option<UnixSecs>) {
        let now = self.now();
        let mut shared = self.shared.lock();
        if shared.connectivity != Connectivity::Online {
            // Disconnected: nothing is sent but one probe a minute; keys are still accepted,
            // and what falls due meanwhile waits for the network to answer again.
            let probe_at = shared.last_probe.saturating_add(PROBE_EVERY);
            if shared.probing || now < probe_at {
                return (Vec::new(), Some(probe_at));
            }
            shared.probing = true;
            shared.last_probe = now;
            shared.busy += 1;
            return (vec![Job::Probe], None);
        }
        let schedule = shared.schedule;
        let mut cursor = shared.cursor;
        let due = schedule.next_due(&mut cursor, now);
        // A walk far behind skips ahead once, whether or not a slice is claimed now.
        shared.cursor = cursor;
        let oldest_retry = shared
            .state
            .retries
            .iter()
            .filter(|(slice, r)| r.at <= now && !shared.retrying.contains(*slice))
            .min_by_key(|(slice, r)| (r.at, **slice))
            .map(|(slice, r)| (*slice, r.at));
        // Slices whose provide runs now wait for it to end (a second job would learn the
        // same region again), and so do slices the walk has due: their reprovide sends
        // every key of them, the queued ones first.
        let queued = || {
            shared
                .queue
                .iter()
                .filter(|(slice, _)| {
                    !shared.providing.contains_key(*slice) && !schedule.is_due(&cursor, slice, now)
                })
                .map(|(slice, q)| (*slice, q.since))
        };
        let oldest_queued = queued().min_by_key(|(slice, since)| (*since, *slice));
        let waiting = Waiting {
            retry: oldest_retry.map(|(_, at)| at),
            provide: oldest_queued.map(|(_, since)| since),
            reprovide: due.map(|(_, at)| at),
        };
        let workers = Workers {
            total: self.config.workers,
            reserved: self.config.reserved_for_schedule,
            busy_other: shared.busy_other,
        };
        let chosen = choose(now, waiting, workers);
        if let (Some(JobKind::Retry), Some((slice, _))) = (chosen, oldest_retry) {
            let (keys, unsent) = shared
                .state
                .retries
                .get(&slice)
                .map_or((Vec::new(), Unsent::All), |r| (r.keys.clone(), r.unsent));
            shared.busy += 1;
            shared.busy_other += 1;
            shared.retrying.insert(slice);
            let job = Job::Retry {
                slice,
                keys,
                unsent,
            };
            return (vec![job], None);
        }
        if let Some(JobKind::Provide) = chosen {
            let n = slices_per_job(self.config.provide_slices_per_job, shared.size.samples());
            let slices = oldest_slices(queued(), n);
            let jobs: Vec<Job> = slices
                .into_iter()
                .filter_map(|slice| {
                    let (keys, whole, marked) = take_queued(&mut shared, slice)?;
                    Some(Job::Provide {
                        slice,
                        keys,
                        whole,
                        marked,
                    })
                })
                .collect();
            if !jobs.is_empty() {
                shared.busy += 1;
                shared.busy_other += 1;
                return (jobs, None);
            }
        }
        if let (Some(JobKind::Reprovide), Some((slice, _))) = (chosen, due) {
            let cycle = cursor.cycle;
            schedule.complete(&mut cursor, &slice);
            if cursor.cycle != cycle {
                // The walk reached the end of the keyspace: a cycle is done.
                shared.last_cycle_secs = Some(now.saturating_sub(shared.cycle_started));
                shared.cycle_started = now;
                shared.last_cycle_sent = shared.cycle_sent;
                shared.cycle_sent = (0, 0);
                shared.cycle_tried = (0, shared.cycle_tried.0);
            }
            shared.cursor = cursor;
            shared.claimed.insert((cycle, slice));
            shared.busy += 1;
            // The reprovide sends every key of the slice: the keys queued there are sent
            // with it (first), not by a provide job of their own after it.
            let mut within = queued_within(&slice, shared.queue.range(slice..).map(|(p, _)| p));
            within.retain(|p| !shared.providing.contains_key(p));
            let mut keys = Vec::new();
            let mut taken = Vec::new();
            for p in within {
                if let Some((held, _, _)) = take_queued(&mut shared, p) {
                    keys.extend(held);
                    taken.push(p);
                }
            }
            let job = Job::Reprovide {
                slice,
                cycle,
                keys,
                taken,
            };
            return (vec![job], None);
        }
        let next = shared
            .state
            .retries
            .iter()
            .filter(|(slice, _)| !shared.retrying.contains(*slice))
            .map(|(_, r)| r.at)
            .chain([schedule.next_due_time(&shared.cursor)])
            .min();
        (Vec::new(), next)
    }

    /// One FIND_NODE to a known server; an answer brings the provider back online.
    async fn probe(&self) {
        let now = self.now();
        let target = Key::hash(&now.to_be_bytes());
        let peer = self
            .parts
            .table
            .closest_peers(&target, 1)
            .pop()
            .or_else(|| {
                let shared = self.shared.lock();
                let servers = shared.cache.latest_servers();
                servers.get(now as usize % servers.len().max(1)).cloned()
            });
        let answered = match peer {
            Some(peer) => {
                self.counters.find_node.fetch_add(1, Ordering::Relaxed);
                let sent = self.parts.network.request(
                    &peer,
                    Request::FindNode {
                        key: target.as_bytes().to_vec(),
                    },
                );
                matches!(
                    tokio::time::timeout(self.config.request_timeout, sent).await,
                    Ok(Ok(Response::FindNode { .. }))
                )
            }
            None => false,
        };
        let now = self.now();
        let mut shared = self.shared.lock();
        shared.probing = false;
        if answered {
            tracing::info!("the network answers again; resuming");
            shared.last_answer = now;
            shared.set_connectivity(Connectivity::Online, now);
            drop(shared);
            self.wake.notify_waiters();
        } else {
            shared.last_probe = now;
            let connectivity = self.disconnected(&shared, now);
            shared.set_connectivity(connectivity, now);
        }
    }

    /// Disconnected or offline, by how long nothing answered.
    fn disconnected(&self, shared: &Shared, now: UnixSecs) -> Connectivity {
        if now.saturating_sub(shared.last_answer) >= self.config.offline_after.as_secs() {
            Connectivity::Offline
        } else {
            Connectivity::Disconnected
        }
    }

    async fn run(&self, mut job: Job) {
        // Keys already in memory (queued, or a retry's), and which keys to read from the
        // keystore too (a page at a time, each sent before the next is read).
        let mut wanted_only: Option<&Marker> = None;
        let (slice, first, batches, from) = match &mut job {
            Job::Provide {
                slice,
                keys,
                whole,
                marked,
            } => {
                let (first, batches) = first_keys(std::mem::take(keys));
                let from = if *whole {
                    Unsent::All
                } else if let Some(marker) = marked {
                    marker.seal();
                    wanted_only = Some(marker);
                    Unsent::All
                } else {
                    Unsent::Nothing
                };
                (*slice, first, batches, from)
            }
            Job::Probe => return self.probe().await,
            Job::Retry {
                slice,
                keys,
                unsent,
            } => (*slice, keys.clone(), HashMap::new(), *unsent),
            Job::Reprovide { slice, keys, .. } => {
                let (first, batches) = first_keys(std::mem::take(keys));
                (*slice, first, batches, Unsent::All)
            }
        };
        // One deadline and one set of peers given up on for the whole slice, over all its
        // pages.
        let deadline = tokio::time::Instant::now() + self.config.slice_deadline;
        let mut excluded = HashSet::new();
        let mut outcome = JobOutcome::default();
        let started = tokio::time::Instant::now();
        let page_len = self.config.scan_page;
        // The keys held in memory go a page at a time too, so that what a job holds while it
        // sends (per key and per peer) is bounded by the page, not by the keys queued.
        for keys in first.chunks(page_len) {
            let prior = outcome.exploration.take();
            let page = self
                .provide_slice(slice, keys, prior, deadline, &mut excluded)
                .await;
            for (weak, ok) in keys.iter().zip(&page.ok) {
                if let Some(bs) = batches.get(&weak.key) {
                    for b in bs {
                        b.report(weak.key, *ok);
                    }
                }
            }
            outcome.absorb(keys, page);
        }
        let mut after = match from {
            Unsent::Nothing => None,
            Unsent::All => Some(None),
            Unsent::After(key) => Some(Some(key)),
        };
        let already: HashSet<&Multihash> = first.iter().map(|w| &w.key).collect();
        while let Some(start) = after {
            if tokio::time::Instant::now() >= deadline {
                tracing::info!(
                    %slice,
                    "slice deadline reached; the rest of the slice is retried later"
                );
                outcome.unsent = start.map_or(Unsent::All, Unsent::After);
                break;
            }
            let page = match self.parts.keystore.scan(&slice, start.as_ref(), page_len) {
                Ok(page) => page,
                Err(e) => {
                    let errors = self.counters.scan_errors.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(
                        %slice,
                        error = %e,
                        errors,
                        "keystore scan failed; the slice is retried later"
                    );
                    outcome.unsent = start.map_or(Unsent::All, Unsent::After);
                    break;
                }
            };
            let last_page = page.len() < page_len;
            let last_key = page.last().map(|(key, _)| *key);
            let keys: Vec<WeakKey> = page
                .into_iter()
                .filter(|(kad, _)| wanted_only.is_none_or(|m| m.contains(kad)))
                .map(|(_, mh)| mh)
                .filter(|mh| !already.contains(mh))
                .map(|key| WeakKey {
                    key,
                    reached: Vec::new(),
                })
                .collect();
            if !keys.is_empty() {
                let prior = outcome.exploration.take();
                let sent = self
                    .provide_slice(slice, &keys, prior, deadline, &mut excluded)
                    .await;
                outcome.absorb(&keys, sent);
            }
            after = match last_key {
                Some(key) if !last_page => Some(Some(key)),
                _ => None,
            };
        }
        let now = self.now();
        let failed = outcome.failed;
        let c = &self.counters;
        c.region_jobs.fetch_add(1, Ordering::Relaxed);
        c.region_job_millis.fetch_add(
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        c.record_holders
            .fetch_add(outcome.holders, Ordering::Relaxed);
        self.counters
            .keys_provided
            .fetch_add(outcome.keys - failed, Ordering::Relaxed);
        self.counters
            .keys_failed
            .fetch_add(failed, Ordering::Relaxed);
        let mut shared = self.shared.lock();
        shared.cycle_sent.0 += outcome.sent;
        shared.cycle_sent.1 += outcome.send_failures;
        shared.cycle_tried.0 += outcome.peers_tried;
        if outcome.answered {
            shared.last_answer = now;
            shared.set_connectivity(Connectivity::Online, now);
        } else if outcome.keys > 0 {
            if shared.connectivity == Connectivity::Online {
                tracing::warn!("no server answered; sending nothing but a probe a minute");
                shared.last_probe = now;
            }
            let connectivity = self.disconnected(&shared, now);
            shared.set_connectivity(connectivity, now);
        }
        let whole = matches!(
            job,
            Job::Reprovide { .. } | Job::Provide { whole: true, .. }
        );
        let whole = whole && outcome.unsent == Unsent::Nothing;
        shared.region_times.record(&slice, whole, now);
        self.settle_retry(&mut shared, &job, slice, &mut outcome, now);
        match job {
            Job::Reprovide { cycle, taken, .. } => {
                shared.claimed.remove(&(cycle, slice));
                for p in taken {
                    provided(&mut shared, p);
                }
            }
            Job::Retry { .. } => {
                shared.retrying.remove(&slice);
            }
            Job::Provide { .. } => provided(&mut shared, slice),
            Job::Probe => {}
        }
        if let Some((ex, _)) = &outcome.exploration {
            shared.size.observe(ex);
        }
        self.resize(&mut shared);
        if let Some((ex, learned)) = outcome.exploration {
            shared.cache.insert(ex, learned);
        }
        if let Err(e) = self.persist(&shared) {
            let errors = c.state_save_errors.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(error = %e, errors, "could not persist the sweep state");
        }
        drop(shared);
        self.wake.notify_waiters();
    }

    /// Updates the retries of `slice` after `job`: what a retry job took is settled by it
    /// (unless another job widened it meanwhile), and what this job failed is added: the keys
    /// that reached too few servers (with the servers they reached), and the keys not sent.
    fn settle_retry(
        &self,
        shared: &mut Shared,
        job: &Job,
        slice: Prefix,
        outcome: &mut JobOutcome,
        now: UnixSecs,
    ) {
        let mut old = shared.state.retries.remove(&slice);
        let since = old.as_ref().map_or(now, |o| o.since);
        if let (Some(old), Job::Retry { keys, unsent, .. }) = (old.as_mut(), job) {
            let settled: HashSet<&Multihash> = keys.iter().map(|w| &w.key).collect();
            old.keys.retain(|w| !settled.contains(&w.key));
            if old.unsent == *unsent {
                old.unsent = Unsent::Nothing;
            }
        }
        let old = old.filter(|o| !o.keys.is_empty() || o.unsent != Unsent::Nothing);
        let failed_now = outcome.failed > 0 || outcome.unsent != Unsent::Nothing;
        if !failed_now && old.is_none() {
            return;
        }
        let mut keys = std::mem::take(&mut outcome.weak);
        let mut unsent = outcome.unsent;
        if outcome.weak_overflow {
            unsent = Unsent::All;
        }
        let mut at = now.saturating_add(self.config.retry_after.as_secs());
        if let Some(old) = old {
            if !failed_now {
                at = old.at;
            }
            unsent = unsent.or(old.unsent);
            let known: HashSet<Multihash> = keys.iter().map(|w| w.key).collect();
            keys.extend(old.keys.into_iter().filter(|w| !known.contains(&w.key)));
        }
        let elsewhere: usize = shared.state.retries.values().map(|r| r.keys.len()).sum();
        if unsent == Unsent::All
            || keys.len() > MAX_RETRY_KEYS
            || elsewhere + keys.len() > MAX_RETRY_KEYS_IN_ALL
        {
            keys.clear();
            unsent = Unsent::All;
        }
        let retry = SliceRetry {
            at,
            since,
            keys,
            unsent,
        };
        shared.state.retries.insert(slice, retry);
    }

    /// Moves to the slice length of the network size estimate, never below what the routing
    /// table shows. Slices get shorter at once; they get longer (the network shrank) only
    /// once a few explorations back it.
    fn resize(&self, shared: &mut Shared) {
        let k = self.config.k;
        // Once explorations have measured the network, the table's inference from the peers
        // closest to our id counts for at most twice what they measured (never below the
        // peers it holds): peer ids made to share many bits with ours would inflate it.
        let inferred = table_servers(&self.parts.table, &self.parts.local, k);
        let shown = if shared.size.samples() > 0 {
            inferred
                .min(shared.size.servers(0).saturating_mul(2))
                .max(self.parts.table.len() as u64)
        } else {
            inferred
        };
        let current = shared.schedule.slice_len();
        let estimated = shared.size.slice_len(shown, k);
        let len = if shared.size.samples() >= 4 {
            estimated
        } else {
            estimated.max(current)
        };
        if len != current {
            tracing::info!(
                servers = shared.size.servers(shown),
                slice_len = len,
                "network size re-estimated"
            );
            shared.schedule = shared.schedule.with_slice_len(len);
        }
    }

    fn stats(&self) -> ProviderStats {
        let now = self.now();
        let shared = self.shared.lock();
        let c = &self.counters;
        let explored = c.regions_explored.load(Ordering::Relaxed);
        let progress = shared.progress();
        let oldest_retry_secs = shared
            .state
            .retries
            .values()
            .map(|r| now.saturating_sub(r.since))
            .max()
            .unwrap_or(0);
        let next_slice = shared.schedule.slice_at(&shared.cursor.next);
        ProviderStats {
            keys: self.parts.keystore.count().ok(),
            slices: 1u64 << shared.schedule.slice_len().min(63),
            regions_explored: explored,
            average_region_prefix_len: if explored == 0 {
                0.0
            } else {
                c.region_prefix_bits.load(Ordering::Relaxed) as f64 / explored as f64
            },
            keys_queued: shared.queued_keys as u64,
            keys_queued_in_memory: shared.queued_in_memory as u64,
            oldest_queued_secs: shared
                .queue
                .values()
                .map(|q| now.saturating_sub(q.since))
                .max()
                .unwrap_or(0),
            regions_queued: (shared.queue.len() + shared.state.retries.len()) as u64,
            workers: self.config.workers,
            workers_busy: shared.busy,
            records_sent_this_cycle: shared.cycle_sent.0,
            peers_failed_this_cycle: shared.cycle_sent.1,
            records_sent_last_cycle: shared.last_cycle_sent.0,
            peers_failed_last_cycle: shared.last_cycle_sent.1,
            last_cycle_secs: shared.last_cycle_secs,
            behind_schedule_secs: shared.schedule.lag(&progress, now).max(oldest_retry_secs),
            oldest_retry_secs,
            connectivity: shared.connectivity,
            find_node_sent: c.find_node.load(Ordering::Relaxed),
            add_provider_sent: c.add_provider.load(Ordering::Relaxed),
            add_provider_failed: c.add_provider_failed.load(Ordering::Relaxed),
            provide_batches_sent: c.batches_sent.load(Ordering::Relaxed),
            batch_records_sent: c.batch_records.load(Ordering::Relaxed),
            batch_records_stored: c.batch_stored.load(Ordering::Relaxed),
            batch_records_refused: c.batch_refused.load(Ordering::Relaxed),
            provide_batches_failed: c.batches_failed.load(Ordering::Relaxed),
            provide_batches_deferred: c.batches_deferred.load(Ordering::Relaxed),
            provide_batch_waits: c.batch_waits.load(Ordering::Relaxed),
            provide_batch_fallbacks: c.batch_fallbacks.load(Ordering::Relaxed),
            keys_provided: c.keys_provided.load(Ordering::Relaxed),
            keys_failed: c.keys_failed.load(Ordering::Relaxed),
            keystore_scan_errors: c.scan_errors.load(Ordering::Relaxed),
            cycle: progress.cycle,
            started_at: shared.started,
            connectivity_since: shared.connectivity_since,
            regions_queued_provide: shared.queue.len() as u64,
            regions_queued_retry: shared.state.retries.len() as u64,
            regions_due: shared.schedule.slices_due(&shared.cursor, now),
            next_region: Some(next_slice.to_string()),
            next_region_due: Some(shared.schedule.next_due_time(&shared.cursor)),
            workers_reserved: self.config.reserved_for_schedule,
            cycle_started_at: Some(shared.cycle_started),
            region_jobs: c.region_jobs.load(Ordering::Relaxed),
            region_job_millis: c.region_job_millis.load(Ordering::Relaxed),
            region_servers: c.region_servers.load(Ordering::Relaxed),
            record_holders: c.record_holders.load(Ordering::Relaxed),
            peers_tried_this_cycle: shared.cycle_tried.0,
            peers_tried_last_cycle: shared.cycle_tried.1,
            state_save_errors: c.state_save_errors.load(Ordering::Relaxed),
            interval_secs: shared.schedule.interval(),
            region_times: shared.region_times.list(),
        }
    }
}

/// Seconds between two probes while disconnected.
const PROBE_EVERY: u64 = 60;

/// Every slice of `len` bits (at most 2^16 of them).
fn all_slices(len: usize) -> BTreeSet<Prefix> {
    let len = len.min(16);
    (0u32..(1 << len))
        .map(|i| {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&(i << (32 - len.max(1))).to_be_bytes());
            Prefix::new(&Key::from_bytes(bytes), len)
        })
        .collect()
}

fn dedup(keys: &[Multihash]) -> Vec<Multihash> {
    let mut seen = HashSet::new();
    keys.iter().filter(|k| seen.insert(**k)).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_holds_what_was_marked_and_nothing_else() {
        let key = |i: u32| Key::hash(&i.to_be_bytes());
        let mut marker = Marker::default();
        for i in 0..20_000 {
            marker.insert(&key(i));
        }
        marker.seal();
        assert_eq!(marker.count, 20_000);
        assert!((0..20_000).all(|i| marker.contains(&key(i))));
        // 20,000 fingerprints of 32 bits: of 100,000 other keys, about one in two thousand
        // would match by chance.
        let others = (20_000..120_000)
            .filter(|i| marker.contains(&key(*i)))
            .count();
        assert!(others <= 5, "{others} of 100,000 others match");
        assert_eq!(marker.mark_all(), 20_000);
        assert!(marker.contains(&key(200_000)));
    }
}
