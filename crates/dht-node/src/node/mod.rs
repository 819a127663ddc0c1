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
//!   ([`PeerEvent::Seen`](dht_routing_table::PeerEvent::Seen)`(`[`Direction::Outbound`](dht_routing_table::Direction::Outbound)`)`, as go-libp2p-kad-dht's lookup check),
//!   one that turned client is removed;
//! - a [`DhtClient`] over the same table and a [`TransportNetwork`] (dht-transport's
//!   [`Network`](dht_routing::Network) over the transport);
//! - a provider ([`NodeProvider`]: the sweeping provider by default, the per-key one as an
//!   option) whose keystore is the node's store;
//! - the table's maintenance ([`NodeTable::maintain`]): stale k-buckets refreshed every
//!   10 minutes, or a full routing table refilled by a periodic crawl;
//! - a bootstrap again whenever the table has run low ([`LOW_TABLE`] peers or fewer, looked
//!   at every 2 minutes by default);
//! - the expiry of stored records, hourly.

use std::{
    fmt,
    path::PathBuf,
    sync::{Arc, Weak},
    time::Duration,
};

use dht_handler::{Handler, NamespacedValidator, ValidationError, Validator};
use dht_proto::{K_VALUE, Key, MessageType, PeerId, PeerInfo, Prefix, Record};
use dht_provider::{DhtProvider, Multihash, ProviderError};
use dht_provider_store::{Keystore, ProviderStore, StoreError, ValueStore};
use dht_routing::{DhtClient, Outcome};
use dht_routing_table::{Clock, KBucketTable, SystemClock};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::{
    metrics::Metrics,
    transport::{TransportError, TransportEvents, TransportHandle, TransportNetwork},
};

mod admission;
mod provider;
mod table;

pub(crate) use admission::bootstrap_from;
use admission::feed_table;
pub use provider::NodeProvider;
pub use table::{FullTableConfig, Maintenance, NodeTable, TableSummary};

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
    /// A setting that cannot work (a zero count); nothing was opened or started.
    #[error(transparent)]
    InvalidSetting(#[from] dht_proto::InvalidSetting),
    /// A value record the Amino validators refuse.
    #[error("invalid record: {0}")]
    InvalidRecord(#[source] ValidationError),
    /// The identity file exists but does not hold a keypair.
    #[error("identity file {path}: {source}")]
    BadIdentity {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        source: dht_proto::libp2p_identity::DecodingError,
    },
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

    /// A [`Network`](dht_routing::Network) over this node's transport.
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

    /// Dials `peers`, adds those that answered the dial to the routing table (a peer named
    /// by DNS once identify has told its addresses), and runs a self-lookup (the k peers
    /// closest to this node's own peer id), which fills the table with the peers it meets.
    /// Returns the self-lookup's result and cost.
    ///
    /// Peers that cannot be dialled are skipped (logged); with an empty table the lookup
    /// fails with [`dht_routing::Error::NoPeers`].
    ///
    /// # Errors
    /// [`NodeError::Routing`] when no peer is known to start the lookup from.
    pub async fn bootstrap(&self, peers: &[PeerInfo]) -> Result<Outcome<Vec<PeerInfo>>, NodeError> {
        let outcome = bootstrap_from(
            &self.transport,
            &self.table,
            &self.client,
            self.info.peer_id,
            peers,
        )
        .await?;
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
        let validator = NamespacedValidator::new();
        let now = SystemClock.now();
        let (stores, held_key) = (self.stores.clone(), key.to_vec());
        let local = on_disk(move || stores.get_value(&held_key, now))
            .await??
            .map(|(record, _)| record)
            .filter(|r| validator.validate(&r.key, &r.value, now).is_ok());
        match dht_routing::get_value(&*self.client, key, 1, &validator, now).await {
            Ok(outcome) => {
                self.metrics.lookup("get_value", &outcome.stats);
                let mut candidates: Vec<Record> =
                    local.into_iter().chain(outcome.value.record).collect();
                let values: Vec<&[u8]> = candidates.iter().map(|r| r.value.as_slice()).collect();
                // `select` fails only when there is no candidate.
                let best = validator.select(key, &values).unwrap_or(0);
                Ok((best < candidates.len()).then(|| candidates.swap_remove(best)))
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
        let validator = NamespacedValidator::new();
        let now = SystemClock.now();
        validator
            .validate(&record.key, &record.value, now)
            .map_err(NodeError::InvalidRecord)?;
        // Kept locally unless the record held is better (e.g. a newer IPNS record).
        let (stores, local) = (self.stores.clone(), record.clone());
        on_disk(move || {
            let keep_held = stores
                .get_value(&local.key, now)?
                .map(|(held, _)| held)
                .filter(|held| validator.validate(&held.key, &held.value, now).is_ok())
                .is_some_and(|held| {
                    validator.select(&local.key, &[&local.value, &held.value]) == Ok(1)
                });
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
        rebootstrap_every: Duration,
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
        let expiry = tokio::spawn(expiry_loop(weak.clone()));
        let low = tokio::spawn(low_table_loop(weak, rebootstrap_every));
        self.tasks.lock().extend([feeder, maintenance, expiry, low]);
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

/// A routing table of this many peers or fewer has run low: the node bootstraps again
/// (go-libp2p-kad-dht's `minRTRefreshThreshold`).
pub const LOW_TABLE: usize = 10;

/// How often a node looks whether its table has run low, by default (go-libp2p-kad-dht's
/// `periodicBootstrapInterval`).
pub const REBOOTSTRAP_INTERVAL: Duration = Duration::from_secs(120);

/// The longest one bootstrap of [`low_table_loop`] may take.
const REBOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(60);

/// Every `every`, bootstraps again from the node's bootstrap peers if its table holds
/// [`LOW_TABLE`] peers or fewer. Go's node does so only once its table is empty; here a table
/// too small to route is refilled too (a few dials and one self-lookup, only while low).
async fn low_table_loop<T: NodeTable>(node: Weak<Node<T>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let peers = node.table.len();
        if peers > LOW_TABLE || node.bootstrap.is_empty() {
            continue;
        }
        tracing::info!(peers, "routing table low: bootstrapping again");
        let run = node.bootstrap(&node.bootstrap);
        match tokio::time::timeout(REBOOTSTRAP_TIMEOUT, run).await {
            Ok(Ok(_)) => tracing::info!(peers = node.table.len(), "bootstrapped again"),
            Ok(Err(e)) => tracing::warn!(error = %e, "bootstrapping again found nobody"),
            Err(_) => {
                tracing::warn!(timeout = ?REBOOTSTRAP_TIMEOUT, "bootstrapping again timed out")
            }
        }
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
