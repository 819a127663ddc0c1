//! What an operator sees of a provider (`ipfs provide stat`).

/// Whether the provider can reach the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Connectivity {
    /// Requests are answered.
    #[default]
    Online,
    /// Nothing answered recently; keys are still accepted, and work resumes when answers come.
    Disconnected,
    /// Nothing answered for longer than the offline threshold (2 h).
    Offline,
}

/// A provider's state and counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProviderStats {
    /// Keys in the keystore (`None` if the keystore could not be read).
    pub keys: Option<u64>,
    /// Slices of the schedule (2^slice length).
    pub slices: u64,
    /// Regions explored since start.
    pub regions_explored: u64,
    /// Mean prefix length of the regions explored.
    pub average_region_prefix_len: f64,
    /// Keys waiting for their first provide.
    pub keys_queued: u64,
    /// How many of them are held in memory (the others are only marked, and read back from
    /// the keystore).
    pub keys_queued_in_memory: u64,
    /// How long the oldest of them has waited, in seconds.
    pub oldest_queued_secs: u64,
    /// Slices waiting: with new keys, or failed and waiting for a retry.
    pub regions_queued: u64,
    /// Workers.
    pub workers: usize,
    /// Workers running a job now.
    pub workers_busy: usize,
    /// Provider records sent in the cycle being walked.
    pub records_sent_this_cycle: u64,
    /// Peers given up on in the cycle being walked.
    pub peers_failed_this_cycle: u64,
    /// Provider records sent in the last full cycle.
    pub records_sent_last_cycle: u64,
    /// Peers given up on in the last full cycle.
    pub peers_failed_last_cycle: u64,
    /// How long the last full cycle took to walk, in seconds.
    pub last_cycle_secs: Option<u64>,
    /// How far behind schedule the provider is, in seconds (0 when on time): the longer of
    /// how late the reprovide walk is and how long keys whose provide failed have waited for
    /// a retry that succeeds ([`oldest_retry_secs`](Self::oldest_retry_secs)).
    pub behind_schedule_secs: u64,
    /// How long the oldest slice whose provide failed (keys that reached too few servers, or
    /// were not sent) has waited since, in seconds; 0 when no retry waits.
    pub oldest_retry_secs: u64,
    /// Whether the network answers.
    pub connectivity: Connectivity,
    /// FIND_NODE requests sent since start.
    pub find_node_sent: u64,
    /// ADD_PROVIDER messages sent since start.
    pub add_provider_sent: u64,
    /// ADD_PROVIDER messages that failed since start.
    pub add_provider_failed: u64,
    /// Keys provided (first provide or reprovide) since start.
    pub keys_provided: u64,
    /// Key provides that reached too few servers since start.
    pub keys_failed: u64,
    /// Keystore reads of a slice that failed since start (each such slice is retried).
    pub keystore_scan_errors: u64,
    /// The reprovide cycle being walked.
    pub cycle: u64,
    /// When the provider started (Unix seconds; 0 if unknown).
    pub started_at: u64,
    /// Since when [`connectivity`](Self::connectivity) holds (Unix seconds).
    pub connectivity_since: u64,
    /// Slices waiting with new keys for their first provide (part of
    /// [`regions_queued`](Self::regions_queued)).
    pub regions_queued_provide: u64,
    /// Slices waiting for a retry (the rest of [`regions_queued`](Self::regions_queued)).
    pub regions_queued_retry: u64,
    /// Slices of the schedule due for their reprovide and not yet taken by a worker.
    pub regions_due: u64,
    /// The next slice of the reprovide walk, as its prefix bits (`None` without a schedule).
    pub next_region: Option<String>,
    /// When [`next_region`](Self::next_region) is due (Unix seconds).
    pub next_region_due: Option<u64>,
    /// Workers kept for the reprovide schedule.
    pub workers_reserved: usize,
    /// When the cycle being walked started (Unix seconds).
    pub cycle_started_at: Option<u64>,
    /// Region jobs (provide, reprovide, retry) finished since start.
    pub region_jobs: u64,
    /// Their total duration, in milliseconds (the mean is this over
    /// [`region_jobs`](Self::region_jobs)).
    pub region_job_millis: u64,
    /// Servers found over all the regions explored (the mean per region is this over
    /// [`regions_explored`](Self::regions_explored)).
    pub region_servers: u64,
    /// Over every key sent since start, the servers that took its record (the mean per key
    /// is this over [`keys_provided`](Self::keys_provided) + [`keys_failed`](Self::keys_failed)).
    pub record_holders: u64,
    /// Peers records were sent to in the cycle being walked (some more than once).
    pub peers_tried_this_cycle: u64,
    /// Peers records were sent to in the last full cycle: with
    /// [`peers_failed_last_cycle`](Self::peers_failed_last_cycle), the share that answered.
    pub peers_tried_last_cycle: u64,
    /// Saves of the provider's state that failed since start.
    pub state_save_errors: u64,
}

impl ProviderStats {
    /// Seconds since the provider started, at `now`.
    pub fn uptime_secs(&self, now: u64) -> u64 {
        if self.started_at == 0 {
            0
        } else {
            now.saturating_sub(self.started_at)
        }
    }

    /// Keys provided per minute since start, at `now`.
    pub fn keys_per_minute(&self, now: u64) -> f64 {
        per(self.keys_provided as f64 * 60.0, self.uptime_secs(now))
    }

    /// Mean time of a region job, in seconds.
    pub fn mean_region_secs(&self) -> f64 {
        per(self.region_job_millis as f64 / 1000.0, self.region_jobs)
    }

    /// Mean servers found per region explored.
    pub fn mean_servers_per_region(&self) -> f64 {
        per(self.region_servers as f64, self.regions_explored)
    }

    /// Mean servers holding a key's record, over the keys sent.
    pub fn mean_holders_per_key(&self) -> f64 {
        per(
            self.record_holders as f64,
            self.keys_provided + self.keys_failed,
        )
    }

    /// The share of the peers sent to in the last full cycle (or, before one ended, in this
    /// one) that were not given up on; `None` before any was tried.
    pub fn reachable_share(&self) -> Option<f64> {
        let (tried, failed) = if self.peers_tried_last_cycle > 0 {
            (self.peers_tried_last_cycle, self.peers_failed_last_cycle)
        } else {
            (self.peers_tried_this_cycle, self.peers_failed_this_cycle)
        };
        (tried > 0).then(|| 1.0 - failed.min(tried) as f64 / tried as f64)
    }
}

/// `x / n`, 0 when `n` is 0.
fn per(x: f64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { x / n as f64 }
}
