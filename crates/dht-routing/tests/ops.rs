//! The operations over the test network, on tokio's paused clock.
#![allow(clippy::unwrap_used)]

mod common;

use std::{sync::Arc, time::Duration};

use common::{Behaviour, Handle, TestNet, client};
use dht_proto::{K_VALUE, Key, MessageType, PeerId, PeerInfo, Record, Request};
use dht_routing::{
    ClientConfig, ClosestPeersQuery, CrawlConfig, Dht, DhtClient, DriverConfig, Error, Feature,
    MAX_FEATURE_WIDTH, Outcome, QueryConfig, QueryDriver, crawl, find_closest_peers,
    find_feature_peers, find_peer, find_providers, get_value, provide, put_value, run_query,
};
use dht_routing_table::{FullRoutingTable, KBucketTable, ManualClock, RoutingTable};
use dht_test_kit::{EPOCH, SeqValidator};
use futures::StreamExt;

fn config() -> ClientConfig {
    ClientConfig::default()
        .with_driver(DriverConfig::default().with_request_timeout(Duration::from_secs(2)))
        .with_query(QueryConfig::default().with_stall_timeout(Some(Duration::from_millis(500))))
}

/// The nodes holding `key`'s value, by index.
fn holders(net: &TestNet, key: &[u8]) -> Vec<(usize, Record)> {
    net.nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.values.lock().get(key).map(|r| (i, r.clone())))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn provide_then_find_providers_from_another_node() {
    let net = Arc::new(TestNet::new(300, 11));
    let key = b"some multihash".to_vec();
    for provider in [3, 150, 299] {
        let c = client(&net, provider, config());
        let out = provide(&c, &key, net.nodes[provider].info.clone())
            .await
            .unwrap();
        assert_eq!(out.value.succeeded.len(), K_VALUE);
        assert!(out.value.failed.is_empty());
        assert_eq!(
            out.stats.requests_of(MessageType::AddProvider),
            K_VALUE as u64
        );
    }
    // Each provider's record sits on the true 20 closest (itself aside).
    let target = Key::hash(&key);
    for provider in [3, 150, 299] {
        let id = net.nodes[provider].info.peer_id;
        for p in net.true_closest(&target, K_VALUE, provider) {
            let held = net.nodes[net.index[&p]].providers.lock()[&key].clone();
            assert!(held.iter().any(|h| h.peer_id == id));
        }
    }

    // All of them, from elsewhere.
    let c = client(&net, 77, config());
    let mut stream = find_providers(&c, &key, 0);
    let mut found = Vec::new();
    while let Some(p) = stream.next().await {
        found.push(p.peer_id);
    }
    found.sort();
    let mut expected: Vec<PeerId> = [3, 150, 299]
        .iter()
        .map(|&i| net.nodes[i].info.peer_id)
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
    let net = Arc::new(TestNet::new(300, 12));
    let key = b"/sim/name".to_vec();
    let put = put_value(&client(&net, 1, config()), Record::new(key.clone(), "7"))
        .await
        .unwrap();
    assert_eq!(put.value.succeeded.len(), K_VALUE);
    assert_eq!(put.stats.requests_of(MessageType::PutValue), K_VALUE as u64);
    let stored = holders(&net, &key);
    assert_eq!(stored.len(), K_VALUE);

    // Five holders fall behind, one holds garbage.
    for &(i, _) in &stored[..5] {
        net.nodes[i]
            .values
            .lock()
            .insert(key.clone(), Record::new(key.clone(), "3"));
    }
    net.nodes[stored[5].0]
        .values
        .lock()
        .insert(key.clone(), Record::new(key.clone(), "x"));

    // A quorum of 16 cannot be met by the 14 up-to-date holders: the walk asks all 20, and the
    // six others get the best record back.
    let c = client(&net, 200, config());
    let got = get_value(&c, &key, 16, &SeqValidator, EPOCH).await.unwrap();
    assert_eq!(got.value.record.as_ref().unwrap().value, b"7");
    assert_eq!(got.value.agreeing, 14);
    assert!(!got.value.quorum_reached);
    assert_eq!(got.value.corrected.len(), 6);
    assert_eq!(got.stats.requests_of(MessageType::PutValue), 6);
    assert!(holders(&net, &key).iter().all(|(_, r)| r.value == b"7"));

    // Now 20 agree: quorum reached, nothing to correct, and the walk stops early.
    let got = get_value(&c, &key, 3, &SeqValidator, EPOCH).await.unwrap();
    assert!(got.value.quorum_reached);
    assert!(got.value.agreeing >= 3);
    assert!(got.value.corrected.is_empty());
    assert_eq!(got.stats.requests_of(MessageType::PutValue), 0);
    assert!(got.stats.requests_of(MessageType::GetValue) < K_VALUE as u64);

    // Nothing stored: no record, no error.
    let none = get_value(&c, b"/sim/none", 1, &SeqValidator, EPOCH)
        .await
        .unwrap();
    assert_eq!(none.value.record, None);
    assert!(!none.value.quorum_reached);
}

#[tokio::test(start_paused = true)]
async fn complete_table_answers_without_a_walk() {
    let net = Arc::new(TestNet::new(300, 13));
    let me = 5;
    let c = DhtClient::new(
        net.nodes[me].info.clone(),
        net.full_table(me),
        Handle {
            net: net.clone(),
            from: me,
        },
        config(),
    );
    assert!(c.table().is_complete());
    let key = b"content";
    let closest = find_closest_peers(&c, key, K_VALUE).await.unwrap();
    assert_eq!(closest.stats.total_requests(), 0);
    assert_eq!(closest.stats.rounds, 0);
    let got: Vec<PeerId> = closest.value.iter().map(|p| p.peer_id).collect();
    assert_eq!(got, net.true_closest(&Key::hash(key), K_VALUE, me));
    assert_eq!(net.requests_of(MessageType::FindNode), 0);

    // Put and provide send their requests straight to the 20 closest.
    let put = put_value(&c, Record::new(b"/sim/k".to_vec(), "1"))
        .await
        .unwrap();
    assert_eq!(put.stats.requests_of(MessageType::FindNode), 0);
    assert_eq!(put.stats.total_requests(), K_VALUE as u64);
    assert_eq!(put.stats.rounds, 1);
    let prov = provide(&c, key, net.nodes[me].info.clone()).await.unwrap();
    assert_eq!(prov.stats.total_requests(), K_VALUE as u64);
    let got = get_value(&c, b"/sim/k", 2, &SeqValidator, EPOCH)
        .await
        .unwrap();
    assert!(got.value.quorum_reached);
    assert_eq!(got.stats.requests_of(MessageType::FindNode), 0);
    let providers: Vec<PeerInfo> = find_providers(&c, key, 0).collect().await;
    assert_eq!(providers, vec![net.nodes[me].info.clone()]);
    let target = net.nodes[123].info.peer_id;
    let found = find_peer(&c, target).await.unwrap();
    assert_eq!(found.value.map(|p| p.peer_id), Some(target));
    assert_eq!(found.stats.total_requests(), 0);
    assert_eq!(net.requests_of(MessageType::FindNode), 0);
}

#[tokio::test(start_paused = true)]
async fn find_peer_stops_when_found() {
    let net = Arc::new(TestNet::new(400, 14));
    // Through an `Arc`: `Dht` is implemented for it.
    let c = Arc::new(client(&net, 0, config()));
    for target in [17, 222, 399] {
        let id = net.nodes[target].info.peer_id;
        let found = find_peer(&c, id).await.unwrap();
        assert_eq!(found.value, Some(net.nodes[target].info.clone()));
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
    let stranger = common::peer_id(&mut rand::rng());
    assert_eq!(find_peer(&c, stranger).await.unwrap().value, None);
}

#[tokio::test(start_paused = true)]
async fn crawl_finds_every_server() {
    let net = Arc::new(TestNet::with_behaviours(400, 15, |i| {
        if i % 20 == 7 {
            Behaviour::Silent
        } else {
            Behaviour::Honest
        }
    }));
    let me = 0;
    let c = client(
        &net,
        me,
        config().with_crawl(CrawlConfig::default().with_parallelism(16)),
    );
    let out = c.crawl().await;
    let mut found: Vec<PeerId> = out.value.iter().map(|p| p.peer_id).collect();
    found.sort();
    let mut expected: Vec<PeerId> = net
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| *i != me && n.behaviour == Behaviour::Honest)
        .map(|(_, n)| n.info.peer_id)
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
    let full = FullRoutingTable::new(net.nodes[me].key, Default::default(), ManualClock::new(10));
    full.replace_all(out.value, 10);
    assert!(full.is_complete());
    let key = Key::hash(b"x");
    let got: Vec<PeerId> = full
        .closest_peers(&key, K_VALUE)
        .iter()
        .map(|p| p.peer_id)
        .collect();
    assert_eq!(got, net.true_closest(&key, K_VALUE, me));

    // The free function, from one seed, bounded.
    let handle = Handle {
        net: net.clone(),
        from: me,
    };
    let seeds = vec![net.nodes[1].info.clone()];
    let out = crawl(
        &handle,
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
    let net = Arc::new(TestNet::with_behaviours(300, 16, |i| {
        if i % 4 == 1 {
            Behaviour::Silent
        } else {
            Behaviour::Honest
        }
    }));
    let me = 0;
    let silent_in_table = |t: &KBucketTable| {
        net.nodes
            .iter()
            .filter(|n| n.behaviour == Behaviour::Silent && t.contains(&n.info.peer_id))
            .count()
    };
    let c = client(&net, me, config());
    let before = silent_in_table(c.table());
    // A timeout only counts: a silent peer leaves after three in a row.
    for i in 0..30u8 {
        find_closest_peers(&c, &[i], K_VALUE).await.unwrap();
    }
    assert!(silent_in_table(c.table()) < before);

    let c = client(&net, me, config().with_update_table(false));
    for i in 0..10u8 {
        find_closest_peers(&c, &[i], K_VALUE).await.unwrap();
    }
    assert_eq!(silent_in_table(c.table()), before);
}

#[tokio::test(start_paused = true)]
async fn timeouts_on_virtual_time() {
    // Half the nodes answer after 5 s; requests time out after 1 s.
    let net = Arc::new(TestNet::with_behaviours(200, 17, |i| {
        if i % 2 == 1 {
            Behaviour::Slow(Duration::from_secs(5))
        } else {
            Behaviour::Honest
        }
    }));
    let cfg =
        config().with_driver(DriverConfig::default().with_request_timeout(Duration::from_secs(1)));
    let c = client(&net, 0, cfg);
    let started = tokio::time::Instant::now();
    let out = find_closest_peers(&c, b"k", K_VALUE).await.unwrap();
    assert!(out.stats.timeouts > 0);
    assert_eq!(out.stats.timeouts, out.stats.failures);
    assert!(
        out.value
            .iter()
            .all(|p| net.nodes[net.index[&p.peer_id]].behaviour == Behaviour::Honest)
    );
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
    let c = client(&net, 0, cfg);
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
    let net = Arc::new(TestNet::new(10, 18));
    let empty = KBucketTable::new(net.nodes[0].key, Default::default(), ManualClock::new(0));
    let c = DhtClient::new(
        net.nodes[0].info.clone(),
        empty,
        Handle {
            net: net.clone(),
            from: 0,
        },
        config(),
    );
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
    net: Handle,
    me: usize,
}

impl Dht for Minimal {
    type Network = Handle;

    fn network(&self) -> &Handle {
        &self.net
    }

    async fn find_closest_peers(
        &self,
        key: &[u8],
        n: usize,
    ) -> Result<Outcome<Vec<PeerInfo>>, Error> {
        let net = &self.net.net;
        let target = Key::hash(key);
        let seeds = net.closest_known(self.me, &target, K_VALUE);
        let config = QueryConfig::default()
            .with_k(n)
            .with_local_peer(Some(net.nodes[self.me].info.peer_id));
        let query = ClosestPeersQuery::new(target, seeds, config);
        let out = run_query(
            &self.net,
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
    let net = Arc::new(TestNet::new(200, 19));
    let dht = Minimal {
        net: Handle {
            net: net.clone(),
            from: 9,
        },
        me: 9,
    };
    let key = b"/sim/min".to_vec();
    let put = put_value(&dht, Record::new(key.clone(), "4"))
        .await
        .unwrap();
    assert_eq!(put.value.succeeded.len(), K_VALUE);
    assert!(put.stats.requests_of(MessageType::FindNode) > 0);
    let got = get_value(&dht, &key, 5, &SeqValidator, EPOCH)
        .await
        .unwrap();
    assert_eq!(got.value.record.unwrap().value, b"4");
    provide(&dht, &key, net.nodes[9].info.clone())
        .await
        .unwrap();
    let found: Vec<PeerInfo> = find_providers(&dht, &key, 1).collect().await;
    assert_eq!(found, vec![net.nodes[9].info.clone()]);
    let target = net.nodes[100].info.peer_id;
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
/// batched provide protocol, and ADD_PROVIDER to the rest of the k closest (also to one that
/// lists the protocol but refuses it); the record sits on all of the k closest.
#[tokio::test(start_paused = true)]
async fn provide_batches_to_capable_closest_and_add_provider_to_the_rest() {
    let net = Arc::new(TestNet::new(300, 23));
    // Every other node takes batches; every fifth of the others lists it and refuses.
    for i in 0..300 {
        if i % 2 == 0 {
            net.batch.lock().insert(i, true);
        } else if i % 5 == 0 {
            net.batch.lock().insert(i, false);
        }
    }
    let key = b"a batched key".to_vec();
    let me = 7;
    let dht = Minimal {
        net: Handle {
            net: net.clone(),
            from: me,
        },
        me,
    };
    let out = provide(&dht, &key, net.nodes[me].info.clone())
        .await
        .unwrap();
    let closest = net.true_closest(&Key::hash(&key), K_VALUE, me);
    let capable = closest
        .iter()
        .filter(|p| net.batch.lock().get(&net.index[*p]) == Some(&true))
        .count() as u64;
    // Those that list the protocol, refusing or not: each is sent a batch first.
    let listing = closest
        .iter()
        .filter(|p| net.batch.lock().contains_key(&net.index[*p]))
        .count() as u64;
    let batches = net.batches.load(std::sync::atomic::Ordering::Relaxed);
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
    for p in closest {
        let held = net.nodes[net.index[&p]].providers.lock()[&key].clone();
        assert!(held.iter().any(|h| h.peer_id == net.nodes[me].info.peer_id));
    }
}

/// find_feature_peers widens its walk until n of the peers found have the feature: they are
/// the n closest with it; in a network without the feature the walk stops at its bound.
#[tokio::test(start_paused = true)]
async fn find_feature_peers_walks_until_enough_have_the_feature() {
    let net = Arc::new(TestNet::new(600, 29));
    // One node in four has the feature.
    for i in (0..600).step_by(4) {
        net.batch.lock().insert(i, true);
    }
    let key = b"a key for features".to_vec();
    let target = Key::hash(&key);
    let me = 3;
    let c = client(&net, me, config());
    let out = find_feature_peers(&c, &key, Feature::ProvideBatch, 10)
        .await
        .unwrap();
    let found: Vec<PeerId> = out.value.iter().map(|p| p.peer_id).collect();
    // The ground truth: the 10 closest of the nodes with the feature.
    let truth: Vec<PeerId> = net
        .true_closest(&target, 600, me)
        .into_iter()
        .filter(|p| net.lists_batch(net.index[p]))
        .take(10)
        .collect();
    let common = found.iter().filter(|p| truth.contains(p)).count();
    eprintln!(
        "feature on 1 in 4: found {} ({common} of the true 10), {} FIND_NODE",
        found.len(),
        out.stats.requests_of(MessageType::FindNode)
    );
    assert_eq!(found.len(), 10);
    assert!(found.iter().all(|p| net.lists_batch(net.index[p])));
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

    // Nobody has it: nothing found, and the walk stopped at its bound.
    net.batch.lock().clear();
    let none = find_feature_peers(&c, &key, Feature::ProvideBatch, 5)
        .await
        .unwrap();
    assert!(none.value.is_empty());
    let find_node = none.stats.requests_of(MessageType::FindNode);
    eprintln!("no feature: {find_node} FIND_NODE for walks up to {MAX_FEATURE_WIDTH}");
    assert!(find_node > 0 && find_node < 600, "{find_node}");

    // A complete table answers without a walk.
    let full = DhtClient::new(
        net.nodes[me].info.clone(),
        net.full_table(me),
        Handle {
            net: net.clone(),
            from: me,
        },
        config(),
    );
    for i in (0..600).step_by(4) {
        net.batch.lock().insert(i, true);
    }
    let out = find_feature_peers(&full, &key, Feature::ProvideBatch, 10)
        .await
        .unwrap();
    assert_eq!(out.stats.total_requests(), 0);
    let found: Vec<PeerId> = out.value.iter().map(|p| p.peer_id).collect();
    assert_eq!(found, truth);
}
