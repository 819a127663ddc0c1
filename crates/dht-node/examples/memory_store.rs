//! A custom node with in-memory stores and the per-key provider: nothing is written to
//! disk. It provides a few CIDs; another node finds them.
//!
//! `cargo run -p dht-node --example memory_store`.
#![allow(clippy::print_stdout)]

use dht_node::builder::NodeBuilder;
use dht_provider::{DhtProvider, LegacyConfig, Multihash};
use futures::StreamExt;
use sha2::{Digest, Sha256};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seed = NodeBuilder::local().build().await?;
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(
            NodeBuilder::local()
                .bootstrap_peers(vec![seed.info().clone()])
                .build()
                .await?,
        );
    }
    // The custom node: in-memory stores, one DHT walk per provided key.
    let provider = NodeBuilder::local()
        .memory_store()
        .legacy_provider(LegacyConfig::default())
        .bootstrap_peers(vec![seed.info().clone()])
        .build()
        .await?;

    let keys: Vec<Multihash> = (0..5u8)
        .map(|i| Multihash::wrap(0x12, &Sha256::digest([i])))
        .collect::<Result<_, _>>()?;
    provider.provider().start_providing(false, &keys).await?;
    println!(
        "provided {} keys: {:?}",
        keys.len(),
        provider.provider().stats().keys_provided
    );

    let finder = &nodes[0];
    for key in &keys {
        let mut found = dht_routing::find_providers(&**finder.client(), &key.to_bytes(), 1);
        let first = found.next().await;
        println!(
            "key {}: provider {}",
            hex::encode(&key.digest()[..4]),
            first.map_or("none".into(), |p| p.peer_id.to_string())
        );
    }

    for node in nodes.iter().chain([&seed, &provider]) {
        node.close().await?;
    }
    Ok(())
}
