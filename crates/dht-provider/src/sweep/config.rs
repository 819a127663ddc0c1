//! The settings of a [`SweepingProvider`](super::SweepingProvider).

use std::time::Duration;

use crate::{explore::ExploreConfig, jobs::default_reserved};

/// The least time a batch of the batched provide protocol is given for its answer: 10 s, as
/// `docs/specs/provide-batch.md` suggests (the answer waits for a disk sync).
pub const BATCH_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a [`SweepingProvider`](super::SweepingProvider), with a `with_` setter for
/// every field. [`SweepingProvider::start`](super::SweepingProvider::start) refuses settings
/// that cannot work ([`validate`](Self::validate)) rather than changing them.
#[derive(Clone, Debug)]
#[non_exhaustive]
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
    /// Sets how many jobs run at once, and reserves half of them for the schedule (none of a
    /// single worker); set [`reserved_for_schedule`](Self::reserved_for_schedule) after it.
    #[must_use]
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self.reserved_for_schedule = default_reserved(workers);
        self
    }

    /// Sets the replication factor k, the explorer's too.
    #[must_use]
    pub fn with_k(mut self, k: usize) -> Self {
        self.k = k;
        self.explore = self.explore.with_k(k);
        self
    }

    crate::error::setters! {
        /// Sets the reprovide interval.
        with_interval => interval: Duration;
        /// Sets how many workers only reprovide the schedule (at most all but one).
        with_reserved_for_schedule => reserved_for_schedule: usize;
        /// Sets how many slices a provide job takes at once.
        with_provide_slices_per_job => provide_slices_per_job: usize;
        /// Sets the per-request timeout.
        with_request_timeout => request_timeout: Duration;
        /// Sets how many ADD_PROVIDER messages are in flight to one peer at once.
        with_sends_per_peer => sends_per_peer: usize;
        /// Turns the batched provide on or off ([`provide_batch`](Self::provide_batch)).
        with_provide_batch => provide_batch: bool;
        /// Sets how many peers of a slice are sent to at once.
        with_peers_in_parallel => peers_in_parallel: usize;
        /// Sets the failed sends in a row that drop a peer from a slice.
        with_max_peer_failures => max_peer_failures: u32;
        /// Sets the longest one slice's sends may take.
        with_slice_deadline => slice_deadline: Duration;
        /// Sets the time a peer is given for its share of a slice, besides its time per record.
        with_peer_budget => peer_budget: Duration;
        /// Sets the time a peer is given per record it is sent.
        with_peer_time_per_record => peer_time_per_record: Duration;
        /// Sets how long a slice exploration is reused.
        with_exploration_freshness => exploration_freshness: Duration;
        /// Sets how long a failed slice waits before it is retried.
        with_retry_after => retry_after: Duration;
        /// Sets how long without any answer before the provider calls itself offline.
        with_offline_after => offline_after: Duration;
        /// Sets the keys a job sends at once (a page).
        with_scan_page => scan_page: usize;
        /// Sets the keys waiting for their first provide held in memory at most.
        with_queued_in_memory => queued_in_memory: usize;
        /// Sets the fingerprints of marked keys held at most.
        with_max_marked => max_marked: usize;
        /// Sets the settings of each exploration.
        with_explore => explore: ExploreConfig;
    }

    /// `Ok` when every setting can work: counts, the interval and the timeouts above zero,
    /// and at least one worker left for new keys.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`](crate::ProviderError::InvalidConfig) naming the first
    /// setting that cannot work.
    pub fn validate(&self) -> Result<(), crate::ProviderError> {
        use crate::error::at_least_one;
        at_least_one("interval", self.interval.as_secs())?;
        at_least_one("k", self.k as u64)?;
        at_least_one("workers", self.workers as u64)?;
        at_least_one("provide_slices_per_job", self.provide_slices_per_job as u64)?;
        at_least_one("request_timeout", self.request_timeout.as_millis() as u64)?;
        at_least_one("sends_per_peer", self.sends_per_peer as u64)?;
        at_least_one("peers_in_parallel", self.peers_in_parallel as u64)?;
        at_least_one("max_peer_failures", u64::from(self.max_peer_failures))?;
        at_least_one("slice_deadline", self.slice_deadline.as_millis() as u64)?;
        at_least_one("scan_page", self.scan_page as u64)?;
        if self.reserved_for_schedule >= self.workers && self.reserved_for_schedule > 0 {
            return Err(crate::ProviderError::InvalidConfig {
                setting: "reserved_for_schedule",
                reason: "must leave at least one worker for new keys",
            });
        }
        self.explore.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProviderError;

    fn refused(config: SweepConfig) -> &'static str {
        match config.validate() {
            Err(ProviderError::InvalidConfig { setting, .. }) => setting,
            other => panic!("not refused: {other:?}"),
        }
    }

    /// The defaults work; a zero is refused by name, never rounded up.
    #[test]
    fn zeros_are_refused_by_name() {
        assert!(SweepConfig::default().validate().is_ok());
        let d = SweepConfig::default;
        assert_eq!(refused(d().with_interval(Duration::ZERO)), "interval");
        assert_eq!(refused(d().with_k(0)), "k");
        assert_eq!(refused(d().with_workers(0)), "workers");
        assert_eq!(
            refused(d().with_provide_slices_per_job(0)),
            "provide_slices_per_job"
        );
        assert_eq!(
            refused(d().with_request_timeout(Duration::ZERO)),
            "request_timeout"
        );
        assert_eq!(refused(d().with_sends_per_peer(0)), "sends_per_peer");
        assert_eq!(refused(d().with_peers_in_parallel(0)), "peers_in_parallel");
        assert_eq!(refused(d().with_max_peer_failures(0)), "max_peer_failures");
        assert_eq!(
            refused(d().with_slice_deadline(Duration::ZERO)),
            "slice_deadline"
        );
        assert_eq!(refused(d().with_scan_page(0)), "scan_page");
        assert_eq!(
            refused(d().with_workers(4).with_reserved_for_schedule(4)),
            "reserved_for_schedule"
        );
        let explore = ExploreConfig::default().with_parallelism(0);
        assert_eq!(refused(d().with_explore(explore)), "explore.parallelism");
        // One worker reserves none, and works.
        assert!(d().with_workers(1).validate().is_ok());
        assert_eq!(d().with_workers(3).with_k(5).explore.k, 5);
    }
}
