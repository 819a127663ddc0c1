//! Providers and value records across a simulated network.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dht_proto::{K_VALUE, Key};
use dht_provider_store::{ProviderStore, ValueStore};
use dht_routing::{find_providers, get_value, provide, put_value};
use dht_sim::{SeqValidator, Sim, SimConfig, TableBuild};
use futures::StreamExt;

async fn sim(seed: u64) -> Sim {
    let config = SimConfig::default()
        .with_nodes(500)
        .with_seed(seed)
        .with_build(TableBuild::Realistic);
    Sim::build(config).await.unwrap()
}

/// The nodes whose store holds a provider record for `key`.
fn holders(sim: &Sim, key: &[u8]) -> Vec<usize> {
    sim.live_nodes()
        .into_iter()
        .filter(|&i| {
            let node = sim.node(i).unwrap();
            !node
                .store()
                .providers(key, 20, sim.now())
                .unwrap()
                .is_empty()
        })
        .collect()
}

#[test]
fn find_providers_of_a_key_provided_by_another_node() {
    dht_sim::runtime().unwrap().block_on(async {
        let sim = sim(11).await;
        for _ in 0..10 {
            let provider = sim.random_live_node(|_| true).unwrap();
            let finder = sim.random_live_node(|n| n.index() != provider).unwrap();
            let key = sim.random_key();

            let client = sim.client(provider).unwrap();
            let me = sim.node(provider).unwrap().info().clone();
            let delivery = provide(&client, &key, me.clone()).await.unwrap();
            assert_eq!(delivery.value.succeeded.len(), K_VALUE);
            // ADD_PROVIDER resolves once written; give the messages time to arrive.
            tokio::time::sleep(Duration::from_secs(1)).await;

            // The records sit on the true 20 closest nodes (the provider excepted: a lookup
            // never returns the node that looks).
            let mut truth =
                sim.true_closest_by(&Key::hash(&key), K_VALUE, |n| n.index() != provider);
            truth.sort_unstable();
            assert_eq!(holders(&sim, &key), truth);

            let client = sim.client(finder).unwrap();
            let mut stream = find_providers(&client, &key, 1);
            let found: Vec<_> = stream.by_ref().collect().await;
            assert_eq!(found, vec![me], "finder {finder}, provider {provider}");
            assert!(stream.stats().total_requests() > 0);
        }
    });
}

#[test]
fn put_and_get_value_with_quorum_and_correction() {
    dht_sim::runtime().unwrap().block_on(async {
        let sim = sim(12).await;
        let key = b"/sim/some-record".to_vec();
        let (writer, reader) = (3, 400);
        let writer_client = sim.client(writer).unwrap();
        let reader_client = sim.client(reader).unwrap();

        // Put, then get with a quorum.
        let put = put_value(&writer_client, SeqValidator::record(key.clone(), 1))
            .await
            .unwrap();
        assert_eq!(put.value.succeeded.len(), K_VALUE);
        assert!(put.value.failed.is_empty());
        let got = get_value(&reader_client, &key, 5, &SeqValidator, sim.now())
            .await
            .unwrap();
        assert_eq!(got.value.record.as_ref().unwrap().value, b"1");
        assert!(got.value.quorum_reached);
        assert!(got.value.corrected.is_empty());

        // A newer version, then three of its holders fall back to the old one.
        let put = put_value(&writer_client, SeqValidator::record(key.clone(), 2))
            .await
            .unwrap();
        assert_eq!(put.value.succeeded.len(), K_VALUE);
        let holders: Vec<usize> = put
            .value
            .succeeded
            .iter()
            .map(|p| sim.index_of(p).unwrap())
            .collect();
        let outdated: Vec<usize> = holders
            .iter()
            .copied()
            .filter(|&i| i != reader)
            .take(3)
            .collect();
        for &i in &outdated {
            let store = sim.node(i).unwrap().store().clone();
            store
                .put_value(&SeqValidator::record(key.clone(), 1), sim.now())
                .unwrap();
        }

        // A quorum of 20 cannot be reached (17 agree): the walk asks all 20 holders, finds
        // the newest record, and corrects the three.
        let got = get_value(&reader_client, &key, K_VALUE, &SeqValidator, sim.now())
            .await
            .unwrap();
        assert_eq!(got.value.record.as_ref().unwrap().value, b"2");
        assert!(!got.value.quorum_reached);
        let mut corrected: Vec<usize> = got
            .value
            .corrected
            .iter()
            .map(|p| sim.index_of(p).unwrap())
            .collect();
        corrected.sort_unstable();
        let mut expected = outdated.clone();
        expected.sort_unstable();
        assert_eq!(corrected, expected);
        for &i in &outdated {
            let (record, _) = sim
                .node(i)
                .unwrap()
                .store()
                .get_value(&key, sim.now())
                .unwrap()
                .unwrap();
            assert_eq!(record.value, b"2", "node {i} corrected");
        }

        // Now all 20 agree.
        let got = get_value(&reader_client, &key, K_VALUE, &SeqValidator, sim.now())
            .await
            .unwrap();
        assert!(got.value.quorum_reached);
        assert_eq!(got.value.agreeing, K_VALUE);
        assert!(got.value.corrected.is_empty());
    });
}
