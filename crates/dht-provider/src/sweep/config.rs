//! The settings of a [`SweepingProvider`](super::SweepingProvider).

use std::time::Duration;

use crate::{explore::ExploreConfig, jobs::default_reserved};

/// The least time a batch of the batched provide protocol is given for its answer: 10 s, as
/// `docs/specs/provide-batch.md` suggests (the answer waits for a disk sync).
pub const BATCH_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a [`SweepingProvider`](super::SweepingProvider).
#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// How often every key is reprovided (22 h).
    pub interval: Duration,
    /// Replication: servers each key is sent to (20).
    pub k: usize,
    /// Jobs run at once.
    pub workers: usize,
    /// Workers that only reprovide the schedule's due slices, so that new keys never starve
    /// reprovides (half of them by default).
    pub reserved_for_schedule: usize,
    /// Slices a provide job takes at once, those whose keys waited longest, sent side by
    /// side (8). Under steady ingest every slice has new keys: one slice per job would serve
    /// them in a round robin of (slices × a job's time) / (workers not reserved).
    pub provide_slices_per_job: usize,
    /// Time allowed for one ADD_PROVIDER to be written, and for one FIND_NODE to be answered.
    pub request_timeout: Duration,
    /// ADD_PROVIDER messages in flight to one peer at once.
    pub sends_per_peer: usize,
    /// Send a peer that speaks the batched provide protocol
    /// ([`Feature::ProvideBatch`](dht_routing::Feature::ProvideBatch),
    /// `docs/specs/provide-batch.md`) its records in batches, and plain ADD_PROVIDER to the
    /// others (on by default; off: ADD_PROVIDER to every peer). A batch's answer, which the
    /// server sends once the records are durable, is given the longer of
    /// [`request_timeout`](Self::request_timeout) and [`BATCH_ANSWER_TIMEOUT`].
    pub provide_batch: bool,
    /// Peers sent to at once within a slice.
    pub peers_in_parallel: usize,
    /// Failed sends in a row after which a peer is dropped from a slice and the slice
    /// re-explored (a success in between starts the count again: an occasional loss is not
    /// a dead peer).
    pub max_peer_failures: u32,
    /// The longest one slice's sends may take; past it the slice ends with what was sent, and
    /// keys that reached too few servers are retried.
    pub slice_deadline: Duration,
    /// The time a peer is given for its share of a slice: this, plus
    /// [`peer_time_per_record`](Self::peer_time_per_record) for each record it is sent. A
    /// peer that answers but too slowly gets what it took in that time, and its remaining
    /// records go to the next closest servers.
    pub peer_budget: Duration,
    /// See [`peer_budget`](Self::peer_budget).
    pub peer_time_per_record: Duration,
    /// How long a slice exploration is reused for the slices after it.
    pub exploration_freshness: Duration,
    /// How long a failed slice waits before it is retried.
    pub retry_after: Duration,
    /// How long without any answer before the provider calls itself offline (2 h).
    pub offline_after: Duration,
    /// Keys a job sends at once (a page): read from the keystore, or taken from those queued
    /// in memory. What a job holds while it sends grows with the page, not with the slice.
    pub scan_page: usize,
    /// Keys waiting for their first provide held in memory at most (16,384). Past it, new
    /// keys that nobody waits for are only marked in their slice (a 4-byte fingerprint each)
    /// and read back from the keystore when the slice is provided.
    pub queued_in_memory: usize,
    /// Fingerprints of marked keys held at most over all slices (2^20: 4 MiB). Past it, the
    /// slice with the most drops them and is provided whole (every key of it sent).
    pub max_marked: usize,
    /// Settings of each exploration.
    pub explore: ExploreConfig,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            interval: Duration::from_secs(dht_proto::REPROVIDE_INTERVAL_SECS),
            k: dht_proto::K_VALUE,
            workers: 4,
            reserved_for_schedule: default_reserved(4),
            provide_slices_per_job: 8,
            request_timeout: Duration::from_secs(10),
            sends_per_peer: 32,
            provide_batch: true,
            peers_in_parallel: 64,
            max_peer_failures: 3,
            slice_deadline: Duration::from_secs(1800),
            peer_budget: Duration::from_secs(30),
            peer_time_per_record: Duration::from_millis(100),
            exploration_freshness: Duration::from_secs(600),
            retry_after: Duration::from_secs(300),
            offline_after: Duration::from_secs(2 * 3600),
            scan_page: 4096,
            queued_in_memory: 16_384,
            max_marked: 1 << 20,
            explore: ExploreConfig::default(),
        }
    }
}

impl SweepConfig {
    /// Sets the reprovide interval.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_secs(1));
        self
    }

    /// Sets how many jobs run at once, half of them reserved for the schedule (none of a
    /// single worker).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self.reserved_for_schedule = default_reserved(self.workers);
        self
    }

    /// Sets how many workers only reprovide the schedule (at most all but one).
    pub fn with_reserved_for_schedule(mut self, reserved: usize) -> Self {
        self.reserved_for_schedule = reserved.min(self.workers.saturating_sub(1));
        self
    }

    /// Sets how many slices a provide job takes at once (at least one).
    pub fn with_provide_slices_per_job(mut self, slices: usize) -> Self {
        self.provide_slices_per_job = slices.max(1);
        self
    }

    /// Sets the per-request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Turns the batched provide on or off ([`provide_batch`](Self::provide_batch)).
    pub fn with_provide_batch(mut self, on: bool) -> Self {
        self.provide_batch = on;
        self
    }

    /// Sets the replication factor k (also the explorer's).
    pub fn with_k(mut self, k: usize) -> Self {
        self.k = k.max(1);
        self.explore = self.explore.with_k(self.k);
        self
    }
}
