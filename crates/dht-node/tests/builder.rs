//! `NodeBuilder` in one process, over real TCP on 127.0.0.1: the routing table choices and
//! their maintenance, RocksDB under a data directory across a restart, the per-key provider.
#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use dht_node::{
    builder::NodeBuilder,
    node::{FullTableConfig, Node, NodeTable},
};
use dht_provider::{DhtProvider, LegacyConfig, Multihash};
use dht_provider_store::Config as StoreConfig;
use dht_routing_table::{FullRtConfig, KBucketTable, PeerEvent, RoutingTable};
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// `n` k-bucket nodes in memory, each bootstrapped from the first.
async fn network(n: usize) -> Vec<Arc<Node>> {
    let first = NodeBuilder::local().build().await.unwrap();
    let mut nodes = vec![first.clone()];
    for _ in 1..n {
        nodes.push(
            NodeBuilder::local()
                .bootstrap_peers(vec![first.info().clone()])
                .build()
                .await
                .unwrap(),
        );
    }
    nodes
}

fn keys(seed: &str, n: usize) -> Vec<Multihash> {
    (0..n)
        .map(|i| Multihash::wrap(0x12, &Sha256::digest(format!("{seed}-{i}"))).unwrap())
        .collect()
}

async fn close_all<T: NodeTable>(nodes: &[Arc<Node<T>>]) {
    for node in nodes {
        node.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_routing_table_is_filled_by_the_first_crawl_and_answers_without_a_walk() {
    let nodes = network(6).await;
    let full = NodeBuilder::local()
        .bootstrap_peers(vec![nodes[0].info().clone()])
        .full_routing_table()
        .table_config(
            FullTableConfig::default().with_table(FullRtConfig::default().with_min_peers(3)),
        )
        .build()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while full.table().len() < nodes.len() || !full.table().is_complete() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "table: {:?}",
            full.table().summary()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let summary = full.table().summary();
    assert_eq!(summary.kind, "full");
    assert_eq!(summary.peers, 6);
    assert!(summary.complete && summary.last_filled.is_some());

    // Closest peers come from the complete table: no request is sent.
    let outcome = dht_routing::find_closest_peers(&**full.client(), b"some key", 20)
        .await
        .unwrap();
    assert_eq!(outcome.value.len(), 6);
    assert_eq!(outcome.stats.total_requests(), 0);

    // The sweeping provider runs on it, and others find what it provides.
    let provided = keys("full-rt", 20);
    full.provider()
        .start_providing(false, &provided)
        .await
        .unwrap();
    for key in &provided {
        let mut found = dht_routing::find_providers(&**nodes[3].client(), &key.to_bytes(), 1);
        assert_eq!(found.next().await.map(|p| p.peer_id), Some(full.peer_id()));
    }
    full.close().await.unwrap();
    close_all(&nodes).await;
}

/// A node whose table has lost its peers (here: removed by hand, as timeouts under load
/// remove them) bootstraps again from its bootstrap peers, without waiting for a refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_runs_low_is_refilled_from_the_bootstrap_peers() {
    let nodes = network(4).await;
    let node = NodeBuilder::local()
        .bootstrap_peers(vec![nodes[0].info().clone()])
        .rebootstrap_interval(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    assert_eq!(node.table().len(), 4, "bootstrapped from the first of four");
    // The others admit the newcomer with a FIND_NODE of their own, which would put them
    // back in its table: let that pass first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for peer in nodes.iter() {
        node.table().update(peer.info(), PeerEvent::Removed);
    }
    assert!(node.table().is_empty());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while node.table().len() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(node.table().len(), 4, "the table was refilled");
    node.close().await.unwrap();
    close_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_bucket_maintenance_refreshes_every_stale_bucket() {
    let nodes = network(8).await;
    let node: &Arc<Node<KBucketTable>> = &nodes[5];
    let table = node.table();
    assert!(!table.stale_buckets(table.now()).is_empty());
    let report = node.maintain().await;
    assert!(report.lookups >= 2, "{report:?}");
    assert!(report.stats.total_requests() > 0);
    assert!(
        table.stale_buckets(table.now()).is_empty(),
        "stale after refresh: {:?}",
        table.stale_buckets(table.now())
    );
    assert_eq!(report.peers, table.len());
    let summary = table.summary();
    assert_eq!(summary.kind, "kbucket");
    assert_eq!(summary.buckets.iter().sum::<usize>(), summary.peers);
    close_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_under_the_data_directory_keeps_identity_and_keys_across_a_restart() {
    let nodes = network(3).await;
    let dir = tempfile::tempdir().unwrap();
    let builder = NodeBuilder::local()
        .rocks_store(StoreConfig::small())
        .data_dir(dir.path())
        .bootstrap_peers(vec![nodes[0].info().clone()]);
    let provided = keys("rocks", 50);
    let first = builder.clone().build().await.unwrap();
    let peer_id = first.peer_id();
    first
        .provider()
        .start_providing(false, &provided)
        .await
        .unwrap();
    first.close().await.unwrap();
    drop(first);
    assert!(dir.path().join("identity.key").exists());
    assert!(dir.path().join("provider.state").exists());
    assert!(dir.path().join("store").is_dir());

    let again = builder.build().await.unwrap();
    assert_eq!(again.peer_id(), peer_id);
    assert_eq!(
        dht_provider_store::Keystore::count(&**again.stores()).unwrap(),
        50
    );
    for key in &provided {
        assert!(again.holds(key).unwrap());
    }
    assert!(!again.holds(&keys("other", 1)[0]).unwrap());
    again.close().await.unwrap();
    close_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_key_provider_is_an_option() {
    let nodes = network(4).await;
    let node = NodeBuilder::local()
        .legacy_provider(LegacyConfig::default())
        .bootstrap_peers(vec![nodes[0].info().clone()])
        .build()
        .await
        .unwrap();
    assert_eq!(node.provider().strategy(), "per-key");
    let provided = keys("legacy", 10);
    node.provider()
        .start_providing(false, &provided)
        .await
        .unwrap();
    assert_eq!(node.provider().stats().keys_provided, 10);
    for key in &provided {
        let mut found = dht_routing::find_providers(&**nodes[2].client(), &key.to_bytes(), 1);
        assert_eq!(found.next().await.map(|p| p.peer_id), Some(node.peer_id()));
    }
    node.close().await.unwrap();
    close_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_provider_state_is_set_aside_and_the_node_starts() {
    let dir = tempfile::tempdir().unwrap();
    let builder = NodeBuilder::local()
        .rocks_store(StoreConfig::small())
        .data_dir(dir.path());
    let provided = keys("corrupt-state", 5);
    let first = builder.clone().build().await.unwrap();
    first
        .provider()
        .start_providing_async(false, &provided)
        .unwrap();
    first.close().await.unwrap();
    drop(first);
    let state = dir.path().join("provider.state");
    std::fs::write(&state, b"not a sweep state").unwrap();

    let again = builder.build().await.unwrap();
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("provider.state.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(dir.path().join(&aside[0])).unwrap(),
        b"not a sweep state"
    );
    // The keystore still holds the keys; the sweep starts a new schedule.
    assert_eq!(
        dht_provider_store::Keystore::count(&**again.stores()).unwrap(),
        5
    );
    again.close().await.unwrap();
    assert!(state.exists(), "a fresh state is saved on close");
}
