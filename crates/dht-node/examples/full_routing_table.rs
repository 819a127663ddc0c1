//! A custom node with a full routing table: it crawls the network right after it starts
//! (and every hour), then answers closest-peer questions from its table without a walk.
//!
//! Runs a small network of k-bucket nodes on 127.0.0.1 for it to crawl:
//! `cargo run -p dht-node --example full_routing_table`.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use dht_node::{builder::NodeBuilder, node::FullTableConfig};
use dht_routing_table::{FullRtConfig, RoutingTable};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Eight ordinary nodes, each bootstrapping from the first.
    let first = NodeBuilder::local().build().await?;
    let mut others = Vec::new();
    for _ in 0..7 {
        let node = NodeBuilder::local()
            .bootstrap_peers(vec![first.info().clone()])
            .build()
            .await?;
        others.push(node);
    }

    // The custom node: a FullRoutingTable, complete once it holds at least 5 peers.
    let full = NodeBuilder::local()
        .bootstrap_peers(vec![first.info().clone()])
        .full_routing_table()
        .table_config(
            FullTableConfig::default()
                .with_table(FullRtConfig::default().with_min_peers(5))
                .with_crawl_interval(Duration::from_secs(3600)),
        )
        .build()
        .await?;

    // The first crawl runs as soon as the node is up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !full.table().is_complete() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary = dht_node::node::NodeTable::summary(&**full.table());
    println!(
        "full routing table: {} peers, complete: {}",
        summary.peers, summary.complete
    );

    full.close().await?;
    for node in others.iter().chain([&first]) {
        node.close().await?;
    }
    Ok(())
}
