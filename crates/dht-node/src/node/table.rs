//! The routing tables a [`Node`] runs on ([`NodeTable`]): how each is created, maintained
//! (a k-bucket table refreshed, a full table refilled by a crawl) and summarised.

use std::{fmt, sync::Arc, time::Duration};

use dht_proto::Key;
use dht_routing::{OpStats, RefreshScope, crawl, refresh_table};
use dht_routing_table::{
    AddressBook, Clock, FullRoutingTable, FullRtConfig, KBucketConfig, KBucketTable, RoutingTable,
    SystemClock,
};

use super::Node;

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

    /// `Ok` when every setting of `config` can work;
    /// [`NodeBuilder::build`](crate::builder::NodeBuilder::build) refuses the others before
    /// it opens anything. Every setting is taken by default.
    ///
    /// # Errors
    /// [`InvalidSetting`](dht_proto::InvalidSetting) naming the first that cannot work.
    fn validate(config: &Self::Config) -> Result<(), dht_proto::InvalidSetting> {
        let _ = config;
        Ok(())
    }

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

    fn validate(config: &KBucketConfig) -> Result<(), dht_proto::InvalidSetting> {
        config.validate()
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

    /// Refreshes the table as go-libp2p-kad-dht does ([`refresh_table`]): a lookup of the
    /// node's own key, then one of a random key in each stale bucket up to
    /// [`MAX_REFRESH_CPL`](dht_routing::MAX_REFRESH_CPL).
    async fn maintain(node: &Node<KBucketTable>) -> Maintenance {
        let refresh = refresh_table(node.client(), RefreshScope::Stale, rand::random()).await;
        Maintenance {
            lookups: refresh.lookups,
            crawled: None,
            peers: node.table().len(),
            stats: refresh.stats,
        }
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
