//! Interoperability with go-libp2p-kad-dht v0.42.2, the implementation nearly every Amino DHT
//! server runs, over TCP (and, in one test, QUIC) on 127.0.0.1, in both directions.
//!
//! The Go side is the program of `interop/go` (N Go DHT servers in one process, driven by JSON
//! lines); `cargo xtask interop` builds it and runs these tests with `AMINO_GO_KADPEERS`
//! naming the binary. They are `#[ignore]`d in a plain `cargo test`, which has no Go binary.
#![allow(clippy::unwrap_used)]

mod go_peers;

use std::{collections::HashSet, sync::Arc, time::Duration};

use dht_node::{
    api::{self, hex_decode},
    builder::NodeBuilder,
    http_client::ApiClient,
    node::Node,
    transport::Mode,
};
use dht_proto::{Key, PeerId, PeerInfo, ProviderRecord, Record, Request, Response};
use dht_provider::DhtProvider;
use dht_routing_table::{Clock, RoutingTable, SystemClock};
use futures::StreamExt;
use go_peers::{GoPeers, cids, eventually, peer_json, record};
use libp2p::identity::Keypair;
use serde_json::json;

/// Wall-clock seconds, as the stores take them.
fn now() -> u64 {
    SystemClock.now()
}

/// One of our servers on 127.0.0.1, in memory, no bootstrap peers.
async fn our_server() -> Arc<Node> {
    NodeBuilder::local().build().await.unwrap()
}

/// `n` of our servers, each bootstrapped from the first.
async fn our_network(n: usize) -> Vec<Arc<Node>> {
    let mut ours: Vec<Arc<Node>> = Vec::new();
    for i in 0..n {
        let node = our_server().await;
        if i > 0 {
            node.bootstrap(&[ours[0].info().clone()]).await.unwrap();
        }
        ours.push(node);
    }
    ours
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
/// a table refresh on every Go server and a self-lookup on every one of ours.
async fn mixed(go: usize, ours: usize) -> (GoPeers, Vec<Arc<Node>>) {
    let peers = GoPeers::start(go).await;
    if go > 1 {
        peers.ok(json!({"cmd": "mesh"})).await;
    }
    let mut nodes: Vec<Arc<Node>> = Vec::new();
    for i in 0..ours {
        let node = our_server().await;
        let mut boot: Vec<PeerInfo> = nodes
            .first()
            .map(|n| n.info().clone())
            .into_iter()
            .collect();
        if go > 0 {
            boot.push(peers.nodes[i % go].clone());
        }
        if !boot.is_empty() {
            node.bootstrap(&boot).await.unwrap();
        }
        nodes.push(node);
    }
    for i in 0..go {
        peers.ok(json!({"cmd": "refresh", "node": i})).await;
    }
    for node in &nodes {
        node.self_lookup().await.unwrap();
    }
    (peers, nodes)
}

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
    go.admitted(None, ours.peer_id()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn go_servers_join_a_network_of_ours() {
    let ours = our_network(5).await;
    for node in &ours {
        node.self_lookup().await.unwrap();
    }
    let go = GoPeers::start(3).await;
    for i in 0..3 {
        go.ok(json!({"cmd": "connect", "node": i, "peer": peer_json(ours[0].info())}))
            .await;
        go.admitted(Some(i), ours[0].peer_id()).await;
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
    go.admitted(None, server.peer_id()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn a_go_client_mode_node_is_never_in_our_tables() {
    let ours = our_network(3).await;
    // Go node 0 a server (the control), node 1 a client; both join through ours[0] and walk.
    let go = GoPeers::start_with(2, 1).await;
    for i in 0..2 {
        go.ok(json!({"cmd": "connect", "node": i, "peer": peer_json(ours[0].info())}))
            .await;
        go.admitted(Some(i), ours[0].peer_id()).await;
        let key = hex::encode(go.nodes[i].peer_id.to_bytes());
        go.ok(json!({"cmd": "closest_peers", "node": i, "key": key}))
            .await;
    }
    eventually(
        Duration::from_secs(30),
        "our tables hold the Go server",
        || async {
            ours.iter()
                .all(|n| our_table(n).contains(&go.nodes[0].peer_id))
        },
    )
    .await;
    for (i, node) in ours.iter().enumerate() {
        assert!(
            !our_table(node).contains(&go.nodes[1].peer_id),
            "our server {i} admitted Go's client"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn closest_peers_walks_agree_over_a_mixed_network() {
    let (go, ours) = mixed(12, 12).await;
    let all: Vec<PeerId> = go
        .nodes
        .iter()
        .map(|p| p.peer_id)
        .chain(ours.iter().map(|n| n.peer_id()))
        .collect();
    // The 20 closest to `key` of every node but `asker`.
    let truth = |key: &[u8], asker: PeerId| -> Vec<PeerId> {
        let target = Key::hash(key);
        let mut peers: Vec<PeerId> = all.iter().copied().filter(|p| *p != asker).collect();
        peers.sort_by_key(|p| Key::from_peer_id(p).distance(&target));
        peers.truncate(20);
        peers
    };
    for (i, key) in cids("closest", 5).iter().enumerate() {
        let key = key.1.to_bytes();
        let asker = &ours[i % ours.len()];
        let found = dht_routing::find_closest_peers(&**asker.client(), &key, 20)
            .await
            .unwrap()
            .value;
        let found: Vec<PeerId> = found.into_iter().map(|p| p.peer_id).collect();
        assert_eq!(found, truth(&key, asker.peer_id()), "our walk for key {i}");
        let go_node = i % go.nodes.len();
        let go_found = go
            .ok(json!({"cmd": "closest_peers", "node": go_node, "key": hex::encode(&key)}))
            .await;
        let go_found: HashSet<PeerId> = go_peers::ids(&go_found).into_iter().collect();
        let want: HashSet<PeerId> = truth(&key, go.nodes[go_node].peer_id).into_iter().collect();
        assert_eq!(go_found, want, "Go's walk for key {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn our_sweep_provides_10000_keys_that_go_finds() {
    let go = GoPeers::start(20).await;
    go.ok(json!({"cmd": "mesh"})).await;
    let ours = our_server().await;
    ours.bootstrap(&go.nodes[..1]).await.unwrap();
    let keys = cids("sweep-into-go", 10_000);
    let mhs: Vec<_> = keys.iter().map(|k| k.1).collect();
    tokio::time::timeout(
        Duration::from_secs(120),
        ours.provider().start_providing(false, &mhs),
    )
    .await
    .expect("the sweep finishes within 120 s")
    .unwrap();
    let sample: Vec<&str> = keys.iter().step_by(50).map(|k| k.0.as_str()).collect();
    assert_eq!(sample.len(), 200);
    let found = go
        .ok(json!({"cmd": "find_providers", "node": 7, "keys": sample, "count": 1}))
        .await;
    let missing: Vec<&str> = sample
        .iter()
        .zip(found.as_array().unwrap())
        .filter(|(_, provs)| {
            // Found with an address Go can dial.
            !provs
                .as_array()
                .unwrap()
                .iter()
                .map(go_peers::parse_peer)
                .any(|p| {
                    p.peer_id == ours.peer_id()
                        && p.addrs.iter().any(|a| ours.info().addrs.contains(a))
                })
        })
        .map(|(k, _)| *k)
        .collect();
    assert!(
        missing.is_empty(),
        "Go did not find us for {} of 200 keys: {missing:?}",
        missing.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn our_per_key_provides_are_found_by_go() {
    let go = GoPeers::start(10).await;
    go.ok(json!({"cmd": "mesh"})).await;
    let ours = NodeBuilder::local()
        .legacy_provider(dht_provider::LegacyConfig::default())
        .build()
        .await
        .unwrap();
    ours.bootstrap(&go.nodes[..1]).await.unwrap();
    let keys = cids("per-key-into-go", 30);
    let mhs: Vec<_> = keys.iter().map(|k| k.1).collect();
    ours.provider().start_providing(false, &mhs).await.unwrap();
    let text: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let found = go
        .ok(json!({"cmd": "find_providers", "node": 4, "keys": text, "count": 1}))
        .await;
    for (cid, provs) in text.iter().zip(found.as_array().unwrap()) {
        assert!(
            go_peers::ids(provs).contains(&ours.peer_id()),
            "Go did not find us for {cid}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn go_legacy_and_sweeping_provides_into_our_servers_are_found_by_ours() {
    go_provides_are_found_by_ours(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn go_legacy_and_sweeping_provides_into_a_mixed_network_are_found_by_ours() {
    go_provides_are_found_by_ours(6).await;
}

/// Go nodes 0 (legacy provide) and 1 (SweepingProvider) provide 30 keys each into a network
/// of 10 of our servers and `go_servers` Go servers; ours finds every key, through the
/// library and through `/routing/v1/providers`, and our servers hold the records.
async fn go_provides_are_found_by_ours(go_servers: usize) {
    let (go, ours) = mixed(2 + go_servers, 10).await;
    let legacy = cids("go-legacy", 30);
    let swept = cids("go-sweep", 30);
    let text = |keys: &[(String, _)]| keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>();
    go.ok(json!({"cmd": "provide", "node": 0, "keys": text(&legacy)}))
        .await;
    go.ok(json!({"cmd": "start_providing", "node": 1, "keys": text(&swept)}))
        .await;
    let (addr, _server) = api::serve(
        ours[3].clone(),
        "127.0.0.1:0".parse().unwrap(),
        std::future::pending(),
    )
    .await
    .unwrap();
    let client = ApiClient::new(&format!("http://{addr}"))
        .unwrap()
        .with_timeout(Duration::from_secs(20));
    for (keys, provider) in [(&legacy, &go.nodes[0]), (&swept, &go.nodes[1])] {
        // Found with an address of the provider's.
        let dialable = |p: &PeerInfo| {
            p.peer_id == provider.peer_id && p.addrs.iter().any(|a| provider.addrs.contains(a))
        };
        for (cid, mh) in keys.iter() {
            eventually(
                Duration::from_secs(60),
                &format!("ours finds {cid}"),
                || async {
                    let mut found =
                        dht_routing::find_providers(&**ours[5].client(), &mh.to_bytes(), 1);
                    let first = found.next().await;
                    first.is_some_and(|p| dialable(&p))
                },
            )
            .await;
            let records = client.find_providers(cid).await.unwrap();
            assert!(
                records.iter().any(|r| {
                    let addrs = r.addrs.iter().map(|a| a.parse().unwrap()).collect();
                    dialable(&PeerInfo::new(r.id.parse().unwrap(), addrs))
                }),
                "/routing/v1/providers/{cid} has the Go provider: {records:?}"
            );
            // Our servers took Go's ADD_PROVIDER.
            let held = ours
                .iter()
                .filter(|n| {
                    !n.stores()
                        .providers(&mh.to_bytes(), 20, now())
                        .unwrap()
                        .is_empty()
                })
                .count();
            assert!(held >= 5, "{held} of our 10 servers hold {cid}");
        }
    }
    // Go's SweepingProvider keeps the 30 keys in its schedule until told to stop.
    let stats = go.ok(json!({"cmd": "sweep_stats", "node": 1})).await;
    assert_eq!(stats["schedule"]["keys"], json!(30), "{stats}");
    go.ok(json!({"cmd": "stop_providing", "node": 1, "keys": text(&swept)}))
        .await;
    eventually(
        Duration::from_secs(10),
        "Go's sweep drops the keys",
        || async {
            let stats = go.ok(json!({"cmd": "sweep_stats", "node": 1})).await;
            stats["schedule"]["keys"] == json!(0)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn pk_and_ipns_records_both_ways_and_invalid_ones_refused() {
    let keypair = Keypair::generate_ed25519();
    let go = GoPeers::start(4).await;
    go.ok(json!({"cmd": "mesh"})).await;
    let mut ours: Vec<Arc<Node>> = Vec::new();
    for i in 0..4 {
        let builder = NodeBuilder::local();
        let builder = if i == 0 {
            builder.keypair(keypair.clone())
        } else {
            builder
        };
        let node = builder.build().await.unwrap();
        node.bootstrap(&[go.nodes[i].clone()]).await.unwrap();
        ours.push(node);
    }
    for i in 0..4 {
        go.ok(json!({"cmd": "refresh", "node": i})).await;
    }

    // Go's /pk/ record, put by Go, got by ours.
    let pk = go.ok(json!({"cmd": "pk_record", "node": 0})).await;
    go.ok(json!({"cmd": "put_value", "node": 0, "key": pk["key"], "value": pk["value"]}))
        .await;
    let got = ours[2]
        .get_value(&record(&pk).key)
        .await
        .unwrap()
        .expect("found");
    assert_eq!(got.value, record(&pk).value);

    // Our /pk/ record, put by ours, got by Go.
    let mut key = b"/pk/".to_vec();
    key.extend(ours[0].peer_id().to_bytes());
    let value = keypair.public().encode_protobuf();
    ours[0]
        .put_value(Record::new(key.clone(), value.clone()))
        .await
        .unwrap();
    let got = go
        .ok(json!({"cmd": "get_value", "node": 3, "key": hex::encode(&key)}))
        .await;
    assert_eq!(hex_decode(got.as_str().unwrap()).unwrap(), value);

    // IPNS records made with boxo/ipns: one put by Go and got by ours, one put by ours and
    // got by Go.
    let path = format!("/ipfs/{}", cids("ipns-target", 1)[0].0);
    let by_go = go.ok(json!({"cmd": "ipns_record", "value": path})).await;
    go.ok(json!({"cmd": "put_value", "node": 1, "key": by_go["key"], "value": by_go["value"]}))
        .await;
    let got = ours[3]
        .get_value(&record(&by_go).key)
        .await
        .unwrap()
        .expect("found");
    assert_eq!(got.value, record(&by_go).value);
    let by_ours = go.ok(json!({"cmd": "ipns_record", "value": path})).await;
    ours[1].put_value(record(&by_ours)).await.unwrap();
    let got = go
        .ok(json!({"cmd": "get_value", "node": 2, "key": by_ours["key"]}))
        .await;
    assert_eq!(got.as_str().unwrap(), by_ours["value"].as_str().unwrap());

    // A record with a broken signature: refused by both clients and by both servers.
    let bad = go
        .ok(json!({"cmd": "ipns_record", "value": path, "invalid": true}))
        .await;
    let verdict = go
        .ok(json!({"cmd": "validate", "key": bad["key"], "value": bad["value"]}))
        .await;
    assert_eq!(verdict["valid"], json!(false), "{verdict}");
    assert!(
        ours[1].put_value(record(&bad)).await.is_err(),
        "our client refuses it"
    );
    let go_put = go
        .call(json!({"cmd": "put_value", "node": 1, "key": bad["key"], "value": bad["value"]}))
        .await;
    assert!(go_put.is_err(), "Go's client refuses it");
    let to_ours = go
        .call(
            json!({"cmd": "send_put_value", "node": 1, "peer": peer_json(ours[2].info()),
            "key": bad["key"], "value": bad["value"]}),
        )
        .await;
    assert!(to_ours.is_err(), "our server refuses it");
    assert!(
        ours[2]
            .stores()
            .get_value(&record(&bad).key, now())
            .unwrap()
            .is_none(),
        "our server did not store it"
    );
    let to_go = ours[2]
        .transport()
        .request(
            &go.nodes[2],
            Request::PutValue {
                record: record(&bad),
            },
        )
        .await;
    assert!(
        !matches!(to_go, Ok(Some(Response::PutValue { .. }))),
        "Go's server refuses it: {to_go:?}"
    );
    let go_get = go
        .call(json!({"cmd": "get_value", "node": 2, "key": bad["key"], "timeout": 10}))
        .await;
    assert!(go_get.is_err(), "Go's server did not store it: {go_get:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn find_peer_both_ways() {
    let (go, ours) = mixed(6, 6).await;
    let target = &go.nodes[4];
    let found = dht_routing::find_peer(&**ours[1].client(), target.peer_id)
        .await
        .unwrap()
        .value
        .expect("ours finds the Go peer");
    assert!(
        found.addrs.iter().any(|a| target.addrs.contains(a)),
        "{found:?} vs {target:?}"
    );
    let found = go
        .ok(json!({"cmd": "find_peer", "node": 1, "peer": peer_json(ours[4].info())}))
        .await;
    let found = go_peers::parse_peer(&found);
    assert_eq!(found.peer_id, ours[4].peer_id());
    assert!(
        found.addrs.iter().any(|a| ours[4].info().addrs.contains(a)),
        "{found:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn get_providers_answers_over_16_kib_both_ways() {
    let go = GoPeers::start(1).await;
    let ours = our_server().await;
    let (cid, mh) = cids("large", 1).remove(0);
    let key = mh.to_bytes();

    // Go's server holds 400 providers of three addresses each and answers with all of them
    // (about 35 KiB). Ours reads the whole frame and keeps the first
    // `DEFAULT_MAX_PEERS_PER_LIST` (256) of the list, still over 16 KiB: a bound on what one
    // answer can make us hold, see docs/interop.md.
    go.ok(json!({"cmd": "add_local_providers", "node": 0, "key": cid, "count": 400}))
        .await;
    let answer = ours
        .transport()
        .request(&go.nodes[0], Request::GetProviders { key: key.clone() })
        .await
        .unwrap();
    let Some(Response::GetProviders { providers, .. }) = answer else {
        panic!("not a GET_PROVIDERS answer: {answer:?}");
    };
    assert_eq!(providers.len(), dht_proto::DEFAULT_MAX_PEERS_PER_LIST);
    assert!(providers.iter().all(|p| p.addrs.len() == 3));
    assert!(
        payload(&providers) > 16 * 1024,
        "{} bytes",
        payload(&providers)
    );

    // Ours holds 20 providers of 64 addresses each (about 27 KiB): Go reads it whole.
    let records: Vec<ProviderRecord> = (0..20u16)
        .map(|i| ProviderRecord {
            key: key.clone(),
            provider: PeerId::random(),
            addrs: (0..64u16)
                .map(|j| {
                    format!("/ip6/2001:db8::{i:x}:{j:x}/tcp/4001")
                        .parse()
                        .unwrap()
                })
                .collect(),
            received_at: now(),
        })
        .collect();
    let peers: Vec<PeerInfo> = records
        .iter()
        .map(|r| PeerInfo::new(r.provider, r.addrs.clone()))
        .collect();
    assert!(payload(&peers) > 16 * 1024, "{} bytes", payload(&peers));
    ours.stores().add_providers(&records).unwrap();
    let answers = go
        .ok(json!({"cmd": "send_get_providers", "node": 0, "peer": peer_json(ours.info()), "key": cid}))
        .await;
    assert_eq!(answers[0]["providers"], json!(20), "{answers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn several_requests_on_one_stream_both_ways() {
    // Only the Go nodes and ours talk to each other: no other traffic to count.
    let go = GoPeers::start(3).await;
    go.ok(json!({"cmd": "mesh"})).await;
    let ours = our_server().await;
    ours.bootstrap(&go.nodes[..1]).await.unwrap();
    let key = hex::encode(cids("stream", 1)[0].1.to_bytes());

    // Go sends 10 FIND_NODE in a row to ours: one stream, ten answers. A first request
    // opens the connection and the stream; Go's own checks of a new peer (identify, its
    // lookup check) are over before the count starts.
    let peer = peer_json(ours.info());
    go.ok(json!({"cmd": "send_find_node", "node": 1, "peer": peer, "key": key}))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = ours.transport().stats();
    let answers = go
        .ok(json!({"cmd": "send_find_node", "node": 1, "peer": peer, "key": key, "times": 10}))
        .await;
    let after = ours.transport().stats();
    assert_eq!(answers.as_array().unwrap().len(), 10);
    assert!(
        answers
            .as_array()
            .unwrap()
            .iter()
            .all(|a| !a.as_array().unwrap().is_empty())
    );
    assert_eq!(after.inbound_requests - before.inbound_requests, 10);
    assert_eq!(
        after.inbound_streams_accepted - before.inbound_streams_accepted,
        0,
        "Go's ten requests reuse its stream"
    );

    // Ours sends 10 FIND_NODE in a row to Go: one stream, Go answers each.
    let target = &go.nodes[2];
    let before = ours.transport().stats();
    for i in 0..10 {
        let answer = ours
            .transport()
            .request(
                target,
                Request::FindNode {
                    key: hex_decode(&key).unwrap(),
                },
            )
            .await;
        assert!(
            matches!(&answer, Ok(Some(Response::FindNode { closer_peers })) if !closer_peers.is_empty()),
            "request {i}: {answer:?}"
        );
    }
    let after = ours.transport().stats();
    assert!(after.outbound_streams_opened - before.outbound_streams_opened <= 1);
    assert!(after.outbound_streams_reused - before.outbound_streams_reused >= 9);
}

/// Whether every address of `peer` is a QUIC v1 one.
fn quic_only(peer: &PeerInfo) -> bool {
    !peer.addrs.is_empty()
        && peer.addrs.iter().all(|a| {
            a.iter()
                .any(|p| matches!(p, dht_proto::multiaddr::Protocol::QuicV1))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn go_and_ours_talk_over_quic_alone() {
    let quic = "/ip4/127.0.0.1/udp/0/quic-v1";
    let go = GoPeers::start_args(2, 0, &["-listen", quic]).await;
    assert!(go.nodes.iter().all(quic_only), "{:?}", go.nodes);
    go.ok(json!({"cmd": "mesh"})).await;
    let ours = NodeBuilder::local()
        .listen_addrs(vec![quic.parse().unwrap()])
        .build()
        .await
        .unwrap();
    assert!(quic_only(ours.info()), "{:?}", ours.info());
    // Our bootstrap (identify, a lookup) runs over QUIC, and Go admits us to its table.
    ours.bootstrap(&go.nodes[..1]).await.unwrap();
    go.admitted(Some(0), ours.peer_id()).await;
    assert!(our_table(&ours).contains(&go.nodes[1].peer_id));
    let key = cids("quic", 1)[0].1.to_bytes();
    let answer = ours
        .transport()
        .request(&go.nodes[1], Request::FindNode { key: key.clone() })
        .await;
    assert!(
        matches!(&answer, Ok(Some(Response::FindNode { closer_peers })) if !closer_peers.is_empty()),
        "{answer:?}"
    );
    let answers = go
        .ok(json!({"cmd": "send_find_node", "node": 1, "peer": peer_json(ours.info()), "key": hex::encode(&key)}))
        .await;
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 1);
    assert!(!answers[0].as_array().unwrap().is_empty(), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn boxo_delegated_routing_client_reads_our_api() {
    let (go, ours) = mixed(4, 4).await;
    let keys = cids("delegated", 3);
    let mhs: Vec<_> = keys.iter().map(|k| k.1).collect();
    ours[0]
        .provider()
        .start_providing(false, &mhs)
        .await
        .unwrap();
    let (addr, _server) = api::serve(
        ours[2].clone(),
        "127.0.0.1:0".parse().unwrap(),
        std::future::pending(),
    )
    .await
    .unwrap();
    let url = format!("http://{addr}");
    for (cid, _) in &keys {
        let by_http = go
            .ok(json!({"cmd": "http_providers", "node": 0, "url": url, "key": cid}))
            .await;
        let by_dht = go
            .ok(json!({"cmd": "find_providers", "node": 0, "keys": [cid], "count": 20}))
            .await;
        let by_http: HashSet<PeerId> = go_peers::ids(&by_http).into_iter().collect();
        let by_dht: HashSet<PeerId> = go_peers::ids(&by_dht[0]).into_iter().collect();
        assert_eq!(by_http, by_dht, "providers of {cid}");
        assert!(by_http.contains(&ours[0].peer_id()));
    }
    for target in [go.nodes[3].clone(), ours[1].info().clone()] {
        let by_http = go
            .ok(json!({"cmd": "http_peers", "node": 0, "url": url, "peer": peer_json(&target)}))
            .await;
        let by_dht = go
            .ok(json!({"cmd": "find_peer", "node": 0, "peer": peer_json(&target)}))
            .await;
        let by_http: Vec<PeerInfo> = by_http
            .as_array()
            .unwrap()
            .iter()
            .map(go_peers::parse_peer)
            .collect();
        assert_eq!(by_http.len(), 1, "{by_http:?}");
        assert_eq!(by_http[0].peer_id, target.peer_id);
        let by_dht = go_peers::parse_peer(&by_dht);
        let http_addrs: HashSet<_> = by_http[0].addrs.iter().collect();
        let dht_addrs: HashSet<_> = by_dht.addrs.iter().collect();
        assert!(
            !http_addrs.is_disjoint(&dht_addrs),
            "{http_addrs:?} vs {dht_addrs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn newer_ipns_records_win_and_expired_or_mismatched_records_are_refused() {
    let (go, ours) = mixed(4, 4).await;
    let seed = hex::encode([7u8; 32]);
    let path = |i: usize| format!("/ipfs/{}", cids("ipns-seq", 4)[i].0);
    let mut by_seq = Vec::new();
    for seq in 1..=3 {
        by_seq.push(
            go.ok(json!({"cmd": "ipns_record", "value": path(seq), "seed": seed, "seq": seq}))
                .await,
        );
    }
    let key = by_seq[0]["key"].clone();
    let go_get = || async {
        go.ok(json!({"cmd": "get_value", "node": 2, "key": key}))
            .await
            .as_str()
            .unwrap()
            .to_owned()
    };
    let our_get = || async {
        let got = ours[3].get_value(&record(&by_seq[0]).key).await.unwrap();
        hex::encode(&got.expect("found").value)
    };
    // Go puts seq 1, ours seq 2: both sides then get seq 2.
    go.ok(json!({"cmd": "put_value", "node": 0, "key": key, "value": by_seq[0]["value"]}))
        .await;
    ours[1].put_value(record(&by_seq[1])).await.unwrap();
    assert_eq!(go_get().await, by_seq[1]["value"].as_str().unwrap());
    assert_eq!(our_get().await, by_seq[1]["value"].as_str().unwrap());
    // Go puts seq 3: ours gets it.
    go.ok(json!({"cmd": "put_value", "node": 1, "key": key, "value": by_seq[2]["value"]}))
        .await;
    assert_eq!(our_get().await, by_seq[2]["value"].as_str().unwrap());
    // An older record sent to a server holding seq 3 is refused by both servers.
    let older = to_ours_put(&go, &ours[2], &by_seq[0]).await;
    assert!(older.is_err(), "our server took an older IPNS record");
    let to_go = ours[2]
        .transport()
        .request(
            &go.nodes[3],
            Request::PutValue {
                record: record(&by_seq[0]),
            },
        )
        .await;
    assert!(
        !matches!(to_go, Ok(Some(Response::PutValue { .. }))),
        "Go's server took an older IPNS record: {to_go:?}"
    );
    assert_eq!(go_get().await, by_seq[2]["value"].as_str().unwrap());
    assert_eq!(our_get().await, by_seq[2]["value"].as_str().unwrap());

    // Expired (valid signature, EOL a minute ago), mismatched (/pk/ of one peer holding
    // another's key) and weak-key records: both validators and both servers refuse them.
    let expired = go
        .ok(json!({"cmd": "ipns_record", "value": path(0), "eol": -60}))
        .await;
    let mut pk_key = b"/pk/".to_vec();
    pk_key.extend(go.nodes[0].peer_id.to_bytes());
    let other = go.ok(json!({"cmd": "pk_record", "node": 1})).await;
    let mismatched = json!({"key": hex::encode(&pk_key), "value": other["value"]});
    // go-libp2p refuses RSA keys under 2048 bits.
    let weak_rsa = go
        .ok(json!({"cmd": "pk_record", "node": 0, "key_type": "rsa1024"}))
        .await;
    for (what, bad) in [
        ("expired", &expired),
        ("mismatched", &mismatched),
        ("1024-bit RSA", &weak_rsa),
    ] {
        let verdict = go
            .ok(json!({"cmd": "validate", "key": bad["key"], "value": bad["value"]}))
            .await;
        assert_eq!(
            verdict["valid"],
            json!(false),
            "Go on the {what} record: {verdict}"
        );
        assert!(
            ours[1].put_value(record(bad)).await.is_err(),
            "our client took the {what} record"
        );
        assert!(
            to_ours_put(&go, &ours[2], bad).await.is_err(),
            "our server took the {what} record"
        );
        let to_go = ours[2]
            .transport()
            .request(
                &go.nodes[3],
                Request::PutValue {
                    record: record(bad),
                },
            )
            .await;
        assert!(
            !matches!(to_go, Ok(Some(Response::PutValue { .. }))),
            "Go's server took the {what} record: {to_go:?}"
        );
    }
}

/// The bytes of the peer ids and addresses of `peers`: less than their encoding in a message.
fn payload(peers: &[PeerInfo]) -> usize {
    peers
        .iter()
        .map(|p| p.peer_id.to_bytes().len() + p.addrs.iter().map(|a| a.len()).sum::<usize>())
        .sum()
}

/// One PUT_VALUE of `record` (`{key, value}` in hex) from Go node 1 to our `node`.
async fn to_ours_put(
    go: &GoPeers,
    node: &Node,
    record: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    go.call(
        json!({"cmd": "send_put_value", "node": 1, "peer": peer_json(node.info()),
        "key": record["key"], "value": record["value"]}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Go peer: run `cargo xtask interop`"]
async fn records_of_rsa_secp256k1_and_ecdsa_keys_both_ways() {
    // Go accepts every libp2p key type in /pk/ and IPNS records; many Amino peers and IPNS
    // names have RSA keys.
    let (go, ours) = mixed(3, 3).await;
    let path = format!("/ipfs/{}", cids("key-types", 1)[0].0);
    for key_type in ["rsa", "secp256k1", "ecdsa"] {
        let pk = go
            .ok(json!({"cmd": "pk_record", "node": 0, "key_type": key_type}))
            .await;
        let by_go = go
            .ok(json!({"cmd": "ipns_record", "value": path, "key_type": key_type}))
            .await;
        let by_ours = go
            .ok(json!({"cmd": "ipns_record", "value": path, "key_type": key_type}))
            .await;
        for (what, r) in [("/pk/", &pk), ("IPNS", &by_go), ("IPNS", &by_ours)] {
            let verdict = go
                .ok(json!({"cmd": "validate", "key": r["key"], "value": r["value"]}))
                .await;
            assert_eq!(
                verdict["valid"],
                json!(true),
                "Go on {key_type} {what}: {verdict}"
            );
        }
        // Our server takes Go's records, and our client gets them.
        for (what, r) in [("/pk/", &pk), ("IPNS", &by_go)] {
            let sent = to_ours_put(&go, &ours[2], r).await;
            assert!(
                sent.is_ok(),
                "our server refused a {key_type} {what} record: {sent:?}"
            );
            let got = ours[0].get_value(&record(r).key).await;
            assert!(
                matches!(&got, Ok(Some(g)) if g.value == record(r).value),
                "our client on a {key_type} {what} record: {got:?}"
            );
        }
        // Our client puts one, Go gets it.
        ours[1].put_value(record(&by_ours)).await.unwrap();
        let got = go
            .ok(json!({"cmd": "get_value", "node": 2, "key": by_ours["key"]}))
            .await;
        assert_eq!(got.as_str().unwrap(), by_ours["value"].as_str().unwrap());
    }
}
