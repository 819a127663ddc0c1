//! The [`Dht`] trait and the operations as free functions.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use dht_proto::{PeerId, PeerInfo, Record, Request, Response, UnixSecs, Validator};
use dht_routing_table::PeerEvent;
use futures::{Stream, StreamExt, stream::BoxStream};
use tokio::time::Instant;

use dht_proto::batch::ProvideBatch;

use crate::{
    ClientConfig, Error, Feature, Network, OpStats, Outcome, RpcError, SharedStats,
    network::check_response,
};

/// The result of [`get_value`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GetValue {
    /// The best valid record found (by [`Validator::select`]), `None` if no peer
    /// returned a valid one. Its `time_received` is as the peer sent it.
    pub record: Option<Record>,
    /// How many peers returned the best record's value.
    pub agreeing: usize,
    /// Whether `agreeing` reached the quorum asked for (the walk stops as soon as it does).
    pub quorum_reached: bool,
    /// Peers that returned an outdated or invalid record and accepted the best one
    /// (PUT_VALUE) afterwards.
    pub corrected: Vec<PeerId>,
}

/// Where a record or a provider announcement went: the result of [`put_value`] and
/// [`provide`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// Peers that accepted it (PUT_VALUE answered; ADD_PROVIDER written, as it has no answer;
    /// a provider batch answered `STORED`).
    pub succeeded: Vec<PeerId>,
    /// Peers the request failed for (or whose batch answer refused the record).
    pub failed: Vec<PeerId>,
    /// Of [`succeeded`](Self::succeeded), the peers that took the record in a batch of the
    /// batched provide protocol ([`Feature::ProvideBatch`]), so that it is known to be stored
    /// and durable there; the others were sent ADD_PROVIDER.
    pub batched: Vec<PeerId>,
}

/// The providers of a key as they arrive: the stream of [`find_providers`].
///
/// Each provider comes once. The stream ends after the count asked for or when the walk
/// is over; dropping it stops the walk. [`stats`](Self::stats) tells what it cost so far.
#[must_use = "streams do nothing unless polled"]
pub struct ProviderStream<'a> {
    inner: BoxStream<'a, PeerInfo>,
    stats: SharedStats,
    started: Instant,
    ended: Option<Duration>,
}

impl<'a> ProviderStream<'a> {
    /// A stream of providers whose cost is recorded in `stats`, for [`Dht`] implementations
    /// that override [`Dht::find_providers`].
    pub fn new(inner: impl Stream<Item = PeerInfo> + Send + 'a, stats: SharedStats) -> Self {
        ProviderStream {
            inner: inner.boxed(),
            stats,
            started: Instant::now(),
            ended: None,
        }
    }

    /// What the search cost so far (until the stream ended, for `elapsed`).
    pub fn stats(&self) -> OpStats {
        let mut stats = self.stats.snapshot();
        stats.elapsed = self.ended.unwrap_or_else(|| self.started.elapsed());
        stats
    }
}

impl Stream for ProviderStream<'_> {
    type Item = PeerInfo;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PeerInfo>> {
        let next = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = next
            && self.ended.is_none()
        {
            self.ended = Some(self.started.elapsed());
        }
        next
    }
}

impl std::fmt::Debug for ProviderStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderStream")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A Kademlia DHT as the operations see it: find the peers closest to a key, and send a
/// request to a peer.
///
/// The shape of the seed `modular-dht-package-design.md`: the required part is minimal, and
/// each operation is a free function ([`find_peer`], [`get_value`], …) calling a method of
/// the same name whose default is the generic algorithm of [`generic`], built on
/// [`find_closest_peers`](Self::find_closest_peers). An implementation with a better way
/// overrides the method, as [`DhtClient`](crate::DhtClient) does: it walks with GET_VALUE
/// and GET_PROVIDERS directly (saving the FIND_NODE walk), stops a find-peer walk once the
/// peer is seen, and answers closest-peer questions from a complete routing table without a
/// walk.
///
/// Keys are DHT keys (multihash bytes, `/pk/…` record keys, peer id bytes); their place in
/// the keyspace is `sha256(key)`. Implemented for `&T`, `Arc<T>` and `Box<T>` of any `Dht`,
/// forwarding every method (overrides included).
pub trait Dht: Send + Sync {
    /// The network requests go over.
    type Network: Network;

    /// The network requests go over.
    fn network(&self) -> &Self::Network;

    /// The up to `n` peers closest to `key` (by the XOR distance of `sha256(key)`) that
    /// answered, closest first: the result of a lookup, or of a complete routing table.
    fn find_closest_peers(
        &self,
        key: &[u8],
        n: usize,
    ) -> impl Future<Output = Result<Outcome<Vec<PeerInfo>>, Error>> + Send;

    /// Settings the generic operations use: k (replication), α (parallelism), the request
    /// timeout.
    fn config(&self) -> ClientConfig {
        ClientConfig::default()
    }

    /// Hears what happened to a peer the generic operations sent a request to (e.g. to
    /// update a routing table). Does nothing by default.
    fn observe(&self, peer: &PeerInfo, event: PeerEvent) {
        let _ = (peer, event);
    }

    /// See [`find_peer`].
    fn find_peer(
        &self,
        peer: PeerId,
    ) -> impl Future<Output = Result<Outcome<Option<PeerInfo>>, Error>> + Send {
        generic::find_peer(self, peer)
    }

    /// See [`find_feature_peers`].
    fn find_feature_peers(
        &self,
        key: &[u8],
        feature: Feature,
        n: usize,
    ) -> impl Future<Output = Result<Outcome<Vec<PeerInfo>>, Error>> + Send {
        generic::find_feature_peers(self, key, feature, n)
    }

    /// See [`get_value`].
    fn get_value<V: Validator + ?Sized>(
        &self,
        key: &[u8],
        quorum: usize,
        validator: &V,
        now: UnixSecs,
    ) -> impl Future<Output = Result<Outcome<GetValue>, Error>> + Send {
        generic::get_value(self, key, quorum, validator, now)
    }

    /// See [`put_value`].
    fn put_value(
        &self,
        record: Record,
    ) -> impl Future<Output = Result<Outcome<Delivery>, Error>> + Send {
        generic::put_value(self, record)
    }

    /// See [`find_providers`].
    fn find_providers(&self, key: &[u8], count: usize) -> ProviderStream<'_> {
        generic::find_providers(self, key, count)
    }

    /// See [`provide`].
    fn provide(
        &self,
        key: &[u8],
        provider: PeerInfo,
    ) -> impl Future<Output = Result<Outcome<Delivery>, Error>> + Send {
        generic::provide(self, key, provider)
    }
}

macro_rules! forward_dht {
    ($($ty:ty),*) => {$(
        impl<T: Dht + ?Sized> Dht for $ty {
            type Network = T::Network;

            fn network(&self) -> &T::Network {
                (**self).network()
            }

            fn find_closest_peers(
                &self,
                key: &[u8],
                n: usize,
            ) -> impl Future<Output = Result<Outcome<Vec<PeerInfo>>, Error>> + Send {
                (**self).find_closest_peers(key, n)
            }

            fn config(&self) -> ClientConfig {
                (**self).config()
            }

            fn observe(&self, peer: &PeerInfo, event: PeerEvent) {
                (**self).observe(peer, event)
            }

            fn find_peer(
                &self,
                peer: PeerId,
            ) -> impl Future<Output = Result<Outcome<Option<PeerInfo>>, Error>> + Send {
                (**self).find_peer(peer)
            }

            fn find_feature_peers(
                &self,
                key: &[u8],
                feature: Feature,
                n: usize,
            ) -> impl Future<Output = Result<Outcome<Vec<PeerInfo>>, Error>> + Send {
                (**self).find_feature_peers(key, feature, n)
            }

            fn get_value<V: Validator + ?Sized>(
                &self,
                key: &[u8],
                quorum: usize,
                validator: &V,
                now: UnixSecs,
            ) -> impl Future<Output = Result<Outcome<GetValue>, Error>> + Send {
                (**self).get_value(key, quorum, validator, now)
            }

            fn put_value(
                &self,
                record: Record,
            ) -> impl Future<Output = Result<Outcome<Delivery>, Error>> + Send {
                (**self).put_value(record)
            }

            fn find_providers(&self, key: &[u8], count: usize) -> ProviderStream<'_> {
                (**self).find_providers(key, count)
            }

            fn provide(
                &self,
                key: &[u8],
                provider: PeerInfo,
            ) -> impl Future<Output = Result<Outcome<Delivery>, Error>> + Send {
                (**self).provide(key, provider)
            }
        }
    )*};
}

forward_dht!(&T, std::sync::Arc<T>, Box<T>);

/// The up to `n` peers closest to `key` that answered, closest first.
///
/// # Errors
/// [`Error::NoPeers`] when there is no peer to start from.
pub async fn find_closest_peers<D: Dht + ?Sized>(
    dht: &D,
    key: &[u8],
    n: usize,
) -> Result<Outcome<Vec<PeerInfo>>, Error> {
    dht.find_closest_peers(key, n).await
}

/// The addresses of `peer`, or `None` if the search did not find it.
///
/// # Errors
/// [`Error::NoPeers`] when there is no peer to start from.
pub async fn find_peer<D: Dht + ?Sized>(
    dht: &D,
    peer: PeerId,
) -> Result<Outcome<Option<PeerInfo>>, Error> {
    dht.find_peer(peer).await
}

/// The up to `n` peers closest to `key` that are known to support `feature`
/// ([`Network::supports`]), closest first: the seed's `FindFeaturePeers(t, feature, n)`.
///
/// The generic algorithm ([`generic::find_feature_peers`]) widens
/// [`Dht::find_closest_peers`] until `n` of the peers found have the feature, or the walk
/// reached [`MAX_FEATURE_WIDTH`] peers, or the network has no more. Fewer than `n` peers (none
/// in a network without the feature) is not an error.
///
/// # Errors
/// [`Error::NoPeers`] when there is no peer to start from.
pub async fn find_feature_peers<D: Dht + ?Sized>(
    dht: &D,
    key: &[u8],
    feature: Feature,
    n: usize,
) -> Result<Outcome<Vec<PeerInfo>>, Error> {
    dht.find_feature_peers(key, feature, n).await
}

/// The most peers the generic [`find_feature_peers`] asks [`Dht::find_closest_peers`] for
/// while it widens its walk: 8 × k (160 in the Amino DHT).
pub const MAX_FEATURE_WIDTH: usize = 8 * dht_proto::K_VALUE;

/// The peers of `peers` that `network` says support `feature`, in their order.
pub(crate) fn with_feature<N: Network + ?Sized>(
    network: &N,
    peers: &[PeerInfo],
    feature: Feature,
) -> Vec<PeerInfo> {
    peers
        .iter()
        .filter(|p| network.supports(&p.peer_id, feature))
        .cloned()
        .collect()
}

/// The best value record stored under `key`.
///
/// Asks the peers closest to `key` for it until `quorum` of them (at least 1) returned
/// valid records with the same value as the best one, then puts the best record to the
/// peers that returned an outdated or invalid one. Records are judged by `validator` at wall
/// time `now` (this crate reads no wall clock).
///
/// # Errors
/// [`Error::NoPeers`] when there is no peer to start from.
pub async fn get_value<D: Dht + ?Sized, V: Validator + ?Sized>(
    dht: &D,
    key: &[u8],
    quorum: usize,
    validator: &V,
    now: UnixSecs,
) -> Result<Outcome<GetValue>, Error> {
    dht.get_value(key, quorum, validator, now).await
}

/// Stores `record` on the k peers closest to its key (PUT_VALUE).
///
/// # Errors
/// [`Error::NoPeers`] when there is no peer to start from.
pub async fn put_value<D: Dht + ?Sized>(
    dht: &D,
    record: Record,
) -> Result<Outcome<Delivery>, Error> {
    dht.put_value(record).await
}

/// The providers of `key`, streamed as they arrive, at most `count` (0: no limit).
pub fn find_providers<'a, D: Dht + ?Sized>(
    dht: &'a D,
    key: &[u8],
    count: usize,
) -> ProviderStream<'a> {
    dht.find_providers(key, count)
}

/// Announces `provider` as a provider of `key` to the k peers closest to it: a batch of the
/// one key ([`Network::provide_batch`]) to those of them that support
/// [`Feature::ProvideBatch`], ADD_PROVIDER to the others (and to a peer that refuses the
/// batch protocol after all). The provider should be the local node with its addresses:
/// servers keep only entries whose peer id is the sender's.
///
/// # Errors
/// [`Error::NoPeers`] when there is no peer to start from.
pub async fn provide<D: Dht + ?Sized>(
    dht: &D,
    key: &[u8],
    provider: PeerInfo,
) -> Result<Outcome<Delivery>, Error> {
    dht.provide(key, provider).await
}

/// Sends `request` to each of `peers`, `parallelism` at a time, each under `timeout`;
/// yields each peer with its result as it completes. Requests that expect a response get
/// one of their type or an error.
pub(crate) fn send_each<'a, N: Network + ?Sized>(
    network: &'a N,
    peers: Vec<PeerInfo>,
    request: Request,
    parallelism: usize,
    timeout: Duration,
    stats: SharedStats,
) -> impl Stream<Item = (PeerInfo, Result<Option<Response>, RpcError>)> + Send + 'a {
    futures::stream::iter(peers)
        .map(move |peer| {
            let request = request.clone();
            let stats = stats.clone();
            async move {
                let ty = request.message_type();
                stats.update(|s| s.record_request(peer.peer_id, ty));
                let result = match tokio::time::timeout(timeout, network.send(&peer, request)).await
                {
                    Ok(r) if ty.expects_response() => check_response(ty, r).map(Some),
                    Ok(r) => r,
                    Err(_) => Err(RpcError::Timeout),
                };
                stats.update(|s| s.record_result(&result));
                (peer, result)
            }
        })
        .buffer_unordered(parallelism.max(1))
}

/// Collects the records of a get-value search.
pub(crate) struct ValueCollector<'v, V: ?Sized> {
    key: Vec<u8>,
    validator: &'v V,
    /// The wall time records are judged at (expiry).
    now: UnixSecs,
    quorum: usize,
    peers: Vec<PeerInfo>,
    records: Vec<Record>,
    invalid: Vec<PeerInfo>,
    best: Option<usize>,
}

impl<'v, V: Validator + ?Sized> ValueCollector<'v, V> {
    pub(crate) fn new(key: &[u8], quorum: usize, validator: &'v V, now: UnixSecs) -> Self {
        ValueCollector {
            key: key.to_vec(),
            validator,
            now,
            quorum: quorum.max(1),
            peers: Vec::new(),
            records: Vec::new(),
            invalid: Vec::new(),
            best: None,
        }
    }

    /// `peer` answered GET_VALUE with `record`.
    pub(crate) fn add(&mut self, peer: PeerInfo, record: Option<Record>) {
        let Some(record) = record else { return };
        if record.key != self.key
            || self
                .validator
                .validate(&record.key, &record.value, self.now)
                .is_err()
        {
            self.invalid.push(peer);
            return;
        }
        self.peers.push(peer);
        self.records.push(record);
        let values: Vec<&[u8]> = self.records.iter().map(|r| r.value.as_slice()).collect();
        let best = self.validator.select(&self.key, &values).unwrap_or(0);
        self.best = Some(best.min(self.records.len() - 1));
    }

    fn best(&self) -> Option<&Record> {
        self.best.and_then(|i| self.records.get(i))
    }

    fn agreeing(&self) -> usize {
        self.best().map_or(0, |best| {
            self.records
                .iter()
                .filter(|r| r.value == best.value)
                .count()
        })
    }

    pub(crate) fn quorum_reached(&self) -> bool {
        self.agreeing() >= self.quorum
    }

    /// The result without corrections, and the peers to correct.
    pub(crate) fn finish(self) -> (GetValue, Vec<PeerInfo>) {
        let agreeing = self.agreeing();
        let quorum_reached = agreeing >= self.quorum;
        let Some(best) = self.best().cloned() else {
            return (GetValue::default(), Vec::new());
        };
        let mut outdated: Vec<PeerInfo> = self
            .peers
            .into_iter()
            .zip(&self.records)
            .filter(|(_, r)| r.value != best.value)
            .map(|(p, _)| p)
            .collect();
        outdated.extend(self.invalid);
        let value = GetValue {
            record: Some(best),
            agreeing,
            quorum_reached,
            corrected: Vec::new(),
        };
        (value, outdated)
    }
}

/// Puts `best` (without its receive time) to `peers`; returns those that accepted it.
pub(crate) async fn correct_outdated<N: Network + ?Sized>(
    network: &N,
    best: &Record,
    peers: Vec<PeerInfo>,
    config: &ClientConfig,
    stats: &SharedStats,
    observe: impl Fn(&PeerInfo, PeerEvent),
) -> Vec<PeerId> {
    if peers.is_empty() {
        return Vec::new();
    }
    let record = Record::new(best.key.clone(), best.value.clone());
    let request = Request::PutValue { record };
    send_to_each(network, peers, request, config, stats, observe)
        .await
        .succeeded
}

/// Sends `request` to each of `peers` (α at a time), tells `observe` how each answered, and
/// returns who took it and who did not, each in peer id order.
async fn send_to_each<N: Network + ?Sized>(
    network: &N,
    peers: Vec<PeerInfo>,
    request: Request,
    config: &ClientConfig,
    stats: &SharedStats,
    observe: impl Fn(&PeerInfo, PeerEvent),
) -> Delivery {
    let mut results: Vec<_> = send_each(
        network,
        peers,
        request,
        config.query.alpha,
        config.driver.request_timeout,
        stats.clone(),
    )
    .collect()
    .await;
    results.sort_by_key(|a| a.0.peer_id);
    let mut delivery = Delivery::default();
    for (peer, result) in results {
        observe(&peer, event_of(&result));
        match result {
            Ok(_) => delivery.succeeded.push(peer.peer_id),
            Err(_) => delivery.failed.push(peer.peer_id),
        }
    }
    delivery
}

/// `total` (a lookup's stats) with the one round of requests sent straight to its peers
/// after it: those of `direct`, since `started`.
fn with_direct_round(mut total: OpStats, direct: &SharedStats, started: Instant) -> OpStats {
    let mut round = direct.snapshot();
    round.rounds = 1;
    round.elapsed = started.elapsed();
    total.merge(&round);
    total
}

pub(crate) fn event_of<T>(result: &Result<T, RpcError>) -> PeerEvent {
    match result {
        Ok(_) => PeerEvent::Seen(dht_routing_table::Direction::Outbound),
        Err(error) => failure_event(error),
    }
}

/// What a failed request says of the peer: [`RpcError::Unreachable`] (no connection could be
/// made) makes it [`PeerEvent::Unreachable`], dropped at once; anything else (a timeout or an
/// error on a live connection) [`PeerEvent::Failed`], which only counts.
pub(crate) fn failure_event(error: &RpcError) -> PeerEvent {
    match error {
        RpcError::Unreachable(_) => PeerEvent::Unreachable,
        _ => PeerEvent::Failed,
    }
}

/// The operations built on [`Dht::find_closest_peers`] alone: find the k closest peers
/// first, then send the operation's requests to them directly.
///
/// These are the defaults of [`Dht`]'s methods, and the right algorithms when closest peers
/// come cheap (a complete routing table). Implementations that override a method may call
/// these for the cases they do not optimise.
pub mod generic {
    use super::*;

    fn k(config: &ClientConfig) -> usize {
        config.query.k.max(1)
    }

    /// [`find_peer`](super::find_peer): the closest peers to the peer's id, and the peer if it
    /// is one of them.
    ///
    /// # Errors
    /// Those of [`Dht::find_closest_peers`].
    pub async fn find_peer<D: Dht + ?Sized>(
        dht: &D,
        peer: PeerId,
    ) -> Result<Outcome<Option<PeerInfo>>, Error> {
        let closest = dht
            .find_closest_peers(&peer.to_bytes(), k(&dht.config()))
            .await?;
        Ok(closest.map(|peers| peers.into_iter().find(|p| p.peer_id == peer)))
    }

    /// [`find_feature_peers`](super::find_feature_peers): the closest peers, `max(n, k)` of
    /// them and twice as many each time until `n` of them have `feature`, at most
    /// [`MAX_FEATURE_WIDTH`](super::MAX_FEATURE_WIDTH) (or `n` if larger); stops early when
    /// the network returned fewer peers than asked for.
    ///
    /// # Errors
    /// Those of [`Dht::find_closest_peers`].
    pub async fn find_feature_peers<D: Dht + ?Sized>(
        dht: &D,
        key: &[u8],
        feature: Feature,
        n: usize,
    ) -> Result<Outcome<Vec<PeerInfo>>, Error> {
        let bound = super::MAX_FEATURE_WIDTH.max(n);
        let mut width = n.max(k(&dht.config())).min(bound);
        let mut stats = OpStats::default();
        loop {
            let closest = dht.find_closest_peers(key, width).await?;
            stats.merge(&closest.stats);
            let mut found = with_feature(dht.network(), &closest.value, feature);
            let exhausted = closest.value.len() < width;
            if found.len() >= n || exhausted || width >= bound {
                found.truncate(n);
                return Ok(Outcome::new(found, stats));
            }
            width = width.saturating_mul(2).min(bound);
        }
    }

    /// [`get_value`](super::get_value): GET_VALUE to the k closest peers, α at a time, until
    /// the quorum agrees; then the correction of outdated peers.
    ///
    /// # Errors
    /// Those of [`Dht::find_closest_peers`].
    pub async fn get_value<D: Dht + ?Sized, V: Validator + ?Sized>(
        dht: &D,
        key: &[u8],
        quorum: usize,
        validator: &V,
        now: UnixSecs,
    ) -> Result<Outcome<GetValue>, Error> {
        let config = dht.config();
        let closest = dht.find_closest_peers(key, k(&config)).await?;
        let started = Instant::now();
        let stats = SharedStats::new();
        let mut collector = ValueCollector::new(key, quorum, validator, now);
        {
            let mut answers = std::pin::pin!(send_each(
                dht.network(),
                closest.value,
                Request::GetValue { key: key.to_vec() },
                config.query.alpha,
                config.driver.request_timeout,
                stats.clone(),
            ));
            while let Some((peer, result)) = answers.next().await {
                dht.observe(&peer, event_of(&result));
                if let Ok(Some(Response::GetValue { record, .. })) = result {
                    collector.add(peer, record);
                    if collector.quorum_reached() {
                        break;
                    }
                }
            }
        }
        let (mut value, outdated) = collector.finish();
        if let Some(best) = &value.record {
            value.corrected =
                correct_outdated(dht.network(), best, outdated, &config, &stats, |p, e| {
                    dht.observe(p, e)
                })
                .await;
        }
        let total = with_direct_round(closest.stats, &stats, started);
        Ok(Outcome::new(value, total))
    }

    /// Sends `request` to the k closest peers of `key`.
    async fn deliver<D: Dht + ?Sized>(
        dht: &D,
        key: &[u8],
        request: Request,
    ) -> Result<Outcome<Delivery>, Error> {
        let config = dht.config();
        let closest = dht.find_closest_peers(key, k(&config)).await?;
        let started = Instant::now();
        let stats = SharedStats::new();
        let observe = |peer: &PeerInfo, event| dht.observe(peer, event);
        let delivery = send_to_each(
            dht.network(),
            closest.value,
            request,
            &config,
            &stats,
            observe,
        )
        .await;
        let total = with_direct_round(closest.stats, &stats, started);
        Ok(Outcome::new(delivery, total))
    }

    /// [`put_value`](super::put_value): the k closest peers, then PUT_VALUE to each.
    ///
    /// # Errors
    /// Those of [`Dht::find_closest_peers`].
    pub async fn put_value<D: Dht + ?Sized>(
        dht: &D,
        record: Record,
    ) -> Result<Outcome<Delivery>, Error> {
        let key = record.key.clone();
        deliver(dht, &key, Request::PutValue { record }).await
    }

    /// [`provide`](super::provide): the k closest peers; a batch of the one key to those
    /// with [`Feature::ProvideBatch`] (the closest peers with the feature, as
    /// [`find_feature_peers`] picks them, here among the k closest: a batch goes only to a
    /// server among the key's closest), ADD_PROVIDER to the rest of the k closest, and to a
    /// peer that answers [`RpcError::Unsupported`].
    ///
    /// # Errors
    /// Those of [`Dht::find_closest_peers`].
    pub async fn provide<D: Dht + ?Sized>(
        dht: &D,
        key: &[u8],
        provider: PeerInfo,
    ) -> Result<Outcome<Delivery>, Error> {
        let config = dht.config();
        let closest = dht.find_closest_peers(key, k(&config)).await?;
        let started = Instant::now();
        let stats = SharedStats::new();
        let network = dht.network();
        let capable = with_feature(network, &closest.value, Feature::ProvideBatch);
        let timeout = config.driver.request_timeout;
        let batch = ProvideBatch {
            provider: provider.clone(),
            keys: vec![key.to_vec()],
        };
        let mut results: Vec<(PeerInfo, Result<bool, RpcError>)> = futures::stream::iter(capable)
            .map(|peer| {
                let batch = batch.clone();
                let stats = stats.clone();
                async move {
                    stats.update(|s| s.record_batch(peer.peer_id));
                    let answer = tokio::time::timeout(timeout, network.provide_batch(&peer, batch))
                        .await
                        .unwrap_or(Err(RpcError::Timeout));
                    let result = match answer {
                        Ok(answer) if answer.error.is_none() && answer.answers(1) => {
                            Ok(answer.statuses[0].is_stored())
                        }
                        Ok(answer) => Err(match answer.error {
                            Some(e) => RpcError::BatchRefused(e),
                            None => RpcError::BadBatchAnswer,
                        }),
                        Err(e) => Err(e),
                    };
                    if !matches!(result, Err(RpcError::Unsupported(_))) {
                        stats.update(|s| s.record_result(&result));
                    }
                    (peer, result)
                }
            })
            .buffer_unordered(config.query.alpha.max(1))
            .collect()
            .await;
        let batched: HashSet<PeerId> = results
            .iter()
            .filter(|(_, r)| !matches!(r, Err(RpcError::Unsupported(_))))
            .map(|(p, _)| p.peer_id)
            .collect();
        let plain: Vec<PeerInfo> = closest
            .value
            .into_iter()
            .filter(|p| !batched.contains(&p.peer_id))
            .collect();
        let request = Request::AddProvider {
            key: key.to_vec(),
            providers: vec![provider],
        };
        results.retain(|(p, _)| batched.contains(&p.peer_id));
        let sent: Vec<_> = send_each(
            network,
            plain,
            request,
            config.query.alpha,
            timeout,
            stats.clone(),
        )
        .collect()
        .await;
        let mut all: Vec<(PeerInfo, Result<bool, RpcError>, bool)> = results
            .into_iter()
            .map(|(p, r)| (p, r, true))
            .chain(sent.into_iter().map(|(p, r)| (p, r.map(|_| true), false)))
            .collect();
        all.sort_by_key(|a| a.0.peer_id);
        let mut delivery = Delivery::default();
        for (peer, result, by_batch) in all {
            dht.observe(&peer, event_of(&result));
            match result {
                Ok(true) => {
                    delivery.succeeded.push(peer.peer_id);
                    if by_batch {
                        delivery.batched.push(peer.peer_id);
                    }
                }
                Ok(false) | Err(_) => delivery.failed.push(peer.peer_id),
            }
        }
        let total = with_direct_round(closest.stats, &stats, started);
        Ok(Outcome::new(delivery, total))
    }

    /// [`find_providers`](super::find_providers): the k closest peers, then GET_PROVIDERS to
    /// each, α at a time, streaming new providers as answers come.
    pub fn find_providers<'a, D: Dht + ?Sized>(
        dht: &'a D,
        key: &[u8],
        count: usize,
    ) -> ProviderStream<'a> {
        let stats = SharedStats::new();
        let key = key.to_vec();
        let shared = stats.clone();
        let answers = futures::stream::once(async move {
            let config = dht.config();
            let peers = match dht.find_closest_peers(&key, k(&config)).await {
                Ok(closest) => {
                    shared.update(|s| s.merge(&closest.stats));
                    closest.value
                }
                Err(_) => Vec::new(),
            };
            shared.update(|s| s.rounds = s.rounds.saturating_add(1));
            send_each(
                dht.network(),
                peers,
                Request::GetProviders { key },
                config.query.alpha,
                config.driver.request_timeout,
                shared,
            )
        })
        .flatten();
        let mut seen = HashSet::new();
        let providers = answers
            .flat_map(move |(peer, result)| {
                dht.observe(&peer, event_of(&result));
                let providers = match result {
                    Ok(Some(Response::GetProviders { providers, .. })) => providers,
                    _ => Vec::new(),
                };
                futures::stream::iter(providers)
            })
            .filter(move |p| std::future::ready(seen.insert(p.peer_id)))
            .take(limit(count));
        ProviderStream::new(providers, stats)
    }
}

/// `count`, with 0 meaning no limit.
pub(crate) fn limit(count: usize) -> usize {
    if count == 0 { usize::MAX } else { count }
}
