//! The operations over dht-sim's in-memory network (real handlers, stores and k-bucket
//! tables), on tokio's paused clock.
#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use dht_proto::{K_VALUE, Key, MessageType, PeerId, PeerInfo, Record, Request};
use dht_provider_store::{ProviderStore, ValueStore};
use dht_routing::{
    ClientConfig, ClosestPeersQuery, CrawlConfig, Dht, DhtClient, DriverConfig, Error, Feature,
    MAX_FEATURE_WIDTH, Outcome, QueryConfig, QueryDriver, crawl, find_closest_peers,
    find_feature_peers, find_peer, find_providers, get_value, provide, put_value, run_query,
};
use dht_routing_table::{FullRoutingTable, KBucketTable, ManualClock, RoutingTable};
use dht_sim::{Behaviour, NodeNetwork, Sim, SimConfig};
use dht_test_kit::SeqValidator;
use futures::StreamExt;

fn config() -> ClientConfig {
    ClientConfig::default()
        .with_driver(DriverConfig::default().with_request_timeout(Duration::from_secs(2)))
        .with_query(QueryConfig::default().with_stall_timeout(Some(Duration::from_millis(500))))
}

/// A network of `n` nodes whose clients use [`config`], tables filled directly.
fn network(n: usize, seed: u64) -> SimConfig {
    SimConfig::default()
        .with_nodes(n)
        .with_seed(seed)
        .with_client(config())
}

async fn build(config: SimConfig) -> Sim {
    Sim::build(config).await.unwrap()
}

fn info(sim: &Sim, i: usize) -> PeerInfo {
    sim.node(i).unwrap().info().clone()
}

/// The ground truth: the `k` nodes that answer closest to `key`, node `except` left out.
fn true_closest(sim: &Sim, key: &Key, k: usize, except: usize) -> Vec<PeerId> {
    sim.true_closest_by(key, k, |n| n.index() != except && n.behaviour().answers())
        .into_iter()
        .map(|i| info(sim, i).peer_id)
        .collect()
}

/// Whether node `i` holds a provider record of `provider` for `key`.
fn holds_provider(sim: &Sim, i: usize, key: &[u8], provider: PeerId) -> bool {
    let node = sim.node(i).unwrap();
    let records = node.store().providers(key, usize::MAX, sim.now()).unwrap();
    records.iter().any(|r| r.provider == provider)
}

/// The nodes holding `key`'s value, by index.
fn holders(sim: &Sim, key: &[u8]) -> Vec<(usize, Record)> {
    (0..sim.len())
        .filter_map(|i| {
            let node = sim.node(i)?;
            let (record, _) = node.store().get_value(key, sim.now()).unwrap()?;
            Some((i, record))
        })
        .collect()
}

/// Every node but `i`, in a full routing table of node `i`.
fn full_table(sim: &Sim, i: usize) -> FullRoutingTable {
    let clock = ManualClock::new(sim.now());
    let table = FullRoutingTable::new(info(sim, i).key(), Default::default(), clock);
    table.replace_all(
        (0..sim.len()).filter(|&j| j != i).map(|j| info(sim, j)),
        sim.now(),
    );
    table
}

/// A client of node `i` over another table than its own.
fn client_with<T: RoutingTable>(sim: &Sim, i: usize, table: T) -> DhtClient<T, NodeNetwork> {
    DhtClient::new(info(sim, i), table, sim.network(i), config())
}

fn requests_of(sim: &Sim, ty: MessageType) -> u64 {
    sim.counts().sent_of(ty)
}

/// The first node of the network that behaves honestly.
fn honest(sim: &Sim) -> usize {
    (0..sim.len())
        .find(|&i| sim.node(i).unwrap().behaviour() == Behaviour::Honest)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn provide_then_find_providers_from_another_node() {
    let sim = build(network(300, 11)).await;
    let key = b"some multihash".to_vec();
    for provider in [3, 150, 299] {
        let c = sim.client(provider).unwrap();
        let out = provide(&c, &key, info(&sim, provider)).await.unwrap();
        assert_eq!(out.value.succeeded.len(), K_VALUE);
        assert!(out.value.failed.is_empty());
        assert_eq!(
            out.stats.requests_of(MessageType::AddProvider),
            K_VALUE as u64
        );
    }
    // An ADD_PROVIDER is handled one latency after it is written.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Each provider's record sits on the true 20 closest (itself aside).
    let target = Key::hash(&key);
    for provider in [3, 150, 299] {
        let id = info(&sim, provider).peer_id;
        for p in true_closest(&sim, &target, K_VALUE, provider) {
            assert!(holds_provider(&sim, sim.index_of(&p).unwrap(), &key, id));
        }
    }

    // All of them, from elsewhere.
    let c = sim.client(77).unwrap();
    let mut stream = find_providers(&c, &key, 0);
    let mut found = Vec::new();
    while let Some(p) = stream.next().await {
        found.push(p.peer_id);
    }
    found.sort();
    let mut expected: Vec<PeerId> = [3, 150, 299]
        .iter()
        .map(|&i| info(&sim, i).peer_id)
        .collect();
    expected.sort();
    assert_eq!(found, expected);
    let full_walk = stream.stats();
    assert!(full_walk.requests_of(MessageType::GetProviders) >= K_VALUE as u64);

    // Stops at a count, early.
    let mut stream = find_providers(&c, &key, 2);
    let mut n = 0;
    while stream.next().await.is_some() {
        n += 1;
    }
    assert_eq!(n, 2);
    assert!(
        stream.stats().requests_of(MessageType::GetProviders)
            < full_walk.requests_of(MessageType::GetProviders)
    );
    assert_eq!(stream.stats().requests_of(MessageType::FindNode), 0);

    // Nothing for a key nobody provides.
    let mut stream = find_providers(&c, b"nobody", 5);
    assert!(stream.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn get_value_with_quorum_corrects_outdated_peers() {
    let sim = build(network(300, 12)).await;
    let key = b"/sim/name".to_vec();
    let put = put_value(&sim.client(1).unwrap(), Record::new(key.clone(), "7"))
        .await
        .unwrap();
    assert_eq!(put.value.succeeded.len(), K_VALUE);
    assert_eq!(put.stats.requests_of(MessageType::PutValue), K_VALUE as u64);
    let stored = holders(&sim, &key);
    assert_eq!(stored.len(), K_VALUE);

    // Five holders fall behind, one holds garbage.
    let write = |i: usize, value: &str| {
        let record = Record::new(key.clone(), value);
        sim.node(i)
            .unwrap()
            .store()
            .put_value(&record, sim.now())
            .unwrap();
    };
    for &(i, _) in &stored[..5] {
        write(i, "3");
    }
    write(stored[5].0, "x");

    // A quorum of 16 cannot be met by the 14 up-to-date holders: the walk asks all 20, and the
    // five that fell behind get the best record back. The garbage is never sent: its server
    // validates a record before it answers with it, and answers none.
    let c = sim.client(200).unwrap();
    let got = get_value(&c, &key, 16, &SeqValidator, sim.now())
        .await
        .unwrap();
    assert_eq!(got.value.record.as_ref().unwrap().value, b"7");
    assert_eq!(got.value.agreeing, 14);
    assert!(!got.value.quorum_reached);
    assert_eq!(got.value.corrected.len(), 5);
    assert_eq!(got.stats.requests_of(MessageType::PutValue), 5);
    let now = holders(&sim, &key);
    assert!(
        now.iter()
            .all(|(i, r)| r.value == b"7" || (*i == stored[5].0 && r.value == b"x"))
    );

    // Now 20 agree: quorum reached, nothing to correct, and the walk stops early.
    let got = get_value(&c, &key, 3, &SeqValidator, sim.now())
        .await
        .unwrap();
    assert!(got.value.quorum_reached);
    assert!(got.value.agreeing >= 3);
    assert!(got.value.corrected.is_empty());
    assert_eq!(got.stats.requests_of(MessageType::PutValue), 0);
    assert!(got.stats.requests_of(MessageType::GetValue) < K_VALUE as u64);

    // Nothing stored: no record, no error.
    let none = get_value(&c, b"/sim/none", 1, &SeqValidator, sim.now())
        .await
        .unwrap();
    assert_eq!(none.value.record, None);
    assert!(!none.value.quorum_reached);
}

#[tokio::test(start_paused = true)]
async fn complete_table_answers_without_a_walk() {
    let sim = build(network(300, 13)).await;
    let me = 5;
    let c = client_with(&sim, me, full_table(&sim, me));
    assert!(c.table().is_complete());
    let key = b"content";
    let closest = find_closest_peers(&c, key, K_VALUE).await.unwrap();
    assert_eq!(closest.stats.total_requests(), 0);
    assert_eq!(closest.stats.rounds, 0);
    let got: Vec<PeerId> = closest.value.iter().map(|p| p.peer_id).collect();
    assert_eq!(got, true_closest(&sim, &Key::hash(key), K_VALUE, me));
    assert_eq!(requests_of(&sim, MessageType::FindNode), 0);

    // Put and provide send their requests straight to the 20 closest.
    let put = put_value(&c, Record::new(b"/sim/k".to_vec(), "1"))
        .await
        .unwrap();
    assert_eq!(put.stats.requests_of(MessageType::FindNode), 0);
    assert_eq!(put.stats.total_requests(), K_VALUE as u64);
    assert_eq!(put.stats.rounds, 1);
    let prov = provide(&c, key, info(&sim, me)).await.unwrap();
    assert_eq!(prov.stats.total_requests(), K_VALUE as u64);
    let got = get_value(&c, b"/sim/k", 2, &SeqValidator, sim.now())
        .await
        .unwrap();
    assert!(got.value.quorum_reached);
    assert_eq!(got.stats.requests_of(MessageType::FindNode), 0);
    let providers: Vec<PeerInfo> = find_providers(&c, key, 0).collect().await;
    assert_eq!(providers, vec![info(&sim, me)]);
    let target = info(&sim, 123).peer_id;
    let found = find_peer(&c, target).await.unwrap();
    assert_eq!(found.value.map(|p| p.peer_id), Some(target));
    assert_eq!(found.stats.total_requests(), 0);
    assert_eq!(requests_of(&sim, MessageType::FindNode), 0);
}

#[tokio::test(start_paused = true)]
async fn find_peer_stops_when_found() {
    let sim = build(network(400, 14)).await;
    // Through an `Arc`: `Dht` is implemented for it.
    let c = Arc::new(sim.client(0).unwrap());
    for target in [17, 222, 399] {
        let id = info(&sim, target).peer_id;
        let found = find_peer(&c, id).await.unwrap();
        assert_eq!(found.value.map(|p| p.peer_id), Some(id));
        let full = find_closest_peers(&c, &id.to_bytes(), K_VALUE)
            .await
            .unwrap();
        assert!(
            found.stats.requests_of(MessageType::FindNode)
                < full.stats.requests_of(MessageType::FindNode),
            "{:?} vs {:?}",
            found.stats,
            full.stats
        );
    }
    let stranger = dht_test_kit::peer_id(u64::MAX);
    assert_eq!(sim.index_of(&stranger), None);
    assert_eq!(find_peer(&c, stranger).await.unwrap().value, None);
}

#[tokio::test(start_paused = true)]
async fn crawl_finds_every_server() {
    let crawling = config().with_crawl(CrawlConfig::default().with_parallelism(16));
    let sim = build(network(400, 15).with_silent(0.05).with_client(crawling)).await;
    let me = honest(&sim);
    let c = sim.client(me).unwrap();
    let out = c.crawl().await;
    let mut found: Vec<PeerId> = out.value.iter().map(|p| p.peer_id).collect();
    found.sort();
    let mut expected: Vec<PeerId> = (0..sim.len())
        .filter(|&i| i != me && sim.node(i).unwrap().behaviour() == Behaviour::Honest)
        .map(|i| info(&sim, i).peer_id)
        .collect();
    expected.sort();
    assert_eq!(found, expected);
    let per_server = out.stats.total_requests() as f64 / found.len() as f64;
    eprintln!(
        "crawl of 400: {} requests, {per_server:.1} per server, {} rounds, {:?}",
        out.stats.total_requests(),
        out.stats.rounds,
        out.stats.elapsed
    );
    assert!(per_server < 10.0);
    assert_eq!(out.stats.peers_contacted(), 399);

    // The result fills a full routing table, which then answers without a walk.
    let full = FullRoutingTable::new(
        info(&sim, me).key(),
        Default::default(),
        ManualClock::new(10),
    );
    full.replace_all(out.value, 10);
    assert!(full.is_complete());
    let key = Key::hash(b"x");
    let got: Vec<PeerId> = full
        .closest_peers(&key, K_VALUE)
        .iter()
        .map(|p| p.peer_id)
        .collect();
    assert_eq!(got, true_closest(&sim, &key, K_VALUE, me));

    // The free function, from one seed, bounded.
    let seeds = vec![info(&sim, (me + 1) % sim.len())];
    let out = crawl(
        &sim.network(me),
        seeds,
        None,
        &CrawlConfig::default().with_max_peers(50),
        Duration::from_secs(1),
    )
    .await;
    assert!(out.value.len() <= 50);
    assert!(out.stats.peers_contacted() <= 50);
}

#[tokio::test(start_paused = true)]
async fn lookups_feed_the_routing_table() {
    let sim = build(network(300, 16).with_silent(0.25)).await;
    let me = honest(&sim);
    let table = sim.node(me).unwrap().table().clone();
    let silent_in_table = || {
        (0..sim.len())
            .filter(|&i| {
                let node = sim.node(i).unwrap();
                node.behaviour() == Behaviour::Silent && table.contains(&node.info().peer_id)
            })
            .count()
    };
    let before = silent_in_table();
    assert!(before > 0);
    // Told not to, the client leaves its table alone.
    let c = DhtClient::new(
        info(&sim, me),
        table.clone(),
        sim.network(me),
        config().with_update_table(false),
    );
    for i in 0..10u8 {
        find_closest_peers(&c, &[i], K_VALUE).await.unwrap();
    }
    assert_eq!(silent_in_table(), before);

    // A timeout only counts: a silent peer leaves after three in a row.
    let c = sim.client(me).unwrap();
    for i in 0..30u8 {
        find_closest_peers(&c, &[i], K_VALUE).await.unwrap();
    }
    assert!(silent_in_table() < before);
}

#[tokio::test(start_paused = true)]
async fn timeouts_on_virtual_time() {
    // Half the nodes answer after 5 s; requests time out after 1 s.
    let sim = build(
        network(200, 17)
            .with_slow(0.5)
            .with_slow_delay(Duration::from_secs(5)),
    )
    .await;
    let me = honest(&sim);
    let table = sim.node(me).unwrap().table().clone();
    let cfg =
        config().with_driver(DriverConfig::default().with_request_timeout(Duration::from_secs(1)));
    let c = DhtClient::new(info(&sim, me), table.clone(), sim.network(me), cfg);
    let started = tokio::time::Instant::now();
    let out = find_closest_peers(&c, b"k", K_VALUE).await.unwrap();
    assert!(out.stats.timeouts > 0);
    assert_eq!(out.stats.timeouts, out.stats.failures);
    assert!(out.value.iter().all(|p| {
        let i = sim.index_of(&p.peer_id).unwrap();
        sim.node(i).unwrap().behaviour() == Behaviour::Honest
    }));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.stats.elapsed, started.elapsed());

    // A lookup timeout stops the walk with what it has.
    let cfg = config().with_driver(
        DriverConfig::default()
            .with_request_timeout(Duration::from_secs(10))
            .with_query_timeout(Some(Duration::from_millis(150))),
    );
    let c = DhtClient::new(info(&sim, me), table, sim.network(me), cfg);
    let started = tokio::time::Instant::now();
    let query = c.query(b"k", K_VALUE, Vec::new());
    let out: Outcome<_> = QueryDriver::new(
        c.network(),
        query,
        Request::FindNode { key: b"k".to_vec() },
        c.client_config().driver,
    )
    .run()
    .await;
    assert_eq!(started.elapsed(), Duration::from_millis(150));
    assert!(!out.value.complete);
}

#[tokio::test(start_paused = true)]
async fn no_peers_is_an_error() {
    let sim = build(network(10, 18)).await;
    let empty = KBucketTable::new(info(&sim, 0).key(), Default::default(), ManualClock::new(0));
    let c = client_with(&sim, 0, empty);
    assert_eq!(
        find_closest_peers(&c, b"k", 20).await.unwrap_err(),
        Error::NoPeers
    );
    assert_eq!(
        put_value(&c, Record::new("k", "1")).await.unwrap_err(),
        Error::NoPeers
    );
    assert!(find_providers(&c, b"k", 0).next().await.is_none());
}

/// A `Dht` with only the required methods: every operation works through the generic
/// algorithms.
struct Minimal {
    network: NodeNetwork,
    table: Arc<KBucketTable>,
    me: PeerId,
}

impl Minimal {
    fn of(sim: &Sim, i: usize) -> Minimal {
        Minimal {
            network: sim.network(i),
            table: sim.node(i).unwrap().table().clone(),
            me: info(sim, i).peer_id,
        }
    }
}

impl Dht for Minimal {
    type Network = NodeNetwork;

    fn network(&self) -> &NodeNetwork {
        &self.network
    }

    async fn find_closest_peers(
        &self,
        key: &[u8],
        n: usize,
    ) -> Result<Outcome<Vec<PeerInfo>>, Error> {
        let target = Key::hash(key);
        let seeds = self.table.closest_peers(&target, K_VALUE);
        let config = QueryConfig::default()
            .with_k(n)
            .with_local_peer(Some(self.me));
        let query = ClosestPeersQuery::new(target, seeds, config);
        let out = run_query(
            &self.network,
            query,
            Request::FindNode { key: key.to_vec() },
            DriverConfig::default(),
        )
        .await;
        Ok(out.map(|r| r.closest))
    }
}

#[tokio::test(start_paused = true)]
async fn a_minimal_dht_gets_every_operation() {
    let sim = build(network(200, 19)).await;
    let dht = Minimal::of(&sim, 9);
    let key = b"/sim/min".to_vec();
    let put = put_value(&dht, Record::new(key.clone(), "4"))
        .await
        .unwrap();
    assert_eq!(put.value.succeeded.len(), K_VALUE);
    assert!(put.stats.requests_of(MessageType::FindNode) > 0);
    let got = get_value(&dht, &key, 5, &SeqValidator, sim.now())
        .await
        .unwrap();
    assert_eq!(got.value.record.unwrap().value, b"4");
    provide(&dht, &key, info(&sim, 9)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let found: Vec<PeerInfo> = find_providers(&dht, &key, 1).collect().await;
    assert_eq!(found, vec![info(&sim, 9)]);
    let target = info(&sim, 100).peer_id;
    assert_eq!(
        find_peer(&dht, target)
            .await
            .unwrap()
            .value
            .map(|p| p.peer_id),
        Some(target)
    );
}

/// The generic provide sends a batch of the one key to the closest peers that speak the
/// batched provide protocol, and ADD_PROVIDER to the rest of the k closest (also to those
/// that list the protocol but refuse it); the record sits on all of the k closest.
#[tokio::test(start_paused = true)]
async fn provide_batches_to_capable_closest_and_add_provider_to_the_rest() {
    // Three nodes in five list the protocol; a quarter of those refuse it.
    let sim = build(
        network(300, 23)
            .with_provide_batch_share(0.6)
            .with_provide_batch_refuse_share(0.25),
    )
    .await;
    let key = b"a batched key".to_vec();
    let me = 7;
    let dht = Minimal::of(&sim, me);
    let out = provide(&dht, &key, info(&sim, me)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let closest = true_closest(&sim, &Key::hash(&key), K_VALUE, me);
    let node = |p: &PeerId| sim.node(sim.index_of(p).unwrap()).unwrap();
    let capable = closest
        .iter()
        .filter(|p| node(p).takes_provide_batch())
        .count() as u64;
    // Those that list the protocol, refusing or not: each is sent a batch first.
    let listing = closest
        .iter()
        .filter(|p| node(p).speaks_provide_batch())
        .count() as u64;
    let batches = sim.counts().batches_received();
    let add_provider = out.stats.requests_of(MessageType::AddProvider);
    eprintln!(
        "{capable} of the 20 closest take batches: {batches} batches, {add_provider} ADD_PROVIDER"
    );
    assert!(capable > 0 && capable < K_VALUE as u64);
    assert!(
        listing > capable,
        "no peer among the closest lists and refuses"
    );
    assert_eq!(out.value.succeeded.len(), K_VALUE);
    assert!(out.value.failed.is_empty());
    assert_eq!(batches, capable);
    assert_eq!(add_provider, K_VALUE as u64 - capable);
    assert_eq!(out.value.batched.len() as u64, capable);
    // A refused stream is a batch sent all the same.
    assert_eq!(out.stats.batches, listing);
    for p in &closest {
        assert!(holds_provider(
            &sim,
            sim.index_of(p).unwrap(),
            &key,
            info(&sim, me).peer_id
        ));
    }
}

/// find_feature_peers widens its walk until n of the peers found have the feature: they are
/// the n closest with it; in a network without the feature the walk stops at its bound.
#[tokio::test(start_paused = true)]
async fn find_feature_peers_walks_until_enough_have_the_feature() {
    // One node in four has the feature.
    let sim = build(network(600, 29).with_provide_batch_share(0.25)).await;
    let key = b"a key for features".to_vec();
    let target = Key::hash(&key);
    let me = 3;
    let lists = |p: &PeerId| {
        let i = sim.index_of(p).unwrap();
        sim.node(i).unwrap().speaks_provide_batch()
    };
    let c = sim.client(me).unwrap();
    let out = find_feature_peers(&c, &key, Feature::ProvideBatch, 10)
        .await
        .unwrap();
    let found: Vec<PeerId> = out.value.iter().map(|p| p.peer_id).collect();
    // The ground truth: the 10 closest of the nodes with the feature.
    let truth: Vec<PeerId> = true_closest(&sim, &target, 600, me)
        .into_iter()
        .filter(|p| lists(p))
        .take(10)
        .collect();
    let common = found.iter().filter(|p| truth.contains(p)).count();
    eprintln!(
        "feature on 1 in 4: found {} ({common} of the true 10), {} FIND_NODE",
        found.len(),
        out.stats.requests_of(MessageType::FindNode)
    );
    assert_eq!(found.len(), 10);
    assert!(found.iter().all(lists));
    assert!(common >= 9, "{common} of 10");
    // Closest first.
    let d: Vec<_> = out
        .value
        .iter()
        .map(|p| target.distance(&p.key()))
        .collect();
    assert!(d.windows(2).all(|w| w[0] <= w[1]));
    // A walk for one is a walk for k: the first width is k.
    let one = find_feature_peers(&c, &key, Feature::ProvideBatch, 1)
        .await
        .unwrap();
    assert_eq!(one.value.len(), 1);
    assert_eq!(one.value[0].peer_id, truth[0]);

    // A complete table answers without a walk.
    let full = client_with(&sim, me, full_table(&sim, me));
    let out = find_feature_peers(&full, &key, Feature::ProvideBatch, 10)
        .await
        .unwrap();
    assert_eq!(out.stats.total_requests(), 0);
    let found: Vec<PeerId> = out.value.iter().map(|p| p.peer_id).collect();
    assert_eq!(found, truth);

    // The same nodes, none with the feature: nothing found, and the walk stopped at its
    // bound.
    let without = build(network(600, 29)).await;
    assert_eq!(info(&without, me), info(&sim, me));
    let c = without.client(me).unwrap();
    let none = find_feature_peers(&c, &key, Feature::ProvideBatch, 5)
        .await
        .unwrap();
    assert!(none.value.is_empty());
    let find_node = none.stats.requests_of(MessageType::FindNode);
    eprintln!("no feature: {find_node} FIND_NODE for walks up to {MAX_FEATURE_WIDTH}");
    assert!(find_node > 0 && find_node < 600, "{find_node}");
}
