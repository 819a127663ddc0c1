//! A local devnet: many real [`Node`]s on 127.0.0.1 in one process.
//!
//! [`run`] starts the nodes (each with its own TCP listener, noise and yamux, as in
//! production), bootstraps them, lets one node provide random CIDs with the sweeping or the
//! per-key provider, then looks a sample of them up from other nodes and reports what each
//! phase cost. The `dht-node devnet` subcommand and the crate's devnet test both call it.
//!
//! ```no_run
//! use dht_node::devnet::{DevnetConfig, run};
//!
//! # async fn demo() -> Result<(), dht_node::devnet::DevnetError> {
//! let config = DevnetConfig::default().with_nodes(10).with_keys(500).with_sample(50);
//! let report = run(&config, |_progress| {}).await?;
//! assert_eq!(report.found, report.sampled);
//! println!("{report}");
//! # Ok(())
//! # }
//! ```

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use dht_proto::{MessageType, PeerInfo};
use dht_provider::{
    DhtProvider, LegacyConfig, LegacyProvider, MemoryStateStore, Multihash, ProviderError,
    ProviderStats, SweepConfig, SweepParts, SweepingProvider,
};
use dht_provider_store::MemoryStore;
use dht_routing::{Feature, OpStats, find_closest_peers, find_providers};
use dht_routing_table::{Clock, RoutingTable, SystemClock};
use futures::{StreamExt, future::join_all, stream};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use sha2::{Digest, Sha256};

use crate::{
    builder::NodeBuilder,
    node::{Node, NodeError},
    transport::TransportStats,
};

/// The multihash code of sha2-256.
const SHA2_256: u64 = 0x12;

/// How the providing node announces its keys: the strategy of `dht-node run`.
pub use crate::config::Strategy;

/// Settings of a devnet run, with a `with_` setter for every field; [`run`] refuses
/// settings that cannot work.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DevnetConfig {
    /// Nodes started (at least 2); node 0 provides.
    pub nodes: usize,
    /// Random CIDs (sha2-256 multihashes of random bytes) node 0 provides.
    pub keys: usize,
    /// Keys looked up from other nodes afterwards (at most `keys`).
    pub sample: usize,
    /// How node 0 provides.
    pub strategy: Strategy,
    /// Each node after the first bootstraps from node 0 and up to this many other random
    /// earlier nodes.
    pub bootstrap_peers: usize,
    /// At most this long is spent on extra self-lookup rounds after every node has joined,
    /// while the routing tables still grow.
    pub settle_timeout: Duration,
    /// Lookups of the sample run at once.
    pub lookup_parallelism: usize,
    /// Seed of the keys, of the bootstrap choices and of the sample (node identities are
    /// random).
    pub seed: u64,
    /// How every node is built; its listen address should be 127.0.0.1 port 0 and its
    /// bootstrap list empty (the devnet bootstraps the nodes itself). Node 0 provides with
    /// a provider the devnet starts after the bootstrap (the sweep sizes its regions from the
    /// routing table), over an in-memory keystore. With the batched provide protocol off
    /// here ([`NodeBuilder::provide_batch`]), no node sends or serves it.
    pub node: NodeBuilder,
    /// The share of the servers (the nodes after node 0), 0 to 1, built as [`node`](Self::node)
    /// says; the others are built with the batched provide protocol off, so that they neither
    /// serve nor advertise it. 1 (the default): every server as `node` says; 0.5: a mixed
    /// devnet, every other server speaking the protocol (when `node` has it on).
    pub batch_share: f64,
    /// The sweeping provider's settings.
    pub sweep: SweepConfig,
    /// The per-key provider's settings.
    pub legacy: LegacyConfig,
}

impl Default for DevnetConfig {
    /// 50 nodes, 20,000 keys, a sample of 200, the sweep.
    fn default() -> Self {
        DevnetConfig {
            nodes: 50,
            keys: 20_000,
            sample: 200,
            strategy: Strategy::Sweep,
            bootstrap_peers: 2,
            settle_timeout: Duration::from_secs(10),
            lookup_parallelism: 16,
            seed: 0x0061_6d69_6e6f,
            node: NodeBuilder::local(),
            batch_share: 1.0,
            sweep: SweepConfig::default(),
            legacy: LegacyConfig::default(),
        }
    }
}

impl DevnetConfig {
    /// Sets how many nodes start (at least 2).
    #[must_use]
    pub fn with_nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// Sets how many random CIDs node 0 provides.
    #[must_use]
    pub fn with_keys(mut self, keys: usize) -> Self {
        self.keys = keys;
        self
    }

    /// Sets how many keys are looked up afterwards.
    #[must_use]
    pub fn with_sample(mut self, sample: usize) -> Self {
        self.sample = sample;
        self
    }

    /// Sets how node 0 provides.
    #[must_use]
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets how many other earlier nodes each node bootstraps from besides node 0.
    #[must_use]
    pub fn with_bootstrap_peers(mut self, peers: usize) -> Self {
        self.bootstrap_peers = peers;
        self
    }

    /// Sets the most time spent on extra self-lookup rounds.
    #[must_use]
    pub fn with_settle_timeout(mut self, timeout: Duration) -> Self {
        self.settle_timeout = timeout;
        self
    }

    /// Sets how many lookups of the sample run at once (at least 1).
    #[must_use]
    pub fn with_lookup_parallelism(mut self, n: usize) -> Self {
        self.lookup_parallelism = n;
        self
    }

    /// Sets the seed of the keys, the bootstrap choices and the sample.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets how every node is built (see [`node`](Self::node)).
    #[must_use]
    pub fn with_node(mut self, node: NodeBuilder) -> Self {
        self.node = node;
        self
    }

    /// Sets the share of the servers, 0 to 1, built as [`node`](Self::node) says.
    #[must_use]
    pub fn with_batch_share(mut self, share: f64) -> Self {
        self.batch_share = share;
        self
    }

    /// Sets the sweeping provider's settings.
    #[must_use]
    pub fn with_sweep(mut self, sweep: SweepConfig) -> Self {
        self.sweep = sweep;
        self
    }

    /// Sets the per-key provider's settings.
    #[must_use]
    pub fn with_legacy(mut self, legacy: LegacyConfig) -> Self {
        self.legacy = legacy;
        self
    }
}

/// What can stop a devnet run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevnetError {
    /// Fewer than two nodes were asked for.
    #[error("a devnet needs at least 2 nodes, got {0}")]
    TooFewNodes(usize),
    /// Another setting that cannot work; nothing was started.
    #[error("invalid devnet setting {setting}: {reason}")]
    InvalidConfig {
        /// The setting, as its field is named.
        setting: &'static str,
        /// What it must be.
        reason: &'static str,
    },
    /// A node could not start or bootstrap.
    #[error("node {index}: {source}")]
    Node {
        /// The node's index.
        index: usize,
        /// What went wrong.
        source: NodeError,
    },
    /// The provider could not start or be closed.
    #[error("provider: {0}")]
    Provider(#[from] ProviderError),
}

/// Sizes of the routing tables.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TableSizes {
    /// The smallest table.
    pub min: usize,
    /// The mean size.
    pub mean: f64,
    /// The largest table.
    pub max: usize,
}

impl TableSizes {
    fn of(nodes: &[Arc<Node>]) -> TableSizes {
        let sizes: Vec<usize> = nodes.iter().map(|n| n.table().len()).collect();
        TableSizes {
            min: sizes.iter().copied().min().unwrap_or(0),
            max: sizes.iter().copied().max().unwrap_or(0),
            mean: sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64,
        }
    }
}

/// What a devnet run did and cost.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DevnetReport {
    /// Nodes started.
    pub nodes: usize,
    /// Keys provided.
    pub keys: usize,
    /// How node 0 provided.
    pub strategy: Strategy,
    /// Starting every transport.
    pub start_time: Duration,
    /// Bootstrapping every node, and the extra self-lookup rounds.
    pub bootstrap_time: Duration,
    /// The first provide of every key.
    pub provide_time: Duration,
    /// The sampled lookups.
    pub lookup_time: Duration,
    /// Self-lookup rounds run after every node had joined.
    pub settle_rounds: usize,
    /// Routing table sizes after bootstrap.
    pub tables: TableSizes,
    /// Servers that serve the batched provide protocol (built as [`DevnetConfig::node`] says,
    /// [`DevnetConfig::batch_share`] of them, with the protocol on); the others take
    /// ADD_PROVIDER only.
    pub batch_servers: usize,
    /// Whether node 0 sends batches (the protocol on in [`DevnetConfig::node`]).
    pub provider_batches: bool,
    /// Requests the bootstrap's lookups sent, all nodes together.
    pub bootstrap_stats: OpStats,
    /// The provider's counters after the first provide.
    pub provider: ProviderStats,
    /// Why the first provide reported failure, if it did.
    pub provide_error: Option<String>,
    /// The providing node's transport counters after the first provide.
    pub provider_transport: TransportStats,
    /// Bytes of kad and batch messages every node together wrote during the provide
    /// ([`TransportStats::bytes_sent`]): the provider's requests and batches, the servers'
    /// answers.
    pub provide_bytes_sent: u64,
    /// Records the servers took from batches during the provide, all servers together
    /// ([`TransportStats::inbound_batch_records`]).
    pub servers_batch_records: u64,
    /// Keys looked up.
    pub sampled: usize,
    /// Sampled keys whose lookup returned node 0 as a provider.
    pub found: usize,
    /// The sampled lookups' requests, all together.
    pub lookups: OpStats,
}

impl DevnetReport {
    /// Records the provider sent in batches during the first provide (answered batches' keys,
    /// [`TransportStats::outbound_batch_records`]).
    pub fn records_batched(&self) -> u64 {
        self.provider_transport.outbound_batch_records
    }

    /// Bytes every node wrote during the provide, per key provided.
    pub fn bytes_per_key(&self) -> f64 {
        self.provide_bytes_sent as f64 / self.keys.max(1) as f64
    }

    /// The share of sampled keys found, 0 to 1.
    pub fn found_share(&self) -> f64 {
        if self.sampled == 0 {
            return 1.0;
        }
        self.found as f64 / self.sampled as f64
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl fmt::Display for DevnetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.start_time + self.bootstrap_time + self.provide_time + self.lookup_time;
        let p = &self.provider;
        writeln!(
            f,
            "devnet: {} nodes on 127.0.0.1, {} keys, strategy {}; batched provide protocol: {} of {} servers serve it, the provider {}",
            self.nodes,
            self.keys,
            self.strategy,
            self.batch_servers,
            self.nodes - 1,
            if self.provider_batches {
                "sends it"
            } else {
                "does not send it"
            }
        )?;
        writeln!(f, "phases (wall time):")?;
        writeln!(f, "  start      {:>8.2} s", secs(self.start_time))?;
        writeln!(
            f,
            "  bootstrap  {:>8.2} s  ({} settle rounds; tables min {} / mean {:.1} / max {}; {} FIND_NODE)",
            secs(self.bootstrap_time),
            self.settle_rounds,
            self.tables.min,
            self.tables.mean,
            self.tables.max,
            self.bootstrap_stats.requests_of(MessageType::FindNode),
        )?;
        writeln!(
            f,
            "  provide    {:>8.2} s  ({:.0} keys/s)",
            secs(self.provide_time),
            self.keys as f64 / secs(self.provide_time).max(1e-9)
        )?;
        writeln!(
            f,
            "  lookup     {:>8.2} s  ({} lookups)",
            secs(self.lookup_time),
            self.sampled
        )?;
        writeln!(f, "  total      {:>8.2} s", secs(total))?;
        writeln!(f, "provide ({}):", self.strategy)?;
        writeln!(
            f,
            "  keys provided {} / failed {}{}",
            p.keys_provided,
            p.keys_failed,
            match &self.provide_error {
                Some(e) => format!(" (first provide: {e})"),
                None => String::new(),
            }
        )?;
        writeln!(
            f,
            "  FIND_NODE sent {}, ADD_PROVIDER sent {} (failed {})",
            p.find_node_sent, p.add_provider_sent, p.add_provider_failed
        )?;
        writeln!(
            f,
            "  records sent this cycle {}, regions explored {} (mean prefix {:.1} bits)",
            p.records_sent_this_cycle, p.regions_explored, p.average_region_prefix_len
        )?;
        writeln!(
            f,
            "  FIND_NODE per key {:.4}, ADD_PROVIDER per key {:.2}",
            p.find_node_sent as f64 / self.keys.max(1) as f64,
            p.add_provider_sent as f64 / self.keys.max(1) as f64
        )?;
        let t = &self.provider_transport;
        writeln!(
            f,
            "  provider transport: {} requests ok, {} failed, {} streams opened, {} reused, {} stream writes",
            t.outbound_requests_ok,
            t.outbound_requests_failed,
            t.outbound_streams_opened,
            t.outbound_streams_reused,
            t.outbound_writes
        )?;
        writeln!(
            f,
            "  provider batches: {} answered ({} records, {} stored), {} failed, {} refused",
            t.outbound_batches,
            t.outbound_batch_records,
            t.outbound_batch_stored,
            t.outbound_batches_failed,
            t.outbound_batches_refused
        )?;
        writeln!(
            f,
            "  provider's batches: {} sent ({} records, {} stored, {} refused), {} failed, {} deferred, {} fell back to ADD_PROVIDER",
            p.provide_batches_sent,
            p.batch_records_sent,
            p.batch_records_stored,
            p.batch_records_refused,
            p.provide_batches_failed,
            p.provide_batches_deferred,
            p.provide_batch_fallbacks
        )?;
        writeln!(
            f,
            "  records each way: {} in batches (servers took {}), {} as ADD_PROVIDER",
            self.records_batched(),
            self.servers_batch_records,
            p.add_provider_sent
        )?;
        writeln!(
            f,
            "  bytes sent during the provide, all nodes: {} ({:.0} per key)",
            self.provide_bytes_sent,
            self.bytes_per_key()
        )?;
        let l = &self.lookups;
        writeln!(
            f,
            "lookups (find_providers, count 1, from random other nodes):"
        )?;
        writeln!(
            f,
            "  found {} / {} ({:.1} %)",
            self.found,
            self.sampled,
            100.0 * self.found_share()
        )?;
        let by_type: Vec<String> = l
            .requests
            .iter()
            .map(|(ty, n)| format!("{ty} {n}"))
            .collect();
        writeln!(
            f,
            "  requests {} ({}), {:.2} per lookup; failures {}, timeouts {}",
            l.total_requests(),
            by_type.join(", "),
            l.total_requests() as f64 / self.sampled.max(1) as f64,
            l.failures,
            l.timeouts
        )
    }
}

/// How far node 0's provide has got, as [`run`] reports it while keys are provided.
///
/// The sweep counts a key as provided once its whole region is done, so `keys_provided`
/// moves in steps; `records_sent` moves with every ADD_PROVIDER and every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProvideProgress {
    /// Keys provided so far.
    pub keys_provided: u64,
    /// Keys to provide.
    pub keys: u64,
    /// Records sent so far: ADD_PROVIDER messages sent or given up on, and records sent in
    /// batches.
    pub records_sent: u64,
    /// Records the provide takes: each key to its k closest nodes.
    pub records_expected: u64,
}

/// Runs a devnet: starts `config.nodes` nodes on 127.0.0.1, bootstraps them, provides
/// `config.keys` random CIDs from node 0, looks `config.sample` of them up from other nodes,
/// stops every node and reports.
///
/// `on_progress` is called about ten times a second while keys are provided, with the
/// provider's counters ([`ProvideProgress`]).
///
/// Needs a tokio runtime with time and I/O; a multi-threaded one spreads the nodes over the
/// cores.
///
/// # Errors
/// [`DevnetError`] when fewer than 2 nodes are asked for or another setting cannot work
/// (no lookup at once, a batch share outside 0 to 1), when a node cannot start or
/// bootstrap, or when the provider cannot start. Keys that are not found are not an error:
/// they show in [`DevnetReport::found`].
pub async fn run(
    config: &DevnetConfig,
    on_progress: impl Fn(ProvideProgress) + Send + Sync,
) -> Result<DevnetReport, DevnetError> {
    if config.nodes < 2 {
        return Err(DevnetError::TooFewNodes(config.nodes));
    }
    if config.lookup_parallelism == 0 {
        return Err(DevnetError::InvalidConfig {
            setting: "lookup_parallelism",
            reason: "must be at least 1",
        });
    }
    if !(0.0..=1.0).contains(&config.batch_share) {
        return Err(DevnetError::InvalidConfig {
            setting: "batch_share",
            reason: "must be a share from 0 to 1",
        });
    }
    let mut rng = StdRng::seed_from_u64(config.seed);

    // Phase 1: every transport.
    let started = Instant::now();
    let nodes = join_all((0..config.nodes).map(|index| async move {
        let builder = config.node.clone();
        let builder = if speaks_batches(index, config.batch_share) {
            builder
        } else {
            builder.provide_batch(false)
        };
        builder
            .build()
            .await
            .map_err(|source| DevnetError::Node { index, source })
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<Arc<Node>>, DevnetError>>()?;
    let start_time = started.elapsed();
    tracing::info!(nodes = nodes.len(), ?start_time, "devnet nodes started");

    let result = run_on(config, &nodes, &mut rng, start_time, &on_progress).await;
    join_all(nodes.iter().map(|n| n.shutdown())).await;
    result
}

/// Whether node `index` is built as configured (else with the batched provide protocol
/// off): node 0 always; of the servers, every one at which the running count
/// `floor(index * share)` steps up, so that `share` of them are, spread over the indices.
fn speaks_batches(index: usize, share: f64) -> bool {
    let share = share.clamp(0.0, 1.0);
    index == 0 || (index as f64 * share).floor() > ((index - 1) as f64 * share).floor()
}

/// Every node's transport counters.
fn transport_stats(nodes: &[Arc<Node>]) -> Vec<TransportStats> {
    nodes.iter().map(|n| n.transport().stats()).collect()
}

/// What `counter` grew by on all nodes together from `before` to `after`.
fn grown(
    before: &[TransportStats],
    after: &[TransportStats],
    counter: impl Fn(&TransportStats) -> u64,
) -> u64 {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| counter(a).saturating_sub(counter(b)))
        .sum()
}

async fn run_on(
    config: &DevnetConfig,
    nodes: &[Arc<Node>],
    rng: &mut StdRng,
    start_time: Duration,
    on_progress: &(impl Fn(ProvideProgress) + Send + Sync),
) -> Result<DevnetReport, DevnetError> {
    // Phase 2: bootstrap, each node from node 0 and a few random earlier ones.
    let started = Instant::now();
    let mut bootstrap_stats = OpStats::default();
    for (index, node) in nodes.iter().enumerate().skip(1) {
        let mut peers: Vec<PeerInfo> = vec![nodes[0].info().clone()];
        let earlier: Vec<usize> = (1..index).collect();
        peers.extend(
            earlier
                .choose_multiple(rng, config.bootstrap_peers)
                .map(|&i| nodes[i].info().clone()),
        );
        let outcome = node
            .bootstrap(&peers)
            .await
            .map_err(|source| DevnetError::Node { index, source })?;
        bootstrap_stats.merge(&outcome.stats);
    }
    // Early nodes learnt of later ones only when these contacted them; self-lookups (and a
    // lookup of a random key, for the far buckets) on every node, while the tables grow.
    let mut settle_rounds = 0;
    let mut total: usize = nodes.iter().map(|n| n.table().len()).sum();
    let settle_deadline = Instant::now() + config.settle_timeout;
    while Instant::now() < settle_deadline {
        let random_keys: Vec<[u8; 32]> = nodes.iter().map(|_| rng.random()).collect();
        let round = join_all(
            nodes
                .iter()
                .zip(&random_keys)
                .map(|(node, key)| async move {
                    let mut stats = OpStats::default();
                    if let Ok(o) = node.self_lookup().await {
                        stats.merge(&o.stats);
                    }
                    if let Ok(o) =
                        find_closest_peers(&**node.client(), key, dht_proto::K_VALUE).await
                    {
                        stats.merge(&o.stats);
                    }
                    stats
                }),
        );
        let remaining = settle_deadline.saturating_duration_since(Instant::now());
        let Ok(stats) = tokio::time::timeout(remaining, round).await else {
            break;
        };
        for s in &stats {
            bootstrap_stats.merge(s);
        }
        settle_rounds += 1;
        let now: usize = nodes.iter().map(|n| n.table().len()).sum();
        tracing::debug!(round = settle_rounds, tables = now, "settle round");
        if now <= total {
            break;
        }
        total = now;
    }
    let tables = TableSizes::of(nodes);
    let bootstrap_time = started.elapsed();
    tracing::info!(?tables, ?bootstrap_time, "devnet bootstrapped");

    // Phase 3: node 0 provides random CIDs.
    let keys: Vec<Multihash> = (0..config.keys).map(|_| random_cid(rng)).collect();
    let provider_node = &nodes[0];
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let keystore = Arc::new(MemoryStore::new());
    // Each key goes to its k closest servers: all the others, in a devnet of k nodes or fewer.
    let replication = dht_proto::K_VALUE.min(nodes.len() - 1) as u64;
    let transport_before = transport_stats(nodes);
    let started = Instant::now();
    let (provider, provide_error) = match config.strategy {
        Strategy::Sweep => {
            let provider = SweepingProvider::start(
                SweepParts {
                    local: provider_node.info().clone(),
                    network: provider_node.network(),
                    table: provider_node.table().clone(),
                    keystore,
                    state: Box::new(MemoryStateStore::default()),
                    clock,
                },
                config.sweep.clone(),
            )?;
            provide(&provider, &keys, replication, on_progress).await
        }
        Strategy::PerKey => {
            let provider = LegacyProvider::start(
                provider_node.client().clone(),
                keystore,
                provider_node.info().clone(),
                clock,
                config.legacy.clone(),
            )?;
            provide(&provider, &keys, replication, on_progress).await
        }
    };
    let provide_time = started.elapsed();
    let transport_after = transport_stats(nodes);
    let provider_transport = transport_after[0];
    let provide_bytes_sent = grown(&transport_before, &transport_after, |t| t.bytes_sent);
    let servers_batch_records = grown(&transport_before[1..], &transport_after[1..], |t| {
        t.inbound_batch_records
    });
    tracing::info!(?provide_time, "devnet keys provided");

    // Phase 4: a sample of the keys, each from a random other node.
    let sample: Vec<(Multihash, usize)> = keys
        .choose_multiple(rng, config.sample.min(keys.len()))
        .map(|key| (*key, rng.random_range(1..nodes.len())))
        .collect();
    let provider_id = provider_node.peer_id();
    let started = Instant::now();
    let results: Vec<(bool, OpStats)> = stream::iter(sample.iter().map(|(key, from)| async move {
        let client = &**nodes[*from].client();
        let mut providers = find_providers(client, &key.to_bytes(), 1);
        let mut found = false;
        while let Some(peer) = providers.next().await {
            found |= peer.peer_id == provider_id;
        }
        if !found {
            tracing::warn!(from, key = ?key, "sampled key not found");
        }
        (found, providers.stats())
    }))
    .buffer_unordered(config.lookup_parallelism)
    .collect()
    .await;
    let lookup_time = started.elapsed();
    let mut lookups = OpStats::default();
    for (_, stats) in &results {
        lookups.merge(stats);
    }

    Ok(DevnetReport {
        nodes: nodes.len(),
        keys: keys.len(),
        strategy: config.strategy,
        start_time,
        bootstrap_time,
        provide_time,
        lookup_time,
        settle_rounds,
        tables,
        batch_servers: nodes[1..]
            .iter()
            .filter(|n| n.transport().uses(Feature::ProvideBatch))
            .count(),
        provider_batches: nodes[0].transport().uses(Feature::ProvideBatch),
        bootstrap_stats,
        provider,
        provide_error,
        provider_transport,
        provide_bytes_sent,
        servers_batch_records,
        sampled: results.len(),
        found: results.iter().filter(|(found, _)| *found).count(),
        lookups,
    })
}

/// Provides `keys` with `provider`, reporting progress until the first provide returns;
/// then reads the stats and closes the provider.
async fn provide<P: DhtProvider>(
    provider: &P,
    keys: &[Multihash],
    replication: u64,
    on_progress: &(impl Fn(ProvideProgress) + Send + Sync),
) -> (ProviderStats, Option<String>) {
    let total = keys.len() as u64;
    let progress = |stats: &ProviderStats| ProvideProgress {
        keys_provided: stats.keys_provided,
        keys: total,
        records_sent: stats.add_provider_sent
            + stats.add_provider_failed
            + stats.batch_records_sent,
        records_expected: total * replication,
    };
    let providing = provider.start_providing(false, keys);
    tokio::pin!(providing);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let result = loop {
        tokio::select! {
            result = &mut providing => break result,
            _ = tick.tick() => on_progress(progress(&provider.stats())),
        }
    };
    // The first provide returns once every key is reported; the counters are updated just
    // after. Give them a moment to settle.
    let settle = Instant::now();
    let mut stats = provider.stats();
    while stats.keys_provided + stats.keys_failed < total
        && !(stats.workers_busy == 0 && stats.keys_queued == 0)
        && settle.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = provider.stats();
    }
    on_progress(progress(&stats));
    if let Err(e) = provider.close().await {
        tracing::warn!(error = %e, "closing the provider");
    }
    (stats, result.err().map(|e| e.to_string()))
}

/// The sha2-256 multihash of 32 random bytes: the key of a random CIDv1.
pub fn random_cid(rng: &mut impl Rng) -> Multihash {
    let bytes: [u8; 32] = rng.random();
    let digest = Sha256::digest(bytes);
    Multihash::wrap(SHA2_256, digest.as_slice())
        .expect("a 32-byte digest fits a multihash of up to 64 bytes")
}
