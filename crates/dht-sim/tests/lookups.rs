//! Lookups on simulated nodes: exact when every node is honest; still successful with 10%
//! of the nodes answering with random peers, or 10% silent; with tables that joins filled
//! (1,000 nodes) and with tables filled directly (600).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dht_proto::K_VALUE;
use dht_routing::{ClientConfig, DriverConfig, QueryConfig};
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

/// 600 nodes whose tables hold up to k random peers per bucket, clients that give up on a
/// peer after 2 s and on a stalled round after 0.5 s.
fn direct(seed: u64) -> SimConfig {
    let client = ClientConfig::default()
        .with_driver(DriverConfig::default().with_request_timeout(Duration::from_secs(2)))
        .with_query(QueryConfig::default().with_stall_timeout(Some(Duration::from_millis(500))));
    SimConfig::default()
        .with_nodes(600)
        .with_seed(seed)
        .with_build(TableBuild::Fast)
        .with_client(client)
}

#[test]
fn directly_filled_tables_give_exact_lookups_with_a_tenth_misbehaving() {
    let r = measure(direct(1), 200);
    assert!(r.exact_fraction >= 0.99, "honest: {r:?}");
    assert!(r.find_node_rpcs_median <= 30, "honest: {r:?}");
    // Exact among the nodes that answer.
    let r = measure(direct(3).with_silent(0.1), 200);
    assert!(r.success_fraction >= 0.99, "silent: {r:?}");
    // Random answers do not push the true closest out.
    let r = measure(direct(5).with_random_peers(0.1), 200);
    assert!(r.exact_fraction >= 0.99, "random peers: {r:?}");
}
