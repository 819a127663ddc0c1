//! What an operator sees of a provider (`ipfs provide stat`).

use std::collections::BTreeMap;

use dht_proto::Prefix;

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
    /// Batches of the batched provide protocol sent since start (answered or failed; not
    /// those a peer refused to negotiate, see
    /// [`provide_batch_fallbacks`](Self::provide_batch_fallbacks)). With
    /// [`add_provider_sent`](Self::add_provider_sent), the provider's messages carrying
    /// records.
    pub provide_batches_sent: u64,
    /// Records sent in those batches.
    pub batch_records_sent: u64,
    /// Records the batch answers said are stored (and durable): the records a provider
    /// knows landed.
    pub batch_records_stored: u64,
    /// Records the batch answers refused (FULL, INVALID_KEY, or a status unknown here); they
    /// are not sent again.
    pub batch_records_refused: u64,
    /// Batches that stored nothing and will not be waited for: a refusal of the provider
    /// (PROVIDER_NOT_SENDER, NO_ADDRESSES), an answer that does not match the keys, or a
    /// failed call. A failed call is sent again a few times; otherwise the peer is given up on
    /// for the slice and its records go to the next closest servers.
    pub provide_batches_failed: u64,
    /// Batches answered "later" (RATE_LIMITED, UNAVAILABLE): nothing stored, and the keys sent
    /// again after a wait, in smaller batches, while the peer's budget lasts.
    pub provide_batches_deferred: u64,
    /// Times a batch waited for the server's rate limit before it was sent, as the server's
    /// last answer told the allowance (`docs/specs/provide-batch.md`): the waits that keep
    /// batches from being refused.
    pub provide_batch_waits: u64,
    /// Times a peer known to speak the batched protocol refused it, and its records went as
    /// ADD_PROVIDER instead.
    pub provide_batch_fallbacks: u64,
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
    /// The reprovide interval, in seconds (0 if unknown).
    pub interval_secs: u64,
    /// When each region was last reprovided whole and last given new keys, as the sweep
    /// finished its jobs since the start (at most [`MAX_REGION_TIMES`] regions; see
    /// [`RegionTimes`]). Empty for the per-key provider.
    pub region_times: Vec<RegionTime>,
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

/// The longest prefix [`RegionTimes`] keeps: slices of longer prefixes are kept as their
/// ancestor of this length (regions of 2^-12 of the keyspace).
pub const REGION_TIMES_BITS: usize = 12;

/// The most regions [`RegionTimes`] keeps in each of its two maps.
pub const MAX_REGION_TIMES: usize = 1 << REGION_TIMES_BITS;

/// When one region was last passed by the sweep, as [`ProviderStats::region_times`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionTime {
    /// The region (at most [`REGION_TIMES_BITS`] bits).
    pub prefix: Prefix,
    /// When a job that sent every key of the region ended (a reprovide, or a whole provide
    /// after a restart), in Unix seconds.
    pub reprovided_at: Option<u64>,
    /// When a job that sent the region's new keys (only those) last ended, in Unix seconds.
    pub provided_at: Option<u64>,
}

/// When each region was last passed: real times, kept as the sweep's jobs end, bounded.
///
/// A slice's time is kept under its prefix, cut to [`REGION_TIMES_BITS`] bits; a whole pass
/// of a region replaces what is kept of the regions inside it. Each map holds at most
/// [`MAX_REGION_TIMES`] regions: past that, the one passed longest ago is dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionTimes {
    reprovided: BTreeMap<Prefix, u64>,
    provided: BTreeMap<Prefix, u64>,
}

impl RegionTimes {
    /// Notes that a job on `slice` ended at `at`: one that sent every key of the slice if
    /// `whole`, else one that sent only its new keys.
    pub fn record(&mut self, slice: &Prefix, whole: bool, at: u64) {
        let region = slice.truncate(slice.len().min(REGION_TIMES_BITS));
        let map = if whole {
            // What was kept of the regions inside is older than this pass.
            let inside: Vec<Prefix> = descendants(&self.reprovided, &region).collect();
            for p in inside {
                self.reprovided.remove(&p);
            }
            &mut self.reprovided
        } else {
            &mut self.provided
        };
        map.insert(region, at);
        if map.len() > MAX_REGION_TIMES
            && let Some(oldest) = map.iter().min_by_key(|(_, at)| **at).map(|(p, _)| *p)
        {
            map.remove(&oldest);
        }
    }

    /// The times kept, in keyspace order.
    pub fn list(&self) -> Vec<RegionTime> {
        let mut all: BTreeMap<Prefix, RegionTime> = BTreeMap::new();
        for (p, at) in &self.reprovided {
            all.entry(*p)
                .or_insert_with(|| RegionTime::empty(*p))
                .reprovided_at = Some(*at);
        }
        for (p, at) in &self.provided {
            all.entry(*p)
                .or_insert_with(|| RegionTime::empty(*p))
                .provided_at = Some(*at);
        }
        all.into_values().collect()
    }

    /// The times of `list` (as [`list`](Self::list) gives them), to look regions up in.
    pub fn from_list(list: &[RegionTime]) -> Self {
        let mut times = RegionTimes::default();
        for t in list {
            if let Some(at) = t.reprovided_at {
                times.reprovided.insert(t.prefix, at);
            }
            if let Some(at) = t.provided_at {
                times.provided.insert(t.prefix, at);
            }
        }
        times
    }

    /// Since when every key of `region` was reprovided at least once: the oldest of the
    /// last passes over its parts; `None` if a part of it was not passed whole yet.
    pub fn reprovided_since(&self, region: &Prefix) -> Option<u64> {
        let mut inherited = None;
        let mut up = region.truncate(region.len().min(REGION_TIMES_BITS));
        loop {
            inherited = inherited.max(self.reprovided.get(&up).copied());
            match up.parent() {
                Some(parent) => up = parent,
                None => break,
            }
        }
        covered_since(&self.reprovided, region, inherited)
    }

    /// When new keys of `region` (or of a region overlapping it) were last provided.
    pub fn provided_last(&self, region: &Prefix) -> Option<u64> {
        let mut up = *region;
        let mut last = descendants(&self.provided, region)
            .filter_map(|p| self.provided.get(&p).copied())
            .max();
        loop {
            last = last.max(self.provided.get(&up).copied());
            match up.parent() {
                Some(parent) => up = parent,
                None => break,
            }
        }
        last
    }
}

impl RegionTime {
    fn empty(prefix: Prefix) -> Self {
        RegionTime {
            prefix,
            reprovided_at: None,
            provided_at: None,
        }
    }
}

/// The prefixes of `map` strictly inside `region` (in keyspace order, a prefix comes right
/// before its descendants).
fn descendants<'a>(
    map: &'a BTreeMap<Prefix, u64>,
    region: &'a Prefix,
) -> impl Iterator<Item = Prefix> + 'a {
    map.range(region..)
        .map(|(p, _)| *p)
        .take_while(move |p| region.contains_prefix(p))
        .filter(move |p| p != region)
}

/// Since when every point of `region` was passed, given the time `inherited` of the latest
/// pass over a region holding it whole.
fn covered_since(
    map: &BTreeMap<Prefix, u64>,
    region: &Prefix,
    inherited: Option<u64>,
) -> Option<u64> {
    let here = inherited.max(map.get(region).copied());
    if descendants(map, region).next().is_none() {
        return here;
    }
    let (left, right) = region.children()?;
    let left = covered_since(map, &left, here)?;
    let right = covered_since(map, &right, here)?;
    Some(left.min(right))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(bits: &str) -> Prefix {
        bits.parse().unwrap()
    }

    #[test]
    fn region_times_are_the_passes_that_ended() {
        let mut t = RegionTimes::default();
        assert_eq!(t.reprovided_since(&p("01")), None);
        t.record(&p("00"), true, 100);
        t.record(&p("01"), true, 200);
        t.record(&p("10"), false, 300);
        assert_eq!(t.reprovided_since(&p("00")), Some(100));
        assert_eq!(t.reprovided_since(&p("01")), Some(200));
        // A region inside one passed whole was passed then.
        assert_eq!(t.reprovided_since(&p("0110")), Some(200));
        // Its oldest part decides for a region passed in parts; a part never passed, None.
        assert_eq!(t.reprovided_since(&p("0")), Some(100));
        assert_eq!(t.reprovided_since(&p("")), None);
        // New keys are not a reprovide.
        assert_eq!(t.reprovided_since(&p("10")), None);
        assert_eq!(t.provided_last(&p("10")), Some(300));
        assert_eq!(t.provided_last(&p("1")), Some(300));
        assert_eq!(t.provided_last(&p("101")), Some(300));
        assert_eq!(t.provided_last(&p("11")), None);
        // A whole pass of a larger region replaces its parts.
        t.record(&p("0"), true, 400);
        assert_eq!(t.reprovided_since(&p("01")), Some(400));
        assert_eq!(
            t.list(),
            vec![
                RegionTime {
                    prefix: p("0"),
                    reprovided_at: Some(400),
                    provided_at: None
                },
                RegionTime {
                    prefix: p("10"),
                    reprovided_at: None,
                    provided_at: Some(300)
                },
            ]
        );
        assert_eq!(RegionTimes::from_list(&t.list()), t);
    }

    #[test]
    fn region_times_stay_bounded() {
        let mut t = RegionTimes::default();
        // Slices of 16 bits are kept at 12: 65,536 slices, 4,096 regions.
        for i in 0..(1u64 << 16) {
            let bits = format!("{i:016b}");
            t.record(&p(&bits), true, i);
            t.record(&p(&bits), false, i);
        }
        assert_eq!(t.reprovided.len(), MAX_REGION_TIMES);
        assert_eq!(t.provided.len(), MAX_REGION_TIMES);
        // The region's time is its last slice's.
        assert_eq!(t.reprovided_since(&p("000000000000")), Some(15));
        assert_eq!(t.reprovided_since(&p("0000000000001111")), Some(15));
        // Regions of every length up to 12 bits: still at most the bound.
        let mut t = RegionTimes::default();
        let mut at = 0;
        for len in (0..=REGION_TIMES_BITS).rev() {
            for i in 0..(1u64 << len) {
                let bits = if len == 0 {
                    String::new()
                } else {
                    format!("{i:0len$b}")
                };
                at += 1;
                t.record(&p(&bits), false, at);
            }
        }
        assert_eq!(t.provided.len(), MAX_REGION_TIMES);
        assert_eq!(t.provided_last(&p("")), Some(at));
    }
}
