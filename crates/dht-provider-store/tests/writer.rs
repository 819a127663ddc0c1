//! The grouped writer on a real RocksDB store: shared commits, durability (across a reopen
//! and across `kill -9` of a child process), the bounded queue, refusals one record at a
//! time, the cap's outcomes, and what is queued when the writer is dropped.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{DIR, ROLE, T0, addr, dht_key, filler_batch, lines, parse_ack, rec, spawn_child};
use dht_proto::ProviderRecord;
use dht_provider_store::{
    Config, Durability, GroupWriter, ProviderEntry, ProviderOutcome, ProviderStore, RocksStore,
    SourceGroup, StoreError, UnixSecs, WriteTicket, WriterConfig,
};

fn open(dir: &std::path::Path, config: Config) -> Arc<RocksStore> {
    Arc::new(RocksStore::open(dir, config).unwrap())
}

/// A RocksStore whose commits wait at a gate while it is closed: a test holds a commit in
/// progress and queues submissions behind it.
struct Gated {
    inner: Arc<RocksStore>,
    closed: Mutex<bool>,
    opened: Condvar,
    /// Commits that reached the gate.
    entered: AtomicUsize,
}

impl Gated {
    fn new(inner: Arc<RocksStore>) -> Arc<Self> {
        Arc::new(Gated {
            inner,
            closed: Mutex::new(true),
            opened: Condvar::new(),
            entered: AtomicUsize::new(0),
        })
    }

    fn open_gate(&self) {
        *self.closed.lock().unwrap() = false;
        self.opened.notify_all();
    }
}

impl ProviderStore for Gated {
    fn add_providers(&self, batch: &[ProviderRecord]) -> Result<(), StoreError> {
        self.inner.add_providers(batch)
    }
    fn providers(
        &self,
        key: &[u8],
        limit: usize,
        now: UnixSecs,
    ) -> Result<Vec<ProviderRecord>, StoreError> {
        self.inner.providers(key, limit, now)
    }
    fn remove_expired(&self, now: UnixSecs) -> Result<u64, StoreError> {
        self.inner.remove_expired(now)
    }
    fn add_provider_entries(
        &self,
        entries: &[ProviderEntry<'_>],
        durable: bool,
    ) -> Result<Vec<Result<ProviderOutcome, StoreError>>, StoreError> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
        drop(closed);
        self.inner.add_provider_entries(entries, durable)
    }
}

/// Polls `cond` for up to 10 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A writer over a gated store whose first commit (of one record, key 1_000_000) is held.
fn held_writer(
    config: WriterConfig,
) -> (
    tempfile::TempDir,
    Arc<Gated>,
    GroupWriter<Gated>,
    WriteTicket,
) {
    let dir = tempfile::tempdir().unwrap();
    let gated = Gated::new(open(dir.path(), Config::small()));
    let writer = GroupWriter::new(Arc::clone(&gated), config).unwrap();
    let first = writer
        .submit(vec![rec(1_000_000, 1, T0)], None, Durability::Unsynced)
        .unwrap();
    wait_until("the first commit reaches the gate", || {
        gated.entered.load(Ordering::SeqCst) == 1
    });
    (dir, gated, writer, first)
}

/// Each record's outcome of an answer, unwrapped.
fn ok(answer: Vec<Result<ProviderOutcome, StoreError>>) -> Vec<ProviderOutcome> {
    answer.into_iter().map(Result::unwrap).collect()
}

fn group(n: u8) -> SourceGroup {
    SourceGroup::from_bytes(&[4, 10, 0, n])
}

#[test]
fn submissions_during_a_commit_share_the_next() {
    let (_dir, gated, writer, first) = held_writer(WriterConfig::default());
    let writer = Arc::new(writer);
    let senders: Vec<_> = (0..64u64)
        .map(|i| {
            let writer = Arc::clone(&writer);
            std::thread::spawn(move || {
                let durability = if i % 2 == 0 {
                    Durability::Durable
                } else {
                    Durability::Unsynced
                };
                writer
                    .submit(vec![rec(i, i, T0)], Some(group(i as u8)), durability)
                    .unwrap()
                    .wait()
            })
        })
        .collect();
    wait_until("64 submissions queued", || {
        writer.stats().queued_records == 64
    });
    assert_eq!(writer.stats().commits, 0, "the first commit is held");
    gated.open_gate();
    assert_eq!(ok(first.wait().unwrap()), vec![ProviderOutcome::Stored]);
    for s in senders {
        assert_eq!(
            ok(s.join().unwrap().unwrap()),
            vec![ProviderOutcome::Stored]
        );
    }
    let stats = writer.stats();
    assert_eq!(stats.commits, 2, "{stats:?}");
    assert_eq!(stats.largest_commit, 64, "{stats:?}");
    assert_eq!(
        stats.synced_commits, 1,
        "only the second had a durable submission"
    );
    assert_eq!(
        (stats.submissions, stats.records, stats.queued_records),
        (65, 65, 0)
    );
    for i in 0..64u64 {
        let got = gated.inner.providers(&dht_key(i), 20, T0).unwrap();
        assert_eq!(got, vec![rec(i, i, T0)]);
    }
}

#[test]
fn a_durable_write_reads_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let batch: Vec<_> = (0..200u64).map(|i| rec(i % 50, i, T0 + i)).collect();
    {
        let store = open(dir.path(), Config::small().with_sync_writes(true));
        let writer = GroupWriter::new(Arc::clone(&store), WriterConfig::default()).unwrap();
        let answer = writer
            .submit(batch.clone(), Some(group(1)), Durability::Durable)
            .unwrap()
            .wait()
            .unwrap();
        assert!(
            answer
                .iter()
                .all(|o| matches!(o, Ok(ProviderOutcome::Stored)))
        );
        assert_eq!(writer.stats().synced_commits, 1);
    }
    let store = open(dir.path(), Config::small());
    for k in 0..50u64 {
        let mut want: Vec<_> = batch
            .iter()
            .filter(|r| r.key == dht_key(k))
            .cloned()
            .collect();
        want.sort_by_key(|r| std::cmp::Reverse(r.received_at));
        assert_eq!(store.providers(&dht_key(k), 20, T0 + 300).unwrap(), want);
    }
}

/// Records per batch of the kill -9 child.
const CHILD_BATCH: u64 = 50;

/// The records of the child's batch `b`: keys `b * CHILD_BATCH ..`, provider `b`.
fn child_batch(b: u64) -> Vec<ProviderRecord> {
    (0..CHILD_BATCH)
        .map(|i| rec(b * CHILD_BATCH + i, b, T0))
        .collect()
}

/// The child of [`acknowledged_batches_survive_kill_9`]: four threads write durable batches
/// through one writer and print `ack N` for each acknowledged batch, until killed (at most
/// 100,000 batches).
#[test]
fn writer_durability_child() {
    if std::env::var(ROLE).as_deref() != Ok("writer_durability") {
        return;
    }
    let dir = std::env::var(DIR).unwrap();
    let store = open(
        std::path::Path::new(&dir),
        Config::small().with_sync_writes(true),
    );
    let writer = Arc::new(GroupWriter::new(store, WriterConfig::default()).unwrap());
    let next = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (writer, next) = (Arc::clone(&writer), Arc::clone(&next));
            std::thread::spawn(move || {
                loop {
                    let b = next.fetch_add(1, Ordering::SeqCst);
                    if b >= 100_000 {
                        return;
                    }
                    let answer = writer
                        .submit(child_batch(b), None, Durability::Durable)
                        .unwrap()
                        .wait()
                        .unwrap();
                    assert!(
                        answer
                            .iter()
                            .all(|o| matches!(o, Ok(ProviderOutcome::Stored)))
                    );
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {b}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A child writing durable batches from four threads through one writer is killed with
/// SIGKILL after 300 acknowledgements: every batch it acknowledged reads back after reopening.
#[test]
fn acknowledged_batches_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child(
        "writer_durability_child",
        "writer_durability",
        dir.path(),
        true,
    );
    let (rx, reader) = lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    while acked.len() < 300 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => acked.extend(parse_ack(&line)),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the writer stopped after {} acks", acked.len());
            }
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix: no destructors, no flush.
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child must have been killed");
    reader.join().unwrap();
    // Acks printed before the kill may still be in the pipe.
    acked.extend(rx.try_iter().filter_map(|l| parse_ack(&l)));

    let store = open(dir.path(), Config::small());
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|&b| {
            child_batch(b)
                .into_iter()
                .any(|r| store.providers(&r.key, 20, T0).unwrap() != vec![r])
        })
        .collect();
    assert!(lost.is_empty(), "acknowledged batches lost: {lost:?}");
    eprintln!(
        "{} acknowledged batches read back after kill -9",
        acked.len()
    );
}

/// Size of the tmpfs the full-disk child writes to.
const SMALL_FS: &str = "size=24m";

/// The child of [`a_full_disk_answers_every_submission`], on a small tmpfs: writes durable
/// batches through the writer, four in flight, until the disk is full; then checks that
/// later submissions are answered with an error, and that every acknowledged batch reads.
/// Prints `ok <acknowledged batches>`.
#[test]
fn writer_disk_full_child() {
    if std::env::var(ROLE).as_deref() != Ok("writer_disk_full") {
        return;
    }
    let dir = std::env::var(DIR).unwrap();
    let store = open(std::path::Path::new(&dir), Config::small());
    let writer = GroupWriter::new(Arc::clone(&store), WriterConfig::default()).unwrap();
    let mut acked: Vec<u64> = Vec::new();
    let mut next = 0u64;
    let err = 'fill: loop {
        assert!(next < 2_000, "24 MiB never filled up");
        let tickets: Vec<_> = (next..next + 4)
            .map(|b| {
                let t = writer.submit(filler_batch(b), None, Durability::Durable);
                (b, t.unwrap())
            })
            .collect();
        next += 4;
        let mut failed = None;
        for (b, t) in tickets {
            match t.wait() {
                Ok(answer) => {
                    assert!(
                        answer
                            .iter()
                            .all(|o| matches!(o, Ok(ProviderOutcome::Stored)))
                    );
                    acked.push(b);
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            break 'fill e;
        }
    };
    assert!(matches!(err, StoreError::DiskFull), "{err:?}");
    assert!(!acked.is_empty(), "nothing could be written");
    // Later submissions are answered (with an error), not left waiting.
    let later = writer
        .submit(filler_batch(next), None, Durability::Unsynced)
        .unwrap()
        .wait();
    assert!(later.is_err(), "{later:?}");
    for &b in &acked {
        for r in filler_batch(b) {
            assert_eq!(store.providers(&r.key, 20, T0).unwrap(), vec![r]);
        }
    }
    println!("ok {}", acked.len());
}

/// A full disk answers every submission of the failed commit with
/// [`StoreError::DiskFull`] and later ones with an error, and loses nothing acknowledged
/// (the child runs on a 24 MiB tmpfs in a user namespace; skipped where there are none).
#[test]
fn a_full_disk_answers_every_submission() {
    if !common::user_namespaces() {
        eprintln!("skipped: `unshare --user --map-root-user --mount` is not available here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let acked = common::run_on_tmpfs(
        SMALL_FS,
        "writer_disk_full_child",
        "writer_disk_full",
        dir.path(),
    );
    assert!(acked > 0);
    eprintln!("{acked} batches of 500 acknowledged before the disk was full");
}

#[test]
fn busy_when_full_then_recovers() {
    let (_dir, gated, writer, first) =
        held_writer(WriterConfig::default().with_max_queued_records(10));
    // The held commit took its record off the queue: ten fit.
    let tickets: Vec<_> = (0..10u64)
        .map(|i| {
            writer
                .submit(vec![rec(i, i, T0)], None, Durability::Unsynced)
                .unwrap()
        })
        .collect();
    let refused = writer.submit(vec![rec(10, 10, T0)], None, Durability::Unsynced);
    assert!(
        matches!(
            refused,
            Err(StoreError::Busy {
                queued: 10,
                limit: 10
            })
        ),
        "{refused:?}"
    );
    let too_big: Vec<_> = (0..11u64).map(|i| rec(20 + i, i, T0)).collect();
    assert!(matches!(
        writer.submit(too_big, None, Durability::Unsynced),
        Err(StoreError::InvalidRecord { .. })
    ));
    assert_eq!(writer.stats().busy, 1);
    gated.open_gate();
    first.wait().unwrap();
    for t in tickets {
        assert_eq!(ok(t.wait().unwrap()), vec![ProviderOutcome::Stored]);
    }
    // Room again.
    let again = writer
        .submit(vec![rec(10, 10, T0)], None, Durability::Unsynced)
        .unwrap();
    assert_eq!(ok(again.wait().unwrap()), vec![ProviderOutcome::Stored]);
    assert_eq!(
        gated.inner.providers(&dht_key(10), 20, T0).unwrap().len(),
        1
    );
    assert_eq!(writer.stats().queued_records, 0);
}

/// A record whose encoding does not fit (more than 65,535 addresses).
fn unencodable(k: u64) -> ProviderRecord {
    let mut r = rec(k, 99, T0);
    r.addrs = vec![addr(1); 65_536];
    r
}

#[test]
fn a_bad_record_is_refused_alone() {
    let (_dir, gated, writer, first) = held_writer(WriterConfig::default());
    let good = writer
        .submit(vec![rec(1, 1, T0)], None, Durability::Durable)
        .unwrap();
    let bad = writer
        .submit(vec![unencodable(2)], Some(group(1)), Durability::Unsynced)
        .unwrap();
    let mixed = writer
        .submit(
            vec![rec(3, 3, T0), unencodable(4), rec(5, 5, T0)],
            Some(group(2)),
            Durability::Durable,
        )
        .unwrap();
    wait_until("three submissions queued", || {
        writer.stats().queued_records == 5
    });
    gated.open_gate();
    first.wait().unwrap();
    assert_eq!(ok(good.wait().unwrap()), vec![ProviderOutcome::Stored]);
    let bad = bad.wait().unwrap();
    assert!(
        matches!(bad.as_slice(), [Err(StoreError::InvalidRecord { .. })]),
        "{bad:?}"
    );
    let mixed = mixed.wait().unwrap();
    assert!(
        matches!(
            mixed.as_slice(),
            [
                Ok(ProviderOutcome::Stored),
                Err(StoreError::InvalidRecord { .. }),
                Ok(ProviderOutcome::Stored)
            ]
        ),
        "{mixed:?}"
    );
    assert_eq!(writer.stats().commits, 2, "all three shared one commit");
    for (k, n) in [(1, 1), (2, 0), (3, 1), (4, 0), (5, 1)] {
        assert_eq!(
            gated.inner.providers(&dht_key(k), 20, T0).unwrap().len(),
            n,
            "key {k}"
        );
    }
    // Through the writer's `ProviderStore`, a batch is all or nothing, as the store's is.
    assert!(matches!(
        writer.add_providers(&[rec(6, 6, T0), unencodable(6)]),
        Err(StoreError::InvalidRecord { .. })
    ));
    assert!(
        gated
            .inner
            .providers(&dht_key(6), 20, T0)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn outcomes_report_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Config::small().with_max_providers_per_key(3));
    let writer = GroupWriter::new(Arc::clone(&store), WriterConfig::default()).unwrap();
    use ProviderOutcome::{Full, Stored};
    // Without a group: the first three fill the key, re-announces refresh.
    let batch: Vec<_> = (1..=5)
        .map(|p| rec(1, p, T0))
        .chain([rec(1, 2, T0 + 1)])
        .collect();
    let got: Vec<_> = writer
        .submit(batch, None, Durability::Unsynced)
        .unwrap()
        .wait()
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, vec![Stored, Stored, Stored, Full, Full, Stored]);
    // Grouped: three of group 1 fill the key; group 2 takes a slot of group 1; a third
    // group then takes another of group 1's; a fourth is refused once each holds one.
    let one = |k, p, g: u8| {
        writer
            .submit(vec![rec(k, p, T0)], Some(group(g)), Durability::Unsynced)
            .unwrap()
            .wait()
            .unwrap()
            .remove(0)
            .unwrap()
    };
    for p in 1..=3 {
        assert_eq!(one(2, p, 1), Stored);
    }
    assert_eq!(one(2, 4, 2), Stored);
    assert_eq!(one(2, 5, 3), Stored);
    assert_eq!(one(2, 6, 4), Full);
    assert_eq!(store.providers(&dht_key(2), 20, T0).unwrap().len(), 3);
}

#[test]
fn dropping_the_writer_writes_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Config::small());
    let writer = GroupWriter::new(Arc::clone(&store), WriterConfig::default()).unwrap();
    let kept: Vec<_> = (0..2000u64)
        .map(|i| {
            writer
                .submit_inbound(rec(i, i, T0), group((i % 7) as u8))
                .unwrap()
        })
        .collect();
    drop(writer);
    for t in kept {
        assert_eq!(ok(t.wait().unwrap()), vec![ProviderOutcome::Stored]);
    }
    for i in 0..2000u64 {
        assert_eq!(
            store.providers(&dht_key(i), 20, T0).unwrap().len(),
            1,
            "key {i}"
        );
    }
}

#[test]
fn inbound_records_need_not_wait_for_their_commit() {
    let (_dir, gated, writer, first) =
        held_writer(WriterConfig::default().with_inbound_waits(false));
    // With the commit held, each call returns once its record is queued (waiting would
    // block this thread until the gate opens).
    for i in 0..100u64 {
        writer
            .add_inbound_provider(&rec(i, i, T0), group((i % 5) as u8))
            .unwrap();
    }
    assert_eq!(writer.stats().queued_records, 100);
    assert_eq!(writer.stats().commits, 0, "the first commit is held");
    gated.open_gate();
    assert_eq!(ok(first.wait().unwrap()), vec![ProviderOutcome::Stored]);
    wait_until("the 100 records committed", || {
        writer.stats().records == 101
    });
    assert!(writer.stats().commits <= 2, "{:?}", writer.stats());
    for i in 0..100u64 {
        assert_eq!(
            writer.providers(&dht_key(i), 20, T0).unwrap(),
            vec![rec(i, i, T0)]
        );
    }
}

/// `submit_provider_entries` queues and returns while a commit is held: one ticket for the
/// runs of entries of several groups, answered in order after their commit; a queue too
/// full to take them answers the ticket with `Busy`, nothing queued.
#[test]
fn entries_are_submitted_without_waiting_and_answered_in_order() {
    let (_dir, gated, writer, first) =
        held_writer(WriterConfig::default().with_max_queued_records(10));
    let records: Vec<ProviderRecord> = (0..6u64).map(|i| rec(i, i, T0)).collect();
    let entries: Vec<ProviderEntry<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, record)| ProviderEntry {
            record,
            group: Some(group(if i < 3 { 1 } else { 2 })),
        })
        .collect();
    let ticket = writer.submit_provider_entries(&entries, true);
    assert_eq!(writer.stats().queued_records, 6, "queued, not written");
    let too_many: Vec<ProviderRecord> = (10..15u64).map(|i| rec(i, i, T0)).collect();
    let too_many: Vec<ProviderEntry<'_>> = too_many
        .iter()
        .map(|record| ProviderEntry {
            record,
            group: None,
        })
        .collect();
    let busy = writer.submit_provider_entries(&too_many, true).wait();
    assert!(matches!(busy, Err(StoreError::Busy { .. })), "{busy:?}");
    gated.open_gate();
    first.wait().unwrap();
    assert_eq!(ok(ticket.wait().unwrap()), vec![ProviderOutcome::Stored; 6]);
    for i in 0..6u64 {
        assert_eq!(gated.inner.providers(&dht_key(i), 20, T0).unwrap().len(), 1);
    }
    assert!(
        gated
            .inner
            .providers(&dht_key(10), 20, T0)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_zero_queue_or_commit_bound_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Config::small());
    for (config, setting) in [
        (
            WriterConfig::default().with_max_queued_records(0),
            "max_queued_records",
        ),
        (
            WriterConfig::default().with_max_commit_records(0),
            "max_commit_records",
        ),
    ] {
        match GroupWriter::new(store.clone(), config) {
            Err(StoreError::InvalidSetting(e)) => assert_eq!(e.setting, setting),
            Err(e) => panic!("{setting}: refused for another reason: {e}"),
            Ok(_) => panic!("{setting} 0 was taken"),
        }
    }
}
