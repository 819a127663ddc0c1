//! The async shell: [`QueryDriver`] runs a [`ClosestPeersQuery`] over a [`Network`].

use std::time::Duration;

use dht_proto::{PeerInfo, Request, Response};
use dht_routing_table::{Direction, PeerEvent, RoutingTable};
use futures::{StreamExt, future::BoxFuture, stream::FuturesUnordered};
use tokio::time::Instant;

use crate::{
    ClosestPeersQuery, Network, Outcome, QueryAction, QueryResult, RpcError, SharedStats,
    key_in_prefix, network::check_response,
};

/// Timeouts of the async driver; `Default` gives 10 s per request and 60 s per lookup.
///
/// ```
/// use std::time::Duration;
/// use dht_routing::DriverConfig;
/// let config = DriverConfig::default().with_request_timeout(Duration::from_secs(2));
/// assert_eq!(config.query_timeout, Some(Duration::from_secs(60)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverConfig {
    /// A request unanswered after this long fails with [`RpcError::Timeout`] (default 10 s,
    /// go-libp2p-kad-dht's send timeout). Applied with `tokio::time::timeout`.
    pub request_timeout: Duration,
    /// A lookup still running after this long is stopped and returns what it has (default
    /// 60 s, libp2p-kad's query timeout). `None` for no limit.
    pub query_timeout: Option<Duration>,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            request_timeout: Duration::from_secs(10),
            query_timeout: Some(Duration::from_secs(60)),
        }
    }
}

impl DriverConfig {
    /// Sets [`DriverConfig::request_timeout`].
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`DriverConfig::query_timeout`].
    #[must_use]
    pub fn with_query_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.query_timeout = timeout;
        self
    }
}

/// A request in flight: the peer, whether it is a boundary probe, the result.
type Pending<'a> = BoxFuture<'a, (PeerInfo, bool, Result<Response, RpcError>)>;

/// Runs a [`ClosestPeersQuery`] over a [`Network`]: sends the same request (FIND_NODE,
/// GET_VALUE or GET_PROVIDERS for one key) to each peer the query asks for, up to α at once,
/// each under [`DriverConfig::request_timeout`], and feeds answers and failures back.
/// Boundary probes ([`QueryAction::Probe`]) go out as FIND_NODE for a key from
/// [`key_in_prefix`]; their answers feed the query but are not handed to the caller.
///
/// [`next_response`](Self::next_response) hands each successful response to the caller, who
/// may look inside (records, providers) and stop early by dropping the driver or calling
/// [`ClosestPeersQuery::stop`] through [`query_mut`](Self::query_mut).
/// [`run`](Self::run) just runs the lookup to its end.
///
/// Time comes from `tokio::time`, so on a paused clock the whole lookup runs in virtual time.
/// With [`with_table`](Self::with_table), peers that answer are reported to the routing
/// table as [`PeerEvent::Seen`]`(`[`Direction::Outbound`]`)`, peers that cannot be reached
/// ([`RpcError::Unreachable`](crate::RpcError::Unreachable)) as [`PeerEvent::Unreachable`],
/// and peers that fail otherwise (a timeout, an error on a live connection) as
/// [`PeerEvent::Failed`].
pub struct QueryDriver<'a, N: ?Sized> {
    network: &'a N,
    query: ClosestPeersQuery,
    request: Request,
    config: DriverConfig,
    table: Option<&'a dyn RoutingTable>,
    stats: SharedStats,
    pending: FuturesUnordered<Pending<'a>>,
    started: Instant,
    deadline: Option<Instant>,
}

impl<'a, N: Network + ?Sized> QueryDriver<'a, N> {
    /// A driver sending `request` to the peers `query` asks for. The lookup's clock starts
    /// now.
    pub fn new(
        network: &'a N,
        query: ClosestPeersQuery,
        request: Request,
        config: DriverConfig,
    ) -> Self {
        let started = Instant::now();
        QueryDriver {
            network,
            query,
            request,
            config,
            table: None,
            stats: SharedStats::new(),
            pending: FuturesUnordered::new(),
            started,
            deadline: config.query_timeout.and_then(|t| started.checked_add(t)),
        }
    }

    /// Reports peers that answer or fail to `table`.
    #[must_use]
    pub fn with_table(mut self, table: &'a dyn RoutingTable) -> Self {
        self.table = Some(table);
        self
    }

    /// Records the requests into `stats` (shared with the caller) instead of fresh counters.
    #[must_use]
    pub fn with_stats(mut self, stats: SharedStats) -> Self {
        self.stats = stats;
        self
    }

    /// The query being driven.
    pub fn query(&self) -> &ClosestPeersQuery {
        &self.query
    }

    /// The query being driven, e.g. to [`finish`](ClosestPeersQuery::stop) it.
    pub fn query_mut(&mut self) -> &mut ClosestPeersQuery {
        &mut self.query
    }

    /// The counters, shared.
    pub fn stats(&self) -> &SharedStats {
        &self.stats
    }

    /// Drives the lookup until the next successful response, which it returns (already fed
    /// to the query), or until the lookup is over (`None`).
    pub async fn next_response(&mut self) -> Option<(PeerInfo, Response)> {
        loop {
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                tracing::debug!(target = %self.query.target(), "lookup stopped by its timeout");
                self.query.stop();
            }
            let until = loop {
                match self.query.poll(now.into_std()) {
                    QueryAction::Ask(peer) => {
                        let request = self.request.clone();
                        self.start(peer, request, false);
                    }
                    QueryAction::Probe { peer, region } => {
                        let key = key_in_prefix(&region, self.query.target());
                        self.start(peer, Request::FindNode { key }, true);
                    }
                    QueryAction::Wait { until } => break until.map(Instant::from_std),
                    QueryAction::Finished => return None,
                }
            };
            let wake = match (until, self.deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let next = match wake {
                Some(at) => match tokio::time::timeout_at(at, self.pending.next()).await {
                    Ok(next) => next,
                    Err(_) => continue, // A request stalled, or the lookup timed out.
                },
                None => self.pending.next().await,
            };
            let Some((peer, probe, result)) = next else {
                // The query waits for requests this driver does not have: cannot happen,
                // but never spin.
                self.query.stop();
                return None;
            };
            let now = Instant::now().into_std();
            self.stats.update(|s| s.record_result(&result));
            match result {
                Ok(response) => {
                    self.query
                        .on_response(&peer.peer_id, response.closer_peers(), now);
                    if let Some(table) = self.table {
                        table.update(&peer, PeerEvent::Seen(Direction::Outbound));
                    }
                    if !probe {
                        return Some((peer, response));
                    }
                }
                Err(error) => {
                    tracing::trace!(peer = %peer.peer_id, %error, "request failed");
                    self.query.on_failure(&peer.peer_id, now);
                    if let Some(table) = self.table {
                        table.update(&peer, crate::dht::failure_event(&error));
                    }
                }
            }
        }
    }

    fn start(&mut self, peer: PeerInfo, request: Request, probe: bool) {
        let ty = request.message_type();
        let rounds = self.query.stats().rounds;
        self.stats.update(|s| {
            s.record_request(peer.peer_id, ty);
            s.rounds = s.rounds.max(rounds);
        });
        let network = self.network;
        let timeout = self.config.request_timeout;
        self.pending.push(Box::pin(async move {
            let result = match tokio::time::timeout(timeout, network.send(&peer, request)).await {
                Ok(result) => check_response(ty, result),
                Err(_) => Err(RpcError::Timeout),
            };
            (peer, probe, result)
        }));
    }

    /// Drives the lookup to its end and returns its answer.
    pub async fn run(mut self) -> Outcome<QueryResult> {
        while self.next_response().await.is_some() {}
        self.stop()
    }

    /// Stops the lookup (requests still in flight are dropped) and returns its answer so far.
    pub fn stop(mut self) -> Outcome<QueryResult> {
        self.query.stop();
        let elapsed = self.started.elapsed();
        let result = self.query.into_result();
        let rounds = result.stats.rounds;
        let mut stats = self.stats.snapshot();
        stats.rounds = stats.rounds.max(rounds);
        stats.elapsed = elapsed;
        Outcome::new(result, stats)
    }
}

/// Runs `query` to its end over `network`, sending `request` to each peer it asks.
///
/// ```
/// # use std::future::Future;
/// # use dht_proto::{Key, PeerId, PeerInfo, Request, Response};
/// # use dht_routing::{ClosestPeersQuery, DriverConfig, Network, QueryConfig, RpcError, run_query};
/// # struct Lonely;
/// # impl Network for Lonely {
/// #     fn send(&self, _: &PeerInfo, _: Request)
/// #         -> impl Future<Output = Result<Option<Response>, RpcError>> + Send {
/// #         std::future::ready(Ok(Some(Response::FindNode { closer_peers: vec![] })))
/// #     }
/// # }
/// # tokio_test(async {
/// let key = b"some key".to_vec();
/// let seeds = vec![PeerInfo::new(PeerId::random(), vec![])];
/// let query = ClosestPeersQuery::new(Key::hash(&key), seeds, QueryConfig::default());
/// let outcome = run_query(&Lonely, query, Request::FindNode { key }, DriverConfig::default()).await;
/// assert_eq!(outcome.value.closest.len(), 1);
/// assert_eq!(outcome.stats.total_requests(), 1);
/// # });
/// # fn tokio_test(f: impl Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
/// # }
/// ```
pub async fn run_query<N: Network + ?Sized>(
    network: &N,
    query: ClosestPeersQuery,
    request: Request,
    config: DriverConfig,
) -> Outcome<QueryResult> {
    QueryDriver::new(network, query, request, config)
        .run()
        .await
}
