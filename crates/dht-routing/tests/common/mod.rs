//! A small in-memory network for tests: each node a list of neighbours (k per bucket, as a
//! converged k-bucket table), answering the six RPCs; latency on tokio's (paused) clock;
//! optionally misbehaving nodes. The ground truth is the list of all nodes.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use dht_proto::{
    K_VALUE, Key, MessageType, PeerId, PeerInfo, Record, Request, Response,
    batch::{KeyStatus, ProvideBatch, ProvideBatchResponse},
};
use dht_routing::{ClientConfig, DhtClient, Feature, Network, RpcError};
use dht_routing_table::{
    Direction, FullRoutingTable, KBucketConfig, KBucketTable, ManualClock, PeerEvent, RoutingTable,
};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng, rngs::SmallRng, seq::SliceRandom};

/// How a node behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    /// Never answers.
    Silent,
    /// Answers FIND_NODE and friends with random peers.
    RandomPeers,
    /// Answers after this extra delay.
    Slow(Duration),
}

pub struct Node {
    pub info: PeerInfo,
    pub key: Key,
    /// Indices of the nodes in this node's routing table.
    pub neighbours: Vec<usize>,
    pub behaviour: Behaviour,
    pub values: Mutex<HashMap<Vec<u8>, Record>>,
    pub providers: Mutex<BTreeMap<Vec<u8>, Vec<PeerInfo>>>,
}

pub struct TestNet {
    pub nodes: Vec<Node>,
    pub index: HashMap<PeerId, usize>,
    /// Latency of one way, drawn uniformly from this range (ms) per request.
    pub latency_ms: (u64, u64),
    rng: Mutex<SmallRng>,
    pub requests: Mutex<BTreeMap<MessageType, u64>>,
    pub sent: AtomicU64,
    /// Nodes that list the batched provide protocol (`true`: and take batches; `false`: but
    /// refuse the stream, so the client falls back to ADD_PROVIDER).
    pub batch: Mutex<HashMap<usize, bool>>,
    /// Provider batches that reached a node.
    pub batches: AtomicU64,
}

pub fn peer_id(rng: &mut impl Rng) -> PeerId {
    dht_test_kit::peer_id(rng.random())
}

pub fn peer_info(rng: &mut impl Rng, i: usize) -> PeerInfo {
    let addr = format!(
        "/ip4/10.{}.{}.{}/tcp/4001",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    );
    PeerInfo::new(peer_id(rng), vec![addr.parse().unwrap()])
}

impl TestNet {
    /// `n` honest nodes, each knowing up to `k` random peers per bucket.
    pub fn new(n: usize, seed: u64) -> Self {
        Self::with_behaviours(n, seed, |_| Behaviour::Honest)
    }

    pub fn with_behaviours(n: usize, seed: u64, behaviour: impl Fn(usize) -> Behaviour) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let infos: Vec<PeerInfo> = (0..n).map(|i| peer_info(&mut rng, i)).collect();
        let keys: Vec<Key> = infos.iter().map(PeerInfo::key).collect();
        let mut nodes = Vec::with_capacity(n);
        for (i, info) in infos.iter().enumerate() {
            let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); 257];
            for (j, key) in keys.iter().enumerate() {
                if i != j {
                    buckets[keys[i].common_prefix_len(key)].push(j);
                }
            }
            let mut neighbours = Vec::new();
            for mut bucket in buckets {
                bucket.shuffle(&mut rng);
                bucket.truncate(K_VALUE);
                neighbours.extend(bucket);
            }
            nodes.push(Node {
                info: info.clone(),
                key: keys[i],
                neighbours,
                behaviour: behaviour(i),
                values: Mutex::new(HashMap::new()),
                providers: Mutex::new(BTreeMap::new()),
            });
        }
        let index = infos
            .iter()
            .enumerate()
            .map(|(i, p)| (p.peer_id, i))
            .collect();
        TestNet {
            nodes,
            index,
            latency_ms: (10, 100),
            rng: Mutex::new(SmallRng::seed_from_u64(seed ^ 0x5eed)),
            requests: Mutex::new(BTreeMap::new()),
            sent: AtomicU64::new(0),
            batch: Mutex::new(HashMap::new()),
            batches: AtomicU64::new(0),
        }
    }

    /// The `n` nodes closest to `target` that answer, `except` left out: the ground truth.
    pub fn true_closest(&self, target: &Key, n: usize, except: usize) -> Vec<PeerId> {
        let mut all: Vec<(dht_proto::Distance, PeerId)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, node)| *i != except && node.behaviour != Behaviour::Silent)
            .map(|(_, node)| (target.distance(&node.key), node.info.peer_id))
            .collect();
        all.sort();
        all.into_iter().take(n).map(|(_, p)| p).collect()
    }

    /// What node `i` knows closest to `target`.
    pub fn closest_known(&self, i: usize, target: &Key, n: usize) -> Vec<PeerInfo> {
        let node = &self.nodes[i];
        let mut known: Vec<(dht_proto::Distance, usize)> = node
            .neighbours
            .iter()
            .map(|&j| (target.distance(&self.nodes[j].key), j))
            .collect();
        known.sort();
        known
            .into_iter()
            .take(n)
            .map(|(_, j)| self.nodes[j].info.clone())
            .collect()
    }

    fn random_peers(&self, n: usize) -> Vec<PeerInfo> {
        let mut rng = self.rng.lock();
        (0..n)
            .map(|_| {
                self.nodes[rng.random_range(0..self.nodes.len())]
                    .info
                    .clone()
            })
            .collect()
    }

    fn closer(&self, i: usize, key: &[u8]) -> Vec<PeerInfo> {
        match self.nodes[i].behaviour {
            Behaviour::RandomPeers => self.random_peers(K_VALUE),
            _ => self.closest_known(i, &Key::hash(key), K_VALUE),
        }
    }

    /// Node `to` handles `request` from node `from`.
    pub fn handle(&self, from: usize, to: usize, request: Request) -> Option<Response> {
        let _ = from;
        let node = &self.nodes[to];
        match request {
            Request::FindNode { key } => Some(Response::FindNode {
                closer_peers: self.closer(to, &key),
            }),
            Request::GetValue { key } => Some(Response::GetValue {
                record: node.values.lock().get(&key).cloned(),
                closer_peers: self.closer(to, &key),
                key,
            }),
            Request::PutValue { record } => {
                node.values
                    .lock()
                    .insert(record.key.clone(), record.clone());
                Some(Response::PutValue { record })
            }
            Request::GetProviders { key } => Some(Response::GetProviders {
                providers: node.providers.lock().get(&key).cloned().unwrap_or_default(),
                closer_peers: self.closer(to, &key),
                key,
            }),
            Request::AddProvider { key, providers } => {
                let mut stored = node.providers.lock();
                let entry = stored.entry(key).or_default();
                for p in providers {
                    if !entry.iter().any(|e| e.peer_id == p.peer_id) {
                        entry.push(p);
                    }
                }
                None
            }
            Request::Ping => Some(Response::Ping),
        }
    }

    fn delay(&self) -> Duration {
        let (lo, hi) = self.latency_ms;
        Duration::from_millis(self.rng.lock().random_range(lo..=hi))
    }

    pub fn requests_of(&self, ty: MessageType) -> u64 {
        self.requests.lock().get(&ty).copied().unwrap_or(0)
    }

    /// A k-bucket table of node `i` holding its neighbours.
    pub fn kbucket_table(&self, i: usize) -> KBucketTable {
        let table = KBucketTable::new(
            self.nodes[i].key,
            KBucketConfig::default().with_diversity(None),
            ManualClock::new(1_000_000),
        );
        for &j in &self.nodes[i].neighbours {
            table.update(&self.nodes[j].info, PeerEvent::Seen(Direction::Outbound));
        }
        table
    }

    /// A complete full routing table holding every other node.
    pub fn full_table(&self, i: usize) -> FullRoutingTable {
        let clock = ManualClock::new(1_000_000);
        let table = FullRoutingTable::new(self.nodes[i].key, Default::default(), clock);
        table.replace_all(
            self.nodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, n)| n.info.clone()),
            1_000_000,
        );
        table
    }
}

/// Node `from`'s view of the network.
#[derive(Clone)]
pub struct Handle {
    pub net: Arc<TestNet>,
    pub from: usize,
}

impl TestNet {
    /// Whether node `i` lists the batched provide protocol.
    pub fn lists_batch(&self, i: usize) -> bool {
        self.batch.lock().contains_key(&i)
    }

    /// Node `to` takes `batch`: each key stored as an ADD_PROVIDER would store it.
    fn take_batch(&self, to: usize, batch: ProvideBatch) -> ProvideBatchResponse {
        self.batches.fetch_add(1, Ordering::Relaxed);
        let mut stored = self.nodes[to].providers.lock();
        let statuses = batch
            .keys
            .into_iter()
            .map(|key| {
                let entry = stored.entry(key).or_default();
                if !entry.iter().any(|e| e.peer_id == batch.provider.peer_id) {
                    entry.push(batch.provider.clone());
                }
                KeyStatus::Stored
            })
            .collect();
        ProvideBatchResponse::answered(statuses)
    }
}

impl Network for Handle {
    fn supports(&self, peer: &PeerId, feature: Feature) -> bool {
        feature == Feature::ProvideBatch
            && self
                .net
                .index
                .get(peer)
                .is_some_and(|&i| self.net.lists_batch(i))
    }

    fn provide_batch(
        &self,
        peer: &PeerInfo,
        batch: ProvideBatch,
    ) -> impl Future<Output = Result<ProvideBatchResponse, RpcError>> + Send {
        let net = self.net.clone();
        let to = net.index.get(&peer.peer_id).copied();
        async move {
            let Some(to) = to else {
                return Err(RpcError::unreachable(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                )));
            };
            let takes = net.batch.lock().get(&to).copied();
            let out = net.delay();
            tokio::time::sleep(out).await;
            if takes != Some(true) {
                return Err(RpcError::Unsupported(Feature::ProvideBatch));
            }
            let answer = net.take_batch(to, batch);
            let back = net.delay();
            tokio::time::sleep(back).await;
            Ok(answer)
        }
    }

    fn send(
        &self,
        peer: &PeerInfo,
        request: Request,
    ) -> impl Future<Output = Result<Option<Response>, RpcError>> + Send {
        let net = self.net.clone();
        let from = self.from;
        let to = net.index.get(&peer.peer_id).copied();
        async move {
            *net.requests
                .lock()
                .entry(request.message_type())
                .or_default() += 1;
            net.sent.fetch_add(1, Ordering::Relaxed);
            let Some(to) = to else {
                return Err(RpcError::unreachable(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                )));
            };
            let out = net.delay();
            tokio::time::sleep(out).await;
            match net.nodes[to].behaviour {
                Behaviour::Silent => std::future::pending::<()>().await,
                Behaviour::Slow(d) => tokio::time::sleep(d).await,
                _ => {}
            }
            let response = net.handle(from, to, request);
            let back = net.delay();
            tokio::time::sleep(back).await;
            Ok(response)
        }
    }
}

/// A client for node `i` with a k-bucket table of its neighbours.
pub fn client(
    net: &Arc<TestNet>,
    i: usize,
    config: ClientConfig,
) -> DhtClient<KBucketTable, Handle> {
    DhtClient::new(
        net.nodes[i].info.clone(),
        net.kbucket_table(i),
        Handle {
            net: net.clone(),
            from: i,
        },
        config,
    )
}

/// Median and 95th percentile.
pub fn median_p95(mut v: Vec<u64>) -> (u64, u64) {
    v.sort_unstable();
    if v.is_empty() {
        return (0, 0);
    }
    (v[v.len() / 2], v[(v.len() * 95 / 100).min(v.len() - 1)])
}
