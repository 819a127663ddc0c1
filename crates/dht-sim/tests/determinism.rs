//! The same seed gives the same run: the same counters, node by node, twice in a row.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dht_proto::K_VALUE;
use dht_routing::{get_value, provide, put_value};
use dht_sim::{Churn, LookupSample, NetStats, RpcCounts, SeqValidator, Sim, SimConfig, TableBuild};

#[derive(Debug, PartialEq)]
struct Run {
    samples: Vec<LookupSample>,
    per_node: Vec<RpcCounts>,
    net: NetStats,
    live: Vec<usize>,
    virtual_ms: u128,
    record: Option<Vec<u8>>,
}

fn run(seed: u64) -> Run {
    let config = SimConfig::default()
        .with_nodes(300)
        .with_seed(seed)
        .with_build(TableBuild::Realistic)
        .with_silent(0.05)
        .with_random_peers(0.05)
        .with_slow(0.05)
        .with_loss(0.01)
        .with_churn(Churn::per_hour(0.2));
    dht_sim::runtime().unwrap().block_on(async {
        let sim = Sim::build(config).await.unwrap();
        let churn = tokio::spawn(sim.clone().run_churn(Duration::from_secs(1800)));
        let (_, samples) = sim.run_lookup_samples(100, K_VALUE).await;
        let client = sim.client(sim.random_live_node(|_| true).unwrap()).unwrap();
        let key = sim.random_key();
        let _ = provide(&client, &key, client.local_peer().clone()).await;
        let _ = put_value(&client, SeqValidator::record(b"/sim/x".to_vec(), 1)).await;
        let got = get_value(&client, b"/sim/x", 3, &SeqValidator, sim.now())
            .await
            .unwrap();
        churn.await.unwrap();
        Run {
            samples,
            per_node: sim.node_counts(),
            net: sim.net_stats(),
            live: sim.live_nodes(),
            virtual_ms: sim.elapsed().as_millis(),
            record: got.value.record.map(|r| r.value),
        }
    })
}

#[test]
fn same_seed_same_counters() {
    let first = run(5);
    let second = run(5);
    assert!(
        first.net.lost > 0 && first.net.unanswered > 0,
        "{:?}",
        first.net
    );
    assert!(
        first.live.len() != 300 || first.per_node.len() != 300,
        "churn happened"
    );
    assert_eq!(first, second);
    let other = run(6);
    assert_ne!(first.per_node, other.per_node);
}
