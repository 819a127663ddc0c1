//! The baseline network: N rust-libp2p `libp2p-kad` nodes on 127.0.0.1 (TCP, noise, yamux,
//! identify), each driven on its own tokio task, with network-wide counters of the requests
//! they receive.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, SwarmBuilder, identify, kad,
    kad::store::{MemoryStore, MemoryStoreConfig},
    multiaddr::Protocol,
    noise,
    swarm::{NetworkBehaviour, Swarm, SwarmEvent},
    tcp, yamux,
};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub(crate) struct KadBehaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
}

/// One step of a query: what [`kad::Event::OutboundQueryProgressed`] carries.
#[derive(Debug)]
pub(crate) struct Progress {
    pub(crate) result: kad::QueryResult,
    pub(crate) stats: kad::QueryStats,
    pub(crate) last: bool,
}

/// Queries whose progress someone waits for, by id.
type Waiters = HashMap<kad::QueryId, mpsc::UnboundedSender<Progress>>;

type Job = Box<dyn FnOnce(&mut Swarm<KadBehaviour>, &mut Waiters) + Send>;

/// Requests received by all nodes together, by type (libp2p-kad's `InboundRequest` events),
/// and when the last ADD_PROVIDER arrived.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) find_node: AtomicU64,
    pub(crate) get_providers: AtomicU64,
    pub(crate) add_provider: AtomicU64,
    pub(crate) get_value: AtomicU64,
    pub(crate) put_value: AtomicU64,
    origin: Instant,
    last_add_provider_nanos: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) find_node: u64,
    pub(crate) get_providers: u64,
    pub(crate) add_provider: u64,
    pub(crate) get_value: u64,
    pub(crate) put_value: u64,
}

impl Received {
    /// The requests received since `earlier`.
    pub(crate) fn since(&self, earlier: &Received) -> Received {
        Received {
            find_node: self.find_node - earlier.find_node,
            get_providers: self.get_providers - earlier.get_providers,
            add_provider: self.add_provider - earlier.add_provider,
            get_value: self.get_value - earlier.get_value,
            put_value: self.put_value - earlier.put_value,
        }
    }
}

impl Counters {
    fn new() -> Counters {
        Counters {
            find_node: AtomicU64::new(0),
            get_providers: AtomicU64::new(0),
            add_provider: AtomicU64::new(0),
            get_value: AtomicU64::new(0),
            put_value: AtomicU64::new(0),
            origin: Instant::now(),
            last_add_provider_nanos: AtomicU64::new(0),
        }
    }

    fn count(&self, request: &kad::InboundRequest) {
        let counter = match request {
            kad::InboundRequest::FindNode { .. } => &self.find_node,
            kad::InboundRequest::GetProvider { .. } => &self.get_providers,
            kad::InboundRequest::AddProvider { .. } => {
                let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.last_add_provider_nanos
                    .fetch_max(nanos, Ordering::Relaxed);
                &self.add_provider
            }
            kad::InboundRequest::GetRecord { .. } => &self.get_value,
            kad::InboundRequest::PutRecord { .. } => &self.put_value,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Received {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Received {
            find_node: get(&self.find_node),
            get_providers: get(&self.get_providers),
            add_provider: get(&self.add_provider),
            get_value: get(&self.get_value),
            put_value: get(&self.put_value),
        }
    }

    /// When the last ADD_PROVIDER was received by any node, if one was.
    pub(crate) fn last_add_provider(&self) -> Option<Instant> {
        match self.last_add_provider_nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.origin + Duration::from_nanos(n)),
        }
    }
}

/// Settings of every node of the baseline network.
#[derive(Clone, Debug)]
pub(crate) struct KadSettings {
    /// libp2p-kad's query timeout.
    pub(crate) query_timeout: Duration,
    /// Provider records a node may hold (libp2p-kad's `MemoryStore` keeps 1,024 by default,
    /// too few for a benchmark: the rest would be refused).
    pub(crate) max_provider_keys: usize,
}

/// A libp2p-kad node (server mode) running on its own task.
pub(crate) struct KadNode {
    pub(crate) peer_id: PeerId,
    pub(crate) addr: Multiaddr,
    jobs: mpsc::UnboundedSender<Job>,
    task: JoinHandle<()>,
}

fn loopback() -> Multiaddr {
    Multiaddr::empty()
        .with(Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST))
        .with(Protocol::Tcp(0))
}

impl KadNode {
    /// Starts a node listening on an ephemeral port of 127.0.0.1.
    pub(crate) async fn start(settings: &KadSettings, counters: Arc<Counters>) -> Result<KadNode> {
        let settings = settings.clone();
        let mut swarm = SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|key| {
                let id = key.public().to_peer_id();
                let mut config = kad::Config::new(kad::PROTOCOL_NAME);
                // Nothing runs in the background: every request counted is the benchmark's.
                config.set_periodic_bootstrap_interval(None);
                config.set_provider_publication_interval(None);
                config.set_replication_interval(None);
                config.set_publication_interval(None);
                config.set_query_timeout(settings.query_timeout);
                let store = MemoryStore::with_config(
                    id,
                    MemoryStoreConfig {
                        max_provided_keys: settings.max_provider_keys,
                        max_records: settings.max_provider_keys,
                        ..MemoryStoreConfig::default()
                    },
                );
                KadBehaviour {
                    kad: kad::Behaviour::with_config(id, store, config),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "ipfs/0.1.0".to_owned(),
                        key.public(),
                    )),
                }
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        // Auto mode would stay client without a confirmed external address.
        swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
        swarm.listen_on(loopback())?;
        let addr = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    break address;
                }
            }
        })
        .await
        .context("libp2p-kad node did not start listening")?;
        // libp2p-kad puts its external addresses in ADD_PROVIDER.
        swarm.add_external_address(addr.clone());
        let peer_id = *swarm.local_peer_id();
        let (jobs, job_rx) = mpsc::unbounded_channel::<Job>();
        let task = tokio::spawn(drive(swarm, job_rx, counters));
        Ok(KadNode {
            peer_id,
            addr,
            jobs,
            task,
        })
    }

    /// Runs `f` on the node's task and returns its result.
    pub(crate) async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut kad::Behaviour<MemoryStore>) -> R + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |swarm, _| {
            let _ = tx.send(f(&mut swarm.behaviour_mut().kad));
        });
        self.jobs
            .send(job)
            .map_err(|_| anyhow!("libp2p-kad node stopped"))?;
        rx.await.context("libp2p-kad node stopped")
    }

    /// Starts queries with `start` on the node's task; their progress goes to `progress`.
    /// Returns how many queries started (`start` yields their ids; errors are skipped and
    /// returned as strings).
    pub(crate) async fn start_queries(
        &self,
        start: impl FnOnce(&mut kad::Behaviour<MemoryStore>) -> Vec<Result<kad::QueryId, String>>
        + Send
        + 'static,
        progress: mpsc::UnboundedSender<Progress>,
    ) -> Result<Vec<Result<kad::QueryId, String>>> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |swarm, waiters| {
            let ids = start(&mut swarm.behaviour_mut().kad);
            for id in ids.iter().flatten() {
                waiters.insert(*id, progress.clone());
            }
            let _ = tx.send(ids);
        });
        self.jobs
            .send(job)
            .map_err(|_| anyhow!("libp2p-kad node stopped"))?;
        rx.await.context("libp2p-kad node stopped")
    }

    /// Runs one query started by `start` to its last step and returns every step.
    pub(crate) async fn query(
        &self,
        start: impl FnOnce(&mut kad::Behaviour<MemoryStore>) -> Result<kad::QueryId, String>
        + Send
        + 'static,
    ) -> Result<Vec<Progress>> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let started = self.start_queries(move |kad| vec![start(kad)], tx).await?;
        if let Some(Err(e)) = started.into_iter().next() {
            return Err(anyhow!("query did not start: {e}"));
        }
        let mut steps = Vec::new();
        while let Some(step) = rx.recv().await {
            let last = step.last;
            steps.push(step);
            if last {
                break;
            }
        }
        Ok(steps)
    }

    /// Peers in the node's routing table.
    pub(crate) async fn table_len(&self) -> Result<usize> {
        self.with(|kad| kad.kbuckets().map(|b| b.num_entries()).sum())
            .await
    }

    /// Stops the node: its task ends and the swarm (every connection) is dropped.
    pub(crate) async fn shutdown(self) {
        drop(self.jobs);
        let _ = self.task.await;
    }
}

/// The node's task: runs jobs, forwards query progress to whoever waits for it, counts
/// inbound requests, and adds peers that identify as kad servers to the routing table (as
/// rust-libp2p applications do: libp2p-kad learns no address from an inbound connection).
async fn drive(
    mut swarm: Swarm<KadBehaviour>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    counters: Arc<Counters>,
) {
    let mut waiters = Waiters::new();
    loop {
        tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => job(&mut swarm, &mut waiters),
                None => break,
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(KadBehaviourEvent::Kad(event)) => match event {
                    kad::Event::InboundRequest { request } => counters.count(&request),
                    kad::Event::OutboundQueryProgressed { id, result, stats, step } => {
                        let progress = Progress { result, stats, last: step.last };
                        if step.last {
                            if let Some(waiter) = waiters.remove(&id) {
                                let _ = waiter.send(progress);
                            }
                        } else if let Some(waiter) = waiters.get(&id) {
                            let _ = waiter.send(progress);
                        }
                    }
                    _ => {}
                },
                SwarmEvent::Behaviour(KadBehaviourEvent::Identify(
                    identify::Event::Received { peer_id, info, .. },
                )) if info.protocols.contains(&kad::PROTOCOL_NAME) => {
                    for addr in info.listen_addrs {
                        swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
                _ => {}
            },
        }
    }
}

/// A network of libp2p-kad nodes and its request counters.
pub(crate) struct KadNet {
    pub(crate) nodes: Vec<KadNode>,
    pub(crate) counters: Arc<Counters>,
}

impl KadNet {
    /// Starts `n` nodes.
    pub(crate) async fn start(n: usize, settings: &KadSettings) -> Result<KadNet> {
        let counters = Arc::new(Counters::new());
        let nodes =
            futures::future::join_all((0..n).map(|_| KadNode::start(settings, counters.clone())))
                .await
                .into_iter()
                .collect::<Result<Vec<_>>>()?;
        Ok(KadNet { nodes, counters })
    }

    /// Stops every node.
    pub(crate) async fn shutdown(self) {
        futures::future::join_all(self.nodes.into_iter().map(KadNode::shutdown)).await;
    }
}

/// Whether a `get_providers` query's steps name `provider`.
pub(crate) fn found_provider(steps: &[Progress], provider: &PeerId) -> bool {
    steps.iter().any(|s| {
        matches!(
            &s.result,
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders { providers, .. }))
                if providers.contains(provider)
        )
    })
}
