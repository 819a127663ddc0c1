//! Interoperability with go-libp2p-kad-dht v0.42.2, the implementation nearly every Amino DHT
//! server runs, over TCP on 127.0.0.1, in both directions.
//!
//! The Go side is the program of `interop/go` (N Go DHT servers in one process, driven by JSON
//! lines); `cargo xtask interop` builds it and runs these tests with `AMINO_GO_KADPEERS`
//! naming the binary. They are `#[ignore]`d in a plain `cargo test`, which has no Go binary.
#![allow(clippy::unwrap_used)]

mod go_peers;

use std::{collections::HashSet, sync::Arc, time::Duration};

use dht_node::{builder::NodeBuilder, node::Node, transport::Mode};
use dht_proto::{Key, PeerId};
use dht_routing_table::RoutingTable;
use go_peers::{GoPeers, eventually, peer_json};
use serde_json::json;

/// One of our servers on 127.0.0.1, in memory, no bootstrap peers.
async fn our_server() -> Arc<Node> {
    NodeBuilder::local().build().await.unwrap()
}

/// Ids in our node's routing table.
fn our_table(node: &Node) -> HashSet<PeerId> {
    node.table()
        .closest_peers(&Key::from_peer_id(&node.peer_id()), usize::MAX)
        .into_iter()
        .map(|p| p.peer_id)
        .collect()
}

/// A network of `go` Go servers and `ours` of our servers, each side knowing the other:
/// the Go servers meshed, ours bootstrapped from node 0 of ours and one Go server each, then
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn our_node_joins_a_network_of_go_servers() {
    let go = GoPeers::start(20).await;
    go.ok(json!({"cmd": "mesh"})).await;
    let ours = our_server().await;
    ours.bootstrap(&go.nodes[..1]).await.unwrap();
    let go_ids: HashSet<PeerId> = go.nodes.iter().map(|p| p.peer_id).collect();
    eventually(
        Duration::from_secs(30),
        "our table holds the 20 Go servers",
        || async { our_table(&ours) == go_ids },
    )
    .await;
    // Go adds a peer only after identify, and its lookup check (a FIND_NODE we answer).
    eventually(
        Duration::from_secs(30),
        "every Go table holds our node",
        || async {
            go.tables()
                .await
                .iter()
                .all(|t| t.contains(&ours.peer_id()))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn go_servers_join_a_network_of_ours() {
    let mut ours: Vec<Arc<Node>> = Vec::new();
    for i in 0..5 {
        let node = our_server().await;
        if i > 0 {
            node.bootstrap(&[ours[0].info().clone()]).await.unwrap();
        }
        ours.push(node);
    }
    for node in &ours {
        node.self_lookup().await.unwrap();
    }
    let go = GoPeers::start(3).await;
    for i in 0..3 {
        go.ok(json!({"cmd": "connect", "node": i, "peer": peer_json(ours[0].info())}))
            .await;
        // Go admits a peer after identify and its lookup check, in the background.
        eventually(
            Duration::from_secs(20),
            "Go admits the peer it dialled",
            || async { go.table(i).await.contains(&ours[0].peer_id()) },
        )
        .await;
        go.ok(json!({"cmd": "refresh", "node": i})).await;
    }
    let our_ids: HashSet<PeerId> = ours.iter().map(|n| n.peer_id()).collect();
    let go_ids: HashSet<PeerId> = go.nodes.iter().map(|p| p.peer_id).collect();
    eventually(
        Duration::from_secs(30),
        "every Go table holds our 5 servers",
        || async { go.tables().await.iter().all(|t| our_ids.is_subset(t)) },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "every one of our tables holds the 3 Go servers",
        || async { ours.iter().all(|n| go_ids.is_subset(&our_table(n))) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn our_client_mode_node_is_never_in_a_go_table() {
    let go = GoPeers::start(5).await;
    go.ok(json!({"cmd": "mesh"})).await;
    let client = NodeBuilder::local()
        .mode(Mode::Client)
        .build()
        .await
        .unwrap();
    client.bootstrap(&go.nodes[..1]).await.unwrap();
    // A server that does the same is admitted: the time it takes bounds the wait below.
    let server = our_server().await;
    server.bootstrap(&go.nodes[..1]).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "every Go table holds our server",
        || async {
            go.tables()
                .await
                .iter()
                .all(|t| t.contains(&server.peer_id()))
        },
    )
    .await;
    client.self_lookup().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connected = client.transport().connected_peers().await.unwrap();
    assert!(
        go.nodes.iter().any(|p| connected.contains(&p.peer_id)),
        "the client is connected to Go servers"
    );
    for (i, table) in go.tables().await.iter().enumerate() {
        assert!(
            !table.contains(&client.peer_id()),
            "Go server {i} admitted our client"
        );
    }
}
