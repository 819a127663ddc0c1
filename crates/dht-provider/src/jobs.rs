//! Which kind of job a free worker takes next.
//!
//! Three sources of work compete for the workers: failed slices waiting for a retry, slices
//! with new keys (the provide queue), and the reprovide schedule's due slices. Serving the
//! provide queue first, as the sweep once did, lets a steady ingest of new keys starve the
//! schedule: records of the keys already held expire while workers provide new ones. So some
//! workers are reserved for the schedule (half of them by default, as go-libp2p-kad-dht keeps
//! 2 of its 4), and the others take whichever work has waited longest: the oldest queued
//! slice, the oldest due retry, or the schedule's next due slice.
//!
//! A provide job takes several of the slices waiting longest at once ([`oldest_slices`]) and
//! sends them side by side: under steady ingest every slice has new keys, and a worker that
//! took one slice at a time would serve them in a round robin whose turn is the number of
//! slices times a job's time (mostly its exploration), some 3,000 s at 10,000 servers (the
//! first jobs take fewer, [`slices_per_job`]). A
//! reprovide of a slice takes the slice's queued keys too ([`queued_within`]): it sends
//! every key of the slice anyway.
//!
//! Sans-IO: [`choose`] takes `now` and what each source has waiting, and decides; the other
//! functions pick slices from what is queued.

use dht_proto::{Prefix, UnixSecs};

/// A kind of job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// A failed slice whose retry time came.
    Retry,
    /// A slice with keys waiting for their first provide.
    Provide,
    /// The schedule's next due slice.
    Reprovide,
}

/// What is waiting, for [`choose`]: for each source, since when its oldest work waits
/// (`None` when it has none due).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Waiting {
    /// When the oldest due retry became due.
    pub retry: Option<UnixSecs>,
    /// When the oldest queued slice got its first key.
    pub provide: Option<UnixSecs>,
    /// When the schedule's next slice became due.
    pub reprovide: Option<UnixSecs>,
}

/// How the workers are shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workers {
    /// Workers in all.
    pub total: usize,
    /// Workers that only take reprovides of the schedule.
    pub reserved: usize,
    /// Workers running a retry or a provide now.
    pub busy_other: usize,
}

impl Workers {
    /// Whether a retry or a provide may start now without taking a reserved worker.
    pub fn may_take_other(&self) -> bool {
        self.busy_other < self.total.saturating_sub(self.reserved).max(1)
    }
}

/// The job a free worker takes at `now`, or `None` if it should wait.
///
/// Reprovides may always start; retries and provides only while fewer than
/// `total - reserved` of them run (at least one, so that a single worker serves both). Among
/// those allowed, the work waiting longest goes first; a tie goes to the retry, then the
/// provide.
pub fn choose(now: UnixSecs, waiting: Waiting, workers: Workers) -> Option<JobKind> {
    let other = workers.may_take_other();
    [
        (JobKind::Retry, waiting.retry.filter(|_| other)),
        (JobKind::Provide, waiting.provide.filter(|_| other)),
        (JobKind::Reprovide, waiting.reprovide),
    ]
    .into_iter()
    .filter_map(|(kind, since)| since.filter(|t| *t <= now).map(|t| (t, kind)))
    .min_by_key(|(t, kind)| (*t, *kind as u8))
    .map(|(_, kind)| kind)
}

/// The slices a provide job takes: at most `n` of `waiting` (a slice, and since when its
/// oldest key waits), those waiting longest first (ties by slice).
pub fn oldest_slices(
    waiting: impl IntoIterator<Item = (Prefix, UnixSecs)>,
    n: usize,
) -> Vec<Prefix> {
    let mut waiting: Vec<(UnixSecs, Prefix)> = waiting
        .into_iter()
        .map(|(slice, since)| (since, slice))
        .collect();
    let n = n.max(1);
    if waiting.len() > n {
        waiting.select_nth_unstable(n - 1);
        waiting.truncate(n);
    }
    waiting.sort_unstable();
    waiting.into_iter().map(|(_, slice)| slice).collect()
}

/// How many slices a provide job takes, at most `max`, when `explorations` have been seen
/// (up to the size estimator's window): one at first, one more for every two seen.
/// Explorations side by side all start from what was seen before them (the silent share that
/// decides a key's spare servers, the share of peers that answers omit): the first ones go
/// a few at a time, as they would one slice per job.
pub fn slices_per_job(max: usize, explorations: usize) -> usize {
    max.min(1 + explorations / 2).max(1)
}

/// The queued slices (`queued`, in keyspace order) that a reprovide of `slice` sends in full:
/// `slice` and the slices inside it (queued before the slice length grew).
pub fn queued_within<'a>(
    slice: &Prefix,
    queued: impl IntoIterator<Item = &'a Prefix>,
) -> Vec<Prefix> {
    queued
        .into_iter()
        .skip_while(|q| *q < slice)
        .take_while(|q| slice.contains_prefix(q))
        .copied()
        .collect()
}

/// The workers reserved for the schedule by default: half of them, and none of a single one.
pub fn default_reserved(workers: usize) -> usize {
    if workers <= 1 { 0 } else { workers / 2 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(busy_other: usize) -> Workers {
        Workers {
            total: 4,
            reserved: 2,
            busy_other,
        }
    }

    #[test]
    fn oldest_work_first() {
        let w = Waiting {
            retry: Some(90),
            provide: Some(50),
            reprovide: Some(70),
        };
        assert_eq!(choose(100, w, workers(0)), Some(JobKind::Provide));
        let w = Waiting {
            provide: Some(80),
            ..w
        };
        assert_eq!(choose(100, w, workers(0)), Some(JobKind::Reprovide));
        // Not due yet: nothing.
        assert_eq!(
            choose(
                100,
                Waiting {
                    reprovide: Some(101),
                    ..Waiting::default()
                },
                workers(0)
            ),
            None
        );
    }

    #[test]
    fn reserved_workers_only_reprovide() {
        // Two provides run: the other two workers are the schedule's, even though new keys
        // have waited longer than the due slice.
        let w = Waiting {
            retry: Some(10),
            provide: Some(10),
            reprovide: Some(90),
        };
        assert_eq!(choose(100, w, workers(1)), Some(JobKind::Retry));
        assert_eq!(choose(100, w, workers(2)), Some(JobKind::Reprovide));
        let idle = Waiting {
            reprovide: None,
            ..w
        };
        assert_eq!(choose(100, idle, workers(2)), None);
    }

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn a_provide_takes_the_slices_waiting_longest() {
        let waiting = [
            (p("000"), 50),
            (p("001"), 10),
            (p("010"), 30),
            (p("011"), 10),
            (p("100"), 90),
            (p("101"), 20),
        ];
        assert_eq!(oldest_slices(waiting, 3), [p("001"), p("011"), p("101")]);
        assert_eq!(oldest_slices(waiting, 1), [p("001")]);
        // At least one, and no more than there are.
        assert_eq!(oldest_slices(waiting, 0), [p("001")]);
        assert_eq!(oldest_slices(waiting, 100).len(), 6);
        assert_eq!(oldest_slices(waiting, 100)[5], p("100"));
        assert!(oldest_slices([], 8).is_empty());
    }

    #[test]
    fn provide_jobs_grow_as_explorations_measure_the_network() {
        let sizes: Vec<usize> = (0..20).map(|seen| slices_per_job(8, seen)).collect();
        assert_eq!(sizes[..6], [1, 1, 2, 2, 3, 3]);
        assert_eq!(sizes[14..], [8; 6]);
        assert_eq!(slices_per_job(0, 30), 1);
        assert_eq!(slices_per_job(1, 30), 1);
    }

    #[test]
    fn a_reprovide_takes_the_queued_keys_of_its_slice() {
        let queued: std::collections::BTreeSet<Prefix> =
            [p("00"), p("010"), p("0110"), p("0111"), p("10"), p("1")]
                .into_iter()
                .collect();
        let within = |s: &str| queued_within(&p(s), &queued);
        assert_eq!(within("01"), [p("010"), p("0110"), p("0111")]);
        assert_eq!(within("00"), [p("00")]);
        assert_eq!(within("11"), Vec::<Prefix>::new());
        // A queued slice wider than the one reprovided is not sent in full: it stays.
        assert_eq!(within("10"), [p("10")]);
        assert_eq!(within("1"), [p("1"), p("10")]);
    }

    #[test]
    fn a_single_worker_serves_everything_by_age() {
        let one = Workers {
            total: 1,
            reserved: default_reserved(1),
            busy_other: 0,
        };
        let w = Waiting {
            retry: None,
            provide: Some(20),
            reprovide: Some(30),
        };
        assert_eq!(choose(100, w, one), Some(JobKind::Provide));
        assert_eq!(default_reserved(4), 2);
        assert_eq!(default_reserved(16), 8);
    }
}
