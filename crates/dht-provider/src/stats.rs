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
}
