//! [`NodeBuilder`]: a [`Node`] with the parts you choose.
//!
//! Generic over the routing table ([`KBucketTable`] by default, [`FullRoutingTable`] filled
//! by a periodic crawl as an option), with a choice of stores (RocksDB under the data
//! directory by default, in memory as an option, or your own [`Stores`]) and of provider
//! (the sweeping provider by default, the per-key legacy provider as an option).
//!
//! ```no_run
//! use dht_node::builder::NodeBuilder;
//! use dht_routing_table::RoutingTable;
//!
//! # async fn run() -> Result<(), dht_node::node::NodeError> {
//! // Amino bootstrap peers, RocksDB and the identity under ./dht-data, port 4001.
//! let node = NodeBuilder::new().data_dir("dht-data").build().await?;
//! println!("{} knows {} peers", node.peer_id(), node.table().len());
//! node.close().await?; // persists the provider's schedule
//! # Ok(())
//! # }
//! ```
//!
//! The data directory holds `identity.key` (the node's keypair, protobuf-encoded, created on
//! first start), `store/` (the RocksDB database: provider records, value records, the
//! keystore) and `provider.state` (the sweep schedule).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use dht_handler::{Handler, HandlerConfig, Sender};
use dht_proto::{Multiaddr, PeerInfo, Request, Response, batch::ProvideBatch};
use dht_provider::{
    EitherProvider, FileStateStore, LegacyConfig, LegacyProvider, MemoryStateStore, StateStore,
    SweepConfig, SweepParts, SweepingProvider,
};
use dht_provider_store::{
    Config as StoreConfig, GroupWriter, MemoryStore, RocksStore, WriterConfig,
};
use dht_routing::{ClientConfig, DhtClient};
use dht_routing_table::{
    Clock, DiversityConfig, FullRoutingTable, KBucketConfig, KBucketTable, SystemClock,
};
use libp2p::{identity::Keypair, multiaddr::Protocol};
use parking_lot::Mutex;

use crate::{
    fds::{self, FdPlan},
    metrics::Metrics,
    node::{Node, NodeError, NodeHandler, NodeTable, SharedStores, Stores},
    transport::{self, HandlerError, Mode, RemotePeer, TransportConfig, TransportNetwork},
};

/// The Amino DHT's public bootstrap peers (as go-libp2p-kad-dht and Kubo list them).
///
/// The transport resolves `/dnsaddr` (TXT records of `_dnsaddr.<name>`) and `/dns*` addresses
/// with the system's resolver. Pass your own list with [`NodeBuilder::bootstrap_peers`].
pub const AMINO_BOOTSTRAP: &[&str] = &[
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/dnsaddr/va1.bootstrap.libp2p.io/p2p/12D3KooWKnDdG3iXw9eTFijk3EWSunZcFi54Zka4wmtqtt6rPxc8",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnQAAfwL8Fgr8BNPz6SbXBLuSwW",
    "/ip4/104.131.131.82/udp/4001/quic-v1/p2p/QmaCpDMGvV2BGHeYERUEnQAAfwL8Fgr8BNPz6SbXBLuSwW",
];

/// Parses a multiaddr ending in `/p2p/<peer id>` into a [`PeerInfo`].
///
/// ```
/// let peer = dht_node::builder::parse_peer(
///     "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWKnDdG3iXw9eTFijk3EWSunZcFi54Zka4wmtqtt6rPxc8",
/// )?;
/// assert_eq!(peer.addrs[0].to_string(), "/ip4/127.0.0.1/tcp/4001");
/// # Ok::<(), String>(())
/// ```
///
/// # Errors
/// A message when the text is not a multiaddr or does not end in `/p2p/<peer id>`.
pub fn parse_peer(text: &str) -> Result<PeerInfo, String> {
    let mut addr: Multiaddr = text
        .parse()
        .map_err(|e| format!("{text:?} is not a multiaddr: {e}"))?;
    match addr.pop() {
        Some(Protocol::P2p(peer)) => Ok(PeerInfo::new(peer, vec![addr])),
        _ => Err(format!("{text:?} does not end in /p2p/<peer id>")),
    }
}

/// Parses multiaddrs ending in `/p2p/<peer id>` ([`parse_peer`]) into one [`PeerInfo`] per
/// peer, with every address listed for it (e.g. TCP and QUIC), in the list's order.
///
/// # Errors
/// The message of the first text that does not parse.
pub fn parse_peers<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Vec<PeerInfo>, String> {
    let mut peers: Vec<PeerInfo> = Vec::new();
    for text in texts {
        let peer = parse_peer(text)?;
        match peers.iter_mut().find(|p| p.peer_id == peer.peer_id) {
            Some(known) => known.addrs.extend(peer.addrs),
            None => peers.push(peer),
        }
    }
    Ok(peers)
}

/// [`AMINO_BOOTSTRAP`], parsed ([`parse_peers`]).
pub fn amino_bootstrap_peers() -> Vec<PeerInfo> {
    parse_peers(AMINO_BOOTSTRAP.iter().copied()).unwrap_or_default()
}

/// Where a node keeps its records and keystore.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StoreChoice {
    /// RocksDB under `<data dir>/store` (in memory when the node has no data directory).
    Rocks(StoreConfig),
    /// In memory: lost when the node stops.
    Memory,
    /// Stores you built.
    Custom(SharedStores),
}

/// Which provider a node runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ProviderChoice {
    /// [`SweepingProvider`]: keys grouped by keyspace region, one exploration per region
    /// (boxed: its settings are many).
    Sweep(Box<SweepConfig>),
    /// [`LegacyProvider`]: one DHT walk per key.
    Legacy(LegacyConfig),
}

/// Builds a [`Node`]; see the [module documentation](self).
#[derive(Debug)]
#[must_use]
pub struct NodeBuilder<T: NodeTable = KBucketTable> {
    keypair: Option<Keypair>,
    data_dir: Option<PathBuf>,
    store: StoreChoice,
    provider: ProviderChoice,
    transport: TransportConfig,
    table: T::Config,
    client: ClientConfig,
    handler: HandlerConfig,
    bootstrap: Vec<PeerInfo>,
    bootstrap_timeout: Duration,
    rebootstrap_interval: Duration,
    raise_fd_limit: bool,
    public_addrs_only: bool,
    group_writes: bool,
}

impl<T: NodeTable> Clone for NodeBuilder<T> {
    fn clone(&self) -> Self {
        NodeBuilder {
            keypair: self.keypair.clone(),
            data_dir: self.data_dir.clone(),
            store: self.store.clone(),
            provider: self.provider.clone(),
            transport: self.transport.clone(),
            table: self.table.clone(),
            client: self.client.clone(),
            handler: self.handler.clone(),
            bootstrap: self.bootstrap.clone(),
            bootstrap_timeout: self.bootstrap_timeout,
            rebootstrap_interval: self.rebootstrap_interval,
            raise_fd_limit: self.raise_fd_limit,
            public_addrs_only: self.public_addrs_only,
            group_writes: self.group_writes,
        }
    }
}

impl Default for NodeBuilder<KBucketTable> {
    fn default() -> Self {
        NodeBuilder::new()
    }
}

impl NodeBuilder<KBucketTable> {
    /// A server with a [`KBucketTable`], RocksDB stores (under the data directory, if one
    /// is set), the sweeping provider, listening on `/ip4/0.0.0.0/tcp/4001`, bootstrapping
    /// from the Amino peers.
    pub fn new() -> Self {
        NodeBuilder {
            keypair: None,
            data_dir: None,
            store: StoreChoice::Rocks(StoreConfig::default()),
            provider: ProviderChoice::Sweep(Box::default()),
            transport: TransportConfig::default(),
            table: KBucketConfig::default(),
            client: ClientConfig::default(),
            handler: HandlerConfig::default(),
            bootstrap: amino_bootstrap_peers(),
            bootstrap_timeout: Duration::from_secs(60),
            rebootstrap_interval: crate::node::REBOOTSTRAP_INTERVAL,
            raise_fd_limit: true,
            public_addrs_only: true,
            group_writes: true,
        }
    }

    /// A node for a network on one machine: listens on an ephemeral port of 127.0.0.1, no
    /// bootstrap peers, in-memory stores, and a routing table whose IP diversity filter
    /// exempts loopback and private addresses (with the default filter a table would hold
    /// only 3 peers of 127.0.0.0/24).
    pub fn local() -> Self {
        let listen = Multiaddr::empty()
            .with(Protocol::Ip4(Ipv4Addr::LOCALHOST))
            .with(Protocol::Tcp(0));
        NodeBuilder::new()
            .listen_addrs(vec![listen])
            .bootstrap_peers(Vec::new())
            .memory_store()
            .allow_local_networks()
    }

    /// Sets the k-bucket table's settings.
    pub fn kbucket_config(mut self, config: KBucketConfig) -> Self {
        self.table = config;
        self
    }

    /// Lets loopback and private addresses past the routing table's IP diversity filter, and
    /// turns the public-address filter off (see
    /// [`public_addrs_only`](NodeBuilder::public_addrs_only)), for networks on one machine or
    /// one LAN.
    pub fn allow_local_networks(mut self) -> Self {
        self.public_addrs_only = false;
        let diversity = self.table.diversity.unwrap_or_default();
        self.table = self
            .table
            .with_diversity(Some(diversity.with_local_network(true)));
        self
    }
}

impl<T: NodeTable> NodeBuilder<T> {
    /// The same builder over another routing table `U`, with `U`'s settings `config`.
    pub fn with_table<U: NodeTable>(self, config: U::Config) -> NodeBuilder<U> {
        NodeBuilder {
            keypair: self.keypair,
            data_dir: self.data_dir,
            store: self.store,
            provider: self.provider,
            transport: self.transport,
            table: config,
            client: self.client,
            handler: self.handler,
            bootstrap: self.bootstrap,
            bootstrap_timeout: self.bootstrap_timeout,
            rebootstrap_interval: self.rebootstrap_interval,
            raise_fd_limit: self.raise_fd_limit,
            public_addrs_only: self.public_addrs_only,
            group_writes: self.group_writes,
        }
    }

    /// The same builder over a [`FullRoutingTable`] with its default settings (crawled
    /// after bootstrap and every hour).
    pub fn full_routing_table(self) -> NodeBuilder<FullRoutingTable> {
        self.with_table(FullRoutingTable::default_config())
    }

    /// Sets the routing table's settings.
    pub fn table_config(mut self, config: T::Config) -> Self {
        self.table = config;
        self
    }

    /// The node's identity. Without one, it is read from (or created in) the data
    /// directory, or generated if there is none.
    pub fn keypair(mut self, keypair: Keypair) -> Self {
        self.keypair = Some(keypair);
        self
    }

    /// Where the identity, the RocksDB stores and the provider's state live.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// RocksDB stores under `<data dir>/store`, with `config` (the default).
    pub fn rocks_store(mut self, config: StoreConfig) -> Self {
        self.store = StoreChoice::Rocks(config);
        self
    }

    /// In-memory stores (and provider state): nothing survives a restart.
    pub fn memory_store(mut self) -> Self {
        self.store = StoreChoice::Memory;
        self
    }

    /// Whether the RocksDB stores commit the provider records of concurrent inbound
    /// ADD_PROVIDERs together, through a [`GroupWriter`] (default on): one write and one
    /// commit for all that arrive while the previous commit runs, instead of one each, and no
    /// request waits for its record's commit (it is readable a commit later). In
    /// `cargo xtask bench server` (release, 64 senders over TCP, 5 runs) it stored 1.11
    /// times as many records per second as direct writes, for 0.87 times the CPU. Off, each
    /// request's record is its own unsynced write.
    pub fn group_writes(mut self, on: bool) -> Self {
        self.group_writes = on;
        self
    }

    /// Whether the node speaks the batched provide protocol (`/amino-dht-rs/provide-batch/1.0.0`,
    /// `docs/specs/provide-batch.md`; default on): as a server it advertises the protocol in
    /// identify and stores the batches it receives (answering once they are durable), and
    /// its provider sends batches to the peers that advertise it (ADD_PROVIDER to the
    /// others). Off, it neither advertises, serves nor sends batches
    /// ([`KadConfig::provide_batch`](crate::transport::KadConfig::provide_batch)).
    pub fn provide_batch(mut self, on: bool) -> Self {
        let kad = self.transport.kad.clone().with_provide_batch(on);
        self.transport = self.transport.with_kad(kad);
        self
    }

    /// Stores you built (e.g. a [`RocksStore`] opened elsewhere).
    pub fn stores(mut self, stores: SharedStores) -> Self {
        self.store = StoreChoice::Custom(stores);
        self
    }

    /// The sweeping provider with `config` (the default).
    pub fn sweeping_provider(mut self, config: SweepConfig) -> Self {
        self.provider = ProviderChoice::Sweep(Box::new(config));
        self
    }

    /// The per-key legacy provider with `config`.
    pub fn legacy_provider(mut self, config: LegacyConfig) -> Self {
        self.provider = ProviderChoice::Legacy(config);
        self
    }

    /// The transport's settings (listen addresses, mode, timeouts).
    pub fn transport(mut self, config: TransportConfig) -> Self {
        self.transport = config;
        self
    }

    /// The addresses to listen on.
    pub fn listen_addrs(mut self, addrs: Vec<Multiaddr>) -> Self {
        self.transport = self.transport.with_listen_addrs(addrs);
        self
    }

    /// Addresses others reach this node at (e.g. a public address behind NAT), announced by
    /// identify and in the node's own records (FIND_NODE answers about itself, the provider
    /// records it sends) before the listen addresses.
    pub fn external_addrs(mut self, addrs: Vec<Multiaddr>) -> Self {
        self.transport = self.transport.with_external_addrs(addrs);
        self
    }

    /// Server (answers the DHT, the default) or client mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        let kad = self.transport.kad.clone().with_mode(mode);
        self.transport = self.transport.with_kad(kad);
        self
    }

    /// The peers to bootstrap from (default: [`AMINO_BOOTSTRAP`]); empty for none.
    pub fn bootstrap_peers(mut self, peers: Vec<PeerInfo>) -> Self {
        self.bootstrap = peers;
        self
    }

    /// The longest [`build`](Self::build) waits for the bootstrap (default 60 s).
    pub fn bootstrap_timeout(mut self, timeout: Duration) -> Self {
        self.bootstrap_timeout = timeout;
        self
    }

    /// How often the node looks whether its routing table has run low (at most
    /// [`LOW_TABLE`](crate::node::LOW_TABLE) peers) and, if so, bootstraps again from its
    /// bootstrap peers (default 2 minutes, as go-libp2p-kad-dht). A table can lose every
    /// peer it had, to a network outage or to peers that time out under load; without this
    /// it would wait for the next refresh, which a table that has nobody to ask cannot do.
    /// Zero is refused by [`build`](Self::build).
    pub fn rebootstrap_interval(mut self, every: Duration) -> Self {
        self.rebootstrap_interval = every;
        self
    }

    /// The client's settings (k, α, timeouts, crawl).
    pub fn client(mut self, config: ClientConfig) -> Self {
        self.client = config;
        self
    }

    /// The server's limits.
    pub fn handler(mut self, config: HandlerConfig) -> Self {
        self.handler = config;
        self
    }

    /// The server's request rate per peer ([`HandlerConfig::rate_limit`]; `None`: unlimited),
    /// the other limits unchanged. Batched provide records are charged one request each.
    pub fn rate_limit(mut self, limit: Option<dht_handler::RateLimit>) -> Self {
        self.handler = self.handler.clone().with_rate_limit(limit);
        self
    }

    /// Whether the per-IP limits apply to loopback peers too (default `false`): the
    /// transport's connections per IP and per network
    /// ([`ConnectionLimits::limit_loopback`](crate::transport::ConnectionLimits::limit_loopback))
    /// and the handler's request rate per IP ([`HandlerConfig::rate_limit_loopback`]). On for
    /// a test of hostile peers on one machine; a devnet on 127.0.0.1 needs it off.
    pub fn limit_loopback(mut self, on: bool) -> Self {
        self.transport.limits = self.transport.limits.clone().with_limit_loopback(on);
        self.handler = self.handler.clone().with_rate_limit_loopback(on);
        self
    }

    /// Whether the node dials and serves public addresses only (default `true`; `false` after
    /// [`allow_local_networks`](NodeBuilder::allow_local_networks) and in
    /// [`NodeBuilder::local`]): loopback, private, link-local and unspecified IP addresses
    /// learned from others are neither dialled ([`KadConfig::public_addrs_only`]) nor served
    /// in answers ([`HandlerConfig::public_addrs_only`]). It overrides both settings.
    ///
    /// [`KadConfig::public_addrs_only`]: crate::transport::KadConfig::public_addrs_only
    pub fn public_addrs_only(mut self, on: bool) -> Self {
        self.public_addrs_only = on;
        self
    }

    /// Whether [`build`](Self::build) raises the soft file-descriptor limit to the hard one
    /// and shares the limit out between RocksDB's files and the connections (default `true`;
    /// see [`crate::fds`]). The plan assumes the node is alone in its process.
    pub fn raise_fd_limit(mut self, on: bool) -> Self {
        self.raise_fd_limit = on;
        self
    }

    /// Starts the node: loads or creates its identity, opens the stores, starts the
    /// transport, bootstraps (dial the bootstrap peers, self-lookup; at most the bootstrap
    /// timeout; skipped without bootstrap peers), starts the provider and the background
    /// tasks (table maintenance, record expiry). A full routing table is crawled right
    /// after the bootstrap.
    ///
    /// # Errors
    /// [`NodeError`] when the data directory, the identity, the stores, the transport or
    /// the provider's state cannot be used. A bootstrap that finds nobody is logged, not an
    /// error: the node keeps trying at each maintenance round.
    ///
    /// First, unless [`raise_fd_limit`](Self::raise_fd_limit) is off, the soft
    /// file-descriptor limit is raised to the hard one and shared out ([`FdPlan`]): RocksDB's
    /// `max_open_files` and the connection limits are lowered where the limit has no room for
    /// both, and the figures are logged.
    pub async fn build(mut self) -> Result<Arc<Node<T>>, NodeError> {
        if self.raise_fd_limit {
            self.plan_fds();
        }
        self.transport.kad.public_addrs_only = self.public_addrs_only;
        self.handler.public_addrs_only = self.public_addrs_only;
        // Refused before anything is opened.
        self.handler.validate()?;
        self.client.validate()?;
        T::validate(&self.table)?;
        dht_proto::InvalidSetting::at_least_one(
            "rebootstrap_interval",
            u64::try_from(self.rebootstrap_interval.as_millis()).unwrap_or(u64::MAX),
        )?;
        // Also when the records stay in memory (no data directory), where the settings
        // size a `MemoryStore` that would take them as they are.
        if let StoreChoice::Rocks(config) = &self.store {
            config.validate()?;
        }
        if let Some(dir) = &self.data_dir {
            std::fs::create_dir_all(dir).map_err(|source| NodeError::Io {
                what: "creating the data directory",
                path: dir.clone(),
                source,
            })?;
        }
        let keypair = match (self.keypair, &self.data_dir) {
            (Some(k), _) => k,
            (None, Some(dir)) => load_or_create_identity(&dir.join("identity.key"))?,
            (None, None) => Keypair::generate_ed25519(),
        };
        // (persistent: the provider's state is kept too; on_disk: the stores may block.)
        let (stores, persistent, on_disk): (SharedStores, bool, bool) =
            match (&self.store, &self.data_dir) {
                (StoreChoice::Rocks(config), Some(dir)) => {
                    let rocks = RocksStore::open(dir.join("store"), config.clone())?;
                    let stores: SharedStores = if self.group_writes {
                        // Nobody waits for an inbound ADD_PROVIDER's record: no answer. The
                        // writer takes it (and a batch) without waiting: no thread hand-off.
                        let writer = WriterConfig::default().with_inbound_waits(false);
                        self.transport.kad.blocking_provider_writes = false;
                        Arc::new(GroupWriter::new(Arc::new(rocks), writer)?)
                    } else {
                        Arc::new(rocks)
                    };
                    (stores, true, true)
                }
                (StoreChoice::Rocks(config), None) => {
                    (Arc::new(MemoryStore::with_config(config)), false, false)
                }
                (StoreChoice::Memory, _) => (Arc::new(MemoryStore::new()), false, false),
                (StoreChoice::Custom(stores), _) => (stores.clone(), self.data_dir.is_some(), true),
            };
        if !on_disk {
            // Stores in memory never wait: answer record requests without a thread hand-off.
            self.transport.kad.blocking_record_requests = false;
        }
        let state: Box<dyn StateStore> = match (&self.data_dir, persistent) {
            (Some(dir), true) => {
                let path = dir.join("provider.state");
                if matches!(self.provider, ProviderChoice::Sweep(_)) {
                    set_aside_corrupt_state(&path)?;
                }
                Box::new(FileStateStore::new(path))
            }
            _ => Box::new(MemoryStateStore::default()),
        };

        let peer_id = keypair.public().to_peer_id();
        let local = PeerInfo::new(peer_id, Vec::new());
        let table = Arc::new(T::create(local.key(), &self.table));
        let metrics = Arc::new(Metrics::new());
        let handler = Arc::new(Handler::new(
            local,
            table.clone(),
            stores.clone(),
            stores.clone(),
            self.handler,
        )?);
        let inbound = Arc::new(NodeInbound::<T> {
            handler: handler.clone(),
            metrics: metrics.clone(),
        });
        let external = self.transport.external_addrs.clone();
        let (transport, events) = transport::spawn(keypair, self.transport, inbound).await?;
        table.use_address_book(Arc::new(transport.peer_book()));
        let mut addrs = external;
        for addr in transport.listen_addrs().await? {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        handler.set_local_addrs(addrs.clone());
        let info = PeerInfo::new(peer_id, addrs);
        tracing::info!(peer_id = %peer_id, addrs = ?info.addrs, "node listening");
        let network = TransportNetwork::new(transport.clone());
        let client = Arc::new(DhtClient::new(
            info.clone(),
            table.clone(),
            network.clone(),
            self.client,
        ));

        // Bootstrap before the provider starts: the sweep sizes its regions from the table.
        let bootstrap = self.bootstrap;
        if !bootstrap.is_empty() {
            let run = crate::node::bootstrap_from(&transport, &table, &client, peer_id, &bootstrap);
            match tokio::time::timeout(self.bootstrap_timeout, run).await {
                Ok(Ok(_)) => tracing::info!(peers = table.len(), "bootstrapped"),
                Ok(Err(e)) => tracing::warn!(error = %e, "bootstrap found nobody"),
                Err(_) => tracing::warn!(timeout = ?self.bootstrap_timeout, "bootstrap timed out"),
            }
        }

        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let provider = match self.provider {
            ProviderChoice::Sweep(config) => EitherProvider::Sweep(SweepingProvider::start(
                SweepParts {
                    local: info.clone(),
                    network,
                    table: table.clone(),
                    keystore: stores.clone(),
                    state,
                    clock,
                },
                *config,
            )?),
            ProviderChoice::Legacy(config) => EitherProvider::PerKey(LegacyProvider::start(
                client.clone(),
                stores.clone(),
                info.clone(),
                clock,
                config,
            )?),
        };

        let node = Arc::new(Node {
            info,
            transport,
            table,
            table_config: self.table,
            stores,
            handler,
            client,
            provider,
            bootstrap,
            data_dir: self.data_dir,
            metrics,
            tasks: Mutex::new(Vec::new()),
        });
        // A full table is filled by a crawl right away; k-buckets after a refresh interval.
        let first = T::MAINTAIN_AT_START.then_some(Duration::ZERO);
        node.spawn_tasks(events, first, self.rebootstrap_interval);
        Ok(node)
    }
}

impl<T: NodeTable> NodeBuilder<T> {
    /// Raises the soft file-descriptor limit and applies its [`FdPlan`].
    fn plan_fds(&mut self) {
        let Some(limit) = fds::raise_soft_limit() else {
            return;
        };
        let rocks = match (&self.store, &self.data_dir) {
            (StoreChoice::Rocks(config), Some(_)) => Some(config.max_open_files),
            _ => None,
        };
        let plan = FdPlan::new(limit.soft, rocks, &self.transport.limits);
        plan.log(Some(limit));
        if let (StoreChoice::Rocks(config), Some(files)) = (&mut self.store, plan.rocks_files) {
            config.max_open_files = files;
        }
        self.transport.limits = plan.connections;
    }
}

/// The transport's [`InboundHandler`](transport::InboundHandler) of a node: its server, on
/// kad requests and batches alike.
struct NodeInbound<T: NodeTable> {
    handler: Arc<NodeHandler<T>>,
    metrics: Arc<Metrics>,
}

/// The handler's view of the sender the transport describes.
fn sender(from: &RemotePeer) -> Sender {
    Sender {
        peer: from.peer.clone(),
        is_server: from.is_server,
        remote_ip: from.remote_ip,
    }
}

impl<T: NodeTable> transport::InboundHandler for NodeInbound<T> {
    fn handle_request(
        &self,
        from: &RemotePeer,
        request: Request,
    ) -> Result<Option<Response>, HandlerError> {
        Node::<T>::count_inbound(&self.metrics, request.message_type());
        self.handler
            .handle(&sender(from), request, SystemClock.now())
            .map_err(|e| Box::new(e) as HandlerError)
    }

    fn serves_provide_batch(&self) -> bool {
        true
    }

    fn provide_batch(
        &self,
        from: &RemotePeer,
        batch: ProvideBatch,
    ) -> Result<transport::BatchReply, HandlerError> {
        Ok(Box::pin(self.handler.submit_batch(
            &sender(from),
            batch,
            SystemClock.now(),
        )))
    }
}

/// Reads the keypair in `path` (protobuf-encoded), or generates an Ed25519 one and writes it
/// there (mode 0600 on Unix).
///
/// # Errors
/// [`NodeError::Io`] when the file cannot be read or written, [`NodeError::BadIdentity`]
/// when it does not hold a keypair.
pub fn load_or_create_identity(path: &Path) -> Result<Keypair, NodeError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            Keypair::from_protobuf_encoding(&bytes).map_err(|source| NodeError::BadIdentity {
                path: path.to_owned(),
                source,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            let bytes =
                keypair
                    .to_protobuf_encoding()
                    .map_err(|source| NodeError::BadIdentity {
                        path: path.to_owned(),
                        source,
                    })?;
            let io = |source| NodeError::Io {
                what: "writing the identity",
                path: path.to_owned(),
                source,
            };
            let tmp = path.with_extension("tmp");
            write_private(&tmp, &bytes).map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
            tracing::info!(path = %path.display(), peer_id = %keypair.public().to_peer_id(), "created a new identity");
            Ok(keypair)
        }
        Err(source) => Err(NodeError::Io {
            what: "reading the identity",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Renames a sweep state file that does not decode to `<path>.corrupt-<unix secs>` and logs
/// it, so that the node starts with a new schedule (the keystore still holds every key)
/// rather than not at all.
fn set_aside_corrupt_state(path: &Path) -> Result<(), NodeError> {
    let io = |what, source| NodeError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("reading the provider state", e)),
    };
    let Err(error) = dht_provider::state::SweepState::from_bytes(&bytes) else {
        return Ok(());
    };
    let aside = path.with_extension(format!("state.corrupt-{}", SystemClock.now()));
    std::fs::rename(path, &aside).map_err(|e| io("setting the provider state aside", e))?;
    tracing::warn!(
        path = %path.display(),
        set_aside = %aside.display(),
        %error,
        "the provider state is corrupt: set aside; the sweep starts a new schedule"
    );
    Ok(())
}

/// Writes `bytes` to `path`, readable by its owner only (0600 on Unix), and syncs it.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A [`Stores`] trait object from any store type.
pub fn shared_stores(stores: impl Stores) -> SharedStores {
    Arc::new(stores)
}

/// A [`DiversityConfig`] that exempts loopback and private networks, for networks on one
/// machine.
pub fn local_diversity() -> DiversityConfig {
    DiversityConfig::default().with_local_network(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amino_bootstrap_parses_into_one_entry_per_peer() {
        let peers = amino_bootstrap_peers();
        assert_eq!(peers.len(), 6);
        let mars = peers
            .iter()
            .find(|p| p.peer_id.to_string() == "QmaCpDMGvV2BGHeYERUEnQAAfwL8Fgr8BNPz6SbXBLuSwW")
            .expect("mars is listed");
        let addrs: Vec<String> = mars.addrs.iter().map(ToString::to_string).collect();
        assert_eq!(
            addrs,
            [
                "/ip4/104.131.131.82/tcp/4001",
                "/ip4/104.131.131.82/udp/4001/quic-v1"
            ]
        );
    }

    #[test]
    fn bad_peer_addresses_are_refused() {
        assert!(parse_peer("not an address").is_err());
        assert!(parse_peer("/ip4/127.0.0.1/tcp/1").is_err());
    }

    #[tokio::test]
    async fn a_setting_that_cannot_work_is_refused_before_anything_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let alpha_0 =
            ClientConfig::default().with_query(dht_routing::QueryConfig::default().with_alpha(0));
        let cases = [
            (
                NodeBuilder::new().handler(HandlerConfig::default().with_max_tracked_peers(0)),
                "max_tracked_peers",
            ),
            (NodeBuilder::new().client(alpha_0), "query.alpha"),
            (
                NodeBuilder::new().kbucket_config(KBucketConfig::default().with_bucket_size(0)),
                "bucket_size",
            ),
            (
                NodeBuilder::new()
                    .rocks_store(StoreConfig::default().with_max_providers_per_key(0)),
                "max_providers_per_key",
            ),
            (
                NodeBuilder::new().rebootstrap_interval(Duration::ZERO),
                "rebootstrap_interval",
            ),
        ];
        for (builder, setting) in cases {
            match builder.data_dir(&data).build().await {
                Err(NodeError::InvalidSetting(e)) => assert_eq!(e.setting, setting),
                Err(e) => panic!("{setting} 0 refused for another reason: {e}"),
                Ok(_) => panic!("a node with {setting} 0 was built"),
            }
            assert!(!data.exists(), "{setting}: the data directory was made");
        }
    }

    #[test]
    fn identity_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("identity.key");
        let first = load_or_create_identity(&path).expect("created");
        let second = load_or_create_identity(&path).expect("reloaded");
        assert_eq!(first.public(), second.public());
        std::fs::write(&path, b"garbage").expect("write");
        assert!(matches!(
            load_or_create_identity(&path),
            Err(NodeError::BadIdentity { .. })
        ));
    }
}
