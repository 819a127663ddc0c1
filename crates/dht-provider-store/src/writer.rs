//! The [`GroupWriter`]: many callers' provider records, one write and one commit.
//!
//! A DHT server stores one provider record per inbound ADD_PROVIDER. Called one by one, each
//! is a store write of its own; through a `GroupWriter` the records of concurrent callers
//! are queued and one writer thread commits all that arrived during the previous commit as
//! one write ([`ProviderStore::add_provider_entries`]: one RocksDB `WriteBatch`, one WAL
//! write, at most one fsync). Each caller gets its own answer after the commit, as a future
//! ([`WriteTicket`]) or by blocking ([`WriteTicket::wait`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use futures::channel::oneshot;
use parking_lot::{Condvar, Mutex};

use crate::codec::check_provider;
use crate::{
    Key, Keystore, Multihash, Prefix, ProviderEntry, ProviderOutcome, ProviderRecord,
    ProviderStore, Record, SourceGroup, StoreError, UnixSecs, ValueStore,
};

/// What a submission's answer waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Durability {
    /// The commit is synced before the answer, as [`ProviderStore::add_providers`] syncs (for
    /// [`RocksStore`](crate::RocksStore): an fsync when
    /// [`Config::sync_writes`](crate::Config::sync_writes) is on). For what the node
    /// acknowledges, e.g. a batch answer.
    Durable,
    /// The commit is not synced for this submission (it is if a commit-mate asked): the
    /// records survive the process being killed, not a machine crash. For a plain
    /// ADD_PROVIDER, which nobody is told was stored.
    Unsynced,
}

/// Settings of a [`GroupWriter`].
///
/// ```
/// use dht_provider_store::WriterConfig;
/// let config = WriterConfig::default().with_max_queued_records(10_000).with_max_commit_records(1_000);
/// assert_eq!(config.max_queued_records, 10_000);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterConfig {
    /// The most records queued and not yet taken by a commit (default 65,536). A submission
    /// that would pass it is refused with [`StoreError::Busy`]: what senders can make the
    /// node hold is bounded.
    pub max_queued_records: usize,
    /// The most records one commit takes (default 8,192; a larger single submission is
    /// committed alone).
    pub max_commit_records: usize,
    /// Whether [`ProviderStore::add_inbound_provider`] waits for its record's commit
    /// (default `true`: a read right after sees the record, as with the store itself).
    /// Off, it returns once the record is queued: an inbound ADD_PROVIDER has no answer,
    /// so nobody waits on it, and no thread is held per request while the commit runs; the
    /// record is readable a commit later, and a failed commit is logged.
    pub inbound_waits: bool,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_queued_records: 65_536,
            max_commit_records: 8192,
            inbound_waits: true,
        }
    }
}

impl WriterConfig {
    /// `Ok` when `max_queued_records` and `max_commit_records` are above zero.
    ///
    /// # Errors
    /// [`InvalidSetting`](dht_proto::InvalidSetting) naming the first that is zero.
    pub fn validate(&self) -> Result<(), dht_proto::InvalidSetting> {
        dht_proto::InvalidSetting::at_least_one(
            "max_queued_records",
            self.max_queued_records as u64,
        )?;
        dht_proto::InvalidSetting::at_least_one(
            "max_commit_records",
            self.max_commit_records as u64,
        )
    }

    /// Sets [`WriterConfig::max_queued_records`] (at least 1).
    #[must_use]
    pub fn with_max_queued_records(mut self, n: usize) -> Self {
        self.max_queued_records = n;
        self
    }

    /// Sets [`WriterConfig::max_commit_records`] (at least 1).
    #[must_use]
    pub fn with_max_commit_records(mut self, n: usize) -> Self {
        self.max_commit_records = n;
        self
    }

    /// Sets [`WriterConfig::inbound_waits`].
    #[must_use]
    pub fn with_inbound_waits(mut self, on: bool) -> Self {
        self.inbound_waits = on;
        self
    }
}

/// Counters of a [`GroupWriter`] since it started.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Commits made (store writes).
    pub commits: u64,
    /// Commits made durable (at least one submission asked for [`Durability::Durable`]).
    pub synced_commits: u64,
    /// Submissions answered.
    pub submissions: u64,
    /// Records committed (stored, refused by the cap, or refused alone).
    pub records: u64,
    /// The most records one commit took.
    pub largest_commit: u64,
    /// Submissions refused with [`StoreError::Busy`].
    pub busy: u64,
    /// Records queued now, not yet taken by a commit.
    pub queued_records: usize,
}

/// The answer to one submission: a result per record, in order (see
/// [`ProviderStore::add_provider_entries`]), or the commit's error (nothing was stored).
pub type WriteAnswer = Result<Vec<Result<ProviderOutcome, StoreError>>, StoreError>;

/// One submission's answer to come: a future, or [`WriteTicket::wait`] to block for it.
///
/// Dropping it does not withdraw the submission: the records are written all the same (a
/// plain ADD_PROVIDER has nobody to tell).
#[derive(Debug)]
#[must_use = "the answer says whether the records were stored; drop it only if nobody is told"]
pub struct WriteTicket {
    /// The answers of the parts, in order (one per submission), and what they gave so far.
    parts: VecDeque<oneshot::Receiver<WriteAnswer>>,
    got: Vec<Result<ProviderOutcome, StoreError>>,
}

impl WriteTicket {
    /// Blocks the calling thread until the answer (not from an async task: `.await` it
    /// there).
    pub fn wait(self) -> WriteAnswer {
        futures::executor::block_on(self)
    }

    /// A ticket already answered with `answer` (a store that wrote at once).
    pub fn ready(answer: WriteAnswer) -> Self {
        let (tx, rx) = oneshot::channel();
        // The receiver is held here: the send cannot fail.
        let _ = tx.send(answer);
        WriteTicket::of(rx)
    }

    fn of(rx: oneshot::Receiver<WriteAnswer>) -> Self {
        WriteTicket {
            parts: VecDeque::from([rx]),
            got: Vec::new(),
        }
    }

    /// One ticket for several, answered with their outcomes one after the other, or the
    /// first error of a write.
    fn join(tickets: Vec<WriteTicket>) -> Self {
        WriteTicket {
            parts: tickets.into_iter().flat_map(|t| t.parts).collect(),
            got: Vec::new(),
        }
    }
}

impl Future for WriteTicket {
    type Output = WriteAnswer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WriteAnswer> {
        let this = &mut *self;
        while let Some(rx) = this.parts.front_mut() {
            match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(Ok(outcomes))) => {
                    this.got.extend(outcomes);
                    this.parts.pop_front();
                }
                Poll::Ready(Ok(Err(e))) => return Poll::Ready(Err(e)),
                // The writer thread ended without answering (it panicked).
                Poll::Ready(Err(oneshot::Canceled)) => return Poll::Ready(Err(StoreError::Closed)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(std::mem::take(&mut this.got)))
    }
}

/// A submission waiting for its commit.
struct Pending {
    records: Vec<ProviderRecord>,
    group: Option<SourceGroup>,
    durable: bool,
    reply: oneshot::Sender<WriteAnswer>,
}

/// The queue, under [`Shared::queue`].
struct Queue {
    items: VecDeque<Pending>,
    /// Records in `items`.
    records: usize,
    /// No more submissions: the writer thread drains `items` and ends.
    closed: bool,
}

/// What submitters and the writer thread share.
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a submission is queued or the writer is closed.
    ready: Condvar,
    config: WriterConfig,
    commits: AtomicU64,
    synced_commits: AtomicU64,
    submissions: AtomicU64,
    records: AtomicU64,
    largest_commit: AtomicU64,
    busy: AtomicU64,
}

/// A grouped writer of provider records in front of a [`ProviderStore`] (made for
/// [`RocksStore`](crate::RocksStore), whose
/// [`add_provider_entries`](ProviderStore::add_provider_entries) is one `WriteBatch`).
///
/// Submissions ([`GroupWriter::submit`], [`GroupWriter::submit_inbound`]) never block: they
/// are queued, or refused with [`StoreError::Busy`] when
/// [`WriterConfig::max_queued_records`] would be passed. One thread commits what is queued,
/// up to [`WriterConfig::max_commit_records`] at a time, as one write: submissions that
/// arrive while a commit runs share the next one. The rules per key are the store's
/// ([`ProviderStore::add_providers`] for records without a group,
/// [`ProviderStore::add_inbound_provider`] for those with one), in submission order. A
/// commit is synced if any of its submissions is [`Durability::Durable`]; every answer is
/// sent after the commit (and its sync) and after the store's cache shows it. A record that
/// cannot be stored is refused alone.
///
/// Dropping the writer commits and answers everything queued, then ends the thread.
///
/// It is a [`ProviderStore`] too (each call submits and waits), so it can stand where a
/// store is expected; reads go straight to the store.
///
/// ```
/// use std::sync::Arc;
/// use dht_provider_store::{
///     Config, Durability, GroupWriter, ProviderOutcome, ProviderStore, RocksStore, SourceGroup,
///     WriterConfig,
/// };
/// use dht_proto::{PeerId, ProviderRecord};
///
/// let dir = tempfile::tempdir()?;
/// let store = Arc::new(RocksStore::open(dir.path(), Config::small())?);
/// let writer = GroupWriter::new(Arc::clone(&store), WriterConfig::default())?;
///
/// let record = ProviderRecord {
///     key: b"\x12\x20some multihash bytes..........".to_vec(),
///     provider: PeerId::random(),
///     addrs: vec!["/ip4/192.0.2.1/tcp/4001".parse()?],
///     received_at: 1_700_000_000,
/// };
/// // A batch a peer sent from 192.0.2.0/24, answered once durable.
/// let group = SourceGroup::from_bytes(&[4, 192, 0, 2]);
/// let ticket = writer.submit(vec![record.clone()], Some(group), Durability::Durable)?;
/// let outcomes: Result<Vec<ProviderOutcome>, _> = ticket.wait()?.into_iter().collect();
/// assert_eq!(outcomes?, vec![ProviderOutcome::Stored]);
/// assert_eq!(store.providers(&record.key, 20, 1_700_000_060)?, vec![record]);
/// assert_eq!(writer.stats().synced_commits, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct GroupWriter<S: ProviderStore + 'static> {
    store: Arc<S>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl<S: ProviderStore + 'static> std::fmt::Debug for GroupWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWriter")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S: ProviderStore + 'static> GroupWriter<S> {
    /// A writer in front of `store`, with its thread started.
    ///
    /// Errors: [`StoreError::InvalidSetting`] if a setting is zero
    /// ([`WriterConfig::validate`]), [`StoreError::Io`] if the thread cannot be started.
    pub fn new(store: Arc<S>, config: WriterConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                records: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            config,
            commits: AtomicU64::new(0),
            synced_commits: AtomicU64::new(0),
            submissions: AtomicU64::new(0),
            records: AtomicU64::new(0),
            largest_commit: AtomicU64::new(0),
            busy: AtomicU64::new(0),
        });
        let thread = {
            let store = Arc::clone(&store);
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("provider-writer".into())
                .spawn(move || run(&*store, &shared))?
        };
        Ok(GroupWriter {
            store,
            shared,
            thread: Some(thread),
        })
    }

    /// The store written to.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Queues `records`, each from `group` (`None`: stored as
    /// [`ProviderStore::add_providers`] stores them; `Some`: as
    /// [`ProviderStore::add_inbound_provider`] does), and returns the ticket of the answer.
    ///
    /// Errors (nothing queued): [`StoreError::Busy`] when the queue cannot take them now,
    /// [`StoreError::InvalidRecord`] for a submission larger than the whole queue
    /// ([`WriterConfig::max_queued_records`]), [`StoreError::Closed`] once the writer is
    /// closing. An empty submission is answered at once.
    pub fn submit(
        &self,
        records: Vec<ProviderRecord>,
        group: Option<SourceGroup>,
        durability: Durability,
    ) -> Result<WriteTicket, StoreError> {
        if records.is_empty() {
            return Ok(WriteTicket::ready(Ok(Vec::new())));
        }
        let limit = self.shared.config.max_queued_records;
        if records.len() > limit {
            return Err(StoreError::invalid(format!(
                "a submission of {} records, more than the write queue holds ({limit})",
                records.len()
            )));
        }
        let (reply, rx) = oneshot::channel();
        {
            let mut q = self.shared.queue.lock();
            if q.closed {
                return Err(StoreError::Closed);
            }
            if q.records + records.len() > limit {
                self.shared.busy.fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::Busy {
                    queued: q.records,
                    limit,
                });
            }
            q.records += records.len();
            q.items.push_back(Pending {
                records,
                group,
                durable: durability == Durability::Durable,
                reply,
            });
        }
        self.shared.ready.notify_one();
        Ok(WriteTicket::of(rx))
    }

    /// Queues the record of one inbound ADD_PROVIDER from `group`, unsynced (nobody is told
    /// it was stored): [`GroupWriter::submit`] of one record. The ticket may be dropped.
    pub fn submit_inbound(
        &self,
        record: ProviderRecord,
        group: SourceGroup,
    ) -> Result<WriteTicket, StoreError> {
        self.submit(vec![record], Some(group), Durability::Unsynced)
    }

    /// The counters so far.
    pub fn stats(&self) -> WriterStats {
        let s = &*self.shared;
        WriterStats {
            commits: s.commits.load(Ordering::Relaxed),
            synced_commits: s.synced_commits.load(Ordering::Relaxed),
            submissions: s.submissions.load(Ordering::Relaxed),
            records: s.records.load(Ordering::Relaxed),
            largest_commit: s.largest_commit.load(Ordering::Relaxed),
            busy: s.busy.load(Ordering::Relaxed),
            queued_records: s.queue.lock().records,
        }
    }

    /// Submits `records` (each checked first: one that cannot be stored refuses them all,
    /// as [`ProviderStore::add_providers`] does) and waits for the commit.
    fn submit_all_or_nothing(
        &self,
        records: &[ProviderRecord],
        group: Option<SourceGroup>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        for r in records {
            check_provider(r)?;
        }
        for outcome in self.submit(records.to_vec(), group, durability)?.wait()? {
            outcome?;
        }
        Ok(())
    }
}

impl<S: ProviderStore + 'static> Drop for GroupWriter<S> {
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.shared.ready.notify_all();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the provider writer thread panicked");
        }
    }
}

/// The writer thread: commits what is queued until the writer is closed and the queue empty.
fn run<S: ProviderStore + ?Sized>(store: &S, shared: &Shared) {
    // However the loop ends (a panicking store too), later submissions are refused and
    // queued ones answered, never left waiting.
    struct Ending<'a>(&'a Shared);
    impl Drop for Ending<'_> {
        fn drop(&mut self) {
            let mut q = self.0.queue.lock();
            q.closed = true;
            q.records = 0;
            for p in q.items.drain(..) {
                let _ = p.reply.send(Err(StoreError::Closed));
            }
        }
    }
    let _ending = Ending(shared);
    loop {
        let taken = {
            let mut q = shared.queue.lock();
            while q.items.is_empty() && !q.closed {
                shared.ready.wait(&mut q);
            }
            if q.items.is_empty() {
                return;
            }
            take_commit(&mut q, shared.config.max_commit_records)
        };
        commit(store, shared, taken);
    }
}

/// The submissions of the next commit, in queue order: at least one, then as many as fit in
/// `max_records`.
fn take_commit(q: &mut Queue, max_records: usize) -> Vec<Pending> {
    let mut taken: Vec<Pending> = Vec::new();
    let mut n = 0usize;
    while let Some(next) = q.items.front() {
        let len = next.records.len();
        if !taken.is_empty() && n + len > max_records {
            break;
        }
        let Some(p) = q.items.pop_front() else { break };
        n += len;
        taken.push(p);
    }
    q.records = q.records.saturating_sub(n);
    taken
}

/// Writes `taken` as one [`ProviderStore::add_provider_entries`] and answers each.
fn commit<S: ProviderStore + ?Sized>(store: &S, shared: &Shared, taken: Vec<Pending>) {
    let durable = taken.iter().any(|p| p.durable);
    let entries: Vec<ProviderEntry<'_>> = taken
        .iter()
        .flat_map(|p| {
            p.records.iter().map(move |record| ProviderEntry {
                record,
                group: p.group,
            })
        })
        .collect();
    let n = entries.len();
    let result = store
        .add_provider_entries(&entries, durable)
        .and_then(|outcomes| {
            if outcomes.len() == n {
                Ok(outcomes)
            } else {
                Err(StoreError::WrongOutcomeCount {
                    records: n,
                    outcomes: outcomes.len(),
                })
            }
        });
    drop(entries);
    shared.commits.fetch_add(1, Ordering::Relaxed);
    if durable {
        shared.synced_commits.fetch_add(1, Ordering::Relaxed);
    }
    shared
        .submissions
        .fetch_add(taken.len() as u64, Ordering::Relaxed);
    shared.records.fetch_add(n as u64, Ordering::Relaxed);
    shared.largest_commit.fetch_max(n as u64, Ordering::Relaxed);
    match result {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for p in taken {
                let mine: Vec<_> = outcomes.by_ref().take(p.records.len()).collect();
                // A receiver dropped its ticket: nobody to tell.
                let _ = p.reply.send(Ok(mine));
            }
        }
        Err(err) => {
            tracing::warn!(%err, records = n, "a grouped provider write failed");
            for p in taken {
                let _ = p.reply.send(Err(err.duplicate()));
            }
        }
    }
}

/// Writes go through the queue and wait for their commit; reads go to the store.
impl<S: ProviderStore + 'static> ProviderStore for GroupWriter<S> {
    fn add_providers(&self, batch: &[ProviderRecord]) -> Result<(), StoreError> {
        self.submit_all_or_nothing(batch, None, Durability::Durable)
    }

    fn add_providers_unsynced(&self, batch: &[ProviderRecord]) -> Result<(), StoreError> {
        self.submit_all_or_nothing(batch, None, Durability::Unsynced)
    }

    /// Waits for the record's commit, unless [`WriterConfig::inbound_waits`] is off: then
    /// it returns once the record is queued. A refusal to queue ([`StoreError::Busy`],
    /// [`StoreError::Closed`]) is returned either way.
    fn add_inbound_provider(
        &self,
        record: &ProviderRecord,
        group: SourceGroup,
    ) -> Result<(), StoreError> {
        if !self.shared.config.inbound_waits {
            let _nobody_waits = self.submit_inbound(record.clone(), group)?;
            return Ok(());
        }
        self.submit_all_or_nothing(
            std::slice::from_ref(record),
            Some(group),
            Durability::Unsynced,
        )
    }

    /// Submits the entries (a submission per run of one group), then waits for all.
    fn add_provider_entries(
        &self,
        entries: &[ProviderEntry<'_>],
        durable: bool,
    ) -> Result<Vec<Result<ProviderOutcome, StoreError>>, StoreError> {
        self.submit_provider_entries(entries, durable).wait()
    }

    /// Queues `entries` ([`GroupWriter::submit`], one submission per run of entries from one
    /// group) and returns at once; a queue that cannot take them answers the ticket with
    /// the error ([`StoreError::Busy`]), nothing queued.
    fn submit_provider_entries(&self, entries: &[ProviderEntry<'_>], durable: bool) -> WriteTicket {
        let durability = if durable {
            Durability::Durable
        } else {
            Durability::Unsynced
        };
        let tickets = entries
            .chunk_by(|a, b| a.group == b.group)
            .map(|run| {
                let records = run.iter().map(|e| e.record.clone()).collect();
                self.submit(records, run.first().and_then(|e| e.group), durability)
            })
            .collect::<Result<Vec<_>, _>>();
        match tickets {
            Ok(tickets) => WriteTicket::join(tickets),
            Err(e) => WriteTicket::ready(Err(e)),
        }
    }

    fn providers(
        &self,
        key: &[u8],
        limit: usize,
        now: UnixSecs,
    ) -> Result<Vec<ProviderRecord>, StoreError> {
        self.store.providers(key, limit, now)
    }

    fn remove_expired(&self, now: UnixSecs) -> Result<u64, StoreError> {
        self.store.remove_expired(now)
    }
}

/// The store's value records, unchanged (so one writer stands for a store that is both).
impl<S: ProviderStore + ValueStore + 'static> ValueStore for GroupWriter<S> {
    fn put_value(&self, record: &Record, received_at: UnixSecs) -> Result<(), StoreError> {
        self.store.put_value(record, received_at)
    }

    fn get_value(
        &self,
        key: &[u8],
        now: UnixSecs,
    ) -> Result<Option<(Record, UnixSecs)>, StoreError> {
        self.store.get_value(key, now)
    }

    fn remove_expired_values(&self, now: UnixSecs) -> Result<u64, StoreError> {
        self.store.remove_expired_values(now)
    }
}

/// The store's keystore, unchanged.
impl<S: ProviderStore + Keystore + 'static> Keystore for GroupWriter<S> {
    fn put(&self, keys: &[Multihash]) -> Result<Vec<Multihash>, StoreError> {
        self.store.put(keys)
    }

    fn delete(&self, keys: &[Multihash]) -> Result<u64, StoreError> {
        self.store.delete(keys)
    }

    fn count(&self) -> Result<u64, StoreError> {
        self.store.count()
    }

    fn scan(
        &self,
        prefix: &Prefix,
        start_after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Multihash)>, StoreError> {
        self.store.scan(prefix, start_after, limit)
    }
}
