//! [`Sim`]: the simulated network, its construction, churn and ground truth.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use dht_handler::{Handler, NamespacedValidator};
use dht_proto::{
    Key, Multiaddr, PeerId, PeerInfo, Prefix, SharedError, UnixSecs, libp2p_identity::Keypair,
};
use dht_provider_store::MemoryStore;
use dht_routing::{DhtClient, RefreshScope, refresh_table};
use dht_routing_table::{Clock, Direction, KBucketTable, PeerEvent};
use futures::StreamExt;
use parking_lot::{Mutex, MutexGuard, RwLock};
use rand::{Rng, RngCore, SeedableRng, rngs::SmallRng, rngs::StdRng, seq::SliceRandom};
use serde::Serialize;

use crate::{
    Behaviour, NetStats, NodeNetwork, RpcCounts, SIM_NAMESPACE, SeqValidator, SimClock, SimConfig,
    SimError, TableBuild,
    network::NetCounters,
    node::{NodeCounters, SimNode},
};

/// The client of a simulated node: the workspace's real [`DhtClient`] over the node's table
/// and its [`NodeNetwork`].
pub type SimClient = DhtClient<Arc<KBucketTable>, NodeNetwork>;

/// Tags separating the streams of random draws derived from the seed.
const TAG_REFRESH: u64 = 0x7265_6672;
const TAG_FAST: u64 = 0x6661_7374;
const TAG_BATCH: u64 = 0x6261_7463;
const TAG_BATCH_REFUSE: u64 = 0x7266_7365;

/// SplitMix64's finaliser.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A well-mixed 64-bit seed from several numbers (order matters).
pub(crate) fn mix(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x6a09_e667_f3bc_c908, |h, &p| splitmix(h ^ splitmix(p)))
}

/// Everything the nodes share; [`Sim`] and every [`NodeNetwork`] hold it.
pub(crate) struct SimInner {
    pub(crate) config: SimConfig,
    pub(crate) clock: SimClock,
    nodes: RwLock<Vec<Arc<SimNode>>>,
    index: RwLock<HashMap<PeerId, usize>>,
    /// Live nodes, sorted by Kademlia key.
    live: RwLock<Vec<(Key, usize)>>,
    rng: Mutex<StdRng>,
    pub(crate) net: NetCounters,
    initial_nodes: usize,
    /// With [`ProviderRecords::Sample`](crate::ProviderRecords::Sample): the keys whose
    /// records servers keep.
    kept: RwLock<HashSet<Vec<u8>>>,
}

impl SimInner {
    pub(crate) fn node(&self, i: usize) -> Option<Arc<SimNode>> {
        self.nodes.read().get(i).cloned()
    }

    /// Whether servers keep the records of `key` (else they count them only).
    pub(crate) fn keeps_records_of(&self, key: &[u8]) -> bool {
        match self.config.provider_records {
            crate::ProviderRecords::Count => false,
            crate::ProviderRecords::Sample => self.kept.read().contains(key),
            _ => true,
        }
    }

    pub(crate) fn index_of(&self, peer: &PeerId) -> Option<usize> {
        self.index.read().get(peer).copied()
    }

    /// Up to `n` distinct random live peers; with `far_from`, only from the half of the
    /// keyspace that does not hold that key.
    pub(crate) fn random_live_peers(
        &self,
        rng: &mut SmallRng,
        n: usize,
        far_from: Option<&Key>,
    ) -> Vec<PeerInfo> {
        let live = self.live.read();
        let half = live.partition_point(|(k, _)| !k.bit(0));
        let pool = match far_from {
            None => &live[..],
            Some(key) if key.bit(0) => live.get(..half).unwrap_or(&[]),
            Some(_) => live.get(half..).unwrap_or(&[]),
        };
        let picks = rand::seq::index::sample(rng, pool.len(), n.min(pool.len()));
        let nodes = self.nodes.read();
        picks
            .into_iter()
            .filter_map(|i| pool.get(i).and_then(|(_, j)| nodes.get(*j)))
            .map(|node| node.info.clone())
            .collect()
    }
}

/// The range of `live` (sorted by key) whose keys start with `prefix`.
fn range_of(live: &[(Key, usize)], prefix: &Prefix) -> std::ops::Range<usize> {
    let (first, last) = (prefix.first_key(), prefix.last_key());
    let lo = live.partition_point(|(k, _)| *k < first);
    let hi = live.partition_point(|(k, _)| *k <= last);
    lo..hi.max(lo)
}

/// What [`Sim::run_churn`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ChurnReport {
    /// Nodes that left.
    pub left: usize,
    /// Nodes that joined.
    pub joined: usize,
}

/// How complete the routing tables are, against the live network.
///
/// For each live node and each bucket (common prefix length `c` with the node's key), the
/// bucket can hold `min(k, live nodes with that CPL)` live peers: a bucket is *full* when it
/// holds that many. Dead entries count for nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TableQuality {
    /// Live nodes measured.
    pub nodes: usize,
    /// Live peers held over live peers that could be held, over all buckets.
    pub fill: f64,
    /// Share of non-empty possible buckets that are full.
    pub full_buckets: f64,
    /// Mean number of peers in a table (live or not).
    pub mean_len: f64,
    /// Share of table entries that are nodes that left.
    pub dead_share: f64,
}

/// A simulated network: many nodes in one process, each a real
/// [`Handler`](dht_handler::Handler) with a [`KBucketTable`] and a [`MemoryStore`], each with
/// its own [`DhtClient`] over an in-memory [`NodeNetwork`], on tokio's clock.
///
/// Build it inside a current-thread runtime with a paused clock ([`runtime`](crate::runtime)):
/// time then jumps to the next timer whenever every task waits, so simulated hours take
/// seconds, and the same seed gives the same run. Cloning a `Sim` gives another handle to the
/// same network (e.g. for a churn task).
///
/// ```
/// use dht_proto::{K_VALUE, Key};
/// use dht_routing::find_closest_peers;
/// use dht_sim::{Sim, SimConfig};
///
/// dht_sim::runtime()?.block_on(async {
///     let sim = Sim::build(SimConfig::default().with_nodes(200).with_seed(1)).await?;
///     let client = sim.client(0).expect("node 0 exists");
///     let key = b"some key";
///     let found = find_closest_peers(&client, key, K_VALUE).await?;
///     let found: Vec<usize> = found.value.iter().filter_map(|p| sim.index_of(&p.peer_id)).collect();
///     let truth = sim.true_closest_by(&Key::hash(key), K_VALUE, |n| n.index() != 0);
///     assert_eq!(found, truth);
///     Ok::<(), Box<dyn std::error::Error>>(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Sim {
    inner: Arc<SimInner>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("nodes", &self.len())
            .field("live", &self.live_count())
            .field("seed", &self.inner.config.seed)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A network of [`SimConfig::nodes`] nodes with empty routing tables. Identities and
    /// misbehaving nodes are drawn from the seed.
    ///
    /// # Errors
    /// [`SimError::Config`] for shares outside `0..=1`.
    pub fn new(config: SimConfig) -> Result<Sim, SimError> {
        config.validate()?;
        let n = config.nodes;
        let mut rng = StdRng::seed_from_u64(config.seed);
        // Misbehaving nodes: the first of a shuffled order.
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut behaviours = vec![Behaviour::Honest; n];
        let m = config.misbehaviour;
        let mut at = 0usize;
        for (share, b) in [
            (m.silent, Behaviour::Silent),
            (m.slow, Behaviour::Slow),
            (m.random_peers, Behaviour::RandomPeers),
            (m.far_peers, Behaviour::FarPeers),
        ] {
            let count = ((share * n as f64).round() as usize).min(n - at);
            for &i in order.get(at..at + count).unwrap_or(&[]) {
                if let Some(slot) = behaviours.get_mut(i) {
                    *slot = b;
                }
            }
            at += count;
        }
        let clock = SimClock::new(config.start_time);
        let sim = Sim {
            inner: Arc::new(SimInner {
                clock,
                nodes: RwLock::new(Vec::with_capacity(n)),
                index: RwLock::new(HashMap::with_capacity(n)),
                live: RwLock::new(Vec::with_capacity(n)),
                rng: Mutex::new(rng),
                net: NetCounters::default(),
                initial_nodes: n,
                kept: RwLock::new(HashSet::new()),
                config,
            }),
        };
        let mut fresh = Vec::with_capacity(n);
        for (i, b) in behaviours.into_iter().enumerate() {
            fresh.push(sim.make_node(i, b)?);
        }
        {
            let mut nodes = sim.inner.nodes.write();
            let mut index = sim.inner.index.write();
            let mut live = sim.inner.live.write();
            for node in fresh {
                index.insert(node.info.peer_id, node.index);
                live.push((node.key, node.index));
                nodes.push(Arc::new(node));
            }
            live.sort_unstable();
        }
        Ok(sim)
    }

    /// [`Sim::new`], then the routing tables as [`SimConfig::build`] says.
    ///
    /// # Errors
    /// Those of [`Sim::new`].
    pub async fn build(config: SimConfig) -> Result<Sim, SimError> {
        let build = config.build;
        let sim = Sim::new(config)?;
        match build {
            TableBuild::Fast => sim.fill_tables_directly(),
            TableBuild::Realistic => sim.join_all().await,
            TableBuild::Empty => {}
        }
        Ok(sim)
    }

    fn rng(&self) -> MutexGuard<'_, StdRng> {
        self.inner.rng.lock()
    }

    /// A node with a fresh identity and index `index` (not yet registered).
    fn make_node(&self, index: usize, behaviour: Behaviour) -> Result<SimNode, SimError> {
        let config = &self.inner.config;
        let mut secret = [0u8; 32];
        self.rng().fill_bytes(&mut secret);
        let keypair = Keypair::ed25519_from_bytes(secret)
            .map_err(|e| SimError::Identity(SharedError::new(e)))?;
        let peer_id = keypair.public().to_peer_id();
        let addr: Multiaddr = format!(
            "/ip4/10.{}.{}.{}/tcp/4001",
            (index >> 16) & 0xff,
            (index >> 8) & 0xff,
            index & 0xff
        )
        .parse()
        .map_err(|e| SimError::Identity(SharedError::new(e)))?;
        let info = PeerInfo::new(peer_id, vec![addr]);
        let key = info.key();
        let table = Arc::new(KBucketTable::new(
            key,
            config.table.clone(),
            self.inner.clock,
        ));
        let store = Arc::new(MemoryStore::new());
        let validator = NamespacedValidator::new().with(SIM_NAMESPACE, SeqValidator);
        let handler = Handler::new(
            info.clone(),
            table.clone(),
            store.clone(),
            store.clone(),
            config.handler.clone(),
        )?
        .with_validator(validator);
        // Whether it speaks the batched provide protocol: a draw of its own (from the seed and
        // its index), so that the other draws do not change with the share.
        let draw =
            (mix(&[config.seed, TAG_BATCH, index as u64]) >> 11) as f64 / (1u64 << 53) as f64;
        let provide_batch = draw < config.provide_batch_share;
        let draw = (mix(&[config.seed, TAG_BATCH_REFUSE, index as u64]) >> 11) as f64
            / (1u64 << 53) as f64;
        let refuses_batches = provide_batch && draw < config.provide_batch_refuse_share;
        Ok(SimNode {
            index,
            info,
            key,
            behaviour,
            provide_batch,
            refuses_batches,
            table,
            store,
            handler,
            alive: AtomicBool::new(true),
            protected: AtomicBool::new(false),
            counters: NodeCounters::default(),
            seq: AtomicU64::new(0),
            contacts: Mutex::new(None),
        })
    }

    /// The settings.
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// The simulation's wall-clock time (seconds): [`SimConfig::start_time`] plus the virtual
    /// time elapsed.
    pub fn now(&self) -> UnixSecs {
        self.inner.clock.now()
    }

    /// The simulation's clock (virtual wall-clock seconds), for parts that take a
    /// [`Clock`], such as a provider running on a simulated node.
    pub fn clock(&self) -> SimClock {
        self.inner.clock
    }

    /// Starts (or restarts from zero) counting the distinct nodes node `i` sends requests to.
    pub fn track_contacts(&self, i: usize) {
        if let Some(node) = self.node(i) {
            *node.contacts.lock() = Some(std::collections::HashSet::new());
        }
    }

    /// How many distinct nodes node `i` sent requests to since
    /// [`track_contacts`](Self::track_contacts); 0 when not tracked.
    pub fn contacts(&self, i: usize) -> usize {
        self.node(i)
            .and_then(|n| n.contacts.lock().as_ref().map(|s| s.len()))
            .unwrap_or(0)
    }

    /// The distinct nodes node `i` sent requests to since
    /// [`track_contacts`](Self::track_contacts), in increasing order.
    pub fn contacted(&self, i: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .node(i)
            .and_then(|n| {
                n.contacts
                    .lock()
                    .as_ref()
                    .map(|s| s.iter().copied().collect())
            })
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Drops every provider record that every node stores (e.g. between a provide and a
    /// reprovide, so that what is found afterwards was placed by the reprovide).
    pub fn clear_provider_records(&self) {
        self.clear_provider_records_before(self.now().saturating_add(1));
    }

    /// Drops the provider records every node received before `at` (unix seconds); younger
    /// ones stay.
    pub fn clear_provider_records_before(&self, at: UnixSecs) {
        use dht_provider_store::ProviderStore;
        // A record is expired at `now` once `now >= received_at + TTL`.
        let now = at
            .saturating_add(dht_proto::PROVIDER_RECORD_TTL_SECS)
            .saturating_sub(1);
        for node in self.inner.nodes.read().iter() {
            let _ = node.store.remove_expired(now);
        }
    }

    /// With [`ProviderRecords::Sample`](crate::ProviderRecords::Sample), servers keep the
    /// records of `keys` (DHT keys: for content, multihash bytes) from now on, and count the
    /// records of all others.
    pub fn keep_records_of(&self, keys: impl IntoIterator<Item = Vec<u8>>) {
        self.inner.kept.write().extend(keys);
    }

    /// Virtual time elapsed since the simulation was made.
    pub fn elapsed(&self) -> Duration {
        self.inner.clock.elapsed()
    }

    /// Nodes ever created (live or not); indices run from 0 to `len() - 1`.
    pub fn len(&self) -> usize {
        self.inner.nodes.read().len()
    }

    /// Whether the simulation has no node.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nodes in the network now.
    pub fn live_count(&self) -> usize {
        self.inner.live.read().len()
    }

    /// The indices of the nodes in the network now, in increasing order.
    pub fn live_nodes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.inner.live.read().iter().map(|(_, i)| *i).collect();
        v.sort_unstable();
        v
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> Option<Arc<SimNode>> {
        self.inner.node(i)
    }

    /// The index of the node with this peer id.
    pub fn index_of(&self, peer: &PeerId) -> Option<usize> {
        self.inner.index_of(peer)
    }

    /// Node `i`'s view of the network: what it sends through it comes from it.
    pub fn network(&self, i: usize) -> NodeNetwork {
        NodeNetwork {
            sim: self.inner.clone(),
            me: i,
        }
    }

    /// Node `i`'s DHT client (a new handle on each call; it shares the node's table).
    pub fn client(&self, i: usize) -> Option<SimClient> {
        let node = self.node(i)?;
        Some(DhtClient::new(
            node.info.clone(),
            node.table.clone(),
            self.network(i),
            self.inner.config.client.clone(),
        ))
    }

    /// Adds a node with a fresh identity, live but knowing nobody; returns its index. Call
    /// [`join`](Self::join) to bootstrap it.
    ///
    /// # Errors
    /// [`SimError::Identity`] if its identity cannot be made (does not happen with ed25519).
    pub fn add_node(&self, behaviour: Behaviour) -> Result<usize, SimError> {
        let (i, key, peer) = {
            let mut nodes = self.inner.nodes.write();
            let node = self.make_node(nodes.len(), behaviour)?;
            let entry = (node.index, node.key, node.info.peer_id);
            nodes.push(Arc::new(node));
            entry
        };
        self.inner.index.write().insert(peer, i);
        let mut live = self.inner.live.write();
        let at = live.partition_point(|e| *e < (key, i));
        live.insert(at, (key, i));
        Ok(i)
    }

    /// Node `i` leaves the network: it answers nothing from now on, and requests to it fail
    /// after the dial timeout. Returns whether it was live.
    pub fn kill(&self, i: usize) -> bool {
        let Some(node) = self.node(i) else {
            return false;
        };
        if !node.alive.swap(false, Ordering::Relaxed) {
            return false;
        }
        let mut live = self.inner.live.write();
        if let Ok(at) = live.binary_search(&(node.key, i)) {
            live.remove(at);
        }
        true
    }

    /// Keeps node `i` out of churn (it never leaves in [`run_churn`](Self::run_churn)), or
    /// lets it churn again.
    pub fn set_protected(&self, i: usize, protected: bool) {
        if let Some(node) = self.node(i) {
            node.protected.store(protected, Ordering::Relaxed);
        }
    }

    /// A random live node that `keep` accepts, drawn from the simulation's seeded generator.
    pub fn random_live_node(&self, keep: impl Fn(&SimNode) -> bool) -> Option<usize> {
        let live = self.live_nodes();
        let nodes = self.inner.nodes.read();
        let eligible: Vec<usize> = live
            .into_iter()
            .filter(|&i| nodes.get(i).is_some_and(|n| keep(n)))
            .collect();
        if eligible.is_empty() {
            return None;
        }
        let pick = self.rng().random_range(0..eligible.len());
        eligible.get(pick).copied()
    }

    /// A random DHT key shaped like a CID's multihash (sha2-256: `0x12 0x20` and 32 random
    /// bytes), drawn from the simulation's seeded generator.
    pub fn random_key(&self) -> Vec<u8> {
        let mut key = vec![0u8; 34];
        key[0] = 0x12;
        key[1] = 0x20;
        self.rng().fill_bytes(&mut key[2..]);
        key
    }

    /// Up to `n` distinct random live nodes other than `except`.
    fn random_peers(&self, n: usize, except: usize) -> Vec<usize> {
        let mut live = self.live_nodes();
        live.retain(|&i| i != except);
        let mut rng = self.rng();
        live.partial_shuffle(&mut *rng, n).0.to_vec()
    }

    /// Node `i` joins: it adds `bootstrap` to its table and [refreshes](Self::refresh) it.
    /// The servers it asks learn it from its requests.
    pub async fn join(&self, i: usize, bootstrap: &[usize]) {
        let Some(node) = self.node(i) else {
            return;
        };
        let now = self.now();
        for peer in bootstrap
            .iter()
            .filter(|&&b| b != i)
            .filter_map(|&b| self.node(b))
        {
            node.table
                .update_at(&peer.info, PeerEvent::Seen(Direction::Outbound), now);
        }
        self.refresh(i).await;
    }

    /// Node `i` refreshes every bucket of its table, as a node does when it joins: the
    /// node's own refresh ([`refresh_table`] with [`RefreshScope::All`]), its random keys
    /// drawn from the run's seed.
    pub async fn refresh(&self, i: usize) {
        let (Some(node), Some(client)) = (self.node(i), self.client(i)) else {
            return;
        };
        let seq = node.seq.load(Ordering::Relaxed);
        let seed = mix(&[self.inner.config.seed, TAG_REFRESH, i as u64, seq]);
        refresh_table(&client, RefreshScope::All, seed).await;
    }

    /// Every live node joins, in waves of at most [`SimConfig::join_concurrency`] (the first
    /// waves smaller: each at most as large as the network before it), each joiner starting
    /// from [`SimConfig::bootstrap_peers`] random nodes that joined before it. Then every node
    /// refreshes its table once more, so that the first joiners know the last.
    pub async fn join_all(&self) {
        let order = self.live_nodes();
        let concurrency = self.inner.config.join_concurrency.max(1);
        let bootstrap = self.inner.config.bootstrap_peers;
        let mut joined: Vec<usize> = Vec::with_capacity(order.len());
        let mut next = 0;
        while next < order.len() {
            let wave = joined.len().clamp(1, concurrency);
            let batch: Vec<usize> = order.iter().skip(next).take(wave).copied().collect();
            let jobs: Vec<(usize, Vec<usize>)> = {
                let mut rng = self.rng();
                batch
                    .iter()
                    .map(|&i| {
                        let mut pool = joined.clone();
                        let boot = pool.partial_shuffle(&mut *rng, bootstrap).0.to_vec();
                        (i, boot)
                    })
                    .collect()
            };
            futures::stream::iter(jobs)
                .for_each_concurrent(None, |(i, boot)| async move { self.join(i, &boot).await })
                .await;
            next += batch.len();
            joined.extend(batch);
        }
        self.refresh_all().await;
    }

    /// Every live node [refreshes](Self::refresh) its table,
    /// [`SimConfig::join_concurrency`] at a time.
    pub async fn refresh_all(&self) {
        let concurrency = self.inner.config.join_concurrency.max(1);
        futures::stream::iter(self.live_nodes())
            .for_each_concurrent(concurrency, |i| self.refresh(i))
            .await;
    }

    /// Fills every live node's table directly, without a message: for each bucket, up to k
    /// random live peers of its range (all of them if fewer), what a perfectly refreshed
    /// table holds. Peers are added as having answered now.
    pub fn fill_tables_directly(&self) {
        let live = self.inner.live.read().clone();
        let nodes = self.inner.nodes.read().clone();
        let k = self.inner.config.table.bucket_size.max(1);
        let now = self.now();
        let seed = self.inner.config.seed;
        for &(key, i) in &live {
            let Some(node) = nodes.get(i) else { continue };
            let mut rng = SmallRng::seed_from_u64(mix(&[seed, TAG_FAST, i as u64]));
            for cpl in 0..dht_proto::KEY_BITS {
                let sibling = Prefix::new(&key.with_bit(cpl, !key.bit(cpl)), cpl + 1);
                let range = live.get(range_of(&live, &sibling)).unwrap_or(&[]);
                let picks = rand::seq::index::sample(&mut rng, range.len(), k.min(range.len()));
                for p in picks {
                    if let Some(peer) = range.get(p).and_then(|(_, j)| nodes.get(*j)) {
                        node.table
                            .update_at(&peer.info, PeerEvent::Seen(Direction::Outbound), now);
                    }
                }
                // Deeper buckets are empty once only this node shares the next bit.
                if range_of(&live, &Prefix::new(&key, cpl + 1)).len() <= 1 {
                    break;
                }
            }
        }
    }

    /// Runs churn for `duration` of virtual time, as [`SimConfig::churn`] says: leaves and
    /// joins as a Poisson process whose rates are shares of the initial node count per hour.
    /// A leaving node is a random live one ([protected](Self::set_protected) ones excepted);
    /// a joining one is new (its behaviour drawn with the configured shares) and
    /// [joins](Self::join) from [`SimConfig::bootstrap_peers`] random live nodes, in a task
    /// of its own. Returns once the time is up and the joins are done.
    ///
    /// Runs alongside other tasks: spawn it (`tokio::spawn(sim.clone().run_churn(d))` needs
    /// a `'static` future, which a clone gives) to churn while lookups or provides run.
    pub async fn run_churn(self, duration: Duration) -> ChurnReport {
        let churn = self.inner.config.churn;
        self.run_churn_with(duration, churn).await
    }

    /// [`run_churn`](Self::run_churn) at the rates of `churn` instead of
    /// [`SimConfig::churn`].
    pub async fn run_churn_with(self, duration: Duration, churn: crate::Churn) -> ChurnReport {
        let config = &self.inner.config;
        let n0 = self.inner.initial_nodes as f64;
        let leave = churn.leave_per_hour * n0 / 3600.0;
        let join = churn.join_per_hour * n0 / 3600.0;
        let total = leave + join;
        let end = tokio::time::Instant::now() + duration;
        let mut report = ChurnReport::default();
        if total <= 0.0 || !total.is_finite() {
            tokio::time::sleep_until(end).await;
            return report;
        }
        let mut joins = Vec::new();
        loop {
            let (dt, leaves, u) = {
                let mut rng = self.rng();
                let dt = -(1.0 - rng.random::<f64>()).ln() / total;
                (dt, rng.random::<f64>() * total < leave, rng.random::<f64>())
            };
            let at = tokio::time::Instant::now() + Duration::from_secs_f64(dt.min(1e9));
            if at >= end {
                tokio::time::sleep_until(end).await;
                break;
            }
            tokio::time::sleep_until(at).await;
            if leaves {
                let victim = self.random_live_node(|n| !n.protected.load(Ordering::Relaxed));
                if let Some(i) = victim
                    && self.kill(i)
                {
                    report.left += 1;
                }
            } else {
                let behaviour = self.draw_behaviour(u);
                let Ok(i) = self.add_node(behaviour) else {
                    continue;
                };
                let boot = self.random_peers(config.bootstrap_peers, i);
                let sim = self.clone();
                joins.push(tokio::spawn(async move { sim.join(i, &boot).await }));
                report.joined += 1;
            }
        }
        for j in joins {
            let _ = j.await;
        }
        report
    }

    /// Periodic table maintenance for `duration` of virtual time: live nodes take turns
    /// ([`refresh`](Self::refresh), each in a task of its own), spaced so that every node
    /// refreshes once per `interval` (go-libp2p-kad-dht: 10 minutes). Joiners take their
    /// turn too. Returns once the time is up and the refreshes are done.
    ///
    /// Costly: each refresh is about 15 lookups. Spawn it beside
    /// [`run_churn`](Self::run_churn) to keep tables clean of nodes that left.
    pub async fn run_refresh(self, duration: Duration, interval: Duration) {
        let end = tokio::time::Instant::now() + duration;
        let mut cursor = 0usize;
        let mut tasks = Vec::new();
        loop {
            let live = self.live_nodes();
            let Some(&i) = live.get(cursor % live.len().max(1)) else {
                tokio::time::sleep_until(end).await;
                break;
            };
            let tick = interval / u32::try_from(live.len()).unwrap_or(u32::MAX).max(1);
            let at = tokio::time::Instant::now() + tick.max(Duration::from_micros(1));
            if at >= end {
                tokio::time::sleep_until(end).await;
                break;
            }
            tokio::time::sleep_until(at).await;
            let sim = self.clone();
            tasks.push(tokio::spawn(async move { sim.refresh(i).await }));
            cursor = cursor.wrapping_add(1);
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    fn draw_behaviour(&self, u: f64) -> Behaviour {
        let m = self.inner.config.misbehaviour;
        let mut acc = 0.0;
        for (share, b) in [
            (m.silent, Behaviour::Silent),
            (m.slow, Behaviour::Slow),
            (m.random_peers, Behaviour::RandomPeers),
            (m.far_peers, Behaviour::FarPeers),
        ] {
            acc += share;
            if u < acc {
                return b;
            }
        }
        Behaviour::Honest
    }

    /// The ground truth: the `k` live nodes closest to `target`, closest first.
    pub fn true_closest(&self, target: &Key, k: usize) -> Vec<usize> {
        self.true_closest_by(target, k, |_| true)
    }

    /// The `k` live nodes closest to `target` that `keep` accepts, closest first: e.g. all
    /// but the node that looks, or only nodes that answer ([`Behaviour::answers`]).
    ///
    /// Searches the key-sorted list of live nodes by prefix: the deepest prefix of `target`
    /// whose range holds at least `k` nodes, widened until it holds `k` accepted ones.
    pub fn true_closest_by(
        &self,
        target: &Key,
        k: usize,
        keep: impl Fn(&SimNode) -> bool,
    ) -> Vec<usize> {
        let live = self.inner.live.read();
        let nodes = self.inner.nodes.read();
        if k == 0 || live.is_empty() {
            return Vec::new();
        }
        let mut len = 0;
        while len < dht_proto::KEY_BITS && range_of(&live, &Prefix::new(target, len + 1)).len() >= k
        {
            len += 1;
        }
        loop {
            let range = live
                .get(range_of(&live, &Prefix::new(target, len)))
                .unwrap_or(&[]);
            let mut found: Vec<(dht_proto::Distance, usize)> = range
                .iter()
                .filter(|(_, i)| nodes.get(*i).is_some_and(|n| keep(n)))
                .map(|(key, i)| (target.distance(key), *i))
                .collect();
            if found.len() >= k || len == 0 {
                found.sort_unstable();
                found.truncate(k);
                return found.into_iter().map(|(_, i)| i).collect();
            }
            len -= 1;
        }
    }

    /// Requests sent and received by all nodes, by type.
    pub fn counts(&self) -> RpcCounts {
        let mut total = RpcCounts::default();
        for node in self.inner.nodes.read().iter() {
            total.add(&node.counters.snapshot());
        }
        total
    }

    /// Requests sent and received by each node, by type, in index order.
    pub fn node_counts(&self) -> Vec<RpcCounts> {
        self.inner
            .nodes
            .read()
            .iter()
            .map(|n| n.counters.snapshot())
            .collect()
    }

    /// Messages lost, requests to nodes that left, unanswered and refused.
    pub fn net_stats(&self) -> NetStats {
        self.inner.net.snapshot()
    }

    /// How complete the live nodes' tables are; see [`TableQuality`].
    pub fn table_quality(&self) -> TableQuality {
        let live = self.inner.live.read().clone();
        let nodes = self.inner.nodes.read().clone();
        let k = self.inner.config.table.bucket_size.max(1);
        let (mut possible, mut held, mut buckets, mut full) = (0u64, 0u64, 0u64, 0u64);
        let (mut entries, mut dead) = (0u64, 0u64);
        for &(key, i) in &live {
            let Some(node) = nodes.get(i) else { continue };
            let mut per_cpl = [0usize; dht_proto::KEY_BITS];
            for peer in node.table.peers() {
                entries += 1;
                let other = self.index_of(&peer.peer_id).and_then(|j| nodes.get(j));
                match other {
                    Some(o) if o.is_alive() => {
                        if let Some(c) = per_cpl.get_mut(key.common_prefix_len(&o.key)) {
                            *c += 1;
                        }
                    }
                    _ => dead += 1,
                }
            }
            for (cpl, &got) in per_cpl.iter().enumerate() {
                let sibling = Prefix::new(&key.with_bit(cpl, !key.bit(cpl)), cpl + 1);
                let can = range_of(&live, &sibling).len().min(k);
                if can > 0 {
                    possible += can as u64;
                    held += got.min(can) as u64;
                    buckets += 1;
                    full += u64::from(got >= can);
                }
                if range_of(&live, &Prefix::new(&key, cpl + 1)).len() <= 1 {
                    break;
                }
            }
        }
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        TableQuality {
            nodes: live.len(),
            fill: ratio(held, possible),
            full_buckets: ratio(full, buckets),
            mean_len: ratio(entries, live.len() as u64),
            dead_share: if entries == 0 {
                0.0
            } else {
                ratio(dead, entries)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_depends_on_every_part() {
        let base = mix(&[1, 2, 3]);
        assert_ne!(base, mix(&[1, 2, 4]));
        assert_ne!(base, mix(&[2, 1, 3]));
        assert_ne!(base, mix(&[1, 2]));
        assert_eq!(base, mix(&[1, 2, 3]));
    }

    #[test]
    fn ranges_of_prefixes() {
        let key = |b: u8| Key::from_bytes([b; 32]);
        let live: Vec<(Key, usize)> = [0x00, 0x10, 0x80, 0x90, 0xff]
            .iter()
            .enumerate()
            .map(|(i, &b)| (key(b), i))
            .collect();
        let check = |byte: u8, len: usize, expected: std::ops::Range<usize>| {
            assert_eq!(
                range_of(&live, &Prefix::new(&key(byte), len)),
                expected,
                "{byte:#x}/{len}"
            );
        };
        check(0, 0, 0..5);
        check(0, 1, 0..2);
        check(0x80, 1, 2..5);
        check(0x80, 3, 2..4);
        check(0x80, 4, 2..3);
        check(0x80, 8, 2..3);
        check(0x40, 2, 2..2);
        check(0xff, 256, 4..5);
    }
}
