//! Interoperability with rust-libp2p's own `libp2p-kad` 0.49 `Behaviour`, an independent
//! implementation of `/ipfs/kad/1.0.0`, over TCP on 127.0.0.1, in both directions.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Node, STEP, default_answer, loopback, within};
use dht_node::transport::{KadConfig, TransportEvent, TransportNetwork};
use dht_proto::batch::ProvideBatch;
use dht_proto::{Multiaddr, PeerId, PeerInfo, Record, Request, Response};
use dht_routing::{Feature, Network, RpcError};
use futures::StreamExt;
use libp2p::{
    SwarmBuilder, identify, kad,
    kad::store::MemoryStore,
    multiaddr::Protocol,
    noise,
    swarm::{NetworkBehaviour, Swarm, SwarmEvent},
    tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct KadNode {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
}

type Job = Box<dyn FnOnce(&mut Swarm<KadNode>) + Send>;

/// A libp2p-kad node (server mode) driven on its own task.
struct KadPeer {
    jobs: mpsc::UnboundedSender<Job>,
    events: mpsc::UnboundedReceiver<kad::Event>,
    info: PeerInfo,
}

impl KadPeer {
    /// `max_packet_size`: `None` keeps libp2p-kad's default (16 KiB).
    async fn start(max_packet_size: Option<usize>) -> KadPeer {
        let mut swarm = SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp")
            .with_behaviour(|key| {
                let id = key.public().to_peer_id();
                let mut config = kad::Config::new(kad::PROTOCOL_NAME);
                config.set_periodic_bootstrap_interval(None);
                config.set_query_timeout(STEP);
                if let Some(n) = max_packet_size {
                    config.set_max_packet_size(n);
                }
                KadNode {
                    kad: kad::Behaviour::with_config(id, MemoryStore::new(id), config),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "ipfs/0.1.0".to_owned(),
                        key.public(),
                    )),
                }
            })
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        // Auto mode would stay client without a confirmed external address.
        swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
        swarm.listen_on(loopback()).expect("listen");
        let addr = within("kad listens", async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    break address;
                }
            }
        })
        .await;
        // libp2p-kad announces its external addresses in ADD_PROVIDER.
        swarm.add_external_address(addr.clone());
        let info = PeerInfo::new(*swarm.local_peer_id(), vec![addr]);
        let (jobs, mut job_rx) = mpsc::unbounded_channel::<Job>();
        let (event_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    job = job_rx.recv() => match job {
                        Some(job) => job(&mut swarm),
                        None => break,
                    },
                    event = swarm.select_next_some() => {
                        if let SwarmEvent::Behaviour(KadNodeEvent::Kad(e)) = event {
                            let _ = event_tx.send(e);
                        }
                    }
                }
            }
        });
        KadPeer { jobs, events, info }
    }

    /// Runs `f` on the swarm's task.
    async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut kad::Behaviour<MemoryStore>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |swarm| {
            let _ = tx.send(f(&mut swarm.behaviour_mut().kad));
        });
        self.jobs.send(job).expect("kad task running");
        within("kad job", rx).await.expect("kad job ran")
    }

    /// Adds `peer` to the routing table.
    async fn learn(&self, peer: &PeerInfo) {
        let peer = peer.clone();
        self.with(move |kad| {
            for addr in peer.addrs {
                kad.add_address(&peer.peer_id, addr);
            }
        })
        .await;
    }

    /// Every result of query `id`, up to its last step.
    async fn results(&mut self, id: kad::QueryId) -> Vec<kad::QueryResult> {
        within("kad query", async {
            let mut out = Vec::new();
            loop {
                let event = self.events.recv().await.expect("kad task running");
                if let kad::Event::OutboundQueryProgressed {
                    id: got,
                    result,
                    step,
                    ..
                } = event
                    && got == id
                {
                    out.push(result);
                    if step.last {
                        return out;
                    }
                }
            }
        })
        .await
    }
}

/// A handler that keeps provider and value records, as a tiny DHT server would.
#[derive(Default)]
struct Records {
    providers: Mutex<HashMap<Vec<u8>, Vec<PeerInfo>>>,
    values: Mutex<HashMap<Vec<u8>, Record>>,
    /// Answer to FIND_NODE.
    closer: Vec<PeerInfo>,
}

impl Records {
    fn answer(&self, peer: PeerId, request: &Request) -> Option<Response> {
        match request {
            Request::AddProvider { key, providers } => {
                let mut held = self.providers.lock().expect("lock");
                let entry = held.entry(key.clone()).or_default();
                entry.extend(providers.iter().filter(|p| p.peer_id == peer).cloned());
                None
            }
            Request::GetProviders { key } => Some(Response::GetProviders {
                key: key.clone(),
                providers: self
                    .providers
                    .lock()
                    .expect("lock")
                    .get(key)
                    .cloned()
                    .unwrap_or_default(),
                closer_peers: self.closer.clone(),
            }),
            Request::PutValue { record } => {
                let mut held = self.values.lock().expect("lock");
                held.insert(record.key.clone(), record.clone());
                Some(Response::PutValue {
                    record: record.clone(),
                })
            }
            Request::GetValue { key } => Some(Response::GetValue {
                key: key.clone(),
                record: self.values.lock().expect("lock").get(key).cloned(),
                closer_peers: self.closer.clone(),
            }),
            Request::FindNode { .. } => Some(Response::FindNode {
                closer_peers: self.closer.clone(),
            }),
            Request::Ping => Some(Response::Ping),
        }
    }
}

async fn records_node(closer: Vec<PeerInfo>) -> Node {
    let records = Arc::new(Records {
        closer,
        ..Records::default()
    });
    Node::start(
        KadConfig::default(),
        Arc::new(move |peer, request: &Request| Ok(records.answer(peer, request))),
    )
    .await
}

/// The addresses without their `/p2p/<peer id>` suffix.
fn without_p2p(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    addrs
        .iter()
        .map(|a| {
            a.iter()
                .filter(|p| !matches!(p, Protocol::P2p(_)))
                .collect()
        })
        .collect()
}

fn find_node(key: &[u8]) -> Request {
    Request::FindNode { key: key.to_vec() }
}

// --- we query libp2p-kad -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_find_nodes_on_libp2p_kad_over_one_stream() {
    let mut a = Node::server().await;
    let k = KadPeer::start(None).await;
    let other = PeerInfo::new(
        PeerId::random(),
        vec!["/ip4/127.0.0.1/tcp/1".parse().expect("valid")],
    );
    k.learn(&other).await;
    for i in 0..5u8 {
        let out = within("find node", a.handle.request(&k.info, find_node(&[i; 32]))).await;
        let Ok(Some(Response::FindNode { closer_peers })) = out else {
            panic!("unexpected {out:?}");
        };
        let found: Vec<_> = closer_peers
            .iter()
            .map(|p| (p.peer_id, without_p2p(&p.addrs)))
            .collect();
        assert_eq!(found, vec![(other.peer_id, other.addrs.clone())]);
        // libp2p-kad appends `/p2p/<peer id>` to the addresses it sends (Go does not).
        assert!(
            closer_peers[0].addrs[0]
                .iter()
                .any(|p| matches!(p, Protocol::P2p(_)))
        );
    }
    // libp2p-kad keeps reading requests on the stream we opened.
    let stats = a.handle.stats();
    assert_eq!(stats.outbound_streams_opened, 1, "{stats:?}");
    assert_eq!(stats.outbound_streams_reused, 4, "{stats:?}");
    // Identify tells us libp2p-kad (server mode) is a DHT server.
    let k_id = k.info.peer_id;
    let server = a
        .event(|e| match e {
            TransportEvent::PeerIsServer(p) if p.peer_id == k_id => Some(p),
            _ => None,
        })
        .await;
    assert_eq!(server.addrs, k.info.addrs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libp2p_kad_is_never_sent_a_batch_and_takes_add_provider() {
    let mut a = Node::server().await;
    let k = KadPeer::start(None).await;
    within("dial", a.handle.dial(&k.info)).await.unwrap();
    let k_id = k.info.peer_id;
    a.event(|e| match e {
        TransportEvent::PeerIsServer(p) if p.peer_id == k_id => Some(()),
        _ => None,
    })
    .await;
    // Identify lists kad, not the batch protocol: no feature, no batch sent.
    let network = TransportNetwork::new(a.handle.clone());
    assert!(!network.supports(&k_id, Feature::ProvideBatch));
    let key = b"\x12\x20batch-or-add-provider".to_vec();
    let batch = ProvideBatch {
        provider: a.info.clone(),
        keys: vec![key.clone()],
    };
    let sent = within("batch", network.provide_batch(&k.info, batch)).await;
    assert_eq!(sent, Err(RpcError::Unsupported(Feature::ProvideBatch)));
    let stats = a.handle.stats();
    assert_eq!(
        (
            stats.outbound_batches,
            stats.outbound_batches_failed,
            stats.outbound_batches_refused
        ),
        (0, 0, 0),
        "nothing was sent: {stats:?}"
    );
    // The fallback, plain ADD_PROVIDER, is taken.
    let add = Request::AddProvider {
        key: key.clone(),
        providers: vec![a.info.clone()],
    };
    within("add provider", a.handle.request(&k.info, add))
        .await
        .unwrap();
    let held = within("providers held", async {
        loop {
            let key = kad::RecordKey::new(&key);
            let held: Vec<PeerId> = k
                .with(move |kad| {
                    kad::store::RecordStore::providers(kad.store_mut(), &key)
                        .into_iter()
                        .map(|r| r.provider)
                        .collect()
                })
                .await;
            if !held.is_empty() {
                break held;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(held, vec![a.info.peer_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_provide_and_find_providers_on_libp2p_kad() {
    let a = Node::server().await;
    let b = Node::server().await;
    let k = KadPeer::start(None).await;
    let key = b"\x12\x20some-multihash-bytes".to_vec();
    let add = Request::AddProvider {
        key: key.clone(),
        providers: vec![a.info.clone()],
    };
    let out = within("add provider", a.handle.request(&k.info, add)).await;
    assert_eq!(out.expect("written"), None);
    // ADD_PROVIDER has no reply: "written" means sent. Wait until libp2p-kad has stored it,
    // or a GET_PROVIDERS on another connection can overtake it.
    let record_key = kad::RecordKey::new(&key);
    within("libp2p-kad stores the provider", async {
        loop {
            let rk = record_key.clone();
            let held = k
                .with(move |kad| kad::store::RecordStore::providers(kad.store_mut(), &rk).len())
                .await;
            if held > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // libp2p-kad leaves the requester out of its answer, so another node asks.
    let get = Request::GetProviders { key: key.clone() };
    let out = within("get providers", b.handle.request(&k.info, get)).await;
    let Ok(Some(Response::GetProviders { providers, .. })) = out else {
        panic!("unexpected {out:?}");
    };
    assert_eq!(providers.len(), 1);
    assert_eq!(providers[0].peer_id, a.info.peer_id);
    assert_eq!(without_p2p(&providers[0].addrs), a.info.addrs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_put_and_get_values_on_libp2p_kad() {
    let a = Node::server().await;
    let k = KadPeer::start(None).await;
    let record = Record::new(b"/v/key".to_vec(), b"the value".to_vec());
    let put = Request::PutValue {
        record: record.clone(),
    };
    let out = within("put value", a.handle.request(&k.info, put)).await;
    let Ok(Some(Response::PutValue { record: echoed })) = out else {
        panic!("unexpected {out:?}");
    };
    assert_eq!(
        (echoed.key, echoed.value),
        (record.key.clone(), record.value.clone())
    );
    let get = Request::GetValue {
        key: record.key.clone(),
    };
    let out = within("get value", a.handle.request(&k.info, get)).await;
    let Ok(Some(Response::GetValue {
        record: Some(found),
        ..
    })) = out
    else {
        panic!("unexpected {out:?}");
    };
    assert_eq!(found.value, record.value);
    // Both on one stream.
    assert_eq!(a.handle.stats().outbound_streams_opened, 1);
}

// --- libp2p-kad queries us ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libp2p_kad_finds_nodes_through_us() {
    let b = records_node(Vec::new()).await;
    let a = records_node(vec![b.info.clone()]).await;
    let mut k = KadPeer::start(None).await;
    k.learn(&a.info).await;
    let query = k
        .with(|kad| kad.get_closest_peers(b"target".to_vec()))
        .await;
    let results = k.results(query).await;
    let Some(kad::QueryResult::GetClosestPeers(Ok(ok))) = results.last() else {
        panic!("unexpected {results:?}");
    };
    let found: Vec<PeerId> = ok.peers.iter().map(|p| p.peer_id).collect();
    assert!(found.contains(&a.info.peer_id), "{found:?}");
    assert!(
        found.contains(&b.info.peer_id),
        "learnt from a's answer: {found:?}"
    );
    let k_id = k.info.peer_id;
    assert!(
        a.seen()
            .iter()
            .any(|(p, r)| *p == k_id && matches!(r, Request::FindNode { .. }))
    );
    // libp2p-kad opens a stream per request and closes it: every stream ends cleanly.
    let served = a.handle.stats();
    assert!(served.inbound_requests >= 1);
    assert_eq!(served.inbound_stream_errors, 0, "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libp2p_kad_provides_to_us_and_finds_the_providers_through_us() {
    let a = records_node(Vec::new()).await;
    let mut provider = KadPeer::start(None).await;
    let mut seeker = KadPeer::start(None).await;
    provider.learn(&a.info).await;
    seeker.learn(&a.info).await;
    let key = kad::RecordKey::new(&b"\x12\x20provided-content");

    let k = key.clone();
    let query = provider
        .with(move |kad| kad.start_providing(k).expect("local store"))
        .await;
    let results = provider.results(query).await;
    assert!(
        matches!(
            results.last(),
            Some(kad::QueryResult::StartProviding(Ok(_)))
        ),
        "{results:?}"
    );
    // The ADD_PROVIDER reaches us (libp2p-kad reports success once it is queued, so wait),
    // from the provider, with its address.
    let added = within("ADD_PROVIDER received", async {
        loop {
            let added = a.seen().into_iter().find_map(|(from, r)| match r {
                Request::AddProvider { key: k, providers } if k == key.to_vec() => {
                    Some((from, providers))
                }
                _ => None,
            });
            match added {
                Some(added) => return added,
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert_eq!(added.0, provider.info.peer_id);
    assert_eq!(added.1.len(), 1);
    assert_eq!(added.1[0].peer_id, provider.info.peer_id);
    assert_eq!(added.1[0].addrs, provider.info.addrs);

    let k = key.clone();
    let query = seeker.with(move |kad| kad.get_providers(k)).await;
    let results = seeker.results(query).await;
    // Found through us first; the seeker then also asks the provider, which names itself.
    let mut found: Vec<PeerId> = results
        .iter()
        .filter_map(|r| match r {
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => Some(providers.iter().copied().collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    found.dedup();
    assert_eq!(found, vec![provider.info.peer_id], "{results:?}");
    let seeker_id = seeker.info.peer_id;
    assert!(
        a.seen()
            .iter()
            .any(|(p, r)| *p == seeker_id && matches!(r, Request::GetProviders { .. }))
    );
    assert_eq!(a.handle.stats().inbound_stream_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libp2p_kad_puts_and_gets_values_through_us() {
    let a = records_node(Vec::new()).await;
    let mut writer = KadPeer::start(None).await;
    let mut reader = KadPeer::start(None).await;
    writer.learn(&a.info).await;
    reader.learn(&a.info).await;
    let record = kad::Record::new(b"/v/interop".to_vec(), b"hello".to_vec());

    let r = record.clone();
    let query = writer
        .with(move |kad| kad.put_record(r, kad::Quorum::One).expect("local store"))
        .await;
    let results = writer.results(query).await;
    assert!(
        matches!(results.last(), Some(kad::QueryResult::PutRecord(Ok(_)))),
        "{results:?}"
    );
    assert!(
        a.seen()
            .iter()
            .any(|(_, r)| matches!(r, Request::PutValue { record: got } if got.value == b"hello"))
    );

    let key = record.key.clone();
    let query = reader.with(move |kad| kad.get_record(key)).await;
    let results = reader.results(query).await;
    let found = results.iter().find_map(|r| match r {
        kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(peer_record))) => {
            Some(peer_record.clone())
        }
        _ => None,
    });
    let found = found.unwrap_or_else(|| panic!("no record in {results:?}"));
    assert_eq!(found.peer, Some(a.info.peer_id));
    assert_eq!(found.record.value, b"hello");
}

// --- message size --------------------------------------------------------------------------------

/// Our answer to GET_PROVIDERS: 600 providers, about 30 KiB.
fn many_providers() -> Vec<PeerInfo> {
    (0..600)
        .map(|_| {
            let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().expect("valid");
            PeerInfo::new(PeerId::random(), vec![addr])
        })
        .collect()
}

async fn big_provider_node(providers: Vec<PeerInfo>) -> Node {
    Node::start(
        KadConfig::default(),
        Arc::new(move |peer, request: &Request| match request {
            Request::GetProviders { key } => Ok(Some(Response::GetProviders {
                key: key.clone(),
                providers: providers.clone(),
                closer_peers: Vec::new(),
            })),
            Request::FindNode { .. } => Ok(Some(Response::FindNode {
                closer_peers: Vec::new(),
            })),
            _ => default_answer(peer, request),
        }),
    )
    .await
}

async fn providers_libp2p_kad_sees(k: &mut KadPeer) -> (Vec<PeerId>, Vec<kad::QueryResult>) {
    let key = kad::RecordKey::new(&b"\x12\x20popular-content");
    let query = k.with(move |kad| kad.get_providers(key)).await;
    let results = k.results(query).await;
    let found = results
        .iter()
        .filter_map(|r| match r {
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => Some(providers.iter().copied().collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    (found, results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_providers_answer_over_16_kib_needs_a_larger_libp2p_kad_limit() {
    let providers = many_providers();
    let mut frame = Vec::new();
    dht_proto::Codec::default()
        .encode_response(
            &Response::GetProviders {
                key: b"\x12\x20popular-content".to_vec(),
                providers: providers.clone(),
                closer_peers: Vec::new(),
            },
            &mut frame,
        )
        .expect("encodes");
    assert!(frame.len() > 16 * 1024, "{} bytes", frame.len());
    let a = big_provider_node(providers.clone()).await;

    // libp2p-kad's default limit is 16 KiB: the answer is refused, the query ends without it.
    let mut small = KadPeer::start(None).await;
    small.learn(&a.info).await;
    let (found, results) = providers_libp2p_kad_sees(&mut small).await;
    // It counts the request to us as failed ("message with …b exceeds maximum of 16384b"), so
    // we are not among the closest peers that answered either.
    assert!(found.is_empty(), "{found:?}");
    let Some(kad::QueryResult::GetProviders(Ok(
        kad::GetProvidersOk::FinishedWithNoAdditionalRecord { closest_peers },
    ))) = results.last()
    else {
        panic!("unexpected {results:?}");
    };
    assert!(
        !closest_peers.contains(&a.info.peer_id),
        "{closest_peers:?}"
    );
    assert!(
        a.seen()
            .iter()
            .any(|(_, r)| matches!(r, Request::GetProviders { .. }))
    );

    // With a 4 MiB limit, as Go and we use, it gets all of them.
    let mut large = KadPeer::start(Some(4 << 20)).await;
    large.learn(&a.info).await;
    let (mut found, _) = providers_libp2p_kad_sees(&mut large).await;
    let mut want: Vec<PeerId> = providers.iter().map(|p| p.peer_id).collect();
    found.sort();
    want.sort();
    assert_eq!(found, want);
}
