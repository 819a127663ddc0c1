//! Lookups on a test network of a few hundred nodes: exactness and cost.
#![allow(clippy::unwrap_used)]

mod common;

use std::{sync::Arc, time::Duration};

use common::{Behaviour, TestNet, client, median_p95};
use dht_proto::{K_VALUE, Key, MessageType};
use dht_routing::{ClientConfig, DriverConfig, QueryConfig, find_closest_peers};
use rand::{Rng, SeedableRng, rngs::SmallRng};

#[derive(Debug)]
#[allow(dead_code)]
struct Report {
    lookups: usize,
    exact: f64,
    find_node_median: u64,
    find_node_p95: u64,
    rounds_median: u64,
    ms_median: u64,
    ms_p95: u64,
}

async fn measure(net: &Arc<TestNet>, lookups: usize, config: ClientConfig, seed: u64) -> Report {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut exact = 0;
    let (mut find_nodes, mut rounds, mut ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..lookups {
        let me = loop {
            let i = rng.random_range(0..net.nodes.len());
            if net.nodes[i].behaviour == Behaviour::Honest {
                break i;
            }
        };
        let key: [u8; 32] = rng.random();
        let c = client(net, me, config.clone());
        let outcome = find_closest_peers(&c, &key, K_VALUE).await.unwrap();
        let got: Vec<_> = outcome.value.iter().map(|p| p.peer_id).collect();
        if got == net.true_closest(&Key::hash(&key), K_VALUE, me) {
            exact += 1;
        }
        find_nodes.push(outcome.stats.requests_of(MessageType::FindNode));
        rounds.push(u64::from(outcome.stats.rounds));
        ms.push(outcome.stats.elapsed.as_millis() as u64);
    }
    let (find_node_median, find_node_p95) = median_p95(find_nodes);
    let (ms_median, ms_p95) = median_p95(ms);
    Report {
        lookups,
        exact: f64::from(exact) / lookups as f64,
        find_node_median,
        find_node_p95,
        rounds_median: median_p95(rounds).0,
        ms_median,
        ms_p95,
    }
}

fn every_tenth(b: Behaviour) -> impl Fn(usize) -> Behaviour {
    move |i| if i % 10 == 3 { b } else { Behaviour::Honest }
}

fn config() -> ClientConfig {
    ClientConfig::default()
        .with_driver(DriverConfig::default().with_request_timeout(Duration::from_secs(2)))
        .with_query(QueryConfig::default().with_stall_timeout(Some(Duration::from_millis(500))))
}

#[tokio::test(start_paused = true)]
async fn lookups_are_exact_and_cheap() {
    let net = Arc::new(TestNet::new(600, 1));
    let r = measure(&net, 200, config(), 2).await;
    eprintln!("honest, 600 nodes: {r:?}");
    assert!(r.exact >= 0.99, "{r:?}");
    assert!(r.find_node_median <= 30, "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn lookups_survive_silent_nodes() {
    let net = Arc::new(TestNet::with_behaviours(
        600,
        3,
        every_tenth(Behaviour::Silent),
    ));
    let r = measure(&net, 200, config(), 4).await;
    eprintln!("10% silent, 600 nodes: {r:?}");
    assert!(r.exact >= 0.99, "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn lookups_survive_random_answers() {
    let net = Arc::new(TestNet::with_behaviours(
        600,
        5,
        every_tenth(Behaviour::RandomPeers),
    ));
    let r = measure(&net, 200, config(), 6).await;
    eprintln!("10% random peers, 600 nodes: {r:?}");
    assert!(r.exact >= 0.99, "{r:?}");
}

/// The figures for the report, at 1,000 and 10,000 nodes, with several settings:
/// `cargo test -p dht-routing --release --test lookup -- --ignored --nocapture`.
#[tokio::test(start_paused = true)]
#[ignore = "slow: builds networks of 10,000 nodes"]
async fn figures() {
    let settings: Vec<(&str, ClientConfig)> = vec![
        ("alpha=10 beta=3", config()),
        (
            "alpha=10 beta=20 (plain)",
            config().with_query(config().query.with_beta(20)),
        ),
        (
            "alpha=3 beta=3",
            config().with_query(config().query.with_alpha(3)),
        ),
    ];
    for n in [1_000, 10_000] {
        let nets = [
            ("honest", Arc::new(TestNet::new(n, 7))),
            (
                "10% silent",
                Arc::new(TestNet::with_behaviours(
                    n,
                    8,
                    every_tenth(Behaviour::Silent),
                )),
            ),
            (
                "10% random",
                Arc::new(TestNet::with_behaviours(
                    n,
                    9,
                    every_tenth(Behaviour::RandomPeers),
                )),
            ),
        ];
        for (name, net) in &nets {
            for (label, config) in &settings {
                let r = measure(net, 500, config.clone(), 10).await;
                eprintln!("{n} nodes, {name}, {label}: {r:?}");
            }
            let out = client(net, 0, config()).crawl().await;
            eprintln!(
                "{n} nodes, {name}, crawl: {} servers, {} FIND_NODE ({:.1} per server), {:?} virtual",
                out.value.len(),
                out.stats.requests_of(MessageType::FindNode),
                out.stats.requests_of(MessageType::FindNode) as f64 / out.value.len() as f64,
                out.stats.elapsed
            );
        }
    }
}
