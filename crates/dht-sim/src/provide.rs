//! The provide experiment: one node announces many keys to a simulated network, with the
//! sweeping provider or the per-key baseline, then reprovides them for one full cycle; what
//! it cost and where the records landed are measured against the ground truth.
//!
//! `dht-sim provide` (and `cargo xtask sim provide`) runs it from the command line; tests call
//! [`run_provide`] directly.

use std::{collections::HashSet, sync::Arc, time::Duration};

use dht_proto::{K_VALUE, Key, MessageType, PeerId};
use dht_provider::{
    DhtProvider, EitherProvider, LegacyConfig, LegacyProvider, MemoryStateStore, Multihash,
    StateStore, SweepConfig, SweepParts, SweepingProvider,
};
use dht_provider_store::{Keystore, ProviderStore};
use dht_routing::find_providers;
use dht_routing_table::Clock;
use futures::StreamExt;
use serde::Serialize;

use crate::{
    Behaviour, ChurnReport, Sim, SimError,
    memory::{MemoryPeaks, MemoryProbes, MemoryWatch},
    sim::mix,
};

/// Which provider announces the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// [`SweepingProvider`]: region by region, each region explored once.
    Sweep,
    /// [`LegacyProvider`]: one DHT walk and one ADD_PROVIDER round per key.
    PerKey,
}

impl Strategy {
    /// The name used on the command line and in reports (`sweep`, `per-key`).
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Sweep => "sweep",
            Strategy::PerKey => "per-key",
        }
    }
}

/// Settings of one [`run_provide`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProvideConfig {
    /// The provider.
    pub strategy: Strategy,
    /// Keys announced (CID-shaped sha2-256 multihashes drawn from the seed).
    pub keys: u64,
    /// Share of the servers replaced (left, and as many new ones joined) during the
    /// reprovide cycle, spread evenly over it.
    pub churn: f64,
    /// Keys sampled for the findability check (default 1,000).
    pub findable_sample: usize,
    /// Keys whose placement is checked; 0 (the default) checks every key.
    pub placement_sample: usize,
    /// The reprovide interval (22 h).
    pub interval: Duration,
    /// The sweep's workers (default 4, as go-libp2p-kad-dht).
    pub workers: usize,
    /// Write every key to the keystore before the provider starts, as a node that restarts
    /// with keys it held but no saved schedule: the sweep then provides whole regions from
    /// the keystore and never holds the keys in a queue. Sweep only.
    pub preload: bool,
    /// Run the reprovide cycle after the first provide (default true).
    pub reprovide: bool,
    /// New keys per second that arrive during the reprovide cycle, on top of
    /// [`ProvideConfig::keys`] (default 0). Each second's keys are given to
    /// `start_providing`, and the time until it returns (their first provide) is measured.
    /// Sweep only.
    pub ingest: u64,
    /// Moments of the reprovide cycle at which holders are sampled: every
    /// `interval / holder_samples`, the last at the cycle's end (default 8; 0: only the
    /// check at the end).
    pub holder_samples: u32,
    /// Keys whose holders each sample counts, spread over all keys (default 10,000).
    pub holder_sample_keys: u64,
    /// Where the provider's memory is read while it runs (default: nowhere).
    pub memory: MemoryProbes,
    /// Sample [`ProvideReport::timeline`] every minute of virtual time (default off).
    pub timeline: bool,
}

impl Default for ProvideConfig {
    fn default() -> Self {
        ProvideConfig {
            strategy: Strategy::Sweep,
            keys: 10_000,
            churn: 0.0,
            findable_sample: 1_000,
            placement_sample: 0,
            interval: Duration::from_secs(dht_proto::REPROVIDE_INTERVAL_SECS),
            workers: 4,
            preload: false,
            reprovide: true,
            ingest: 0,
            holder_samples: 8,
            holder_sample_keys: 10_000,
            memory: MemoryProbes::default(),
            timeline: false,
        }
    }
}

impl ProvideConfig {
    /// Settings for `strategy` and `keys`, the rest default.
    pub fn new(strategy: Strategy, keys: u64) -> Self {
        ProvideConfig {
            strategy,
            keys,
            ..ProvideConfig::default()
        }
    }

    /// Sets [`ProvideConfig::strategy`].
    #[must_use]
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets [`ProvideConfig::keys`].
    #[must_use]
    pub fn with_keys(mut self, keys: u64) -> Self {
        self.keys = keys;
        self
    }

    /// Sets [`ProvideConfig::churn`].
    #[must_use]
    pub fn with_churn(mut self, share: f64) -> Self {
        self.churn = share;
        self
    }

    /// Sets [`ProvideConfig::interval`].
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets [`ProvideConfig::findable_sample`].
    #[must_use]
    pub fn with_findable_sample(mut self, n: usize) -> Self {
        self.findable_sample = n;
        self
    }

    /// Sets [`ProvideConfig::placement_sample`].
    #[must_use]
    pub fn with_placement_sample(mut self, n: usize) -> Self {
        self.placement_sample = n;
        self
    }

    /// Sets [`ProvideConfig::workers`].
    #[must_use]
    pub fn with_workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Sets [`ProvideConfig::preload`].
    #[must_use]
    pub fn with_preload(mut self, on: bool) -> Self {
        self.preload = on;
        self
    }

    /// Sets [`ProvideConfig::reprovide`].
    #[must_use]
    pub fn with_reprovide(mut self, on: bool) -> Self {
        self.reprovide = on;
        self
    }

    /// Sets [`ProvideConfig::holder_samples`].
    #[must_use]
    pub fn with_holder_samples(mut self, n: u32) -> Self {
        self.holder_samples = n;
        self
    }

    /// Sets [`ProvideConfig::holder_sample_keys`].
    #[must_use]
    pub fn with_holder_sample_keys(mut self, n: u64) -> Self {
        self.holder_sample_keys = n;
        self
    }

    /// Sets [`ProvideConfig::memory`].
    #[must_use]
    pub fn with_memory(mut self, probes: MemoryProbes) -> Self {
        self.memory = probes;
        self
    }

    /// Sets [`ProvideConfig::timeline`].
    #[must_use]
    pub fn with_timeline(mut self, on: bool) -> Self {
        self.timeline = on;
        self
    }

    /// Sets [`ProvideConfig::ingest`].
    #[must_use]
    pub fn with_ingest(mut self, keys_per_sec: u64) -> Self {
        self.ingest = keys_per_sec;
        self
    }
}

/// What one phase (the first provide, or the reprovide cycle) cost and achieved.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct PhaseReport {
    /// FIND_NODE requests the provider sent.
    pub find_node_rpcs: u64,
    /// ADD_PROVIDER messages the provider sent.
    pub add_provider_rpcs: u64,
    /// Batches of the batched provide protocol the provider sent (to servers that speak it,
    /// [`SimConfig::provide_batch_share`](crate::SimConfig::provide_batch_share)).
    pub provide_batches: u64,
    /// Provider records those batches carried.
    pub batch_records: u64,
    /// Other requests the provider sent (GET_PROVIDERS, PING, …).
    pub other_rpcs: u64,
    /// Lookups: regions explored by the sweep, DHT walks (one per key) by the per-key provider.
    pub lookups: u64,
    /// Distinct nodes the provider sent anything to.
    pub distinct_peers_contacted: usize,
    /// Share of the checked keys stored on at least 19 of their true 20 closest live
    /// servers (`None` when servers only count records).
    pub placement_fraction: Option<f64>,
    /// Share of the checked keys stored on all of their true 20 closest live servers.
    pub exact_placement_fraction: Option<f64>,
    /// Keys whose placement was checked.
    pub placement_checked: u64,
    /// Mean number of a checked key's true 20 closest answering servers that hold its
    /// record, at the end of the phase.
    pub mean_holders: Option<f64>,
    /// The 5th percentile of that number over the checked keys.
    pub p5_holders: Option<u64>,
    /// Provider records sent per key provided (ADD_PROVIDER messages, and records in
    /// batches).
    pub records_per_key: f64,
    /// Messages that carried provider records (ADD_PROVIDER and batches) per key provided.
    pub record_messages_per_key: f64,
    /// Bytes of those messages and of the batch answers (see
    /// [`RpcCounts::record_bytes`](crate::RpcCounts::record_bytes)).
    pub record_bytes: u64,
    /// [`record_bytes`](Self::record_bytes) per key provided.
    pub record_bytes_per_key: f64,
    /// Share of the sampled keys that `find_providers` found from a random other node.
    pub findable_fraction: Option<f64>,
    /// Keys sampled for findability.
    pub findable_checked: u64,
    /// Keys the provider reported as failed in this phase.
    pub keys_failed: u64,
    /// Virtual time the phase took, in seconds.
    pub virtual_secs: f64,
    /// Wall time the phase took, in seconds (without the checks).
    pub wall_secs: f64,
    /// Churn during the phase.
    pub churn: ChurnReport,
    /// Holders sampled during the phase (the reprovide cycle only): at each moment, the
    /// records (from either phase) that the sampled keys' true 20 closest answering live
    /// servers hold; the last entry is the end-of-phase check ([`PhaseReport::mean_holders`]).
    pub holder_samples: Vec<HolderSample>,
    /// The lowest `mean_holders` of [`PhaseReport::holder_samples`].
    pub min_mean_holders: Option<f64>,
    /// The lowest `p5_holders` of [`PhaseReport::holder_samples`].
    pub min_p5_holders: Option<u64>,
}

impl PhaseReport {
    /// Sets the per-key figures for a phase that provided `keys` keys.
    fn per_key(&mut self, keys: u64) {
        let keys = keys.max(1) as f64;
        self.records_per_key = (self.add_provider_rpcs + self.batch_records) as f64 / keys;
        self.record_messages_per_key =
            (self.add_provider_rpcs + self.provide_batches) as f64 / keys;
        self.record_bytes_per_key = self.record_bytes as f64 / keys;
    }
}

/// One sample of the holders of the keys.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct HolderSample {
    /// Virtual seconds since the phase started.
    pub at_secs: u64,
    /// Keys counted.
    pub keys: u64,
    /// Mean holders per key.
    pub mean_holders: f64,
    /// 5th percentile of holders per key.
    pub p5_holders: Option<u64>,
}

/// The result of [`run_provide`].
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ProvideReport {
    /// `sweep` or `per-key`.
    pub strategy: &'static str,
    /// Servers in the network when the provider started.
    pub servers: usize,
    /// Keys provided.
    pub keys: u64,
    /// Share of servers replaced during the reprovide cycle.
    pub churn: f64,
    /// The first provide of every key.
    pub provide: PhaseReport,
    /// The reprovide cycle (records from the first provide are dropped first, so what is
    /// found afterwards was placed by the reprovide).
    pub reprovide: Option<PhaseReport>,
    /// FIND_NODE requests of both phases.
    pub find_node_rpcs: u64,
    /// ADD_PROVIDER messages of both phases.
    pub add_provider_rpcs: u64,
    /// Provider batches of both phases.
    pub provide_batches: u64,
    /// Records in provider batches of both phases.
    pub batch_records: u64,
    /// Share of the servers that speak the batched provide protocol.
    pub provide_batch_share: f64,
    /// Lookups of both phases.
    pub lookups: u64,
    /// Distinct nodes contacted over both phases.
    pub distinct_peers_contacted: usize,
    /// Placement after the last phase.
    pub placement_fraction: Option<f64>,
    /// Findability after the last phase.
    pub findable_fraction: Option<f64>,
    /// Virtual time of both phases, in seconds.
    pub virtual_secs: f64,
    /// Slices of the sweep's schedule (0 for per-key).
    pub slices: u64,
    /// Mean prefix length of the regions the sweep explored.
    pub average_region_prefix_len: f64,
    /// Resident memory when the provider started (the simulated network built), in bytes.
    pub rss_before_provider_bytes: u64,
    /// Resident memory at the end, in bytes.
    pub rss_after_bytes: u64,
    /// The most the sweep's reprovide walk was behind its schedule, sampled every 10 minutes
    /// of the cycle (`None` for the per-key provider, or without a cycle).
    pub max_behind_secs: Option<u64>,
    /// Keys that arrived during the cycle ([`ProvideConfig::ingest`] per second).
    pub ingested_keys: u64,
    /// The longest time from an ingested key's arrival to the end of its first provide
    /// (`start_providing` returned), in seconds (`None` without ingest).
    pub ingest_max_first_provide_secs: Option<f64>,
    /// Ingested keys whose first provide took longer than 10 minutes.
    pub ingest_late_keys: u64,
    /// Ingested keys whose first provide failed, or had not ended when the run stopped.
    pub ingest_failed_keys: u64,
    /// The provider's own memory, from its start to its close (with
    /// [`ProvideConfig::memory`]'s probes, sampled every millisecond of wall time).
    pub provider_memory: MemoryPeaks,
    /// The provider minute by minute of virtual time, from its start to its close (with
    /// [`ProvideConfig::timeline`]; empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineSample>,
}

/// The provider in one minute of virtual time (see [`ProvideReport::timeline`]).
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct TimelineSample {
    /// Virtual seconds since the provider started (the end of the minute).
    pub at_secs: u64,
    /// FIND_NODE requests the provider sent in the minute.
    pub find_node: u64,
    /// ADD_PROVIDER messages the provider sent in the minute.
    pub add_provider: u64,
    /// Other requests the provider sent in the minute.
    pub other: u64,
    /// How far behind its reprovide schedule the provider was.
    pub behind_schedule_secs: u64,
    /// Keys waiting for their first provide.
    pub keys_queued: u64,
    /// Live heap bytes above their level when the provider started (with a heap probe).
    pub heap_bytes: Option<u64>,
    /// The keystore's memory outside the heap (with a store probe).
    pub store_bytes: Option<u64>,
}

/// Samples `provider` every minute of virtual time until `stop` is set.
async fn sample_timeline<K: Keystore + 'static>(
    sim: Sim,
    me: usize,
    provider: AnyProvider<K>,
    probes: MemoryProbes,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<TimelineSample> {
    use std::sync::atomic::Ordering;
    let heap_at_start = probes.heap_bytes.map(|f| f());
    let sent = |sim: &Sim| {
        let c = sim.node(me).map(|n| n.counts()).unwrap_or_default();
        let find_node = c.sent_of(MessageType::FindNode);
        let add_provider = c.sent_of(MessageType::AddProvider);
        let total: u64 = c.sent.values().sum();
        (find_node, add_provider, total - find_node - add_provider)
    };
    let started = tokio::time::Instant::now();
    let mut before = sent(&sim);
    let mut samples = Vec::new();
    let mut next = started;
    while !stop.load(Ordering::Relaxed) {
        next += Duration::from_secs(60);
        tokio::time::sleep_until(next).await;
        let now = sent(&sim);
        let stats = provider.stats();
        samples.push(TimelineSample {
            at_secs: started.elapsed().as_secs(),
            find_node: now.0 - before.0,
            add_provider: now.1 - before.1,
            other: now.2 - before.2,
            behind_schedule_secs: stats.behind_schedule_secs,
            keys_queued: stats.keys_queued,
            heap_bytes: probes
                .heap_bytes
                .zip(heap_at_start)
                .map(|(f, at)| f().saturating_sub(at)),
            store_bytes: probes.store_bytes.as_ref().map(|f| f().iter().sum()),
        });
        before = now;
    }
    samples
}

/// What the keys ingested during the cycle saw.
#[derive(Debug, Default)]
struct Ingest {
    keys: u64,
    max_first_provide_secs: Option<f64>,
    late_keys: u64,
    failed_keys: u64,
}

impl Ingest {
    /// A batch of `n` keys that arrived at `arrived` ended its first provide now.
    fn ended(&mut self, arrived: tokio::time::Instant, n: u64, ok: bool) {
        if !ok {
            self.failed_keys += n;
            return;
        }
        let secs = arrived.elapsed().as_secs_f64();
        self.max_first_provide_secs =
            Some(self.max_first_provide_secs.map_or(secs, |m| m.max(secs)));
        if secs > 600.0 {
            self.late_keys += n;
        }
    }
}

/// The `i`-th key of a run seeded with `seed`: a sha2-256 multihash of 32 bytes drawn from
/// (seed, i), so keys can be made again one at a time, never all held at once.
pub fn key_at(seed: u64, i: u64) -> Multihash {
    let mut digest = [0u8; 32];
    for (j, chunk) in digest.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix(&[seed, 0x6b65_7973, i, j as u64]).to_le_bytes());
    }
    // A 32-byte digest always fits a 64-byte multihash.
    Multihash::wrap(0x12, &digest).unwrap_or_default()
}

/// Resident memory of this process now (`VmRSS`), in bytes; 0 where unknown.
pub fn rss_bytes() -> u64 {
    proc_status_kb("VmRSS:")
}

/// Peak resident memory of this process (`VmHWM`), in bytes; 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    proc_status_kb("VmHWM:")
}

fn proc_status_kb(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// How often the provider's memory is sampled, in wall time.
const MEMORY_PERIOD: Duration = Duration::from_millis(1);

/// Keys added per call to the provider.
const CHUNK: u64 = 50_000;

/// The keys of a run with `keys` keys, [`CHUNK`] at a time.
fn key_chunks(seed: u64, keys: u64) -> impl Iterator<Item = Vec<Multihash>> {
    (0..keys.div_ceil(CHUNK)).map(move |c| {
        (c * CHUNK..((c + 1) * CHUNK).min(keys))
            .map(|i| key_at(seed, i))
            .collect()
    })
}

/// Runs the experiment on `sim`: adds a provider node (protected from churn), joins it through
/// four random servers, provides `config.keys` keys with `keystore` as its keystore, checks
/// placement and findability, then (with [`ProvideConfig::reprovide`]) drops every provider
/// record, lets one reprovide interval pass (with churn, if set) and checks again.
///
/// `on_phase` is told when each phase starts (for progress output).
///
/// # Errors
/// [`SimError::Config`] for settings that do not fit (preload with per-key, churn outside
/// `0..=1`); [`SimError::Setting`] for zero `workers` or `holder_sample_keys`;
/// [`SimError::Provider`] if the provider cannot start or a store fails.
pub async fn run_provide<K>(
    sim: &Sim,
    keystore: K,
    config: &ProvideConfig,
    on_phase: impl Fn(&str),
) -> Result<ProvideReport, SimError>
where
    K: Keystore + 'static,
{
    dht_proto::InvalidSetting::at_least_one("workers", config.workers as u64)?;
    dht_proto::InvalidSetting::at_least_one("holder_sample_keys", config.holder_sample_keys)?;
    if !(0.0..=1.0).contains(&config.churn) {
        return Err(SimError::Config(format!(
            "churn {} is not a share in 0..=1",
            config.churn
        )));
    }
    if config.ingest > 0 && config.strategy == Strategy::PerKey {
        return Err(SimError::Config(
            "ingest is measured for the sweep only".into(),
        ));
    }
    if config.preload && config.strategy == Strategy::PerKey {
        return Err(SimError::Config(
            "preload is for the sweep: the per-key provider only reprovides what it holds".into(),
        ));
    }
    let servers = sim.live_count();
    let boot = sim
        .live_nodes()
        .into_iter()
        .take(sim.config().bootstrap_peers.max(1))
        .collect::<Vec<_>>();
    if sim.config().provider_records == crate::ProviderRecords::Sample {
        let seed = sim.config().seed;
        let checked = placement_keys(config)
            .chain(holder_keys(config))
            .chain(findable_keys(config));
        sim.keep_records_of(checked.map(|i| key_at(seed, i).to_bytes()));
    }
    let me = sim.add_node(Behaviour::Honest)?;
    sim.set_protected(me, true);
    sim.join(me, &boot).await;
    let node = sim
        .node(me)
        .ok_or(SimError::Config("provider node vanished".into()))?;
    let info = node.info().clone();
    let clock: Arc<dyn Clock> = Arc::new(sim.clock());
    let rss_before_provider_bytes = rss_bytes();

    let watch;
    let provider = match config.strategy {
        Strategy::Sweep => {
            if config.preload {
                on_phase("writing the keys to the keystore");
                for chunk in key_chunks(sim.config().seed, config.keys) {
                    keystore.put(&chunk).map_err(provider_error)?;
                }
                if let Some(settle) = &config.memory.after_preload {
                    settle();
                }
            }
            watch = MemoryWatch::start(&config.memory, MEMORY_PERIOD);
            let parts = SweepParts {
                local: info.clone(),
                network: sim.network(me),
                table: node.table().clone(),
                keystore,
                state: Box::new(MemoryStateStore::default()) as Box<dyn StateStore>,
                clock: clock.clone(),
            };
            let sweep = SweepConfig::default()
                .with_interval(config.interval)
                .with_workers(config.workers);
            EitherProvider::Sweep(SweepingProvider::start(parts, sweep).map_err(provider_error)?)
        }
        Strategy::PerKey => {
            watch = MemoryWatch::start(&config.memory, MEMORY_PERIOD);
            let client = sim
                .client(me)
                .ok_or(SimError::Config("provider node vanished".into()))?;
            EitherProvider::PerKey(
                LegacyProvider::start(
                    client,
                    keystore,
                    info.clone(),
                    clock.clone(),
                    LegacyConfig::default().with_interval(config.interval),
                )
                .map_err(provider_error)?,
            )
        }
    };
    let started = tokio::time::Instant::now();
    let timeline_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let timeline = config.timeline.then(|| {
        tokio::spawn(sample_timeline(
            sim.clone(),
            me,
            provider.clone(),
            config.memory.clone(),
            timeline_stop.clone(),
        ))
    });

    // The first provide.
    on_phase("providing");
    let before = Snapshot::take(sim, me, &provider);
    sim.track_contacts(me);
    let wall = std::time::Instant::now();
    match &provider {
        EitherProvider::Sweep(p) => {
            if !config.preload {
                for chunk in key_chunks(sim.config().seed, config.keys) {
                    p.start_providing_async(false, &chunk)
                        .map_err(provider_error)?;
                }
            }
            wait_idle(p, started + 2 * config.interval).await;
        }
        EitherProvider::PerKey(p) => {
            for chunk in key_chunks(sim.config().seed, config.keys) {
                // Failures are counted in the stats.
                let _ = p.start_providing(false, &chunk).await;
            }
        }
    }
    let mut provide = before.phase(sim, me, &provider, wall.elapsed().as_secs_f64());
    provide.per_key(config.keys);
    let mut contacted: HashSet<usize> = sim.contacted(me).into_iter().collect();
    // Let the last messages land before looking at the servers' stores.
    tokio::time::sleep(Duration::from_secs(5)).await;
    on_phase("checking the first provide");
    check(sim, me, &info.peer_id, config, &mut provide).await;

    let mut reprovide = None;
    let mut max_behind_secs = None;
    let mut ingest = Ingest::default();
    if config.reprovide {
        on_phase("reproviding for one interval");
        // Records of the first provide stay (as on a real network) while the cycle is
        // sampled; they are dropped before the end-of-cycle check, so that what it finds was
        // placed by the reprovide.
        let cycle_start_unix = sim.now();
        let before = Snapshot::take(sim, me, &provider);
        sim.track_contacts(me);
        let wall = std::time::Instant::now();
        let cycle_hours = config.interval.as_secs_f64() / 3600.0;
        let churn = (config.churn > 0.0).then(|| {
            // Spread the replacement over the cycle: churn/cycle_hours per hour each way.
            let rate = crate::Churn::per_hour(config.churn / cycle_hours);
            tokio::spawn(sim.clone().run_churn_with(config.interval, rate))
        });
        let cycle_end = tokio::time::Instant::now() + config.interval;
        let sampling = sample_holders(sim, me, &info.peer_id, config, cycle_end);
        let strategy = async {
            match &provider {
                EitherProvider::Sweep(p) => {
                    let (behind, ingested) = sweep_cycle(sim, p, config, cycle_end).await;
                    max_behind_secs = Some(behind);
                    ingest = ingested;
                    wait_idle(p, cycle_end + config.interval).await;
                }
                EitherProvider::PerKey(p) => {
                    // The baseline reprovides everything one interval after it started.
                    let done_at = started + config.interval;
                    tokio::time::sleep_until(done_at.max(tokio::time::Instant::now())).await;
                    let deadline = cycle_end + config.interval;
                    while p.stats().last_cycle_secs.is_none()
                        && tokio::time::Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    if tokio::time::Instant::now() < cycle_end {
                        tokio::time::sleep_until(cycle_end).await;
                    }
                }
            }
        };
        let (samples, ()) = futures::join!(sampling, strategy);
        let churn_report = match churn {
            Some(task) => task.await.unwrap_or_default(),
            None => ChurnReport::default(),
        };
        let mut phase = before.phase(sim, me, &provider, wall.elapsed().as_secs_f64());
        phase.per_key(config.keys + ingest.keys);
        phase.churn = churn_report;
        contacted.extend(sim.contacted(me));
        tokio::time::sleep(Duration::from_secs(5)).await;
        on_phase("checking the reprovide");
        sim.clear_provider_records_before(cycle_start_unix);
        check(sim, me, &info.peer_id, config, &mut phase).await;
        phase.holder_samples = samples;
        if let Some(mean) = phase.mean_holders {
            phase.holder_samples.push(HolderSample {
                at_secs: phase.virtual_secs as u64,
                keys: phase.placement_checked,
                mean_holders: mean,
                p5_holders: phase.p5_holders,
            });
        }
        phase.min_mean_holders = phase
            .holder_samples
            .iter()
            .map(|h| h.mean_holders)
            .reduce(f64::min);
        phase.min_p5_holders = phase
            .holder_samples
            .iter()
            .filter_map(|h| h.p5_holders)
            .min();
        reprovide = Some(phase);
    }
    let stats = provider.stats();
    provider.close().await.map_err(provider_error)?;
    let provider_memory = watch.finish();
    timeline_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let timeline = match timeline {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };

    let last = reprovide.as_ref().unwrap_or(&provide);
    let both = |f: fn(&PhaseReport) -> u64| f(&provide) + reprovide.as_ref().map_or(0, f);
    Ok(ProvideReport {
        strategy: config.strategy.as_str(),
        servers,
        keys: config.keys,
        churn: config.churn,
        find_node_rpcs: both(|p| p.find_node_rpcs),
        add_provider_rpcs: both(|p| p.add_provider_rpcs),
        provide_batches: both(|p| p.provide_batches),
        batch_records: both(|p| p.batch_records),
        provide_batch_share: sim.config().provide_batch_share,
        lookups: both(|p| p.lookups),
        distinct_peers_contacted: contacted.len(),
        placement_fraction: last.placement_fraction,
        findable_fraction: last.findable_fraction,
        virtual_secs: provide.virtual_secs + reprovide.as_ref().map_or(0.0, |p| p.virtual_secs),
        slices: stats.slices,
        average_region_prefix_len: stats.average_region_prefix_len,
        rss_before_provider_bytes,
        rss_after_bytes: rss_bytes(),
        max_behind_secs,
        ingested_keys: ingest.keys,
        ingest_max_first_provide_secs: ingest.max_first_provide_secs,
        ingest_late_keys: ingest.late_keys,
        ingest_failed_keys: ingest.failed_keys,
        provider_memory,
        timeline,
        provide,
        reprovide,
    })
}

/// Samples the holders of [`ProvideConfig::holder_sample_keys`] keys at
/// [`ProvideConfig::holder_samples`] moments of the cycle that ends at `cycle_end` (the last
/// at its end); none when servers only count records.
async fn sample_holders(
    sim: &Sim,
    me: usize,
    provider: &PeerId,
    config: &ProvideConfig,
    cycle_end: tokio::time::Instant,
) -> Vec<HolderSample> {
    let mut samples = Vec::new();
    if !sim.config().provider_records.stores() || config.keys == 0 || config.holder_samples == 0 {
        return samples;
    }
    let started = tokio::time::Instant::now();
    for i in 1..=config.holder_samples {
        let at = started
            + config
                .interval
                .mul_f64(f64::from(i) / f64::from(config.holder_samples));
        tokio::time::sleep_until(at.min(cycle_end)).await;
        let h = Holders::count(sim, me, provider, holder_keys(config));
        samples.push(HolderSample {
            at_secs: started.elapsed().as_secs(),
            keys: h.checked,
            mean_holders: h.mean(),
            p5_holders: h.p5(),
        });
    }
    samples
}

/// The sweep's reprovide cycle until `cycle_end` (and a minute more): samples how far
/// behind its schedule it is every 10 minutes, and gives it [`ProvideConfig::ingest`] new
/// keys every second until `cycle_end`, timing each second's first provide. Returns the
/// most it was behind, and what the ingested keys saw.
async fn sweep_cycle<N, T, K>(
    sim: &Sim,
    p: &SweepingProvider<N, T, K>,
    config: &ProvideConfig,
    cycle_end: tokio::time::Instant,
) -> (u64, Ingest)
where
    N: dht_routing::Network + 'static,
    T: dht_routing_table::RoutingTable + 'static,
    K: Keystore + 'static,
{
    use tokio::time::{Instant, sleep_until};
    let seed = sim.config().seed;
    let until = cycle_end + Duration::from_secs(60);
    // Ingested keys still waiting at this point count as failed.
    let give_up = cycle_end + config.interval;
    let mut behind = 0;
    let mut ingest = Ingest::default();
    let mut waiting = futures::stream::FuturesUnordered::new();
    let mut next_key = config.keys;
    let mut next_arrival = (config.ingest > 0).then(Instant::now);
    let mut next_sample = Instant::now() + Duration::from_secs(600);
    loop {
        let now = Instant::now();
        if now >= until && waiting.is_empty() {
            break;
        }
        if now >= give_up {
            ingest.failed_keys += waiting.len() as u64 * config.ingest;
            break;
        }
        let wake = next_arrival
            .map_or(next_sample, |a| a.min(next_sample))
            .min(until);
        tokio::select! {
            Some((arrived, n, ok)) = waiting.next(), if !waiting.is_empty() => {
                ingest.ended(arrived, n, ok);
            }
            () = sleep_until(wake), if now < until => {
                let now = Instant::now();
                if let Some(at) = next_arrival.filter(|&a| a <= now) {
                    let batch: Vec<Multihash> = (next_key..next_key + config.ingest)
                        .map(|i| key_at(seed, i))
                        .collect();
                    next_key += config.ingest;
                    ingest.keys += config.ingest;
                    let n = config.ingest;
                    waiting.push(async move {
                        let ok = p.start_providing(false, &batch).await.is_ok();
                        (at, n, ok)
                    });
                    next_arrival = Some(at + Duration::from_secs(1)).filter(|&a| a < cycle_end);
                }
                if next_sample <= now {
                    behind = behind.max(p.stats().behind_schedule_secs);
                    next_sample += Duration::from_secs(600);
                }
            }
            () = sleep_until(give_up), if now >= until => {}
        }
    }
    (behind, ingest)
}

/// Waits until the sweep has nothing queued and no worker busy, or until `deadline`.
async fn wait_idle<N, T, K>(p: &SweepingProvider<N, T, K>, deadline: tokio::time::Instant)
where
    N: dht_routing::Network + 'static,
    T: dht_routing_table::RoutingTable + 'static,
    K: Keystore + 'static,
{
    loop {
        let s = p.stats();
        if s.keys_queued == 0 && s.regions_queued == 0 && s.workers_busy == 0 {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(?s, "provider still busy at the deadline");
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Placement of every key (or of [`ProvideConfig::placement_sample`] keys spread over them)
/// and findability of [`ProvideConfig::findable_sample`] keys.
async fn check(
    sim: &Sim,
    me: usize,
    provider: &PeerId,
    config: &ProvideConfig,
    phase: &mut PhaseReport,
) {
    if !sim.config().provider_records.stores() || config.keys == 0 {
        return;
    }
    let seed = sim.config().seed;
    let h = Holders::count(sim, me, provider, placement_keys(config));
    phase.placement_checked = h.checked;
    phase.placement_fraction = Some(h.placed as f64 / h.checked.max(1) as f64);
    phase.exact_placement_fraction = Some(h.exact as f64 / h.checked.max(1) as f64);
    phase.mean_holders = Some(h.mean());
    phase.p5_holders = h.p5();

    let (mut sampled, mut found) = (0u64, 0u64);
    for i in findable_keys(config) {
        let key = key_at(seed, i).to_bytes();
        let finder =
            sim.random_live_node(|n| n.index() != me && n.behaviour() == Behaviour::Honest);
        if let Some(client) = finder.and_then(|f| sim.client(f)) {
            let mut stream = find_providers(&client, &key, 1);
            let hit = stream
                .by_ref()
                .any(|p| async move { p.peer_id == *provider });
            found += u64::from(hit.await);
        }
        sampled += 1;
    }
    phase.findable_checked = sampled;
    phase.findable_fraction = Some(found as f64 / sampled.max(1) as f64);
}

/// The keys (numbers for [`key_at`]) whose placement is checked: every key, or
/// [`ProvideConfig::placement_sample`] spread over them.
fn placement_keys(config: &ProvideConfig) -> impl Iterator<Item = u64> {
    spread(config.keys, config.placement_sample as u64)
}

/// The keys whose holders are sampled during the cycle.
fn holder_keys(config: &ProvideConfig) -> impl Iterator<Item = u64> {
    spread(config.keys, config.holder_sample_keys.max(1))
}

/// The keys looked up with find_providers.
fn findable_keys(config: &ProvideConfig) -> impl Iterator<Item = u64> {
    let n = config.findable_sample as u64;
    spread(config.keys, n).take(n as usize)
}

/// About `n` of the keys `0..keys`, evenly spread (every key for `n` = 0).
fn spread(keys: u64, n: u64) -> impl Iterator<Item = u64> {
    let step = keys.checked_div(n).unwrap_or(1).max(1);
    (0..keys).step_by(step as usize)
}

/// How many of each checked key's true 20 closest answering live servers hold its record.
struct Holders {
    checked: u64,
    /// Keys on at least all but one of them.
    placed: u64,
    /// Keys on all of them.
    exact: u64,
    /// How many keys have each number of holders (0 to k).
    histogram: [u64; K_VALUE + 1],
}

impl Holders {
    /// Counts the holders of the keys numbered `keys` (see [`key_at`]) now.
    fn count(sim: &Sim, me: usize, provider: &PeerId, keys: impl Iterator<Item = u64>) -> Holders {
        let seed = sim.config().seed;
        let now = sim.now();
        let mut h = Holders {
            checked: 0,
            placed: 0,
            exact: 0,
            histogram: [0; K_VALUE + 1],
        };
        for i in keys {
            let key = key_at(seed, i).to_bytes();
            let truth = sim.true_closest_by(&Key::hash(&key), K_VALUE, |n| {
                n.index() != me && n.behaviour().answers()
            });
            let held = truth
                .iter()
                .filter_map(|&t| sim.node(t))
                .filter(|n| {
                    n.store()
                        .providers(&key, usize::MAX, now)
                        .is_ok_and(|rs| rs.iter().any(|r| r.provider == *provider))
                })
                .count();
            h.checked += 1;
            h.histogram[held.min(K_VALUE)] += 1;
            h.placed += u64::from(held + 1 >= truth.len());
            h.exact += u64::from(held == truth.len());
        }
        h
    }

    fn mean(&self) -> f64 {
        let total: u64 = self
            .histogram
            .iter()
            .enumerate()
            .map(|(n, c)| n as u64 * c)
            .sum();
        total as f64 / self.checked.max(1) as f64
    }

    /// The 5th percentile.
    fn p5(&self) -> Option<u64> {
        let mut below = 0u64;
        self.histogram.iter().enumerate().find_map(|(n, c)| {
            below += c;
            (below * 20 > self.checked).then_some(n as u64)
        })
    }
}

fn provider_error(e: impl std::error::Error + Send + Sync + 'static) -> SimError {
    SimError::Provider(dht_proto::SharedError::new(e))
}

/// Either provider, on a simulated node.
type AnyProvider<K> = EitherProvider<
    SweepingProvider<crate::NodeNetwork, Arc<dht_routing_table::KBucketTable>, K>,
    LegacyProvider<crate::SimClient, K>,
>;

/// A provider's lookups so far: regions explored, or keys walked.
fn lookups<K: Keystore + 'static>(provider: &AnyProvider<K>) -> u64 {
    let s = provider.stats();
    match provider {
        EitherProvider::Sweep(_) => s.regions_explored,
        EitherProvider::PerKey(_) => s.keys_provided + s.keys_failed,
    }
}

/// Counters at the start of a phase.
struct Snapshot {
    at: tokio::time::Instant,
    find_node: u64,
    add_provider: u64,
    batches: u64,
    batch_records: u64,
    record_bytes: u64,
    total: u64,
    lookups: u64,
    keys_failed: u64,
}

impl Snapshot {
    fn take<K: Keystore + 'static>(sim: &Sim, me: usize, p: &AnyProvider<K>) -> Snapshot {
        let counts = sim.node(me).map(|n| n.counts()).unwrap_or_default();
        Snapshot {
            at: tokio::time::Instant::now(),
            find_node: counts.sent_of(MessageType::FindNode),
            add_provider: counts.sent_of(MessageType::AddProvider),
            batches: counts.batches_sent(),
            batch_records: counts.batch_records_sent,
            record_bytes: counts.record_bytes,
            total: counts.sent.values().sum(),
            lookups: lookups(p),
            keys_failed: p.stats().keys_failed,
        }
    }

    fn phase<K: Keystore + 'static>(
        &self,
        sim: &Sim,
        me: usize,
        p: &AnyProvider<K>,
        wall_secs: f64,
    ) -> PhaseReport {
        let now = Snapshot::take(sim, me, p);
        let find_node_rpcs = now.find_node - self.find_node;
        let add_provider_rpcs = now.add_provider - self.add_provider;
        let provide_batches = now.batches - self.batches;
        PhaseReport {
            find_node_rpcs,
            add_provider_rpcs,
            provide_batches,
            batch_records: now.batch_records - self.batch_records,
            record_bytes: now.record_bytes - self.record_bytes,
            other_rpcs: (now.total - self.total)
                - find_node_rpcs
                - add_provider_rpcs
                - provide_batches,
            lookups: now.lookups - self.lookups,
            distinct_peers_contacted: sim.contacts(me),
            keys_failed: now.keys_failed - self.keys_failed,
            virtual_secs: (now.at - self.at).as_secs_f64(),
            wall_secs,
            ..PhaseReport::default()
        }
    }
}
