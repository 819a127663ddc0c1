//! A running DHT node: the transport, the server, the routing table, the stores, the client
//! and the provider, put together by a [`NodeBuilder`](crate::builder::NodeBuilder).
//!
//! A [`Node`] wires:
//!
//! - the [`transport`](crate::transport) (TCP + noise + yamux, identify, ping, `/ipfs/kad/1.0.0`),
//!   whose inbound requests go to a [`dht_handler::Handler`] over the node's routing table and
//!   its [`Stores`] (RocksDB under the data directory, or in memory);
//! - a task that feeds the routing table from the transport's events: a peer that identify
//!   says is a DHT server is sent a FIND_NODE first and added only if it answers
//!   ([`PeerEvent::Seen`]`(`[`Direction::Outbound`]`)`, as go-libp2p-kad-dht's lookup check),
//!   one that turned client is removed;
//! - a [`DhtClient`] over the same table and a [`TransportNetwork`], the [`Network`]
//!   adapter over the transport;
//! - a provider ([`NodeProvider`]: the sweeping provider by default, the per-key one as an
//!   option) whose keystore is the node's store;
//! - the table's maintenance ([`NodeTable::maintain`]): stale k-buckets refreshed every
//!   10 minutes, or a full routing table refilled by a periodic crawl;
//! - the expiry of stored records, hourly.

use std::{
    fmt,
    path::PathBuf,
    sync::{Arc, Weak},
    time::Duration,
};

use dht_handler::{Handler, Validator};
use dht_proto::batch::{BatchCodecError, ProvideBatch, ProvideBatchResponse};
use dht_proto::{
    CodecError, K_VALUE, Key, MessageType, PeerId, PeerInfo, Prefix, Record, Request, Response,
};
use dht_provider::{
    DhtProvider, LegacyProvider, Multihash, ProviderError, ProviderStats, SweepingProvider,
    find_node_key,
};
use dht_provider_store::{Keystore, ProviderStore, StoreError, ValueStore};
use dht_routing::{
    DhtClient, Feature, Network, OpStats, Outcome, RecordValidator, RpcError, crawl,
};
use dht_routing_table::{
    AddressBook, Clock, Direction, FullRoutingTable, FullRtConfig, KBucketConfig, KBucketTable,
    PeerEvent, RoutingTable, SystemClock,
};
use futures::future::join_all;
use parking_lot::Mutex;
use tokio::{sync::Semaphore, task::JoinHandle};

use crate::{
    metrics::Metrics,
    transport::{TransportError, TransportEvent, TransportEvents, TransportHandle},
};

/// The three stores a node keeps: provider records and value records it holds for others
/// (as a DHT server), and the keys it provides itself (the provider's keystore).
///
/// Implemented for every type that implements the three traits, e.g.
/// [`RocksStore`](dht_provider_store::RocksStore) and
/// [`MemoryStore`](dht_provider_store::MemoryStore).
pub trait Stores: ProviderStore + ValueStore + Keystore + fmt::Debug + 'static {}

impl<S: ProviderStore + ValueStore + Keystore + fmt::Debug + 'static> Stores for S {}

/// The stores of a [`Node`], shared by its server, its provider and its HTTP API.
pub type SharedStores = Arc<dyn Stores>;

/// The server side of a [`Node`].
pub type NodeHandler<T> = Handler<Arc<T>, SharedStores, SharedStores>;

/// The client side of a [`Node`]: a [`dht_routing::Dht`] over its table and its transport.
pub type NodeClient<T> = DhtClient<Arc<T>, TransportNetwork>;

/// What can go wrong building, starting or bootstrapping a [`Node`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The transport could not start (or has stopped).
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// A DHT operation could not run (e.g. no peer to start a lookup from).
    #[error("routing: {0}")]
    Routing(#[from] dht_routing::Error),
    /// The stores could not be opened or read.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The provider could not start or be closed.
    #[error("provider: {0}")]
    Provider(#[from] ProviderError),
    /// The node's identity or data directory could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A value record the Amino validators refuse.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// The identity file exists but does not hold a keypair.
    #[error("identity file {path}: {reason}")]
    BadIdentity {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
}

/// dht-routing's [`Network`] over the libp2p transport: each request goes out through
/// [`TransportHandle::request`], which reuses the connection and a stream per peer.
///
/// Batches of the batched provide protocol go out through [`TransportHandle::provide_batch`],
/// to the peers it [`supports`](TransportHandle::supports) (their identify lists the protocol).
///
/// Transport errors map to [`RpcError`] as ([`rpc_error`]): `Timeout` → `Timeout`; `Dial`,
/// `UnsupportedProtocol` → `Unreachable`; `ProvideBatchUnsupported` (a peer that does not
/// take batches, or refused the protocol) → `Unsupported(ProvideBatch)`, which says nothing
/// against the peer; a truncated message (the peer closed the stream before answering) →
/// `NoResponse`; `UnexpectedResponse` → `UnexpectedResponse`; anything else (a connection
/// closed, a stream error) → `Other`.
#[derive(Clone, Debug)]
pub struct TransportNetwork {
    transport: TransportHandle,
}

impl TransportNetwork {
    /// The network over `transport`.
    pub fn new(transport: TransportHandle) -> Self {
        TransportNetwork { transport }
    }

    /// The transport requests go over.
    pub fn transport(&self) -> &TransportHandle {
        &self.transport
    }
}

impl Network for TransportNetwork {
    fn send(
        &self,
        peer: &PeerInfo,
        request: Request,
    ) -> impl Future<Output = Result<Option<Response>, RpcError>> + Send {
        let transport = self.transport.clone();
        let peer = peer.clone();
        async move { transport.request(&peer, request).await.map_err(rpc_error) }
    }

    fn supports(&self, peer: &PeerId, feature: Feature) -> bool {
        self.transport.supports(peer, feature)
    }

    /// All of them to the peer's connection in one command ([`TransportHandle::add_providers`]),
    /// written together where they fit; `parallel` is the transport's own (its streams per
    /// connection), `timeout` its request timeout.
    fn add_providers<'a>(
        &'a self,
        peer: &'a PeerInfo,
        provider: &'a PeerInfo,
        keys: Vec<Vec<u8>>,
        _parallel: usize,
        _timeout: Duration,
    ) -> impl futures::Stream<Item = (usize, Result<(), RpcError>)> + Send + 'a {
        use futures::StreamExt;
        self.transport
            .add_providers(peer, provider, keys)
            .map(|(i, outcome)| (i, outcome.map(|_| ()).map_err(rpc_error)))
    }

    fn provide_batch(
        &self,
        peer: &PeerInfo,
        batch: ProvideBatch,
    ) -> impl Future<Output = Result<ProvideBatchResponse, RpcError>> + Send {
        let transport = self.transport.clone();
        let peer = peer.clone();
        async move {
            transport
                .provide_batch(&peer, batch)
                .await
                .map_err(rpc_error)
        }
    }
}

/// The [`RpcError`] a [`TransportError`] means to the client.
pub fn rpc_error(error: TransportError) -> RpcError {
    match error {
        TransportError::Timeout => RpcError::Timeout,
        // No connection could be made, or the peer does not serve the DHT: the table drops it.
        e @ (TransportError::Dial(_) | TransportError::UnsupportedProtocol) => {
            RpcError::Unreachable(e.to_string())
        }
        // Not taken by the peer: the caller falls back to ADD_PROVIDER, nothing against it.
        TransportError::ProvideBatchUnsupported(_) => RpcError::Unsupported(Feature::ProvideBatch),
        TransportError::Codec(CodecError::Truncated)
        | TransportError::BatchCodec(BatchCodecError::Truncated) => RpcError::NoResponse,
        TransportError::UnexpectedResponse { sent, got } => RpcError::UnexpectedResponse {
            expected: sent,
            got,
        },
        e => RpcError::Other(e.to_string()),
    }
}

/// The deepest k-bucket (common prefix length with the local key) that maintenance
/// refreshes with a lookup of its own, as go-libp2p-kad-dht's `maxCplForRefresh`.
pub const MAX_REFRESH_CPL: usize = 15;

/// A summary of a routing table, as the HTTP API shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct TableSummary {
    /// `"kbucket"` or `"full"`.
    pub kind: &'static str,
    /// Peers held.
    pub peers: usize,
    /// Whether the table holds every server (a fresh full routing table).
    pub complete: bool,
    /// Peers per bucket, by common prefix length with the local key (k-bucket tables; empty
    /// for a full table).
    pub buckets: Vec<usize>,
    /// When a full table was last filled by a crawl (Unix seconds).
    pub last_filled: Option<u64>,
}

/// What one maintenance round of the routing table did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Maintenance {
    /// Lookups run (bucket refreshes and the self-lookup).
    pub lookups: usize,
    /// Peers found by a crawl (full routing table), if one ran.
    pub crawled: Option<usize>,
    /// Peers in the table afterwards.
    pub peers: usize,
    /// The requests the round sent.
    pub stats: OpStats,
}

/// A routing table a [`Node`] can run on: how it is created, maintained and summarised.
///
/// Implemented for [`KBucketTable`] (the default: stale buckets refreshed by lookups every
/// [`KBucketConfig::refresh_interval`], 10 minutes) and [`FullRoutingTable`] (refilled by a
/// crawl every [`FullTableConfig::crawl_interval`]).
pub trait NodeTable: RoutingTable + fmt::Debug + Sized + 'static {
    /// The table's settings.
    type Config: Clone + fmt::Debug + Send + Sync + 'static;

    /// The default settings.
    fn default_config() -> Self::Config;

    /// A new table for the node whose Kademlia key is `local`.
    fn create(local: Key, config: &Self::Config) -> Self;

    /// Gives the table the transport's first-hand knowledge of connected peers, by which it
    /// groups and addresses the peers it admits (see [`AddressBook`]).
    fn use_address_book(&self, book: Arc<dyn AddressBook>);

    /// Whether the first maintenance round runs right after the node starts (a full table is
    /// empty until crawled) rather than an interval later.
    const MAINTAIN_AT_START: bool = false;

    /// How often [`maintain`](Self::maintain) runs.
    fn maintenance_interval(config: &Self::Config) -> Duration;

    /// One maintenance round (refresh or crawl), run every
    /// [`maintenance_interval`](Self::maintenance_interval) and right after bootstrap.
    fn maintain(node: &Node<Self>) -> impl Future<Output = Maintenance> + Send;

    /// A summary for the HTTP API.
    fn summary(&self) -> TableSummary;
}

impl NodeTable for KBucketTable {
    type Config = KBucketConfig;

    fn default_config() -> KBucketConfig {
        KBucketConfig::default()
    }

    fn create(local: Key, config: &KBucketConfig) -> Self {
        KBucketTable::new(local, config.clone(), SystemClock)
    }

    fn use_address_book(&self, book: Arc<dyn AddressBook>) {
        self.set_address_book(book);
    }

    fn maintenance_interval(config: &KBucketConfig) -> Duration {
        Duration::from_secs(config.refresh_interval.max(1))
    }

    /// Refreshes every stale bucket (not looked up within the refresh interval) up to
    /// [`MAX_REFRESH_CPL`] with a lookup of a random key of that bucket, then looks up the
    /// node's own key.
    async fn maintain(node: &Node<KBucketTable>) -> Maintenance {
        let table = node.table();
        let mut report = Maintenance::default();
        let now = table.now();
        // As go-libp2p-kad-dht, buckets deeper than 15 bits are not refreshed: the
        // self-lookup below covers them.
        let stale: Vec<usize> = table
            .stale_buckets(now)
            .into_iter()
            .filter(|&cpl| cpl <= MAX_REFRESH_CPL)
            .collect();
        let keys: Vec<(usize, Vec<u8>)> = {
            let mut rng = rand::rng();
            stale
                .iter()
                .filter_map(|&cpl| {
                    let key = table.random_key_with_cpl(cpl, &mut rng).ok()?;
                    // FIND_NODE bytes whose sha256 lies in the bucket (exact up to 24 bits, the
                    // depth of any real network's buckets).
                    Some((cpl, find_node_key(&Prefix::new(&key, cpl + 1))))
                })
                .collect()
        };
        for (cpl, key) in keys {
            match node
                .client()
                .walk_closest_peers(&key, K_VALUE, Vec::new())
                .await
            {
                Ok(outcome) => report.stats.merge(&outcome.stats),
                Err(e) => tracing::debug!(cpl, error = %e, "bucket refresh"),
            }
            table.mark_refreshed(cpl, table.now());
            report.lookups += 1;
        }
        if let Ok(outcome) = node.self_lookup().await {
            report.stats.merge(&outcome.stats);
        }
        report.lookups += 1;
        report.peers = table.len();
        report
    }

    fn summary(&self) -> TableSummary {
        let buckets = match self.max_cpl() {
            Some(max) => (0..=max).map(|cpl| self.bucket_len(cpl)).collect(),
            None => Vec::new(),
        };
        TableSummary {
            kind: "kbucket",
            peers: self.len(),
            complete: self.is_complete(),
            buckets,
            last_filled: None,
        }
    }
}

/// Settings of a [`FullRoutingTable`] in a [`Node`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FullTableConfig {
    /// The table's own settings (freshness, fewest peers).
    pub table: FullRtConfig,
    /// How often the network is crawled to refill the table (default 1 h, as
    /// go-libp2p-kad-dht's fullrt).
    pub crawl_interval: Duration,
}

impl Default for FullTableConfig {
    fn default() -> Self {
        FullTableConfig {
            table: FullRtConfig::default(),
            crawl_interval: Duration::from_secs(3600),
        }
    }
}

impl FullTableConfig {
    /// Sets [`FullTableConfig::table`].
    #[must_use]
    pub fn with_table(mut self, table: FullRtConfig) -> Self {
        self.table = table;
        self
    }

    /// Sets [`FullTableConfig::crawl_interval`].
    #[must_use]
    pub fn with_crawl_interval(mut self, interval: Duration) -> Self {
        self.crawl_interval = interval;
        self
    }
}

impl NodeTable for FullRoutingTable {
    type Config = FullTableConfig;

    const MAINTAIN_AT_START: bool = true;

    fn default_config() -> FullTableConfig {
        FullTableConfig::default()
    }

    fn create(local: Key, config: &FullTableConfig) -> Self {
        FullRoutingTable::new(local, config.table.clone(), SystemClock)
    }

    fn use_address_book(&self, book: Arc<dyn AddressBook>) {
        self.set_address_book(book);
    }

    fn maintenance_interval(config: &FullTableConfig) -> Duration {
        config.crawl_interval.max(Duration::from_secs(1))
    }

    /// Crawls the network from the table's peers and the bootstrap peers, and replaces the
    /// table with every server that answered (kept as it is if none did).
    async fn maintain(node: &Node<FullRoutingTable>) -> Maintenance {
        let table = node.table();
        let mut seeds = table.peers();
        seeds.extend(node.bootstrap_peers().iter().cloned());
        let config = node.client().client_config();
        let network = node.network();
        let outcome = crawl(
            &network,
            seeds,
            Some(node.peer_id()),
            &config.crawl,
            config.driver.request_timeout,
        )
        .await;
        let found = outcome.value.len();
        if found > 0 {
            table.replace_all(outcome.value, SystemClock.now());
        }
        tracing::info!(
            found,
            peers = table.len(),
            "crawl filled the full routing table"
        );
        Maintenance {
            lookups: 0,
            crawled: Some(found),
            peers: table.len(),
            stats: outcome.stats,
        }
    }

    fn summary(&self) -> TableSummary {
        TableSummary {
            kind: "full",
            peers: self.len(),
            complete: self.is_complete(),
            buckets: Vec::new(),
            last_filled: self.last_filled(),
        }
    }
}

/// The provider of a [`Node`]: keeps the keys in the node's keystore advertised.
pub enum NodeProvider<T: NodeTable> {
    /// The sweeping provider (the default): keys grouped by keyspace region.
    Sweep(SweepingProvider<TransportNetwork, Arc<T>, SharedStores>),
    /// The per-key provider: one DHT walk per key.
    Legacy(LegacyProvider<Arc<NodeClient<T>>, SharedStores>),
}

impl<T: NodeTable> fmt::Debug for NodeProvider<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeProvider::Sweep(_) => "NodeProvider::Sweep",
            NodeProvider::Legacy(_) => "NodeProvider::Legacy",
        })
    }
}

impl<T: NodeTable> NodeProvider<T> {
    /// `"sweep"` or `"per-key"`.
    pub fn strategy(&self) -> &'static str {
        match self {
            NodeProvider::Sweep(_) => "sweep",
            NodeProvider::Legacy(_) => "per-key",
        }
    }
}

impl<T: NodeTable> DhtProvider for NodeProvider<T> {
    async fn start_providing(&self, force: bool, keys: &[Multihash]) -> Result<(), ProviderError> {
        match self {
            NodeProvider::Sweep(p) => p.start_providing(force, keys).await,
            NodeProvider::Legacy(p) => p.start_providing(force, keys).await,
        }
    }

    fn start_providing_async(&self, force: bool, keys: &[Multihash]) -> Result<(), ProviderError> {
        match self {
            NodeProvider::Sweep(p) => p.start_providing_async(force, keys),
            NodeProvider::Legacy(p) => p.start_providing_async(force, keys),
        }
    }

    fn stop_providing(&self, keys: &[Multihash]) -> Result<(), ProviderError> {
        match self {
            NodeProvider::Sweep(p) => p.stop_providing(keys),
            NodeProvider::Legacy(p) => p.stop_providing(keys),
        }
    }

    async fn provide_once(&self, keys: &[Multihash]) -> Result<(), ProviderError> {
        match self {
            NodeProvider::Sweep(p) => p.provide_once(keys).await,
            NodeProvider::Legacy(p) => p.provide_once(keys).await,
        }
    }

    fn provide_list(
        &self,
        after: Option<&dht_proto::Key>,
        limit: usize,
    ) -> Result<Vec<(dht_proto::Key, Multihash)>, ProviderError> {
        match self {
            NodeProvider::Sweep(p) => p.provide_list(after, limit),
            NodeProvider::Legacy(p) => p.provide_list(after, limit),
        }
    }

    fn stats(&self) -> ProviderStats {
        match self {
            NodeProvider::Sweep(p) => p.stats(),
            NodeProvider::Legacy(p) => p.stats(),
        }
    }

    async fn close(&self) -> Result<(), ProviderError> {
        match self {
            NodeProvider::Sweep(p) => p.close().await,
            NodeProvider::Legacy(p) => p.close().await,
        }
    }
}

/// dht-handler's record [`Validator`]s (`/pk`, `/ipns`) as dht-routing's
/// [`RecordValidator`], for [`Node::get_value`].
pub struct ValidatorAdapter<V>(pub V);

impl<V> fmt::Debug for ValidatorAdapter<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ValidatorAdapter")
    }
}

impl<V: Validator> RecordValidator for ValidatorAdapter<V> {
    fn validate(&self, record: &Record) -> bool {
        self.0
            .validate(&record.key, &record.value, SystemClock.now())
            .is_ok()
    }

    fn select(&self, records: &[Record]) -> usize {
        let Some(first) = records.first() else {
            return 0;
        };
        let values: Vec<&[u8]> = records.iter().map(|r| r.value.as_slice()).collect();
        self.0.select(&first.key, &values).unwrap_or(0)
    }
}

/// A running DHT node: transport, server, routing table, stores, client, provider.
///
/// Built by [`NodeBuilder`](crate::builder::NodeBuilder). Dropping it does not stop it; call
/// [`close`](Self::close) (persists the provider's state, stops the tasks and the transport).
pub struct Node<T: NodeTable = KBucketTable> {
    pub(crate) info: PeerInfo,
    pub(crate) transport: TransportHandle,
    pub(crate) table: Arc<T>,
    pub(crate) table_config: T::Config,
    pub(crate) stores: SharedStores,
    pub(crate) handler: Arc<NodeHandler<T>>,
    pub(crate) client: Arc<NodeClient<T>>,
    pub(crate) provider: NodeProvider<T>,
    pub(crate) bootstrap: Vec<PeerInfo>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl<T: NodeTable> fmt::Debug for Node<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.info.peer_id)
            .field("addrs", &self.info.addrs)
            .field("table", &self.table)
            .field("stores", &self.stores)
            .field("provider", &self.provider)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl<T: NodeTable> Node<T> {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.info.peer_id
    }

    /// This node as others dial it: its peer id and the addresses it listens on.
    pub fn info(&self) -> &PeerInfo {
        &self.info
    }

    /// The transport.
    pub fn transport(&self) -> &TransportHandle {
        &self.transport
    }

    /// A [`Network`] over this node's transport.
    pub fn network(&self) -> TransportNetwork {
        TransportNetwork::new(self.transport.clone())
    }

    /// The routing table.
    pub fn table(&self) -> &Arc<T> {
        &self.table
    }

    /// The routing table's settings.
    pub fn table_config(&self) -> &T::Config {
        &self.table_config
    }

    /// The stores: provider and value records held for others, and the keystore.
    pub fn stores(&self) -> &SharedStores {
        &self.stores
    }

    /// The server.
    pub fn handler(&self) -> &Arc<NodeHandler<T>> {
        &self.handler
    }

    /// The client: pass it (or `&**client`) to dht-routing's operations.
    pub fn client(&self) -> &Arc<NodeClient<T>> {
        &self.client
    }

    /// The provider.
    pub fn provider(&self) -> &NodeProvider<T> {
        &self.provider
    }

    /// The peers the node bootstraps from.
    pub fn bootstrap_peers(&self) -> &[PeerInfo] {
        &self.bootstrap
    }

    /// The data directory, if the node has one.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref()
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether the keystore holds `key` (the node provides it).
    ///
    /// # Errors
    /// [`StoreError`] when the keystore cannot be read.
    pub fn holds(&self, key: &Multihash) -> Result<bool, StoreError> {
        let kad = Key::from_multihash(key);
        let found = self.stores.scan(&Prefix::new(&kad, 256), None, 1)?;
        Ok(found.iter().any(|(_, k)| k == key))
    }

    /// Dials `peers`, adds those that answered the dial to the routing table, and runs a
    /// self-lookup (the k peers closest to this node's own peer id), which fills the table
    /// with the peers it meets. Returns the self-lookup's result and cost.
    ///
    /// Peers that cannot be dialled are skipped (logged); with an empty table the lookup
    /// fails with [`dht_routing::Error::NoPeers`].
    ///
    /// # Errors
    /// [`NodeError::Routing`] when no peer is known to start the lookup from.
    pub async fn bootstrap(&self, peers: &[PeerInfo]) -> Result<Outcome<Vec<PeerInfo>>, NodeError> {
        dial_and_add(&self.transport, &*self.table, peers).await;
        let outcome = self.self_lookup().await?;
        self.metrics.lookup("bootstrap", &outcome.stats);
        Ok(outcome)
    }

    /// Looks up the k peers closest to this node's own peer id: how a node makes itself
    /// known to its neighbours and learns them.
    ///
    /// # Errors
    /// [`NodeError::Routing`] when the routing table is empty.
    pub async fn self_lookup(&self) -> Result<Outcome<Vec<PeerInfo>>, NodeError> {
        let key = self.info.peer_id.to_bytes();
        Ok(dht_routing::find_closest_peers(&*self.client, &key, K_VALUE).await?)
    }

    /// Runs one maintenance round of the routing table now (see [`NodeTable::maintain`]).
    pub async fn maintain(&self) -> Maintenance {
        let report = T::maintain(self).await;
        self.metrics.lookup("refresh", &report.stats);
        report
    }

    /// The value record stored under `key`: the local store's, or the best one found on the
    /// DHT (validated by the Amino validators, `/pk` and `/ipns`).
    ///
    /// # Errors
    /// [`NodeError::Routing`] when there is no peer to ask; [`NodeError::Store`] when the
    /// local store cannot be read.
    pub async fn get_value(&self, key: &[u8]) -> Result<Option<Record>, NodeError> {
        let validator = ValidatorAdapter(dht_handler::NamespacedValidator::new());
        let (stores, held_key) = (self.stores.clone(), key.to_vec());
        let local = on_disk(move || stores.get_value(&held_key, SystemClock.now()))
            .await??
            .map(|(record, _)| record)
            .filter(|r| validator.validate(r));
        match dht_routing::get_value(&*self.client, key, 1, &validator).await {
            Ok(outcome) => {
                self.metrics.lookup("get_value", &outcome.stats);
                let mut candidates: Vec<Record> =
                    local.into_iter().chain(outcome.value.record).collect();
                if candidates.len() > 1 {
                    let best = validator.select(&candidates);
                    Ok(Some(candidates.swap_remove(best.min(candidates.len() - 1))))
                } else {
                    Ok(candidates.pop())
                }
            }
            Err(dht_routing::Error::NoPeers) if local.is_some() => Ok(local),
            Err(e) => Err(e.into()),
        }
    }

    /// Validates `record` with the Amino validators, stores it locally and puts it to the k
    /// peers closest to its key; returns the peers that accepted it.
    ///
    /// # Errors
    /// [`NodeError::InvalidRecord`] when the validators refuse the record;
    /// [`NodeError::Routing`] when there is no peer to put to; [`NodeError::Store`] when the
    /// local store cannot be written.
    pub async fn put_value(&self, record: Record) -> Result<Vec<PeerId>, NodeError> {
        let validator = ValidatorAdapter(dht_handler::NamespacedValidator::new());
        let now = SystemClock.now();
        Validator::validate(&validator.0, &record.key, &record.value, now)
            .map_err(|e| NodeError::InvalidRecord(e.to_string()))?;
        // Kept locally unless the record held is better (e.g. a newer IPNS record).
        let (stores, local) = (self.stores.clone(), record.clone());
        on_disk(move || {
            let keep_held = stores
                .get_value(&local.key, now)?
                .map(|(held, _)| held)
                .filter(|held| validator.validate(held))
                .is_some_and(|held| validator.select(&[local.clone(), held]) == 1);
            if keep_held {
                Ok(())
            } else {
                stores.put_value(&local, now)
            }
        })
        .await??;
        let outcome = dht_routing::put_value(&*self.client, record).await?;
        self.metrics.lookup("put_value", &outcome.stats);
        Ok(outcome.value.succeeded)
    }

    /// Closes the node: persists the provider's state ([`DhtProvider::close`]), stops the
    /// background tasks and the transport.
    ///
    /// # Errors
    /// [`NodeError::Provider`] when the provider's state could not be saved (the node is
    /// stopped all the same).
    pub async fn close(&self) -> Result<(), NodeError> {
        let closed = self.provider.close().await;
        self.shutdown().await;
        closed.map_err(NodeError::from)
    }

    /// Stops the background tasks and the transport, without closing the provider (see
    /// [`close`](Self::close)).
    ///
    /// Returns once the transport has let go of the server (at most 5 s), so that the stores
    /// are closed when the node is dropped and a new node can open the same data directory.
    pub async fn shutdown(&self) {
        let tasks: Vec<JoinHandle<()>> = self.tasks.lock().drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        self.transport.shutdown().await;
        // The swarm's task and its connections hold the inbound handler; they end shortly
        // after the shutdown command.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.handler) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Spawns the node's background tasks: the table feeder, the maintenance loop (first
    /// round after `initial_delay`) and the hourly expiry of stored records.
    pub(crate) fn spawn_tasks(
        self: &Arc<Self>,
        events: TransportEvents,
        initial_delay: Option<Duration>,
    ) {
        let feeder = tokio::spawn(feed_table(
            events,
            self.table.clone(),
            self.transport.clone(),
            self.info.peer_id,
        ));
        let weak = Arc::downgrade(self);
        let period = T::maintenance_interval(&self.table_config);
        let maintenance = tokio::spawn(maintenance_loop(weak.clone(), period, initial_delay));
        let expiry = tokio::spawn(expiry_loop(weak));
        self.tasks.lock().extend([feeder, maintenance, expiry]);
    }

    /// Counts an inbound request (for the metrics).
    pub(crate) fn count_inbound(metrics: &Metrics, ty: MessageType) {
        metrics.inbound(ty);
    }
}

async fn maintenance_loop<T: NodeTable>(
    node: Weak<Node<T>>,
    period: Duration,
    initial_delay: Option<Duration>,
) {
    let mut next = initial_delay.unwrap_or(period);
    loop {
        tokio::time::sleep(next).await;
        next = period;
        let Some(node) = node.upgrade() else { return };
        let report = node.maintain().await;
        tracing::debug!(
            lookups = report.lookups,
            crawled = report.crawled,
            peers = report.peers,
            "routing table maintained"
        );
    }
}

async fn expiry_loop<T: NodeTable>(node: Weak<Node<T>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let now = SystemClock.now();
        let stores = node.stores.clone();
        // A sweep of a large store takes a while: off the runtime's workers.
        let swept = on_disk(move || {
            (
                stores.remove_expired(now),
                stores.remove_expired_values(now),
            )
        })
        .await;
        match swept {
            Ok((providers, values)) => {
                match providers {
                    Ok(n) => tracing::debug!(removed = n, "expired provider records"),
                    Err(e) => tracing::warn!(error = %e, "expiring provider records"),
                }
                if let Err(e) = values {
                    tracing::warn!(error = %e, "expiring value records");
                }
            }
            Err(e) => tracing::warn!(error = %e, "expiring records"),
        }
    }
}

/// Runs `work` (store calls) on tokio's blocking pool and waits for it: a store may wait on its
/// disk (a RocksDB read that misses the cache, a write stall, a sweep over every record), and
/// on a runtime worker that wait would hold up every task scheduled there: connections,
/// lookups, the HTTP API.
///
/// # Errors
/// [`StoreError::Closed`] when the runtime is shutting down; `work`'s own result otherwise.
///
/// # Panics
/// Where `work` panics (the panic is resumed on the caller).
pub(crate) async fn on_disk<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, StoreError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => Ok(done),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::Closed),
    }
}

/// Dials `peers` and adds those that answered to `table`; peers that cannot be dialled are
/// logged and skipped.
pub(crate) async fn dial_and_add<T: RoutingTable + ?Sized>(
    transport: &TransportHandle,
    table: &T,
    peers: &[PeerInfo],
) {
    let dials = join_all(peers.iter().map(|peer| async move {
        let result = transport.dial(peer).await;
        (peer, result)
    }))
    .await;
    for (peer, result) in dials {
        match result {
            // A configured bootstrap peer is trusted to be a server; identify confirms it
            // shortly (PeerIsServer), and the self-lookup marks it useful.
            Ok(()) => {
                table.update(peer, PeerEvent::Seen(Direction::Outbound));
            }
            Err(e) => tracing::warn!(peer = %peer.peer_id, error = %e, "bootstrap dial failed"),
        }
    }
}

/// Most admission probes (see [`feed_table`]) in flight at once; a server identified while
/// all are busy is probed on its next identify exchange, or found by a lookup.
const MAX_ADMISSION_PROBES: usize = 16;

/// Keeps the routing table in step with what identify says about connected peers.
///
/// Saying it serves the DHT costs a peer nothing, so a server is admitted only once it has
/// answered a FIND_NODE of ours (for our own id, as go-libp2p-kad-dht's lookup check), at
/// most [`MAX_ADMISSION_PROBES`] probes at a time.
async fn feed_table<T: RoutingTable + 'static>(
    mut events: TransportEvents,
    table: Arc<T>,
    transport: TransportHandle,
    local: PeerId,
) {
    let probes = Arc::new(Semaphore::new(MAX_ADMISSION_PROBES));
    while let Some(event) = events.recv().await {
        match event {
            TransportEvent::PeerIsServer(peer) => {
                if peer.addrs.is_empty() {
                    continue;
                }
                let Ok(permit) = probes.clone().try_acquire_owned() else {
                    tracing::debug!(peer = %peer.peer_id, "admission probes busy: not probed");
                    continue;
                };
                let (table, transport) = (table.clone(), transport.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let probe = Request::FindNode {
                        key: local.to_bytes(),
                    };
                    match transport.request(&peer, probe).await {
                        Ok(Some(Response::FindNode { .. })) => {
                            table.update(&peer, PeerEvent::Seen(Direction::Outbound));
                        }
                        other => tracing::debug!(
                            peer = %peer.peer_id,
                            answer = ?other.map(|r| r.map(|r| r.message_type())),
                            "server did not answer the admission probe: not added"
                        ),
                    }
                });
            }
            TransportEvent::PeerIsClient(id) => {
                table.update(&PeerInfo::new(id, Vec::new()), PeerEvent::Removed);
            }
            // A closed connection says nothing about whether the peer still serves; failed
            // requests (reported by the client) are what evict peers.
            TransportEvent::PeerDisconnected(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_map_to_rpc_errors() {
        let check = |error: TransportError, expected: fn(&RpcError) -> bool| {
            let shown = format!("{error:?}");
            let got = rpc_error(error);
            assert!(expected(&got), "{shown} mapped to {got:?}");
        };
        check(TransportError::Timeout, |e| matches!(e, RpcError::Timeout));
        check(TransportError::Dial("refused".into()), |e| {
            matches!(e, RpcError::Unreachable(_))
        });
        check(TransportError::UnsupportedProtocol, |e| {
            matches!(e, RpcError::Unreachable(_))
        });
        // Errors on a live connection only count against the peer.
        check(TransportError::ConnectionClosed, |e| {
            matches!(e, RpcError::Other(_))
        });
        check(
            TransportError::Stream(std::io::Error::other("reset")),
            |e| matches!(e, RpcError::Other(_)),
        );
        check(TransportError::Codec(CodecError::Truncated), |e| {
            matches!(e, RpcError::NoResponse)
        });
        check(TransportError::Codec(CodecError::Malformed("x")), |e| {
            matches!(e, RpcError::Other(_))
        });
        check(
            TransportError::UnexpectedResponse {
                sent: MessageType::FindNode,
                got: MessageType::Ping,
            },
            |e| {
                matches!(
                    e,
                    RpcError::UnexpectedResponse {
                        expected: MessageType::FindNode,
                        got: MessageType::Ping
                    }
                )
            },
        );
        check(
            TransportError::ProvideBatchUnsupported("refused in negotiation"),
            |e| matches!(e, RpcError::Unsupported(Feature::ProvideBatch)),
        );
        check(
            TransportError::BatchCodec(BatchCodecError::Truncated),
            |e| matches!(e, RpcError::NoResponse),
        );
        check(TransportError::Shutdown, |e| {
            matches!(e, RpcError::Other(_))
        });
    }
}
