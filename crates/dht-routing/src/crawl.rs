//! A crawl of the whole network, for [`FullRoutingTable`](dht_routing_table::FullRoutingTable).

use std::{
    collections::{HashSet, VecDeque},
    time::Duration,
};

use dht_proto::{K_VALUE, PeerId, PeerInfo, Prefix, Request, Response};
use futures::{StreamExt, stream::FuturesUnordered};
use tokio::time::Instant;

use crate::{
    MAX_TARGET_PREFIX_BITS, Network, Outcome, RpcError, SharedStats, key_in_prefix,
    network::check_response,
};

/// Settings of [`crawl`].
///
/// ```
/// use dht_routing::CrawlConfig;
/// let config = CrawlConfig::default().with_parallelism(16);
/// assert_eq!(config.max_cpl, 15);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CrawlConfig {
    /// Peers crawled at once (default 64; go-libp2p-kad-dht's crawler uses 200). Each peer's
    /// probes are sequential.
    pub parallelism: usize,
    /// The deepest bucket probed in each peer (default 15, as go-libp2p-kad-dht's crawler;
    /// at most 15, since targets are chosen on 16 bits).
    pub max_cpl: usize,
    /// The number of peers a server returns (default [`K_VALUE`]): an answer shorter than
    /// this holds the server's whole table beyond the probed bucket.
    pub bucket_size: usize,
    /// Stop discovering new peers after this many (default 1,000,000): a bound against a
    /// network that invents peers.
    pub max_peers: usize,
}

impl Default for CrawlConfig {
    fn default() -> Self {
        CrawlConfig {
            parallelism: 64,
            max_cpl: 15,
            bucket_size: K_VALUE,
            max_peers: 1_000_000,
        }
    }
}

impl CrawlConfig {
    /// Sets [`CrawlConfig::parallelism`].
    #[must_use]
    pub fn with_parallelism(mut self, n: usize) -> Self {
        self.parallelism = n;
        self
    }

    /// Sets [`CrawlConfig::max_cpl`].
    #[must_use]
    pub fn with_max_cpl(mut self, cpl: usize) -> Self {
        self.max_cpl = cpl;
        self
    }

    /// Sets [`CrawlConfig::bucket_size`].
    #[must_use]
    pub fn with_bucket_size(mut self, n: usize) -> Self {
        self.bucket_size = n;
        self
    }

    /// Sets [`CrawlConfig::max_peers`].
    #[must_use]
    pub fn with_max_peers(mut self, n: usize) -> Self {
        self.max_peers = n;
        self
    }
}

struct PeerCrawl {
    peer: PeerInfo,
    depth: u32,
    answered: bool,
    found: Vec<PeerInfo>,
}

/// Probes the buckets of one peer, shallowest first, with FIND_NODE requests for targets
/// sharing exactly `cpl` bits with the peer's key.
///
/// The answer for bucket `cpl` lists the peer's bucket `cpl`, then its deeper buckets, then
/// its shallower ones, as that is their order of distance to the target. So once an answer
/// is short, or holds a peer from a shallower bucket, the peer has nothing deeper to tell.
async fn crawl_peer<N: Network + ?Sized>(
    network: &N,
    peer: PeerInfo,
    depth: u32,
    config: CrawlConfig,
    timeout: Duration,
    stats: SharedStats,
) -> PeerCrawl {
    let key = peer.key();
    let mut out = PeerCrawl {
        peer,
        depth,
        answered: false,
        found: Vec::new(),
    };
    let max_cpl = config.max_cpl.min(MAX_TARGET_PREFIX_BITS - 1);
    for cpl in 0..=max_cpl {
        let region = Prefix::new(&key.with_bit(cpl, !key.bit(cpl)), cpl + 1);
        let request = Request::FindNode {
            key: key_in_prefix(&region, &key),
        };
        stats.update(|s| s.record_request(out.peer.peer_id, request.message_type()));
        let result = match tokio::time::timeout(timeout, network.send(&out.peer, request)).await {
            Ok(r) => check_response(dht_proto::MessageType::FindNode, r),
            Err(_) => Err(RpcError::Timeout),
        };
        stats.update(|s| s.record_result(&result));
        let closer = match result {
            Ok(Response::FindNode { closer_peers }) => closer_peers,
            Ok(_) | Err(_) => break,
        };
        out.answered = true;
        let last = closer.len() < config.bucket_size.max(1)
            || closer.iter().any(|p| p.key().common_prefix_len(&key) < cpl);
        out.found.extend(closer);
        if last {
            break;
        }
    }
    out
}

/// Finds every DHT server reachable from `seeds`: the bulk fill of a
/// [`FullRoutingTable`](dht_routing_table::FullRoutingTable)
/// ([`replace_all`](dht_routing_table::FullRoutingTable::replace_all)).
///
/// Each peer heard of is crawled once: FIND_NODE probes of its buckets, shallowest first,
/// until its answers show it knows nothing deeper (see [`CrawlConfig`]);
/// [`parallelism`](CrawlConfig::parallelism) peers at a time, each request under
/// `request_timeout`. Returns the peers that answered, sorted by peer id; `local` is never
/// contacted. The cost is about `servers × log2(servers / k)` requests.
pub async fn crawl<N: Network + ?Sized>(
    network: &N,
    seeds: impl IntoIterator<Item = PeerInfo>,
    local: Option<PeerId>,
    config: &CrawlConfig,
    request_timeout: Duration,
) -> Outcome<Vec<PeerInfo>> {
    let started = Instant::now();
    let stats = SharedStats::new();
    let mut seen: HashSet<PeerId> = local.into_iter().collect();
    let mut queue: VecDeque<(PeerInfo, u32)> = VecDeque::new();
    let mut discovered = 0usize;
    let mut enqueue = |peer: PeerInfo, depth: u32, queue: &mut VecDeque<(PeerInfo, u32)>| {
        if discovered < config.max_peers && seen.insert(peer.peer_id) {
            discovered += 1;
            queue.push_back((peer, depth));
        }
    };
    for seed in seeds {
        enqueue(seed, 1, &mut queue);
    }
    let mut servers = Vec::new();
    let mut pending = FuturesUnordered::new();
    let mut rounds = 0;
    loop {
        while pending.len() < config.parallelism.max(1) {
            let Some((peer, depth)) = queue.pop_front() else {
                break;
            };
            pending.push(crawl_peer(
                network,
                peer,
                depth,
                *config,
                request_timeout,
                stats.clone(),
            ));
        }
        let Some(done) = pending.next().await else {
            break;
        };
        if done.answered {
            rounds = rounds.max(done.depth);
            servers.push(done.peer);
        }
        for peer in done.found {
            enqueue(peer, done.depth + 1, &mut queue);
        }
    }
    servers.sort_by_key(|a| a.peer_id);
    tracing::debug!(servers = servers.len(), heard = discovered, "crawl done");
    let mut stats = stats.snapshot();
    stats.rounds = rounds;
    stats.elapsed = started.elapsed();
    Outcome::new(servers, stats)
}
