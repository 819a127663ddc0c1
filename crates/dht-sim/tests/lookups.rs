//! Lookups on 1,000 simulated nodes: exact when every node is honest; still successful with
//! 10% of the nodes answering with random peers, or 10% silent.
#![allow(clippy::unwrap_used)]

use dht_proto::K_VALUE;
use dht_sim::{LookupReport, Sim, SimConfig, TableBuild};

fn measure(config: SimConfig, lookups: usize) -> LookupReport {
    dht_sim::runtime().unwrap().block_on(async {
        let sim = Sim::build(config).await.unwrap();
        let report = sim.run_lookups(lookups, K_VALUE).await;
        eprintln!("{report:?}\n{:?}", sim.table_quality());
        report
    })
}

fn network(seed: u64) -> SimConfig {
    SimConfig::default()
        .with_nodes(1_000)
        .with_seed(seed)
        .with_build(TableBuild::Realistic)
}

#[test]
fn thousand_nodes_lookups_are_exact() {
    let r = measure(network(1), 1_000);
    assert_eq!(r.lookups, 1_000);
    assert!(r.exact_fraction >= 0.99, "{r:?}");
    assert!(r.find_node_rpcs_median <= 30, "{r:?}");
}

#[test]
fn ten_percent_random_peers() {
    let r = measure(network(2).with_random_peers(0.1), 1_000);
    assert!(r.success_fraction >= 0.99, "{r:?}");
}

#[test]
fn ten_percent_silent() {
    let r = measure(network(3).with_silent(0.1), 1_000);
    assert!(r.success_fraction >= 0.99, "{r:?}");
}
