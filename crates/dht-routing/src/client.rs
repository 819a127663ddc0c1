//! [`DhtClient`]: the [`Dht`] over a routing table and a network.

use std::collections::{HashSet, VecDeque};

use dht_proto::{Key, PeerId, PeerInfo, Request, Response, UnixSecs, Validator};
use dht_routing_table::{PeerEvent, RoutingTable};
use futures::StreamExt;

use crate::{
    ClosestPeersQuery, CrawlConfig, Dht, DriverConfig, Error, GetValue, Network, Outcome,
    ProviderStream, QueryConfig, QueryDriver, SharedStats,
    dht::{ValueCollector, correct_outdated, generic, limit},
};

/// Settings of a [`DhtClient`] (and of the generic operations of any [`Dht`]).
///
/// ```
/// use std::time::Duration;
/// use dht_routing::{ClientConfig, DriverConfig, QueryConfig};
/// let config = ClientConfig::default()
///     .with_query(QueryConfig::default().with_alpha(3))
///     .with_driver(DriverConfig::default().with_request_timeout(Duration::from_secs(1)))
///     .with_update_table(false);
/// assert_eq!(config.query.alpha, 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The lookup: k, α, β, stall timeout. `k` is also the replication factor of put-value
    /// and provide.
    pub query: QueryConfig,
    /// Per-request and per-lookup timeouts.
    pub driver: DriverConfig,
    /// The crawl.
    pub crawl: CrawlConfig,
    /// Whether peers that answer are reported to the routing table as
    /// [`PeerEvent::Seen`]`(Outbound)`, peers that cannot be reached as
    /// [`PeerEvent::Unreachable`] and peers that fail otherwise as [`PeerEvent::Failed`]
    /// (default `true`).
    pub update_table: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            query: QueryConfig::default(),
            driver: DriverConfig::default(),
            crawl: CrawlConfig::default(),
            update_table: true,
        }
    }
}

impl ClientConfig {
    /// `Ok` when every setting can work: the lookup's `k`, `alpha` and `beta`, the
    /// per-request timeout and the crawl's `parallelism` and `bucket_size` above zero.
    ///
    /// The operations read a zero there as 1 (a count asked for per call, such as
    /// `find_closest_peers`' `n`, can be zero); a node or simulator built from these
    /// settings refuses them instead.
    ///
    /// # Errors
    /// [`InvalidSetting`](dht_proto::InvalidSetting) naming the first that cannot work.
    pub fn validate(&self) -> Result<(), dht_proto::InvalidSetting> {
        use dht_proto::InvalidSetting;
        InvalidSetting::at_least_one("query.k", self.query.k as u64)?;
        InvalidSetting::at_least_one("query.alpha", self.query.alpha as u64)?;
        InvalidSetting::at_least_one("query.beta", self.query.beta as u64)?;
        InvalidSetting::at_least_one(
            "driver.request_timeout",
            self.driver.request_timeout.as_millis() as u64,
        )?;
        InvalidSetting::at_least_one("crawl.parallelism", self.crawl.parallelism as u64)?;
        InvalidSetting::at_least_one("crawl.bucket_size", self.crawl.bucket_size as u64)
    }

    /// Sets [`ClientConfig::query`].
    #[must_use]
    pub fn with_query(mut self, query: QueryConfig) -> Self {
        self.query = query;
        self
    }

    /// Sets [`ClientConfig::driver`].
    #[must_use]
    pub fn with_driver(mut self, driver: DriverConfig) -> Self {
        self.driver = driver;
        self
    }

    /// Sets [`ClientConfig::crawl`].
    #[must_use]
    pub fn with_crawl(mut self, crawl: CrawlConfig) -> Self {
        self.crawl = crawl;
        self
    }

    /// Sets [`ClientConfig::update_table`].
    #[must_use]
    pub fn with_update_table(mut self, update: bool) -> Self {
        self.update_table = update;
        self
    }
}

/// The DHT client: a [`Dht`] over any [`RoutingTable`] and [`Network`].
///
/// Lookups start from the table's closest peers and walk the network with the sans-IO
/// [`ClosestPeersQuery`] driven by [`QueryDriver`]. With a
/// [complete](RoutingTable::is_complete) table (a fresh
/// [`FullRoutingTable`](dht_routing_table::FullRoutingTable)), closest peers come from the
/// table without a walk, and the other operations send their requests straight to them.
///
/// ```
/// # use std::future::Future;
/// # use dht_proto::{Key, PeerId, PeerInfo, Request, Response};
/// # use dht_routing::{Network, RpcError};
/// # struct Lonely;
/// # impl Network for Lonely {
/// #     fn send(&self, _: &PeerInfo, _: Request)
/// #         -> impl Future<Output = Result<Option<Response>, RpcError>> + Send {
/// #         std::future::ready(Ok(Some(Response::FindNode { closer_peers: vec![] })))
/// #     }
/// # }
/// use dht_routing::{ClientConfig, DhtClient, find_closest_peers};
/// use dht_routing_table::{Direction, KBucketTable, PeerEvent, RoutingTable, SystemClock};
///
/// # tokio_test(async {
/// let me = PeerInfo::new(PeerId::random(), vec![]);
/// let table = KBucketTable::new(me.key(), Default::default(), SystemClock);
/// let other = PeerInfo::new(PeerId::random(), vec!["/ip4/198.51.100.7/tcp/4001".parse().unwrap()]);
/// table.update(&other, PeerEvent::Seen(Direction::Outbound));
///
/// let client = DhtClient::new(me, table, Lonely, ClientConfig::default());
/// let outcome = find_closest_peers(&client, b"some key", 20).await?;
/// assert_eq!(outcome.value, vec![other]);
/// assert_eq!(outcome.stats.total_requests(), 1);
/// # Ok::<(), dht_routing::Error>(())
/// # }).unwrap();
/// # fn tokio_test<T>(f: impl Future<Output = T>) -> T {
/// #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug)]
pub struct DhtClient<T, N> {
    local: PeerInfo,
    local_key: Key,
    table: T,
    network: N,
    config: ClientConfig,
}

impl<T: RoutingTable, N: Network> DhtClient<T, N> {
    /// A client for the local peer `local` (never asked, never returned), reading and
    /// feeding `table`, sending over `network`.
    pub fn new(local: PeerInfo, table: T, network: N, mut config: ClientConfig) -> Self {
        config.query.local_peer = Some(local.peer_id);
        DhtClient {
            local_key: local.key(),
            local,
            table,
            network,
            config,
        }
    }

    /// The local peer.
    pub fn local_peer(&self) -> &PeerInfo {
        &self.local
    }

    /// The routing table.
    pub fn table(&self) -> &T {
        &self.table
    }

    /// The client's settings.
    pub fn client_config(&self) -> &ClientConfig {
        &self.config
    }

    /// A lookup of `sha256(key)` for `n` peers, seeded with the table's closest peers and
    /// `extra_seeds` (e.g. the peers of a neighbouring region).
    pub fn query(&self, key: &[u8], n: usize, extra_seeds: Vec<PeerInfo>) -> ClosestPeersQuery {
        let target = Key::hash(key);
        let seeds = self
            .table
            .closest_peers(&target, n.max(self.config.query.k))
            .into_iter()
            .chain(extra_seeds);
        ClosestPeersQuery::new(target, seeds, self.config.query.clone().with_k(n))
    }

    /// A driver for `query` sending `request`, feeding the table if so configured.
    pub fn driver(
        &self,
        query: ClosestPeersQuery,
        request: Request,
        stats: SharedStats,
    ) -> QueryDriver<'_, N> {
        let driver =
            QueryDriver::new(&self.network, query, request, self.config.driver).with_stats(stats);
        if self.config.update_table {
            driver.with_table(&self.table)
        } else {
            driver
        }
    }

    /// The up to `n` peers closest to `key` that answered, found by a walk even when the
    /// table is complete, starting from the table's closest peers and `extra_seeds`.
    ///
    /// # Errors
    /// [`Error::NoPeers`] when there is no seed.
    pub async fn walk_closest_peers(
        &self,
        key: &[u8],
        n: usize,
        extra_seeds: Vec<PeerInfo>,
    ) -> Result<Outcome<Vec<PeerInfo>>, Error> {
        if n == 0 {
            return Ok(Outcome::new(Vec::new(), Default::default()));
        }
        let query = self.query(key, n, extra_seeds);
        if query.stats().peers_seen == 0 {
            return Err(Error::NoPeers);
        }
        let request = Request::FindNode { key: key.to_vec() };
        let outcome = self.driver(query, request, SharedStats::new()).run().await;
        Ok(outcome.map(|r| r.closest))
    }

    /// Crawls the network from the table's peers; see [`crawl`](crate::crawl). Feed the
    /// result to [`FullRoutingTable::replace_all`](dht_routing_table::FullRoutingTable::replace_all).
    pub async fn crawl(&self) -> Outcome<Vec<PeerInfo>> {
        let seeds = self.table.closest_peers(&self.local_key, self.table.len());
        crate::crawl(
            &self.network,
            seeds,
            Some(self.local.peer_id),
            &self.config.crawl,
            self.config.driver.request_timeout,
        )
        .await
    }

    fn seeded_query(&self, key: &[u8]) -> Result<ClosestPeersQuery, Error> {
        let query = self.query(key, self.config.query.k, Vec::new());
        if query.stats().peers_seen == 0 {
            Err(Error::NoPeers)
        } else {
            Ok(query)
        }
    }

    async fn walk_find_peer(&self, peer: PeerId) -> Result<Outcome<Option<PeerInfo>>, Error> {
        let key = peer.to_bytes();
        let query = self.seeded_query(&key)?;
        let mut driver = self.driver(query, Request::FindNode { key }, SharedStats::new());
        let mut found = None;
        while let Some((from, response)) = driver.next_response().await {
            if from.peer_id == peer {
                found = Some(from);
            } else if let Some(p) = response.closer_peers().iter().find(|p| p.peer_id == peer) {
                found = Some(p.clone());
            }
            if found.is_some() {
                break;
            }
        }
        Ok(driver.stop().map(|_| found))
    }

    async fn walk_get_value<V: Validator + ?Sized>(
        &self,
        key: &[u8],
        quorum: usize,
        validator: &V,
        now: UnixSecs,
    ) -> Result<Outcome<GetValue>, Error> {
        let started = tokio::time::Instant::now();
        let query = self.seeded_query(key)?;
        let stats = SharedStats::new();
        let request = Request::GetValue { key: key.to_vec() };
        let mut driver = self.driver(query, request, stats.clone());
        let mut collector = ValueCollector::new(key, quorum, validator, now);
        while let Some((peer, response)) = driver.next_response().await {
            if let Response::GetValue { record, .. } = response {
                collector.add(peer, record);
                if collector.quorum_reached() {
                    break;
                }
            }
        }
        let walk = driver.stop();
        let (mut value, outdated) = collector.finish();
        let mut stats = walk.stats;
        if let Some(best) = &value.record {
            let puts = SharedStats::new();
            value.corrected = correct_outdated(
                &self.network,
                best,
                outdated,
                &self.config,
                &puts,
                |p, e| self.observe(p, e),
            )
            .await;
            stats.merge(&puts.snapshot());
        }
        stats.elapsed = started.elapsed();
        Ok(Outcome::new(value, stats))
    }

    fn walk_find_providers(&self, key: &[u8], count: usize) -> ProviderStream<'_> {
        let stats = SharedStats::new();
        let Ok(query) = self.seeded_query(key) else {
            return ProviderStream::new(futures::stream::empty(), stats);
        };
        let request = Request::GetProviders { key: key.to_vec() };
        let driver = self.driver(query, request, stats.clone());
        let state = (driver, HashSet::new(), VecDeque::new());
        let providers =
            futures::stream::unfold(state, |(mut driver, mut seen, mut buffer)| async move {
                loop {
                    if let Some(provider) = buffer.pop_front() {
                        return Some((provider, (driver, seen, buffer)));
                    }
                    let (_, response) = driver.next_response().await?;
                    if let Response::GetProviders { providers, .. } = response {
                        for provider in providers {
                            if seen.insert(provider.peer_id) {
                                buffer.push_back(provider);
                            }
                        }
                    }
                }
            })
            .take(limit(count));
        ProviderStream::new(providers, stats)
    }
}

impl<T: RoutingTable, N: Network> Dht for DhtClient<T, N> {
    type Network = N;

    fn network(&self) -> &N {
        &self.network
    }

    async fn find_closest_peers(
        &self,
        key: &[u8],
        n: usize,
    ) -> Result<Outcome<Vec<PeerInfo>>, Error> {
        if self.table.is_complete() {
            let peers = self.table.closest_peers(&Key::hash(key), n);
            return Ok(Outcome::new(peers, Default::default()));
        }
        self.walk_closest_peers(key, n, Vec::new()).await
    }

    fn config(&self) -> ClientConfig {
        self.config.clone()
    }

    fn observe(&self, peer: &PeerInfo, event: PeerEvent) {
        if self.config.update_table {
            self.table.update(peer, event);
        }
    }

    async fn find_peer(&self, peer: PeerId) -> Result<Outcome<Option<PeerInfo>>, Error> {
        if self.table.is_complete() {
            return generic::find_peer(self, peer).await;
        }
        self.walk_find_peer(peer).await
    }

    async fn get_value<V: Validator + ?Sized>(
        &self,
        key: &[u8],
        quorum: usize,
        validator: &V,
        now: UnixSecs,
    ) -> Result<Outcome<GetValue>, Error> {
        if self.table.is_complete() {
            return generic::get_value(self, key, quorum, validator, now).await;
        }
        self.walk_get_value(key, quorum, validator, now).await
    }

    fn find_providers(&self, key: &[u8], count: usize) -> ProviderStream<'_> {
        if self.table.is_complete() {
            return generic::find_providers(self, key, count);
        }
        self.walk_find_providers(key, count)
    }
}
