//! A `kill -9` in the middle of a scheduled reprovide: a real `dht-node run` process with its
//! RocksDB keystore and a short reprovide interval, among DHT servers on 127.0.0.1 (in this
//! process, recording every ADD_PROVIDER they receive), is killed while it sends one slice
//! of its schedule, then restarted on the same data directory. It resends at most the slice
//! that was in flight: not the whole keyspace, not the slice it had finished.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::HashSet,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use common::{
    Node,
    process::{NodeProc, read_log},
};
use dht_node::transport::KadConfig;
use dht_proto::{K_VALUE, Key, PeerId, PeerInfo, Prefix, Request, Response, cid::Cid};

/// Servers: the sweep cuts the keyspace into slices of about 40 servers, so 200 servers
/// make 4 slices.
const SERVERS: usize = 200;
/// Keys provided: a few thousand per slice, 20 ADD_PROVIDER each, so that a slice takes a
/// while to send and the kill lands inside it. (With 2,000 keys, once a peer's records went
/// to its connection in one command, a slice was sometimes sent, and counted done, before
/// the kill landed; the records still in the transport's buffers were lost with the
/// process.)
const KEYS: usize = 10_000;

/// How many ADD_PROVIDER each server has received so far.
fn snapshot(servers: &[Node]) -> Vec<usize> {
    servers
        .iter()
        .map(|s| {
            s.seen
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, r)| matches!(r, Request::AddProvider { .. }))
                .count()
        })
        .collect()
}

/// The Kademlia keys of the ADD_PROVIDER the servers received after `since`.
fn received_since(servers: &[Node], since: &[usize]) -> Vec<Key> {
    servers
        .iter()
        .zip(since)
        .flat_map(|(s, &n)| {
            s.seen()
                .into_iter()
                .filter_map(|(_, r)| match r {
                    Request::AddProvider { key, .. } => Some(Key::hash(&key)),
                    _ => None,
                })
                .skip(n)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The slice of the last reprovide job the node's log names (`job=Reprovide { slice:
/// Prefix("0110"), .. }`).
fn last_reprovide_slice(log: &str) -> Option<Prefix> {
    log.lines().rev().find_map(|line| {
        // The worker's `job` line lists the slices it took (`jobs=[Reprovide { slice: … }]`).
        let rest = line.split("Reprovide { slice: Prefix(\"").nth(1)?;
        rest.split('"').next()?.parse().ok()
    })
}

/// The 20 servers of `all` closest to `target`.
fn closest(all: &[PeerInfo], target: &[u8]) -> Vec<PeerInfo> {
    let target = Key::hash(target);
    let mut peers = all.to_vec();
    peers.sort_by_key(|p| Key::from_peer_id(&p.peer_id).distance(&target));
    peers.truncate(K_VALUE);
    peers
}

async fn servers() -> Vec<Node> {
    let all: Arc<OnceLock<Vec<PeerInfo>>> = Arc::new(OnceLock::new());
    let mut servers = Vec::with_capacity(SERVERS);
    for _ in 0..SERVERS {
        let all = all.clone();
        let answer = move |_: PeerId, request: &Request| {
            Ok(match request {
                Request::FindNode { key } => Some(Response::FindNode {
                    closer_peers: closest(all.get().map_or(&[][..], Vec::as_slice), key),
                }),
                Request::GetProviders { key } => Some(Response::GetProviders {
                    key: key.clone(),
                    providers: Vec::new(),
                    closer_peers: closest(all.get().map_or(&[][..], Vec::as_slice), key),
                }),
                Request::Ping => Some(Response::Ping),
                _ => None,
            })
        };
        servers.push(Node::start(KadConfig::default(), Arc::new(answer)).await);
    }
    let infos = servers.iter().map(|s| s.info.clone()).collect();
    all.set(infos).unwrap();
    servers
}

/// `/ip4/…/tcp/…/p2p/<id>` of a server.
fn dial_addr(node: &Node) -> String {
    format!("{}/p2p/{}", node.info.addrs[0], node.info.peer_id)
}

/// The Kademlia key of a CID string.
fn kad(cid: &str) -> Key {
    Key::from_cid(&cid.parse::<Cid>().unwrap())
}

/// Waits until `check` holds, polling every 20 ms, at most `timeout`.
async fn until(timeout: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_reprovide_resends_at_most_the_slice_in_flight() {
    let servers = servers().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("provider");
    let boot: Vec<String> = servers[..4].iter().map(dial_addr).collect();
    // One worker: one slice in flight at a time. Slices are due every 60 s.
    let args = ["--reprovide-interval", "120s", "--workers", "1"];
    let log = Some("info,dht_provider=debug");
    let mut node = NodeProc::start_at(&dir, &boot, &args, log);

    let keys = common::process::cids("crash-reprovide", KEYS);
    assert_eq!(node.api.provide(&keys, true).await.unwrap(), KEYS as u64);
    let first = node.api.stats().await.unwrap();
    assert_eq!(first.keys_provided, KEYS as u64, "{first:?}");
    // The last records land: the servers' counts stop moving.
    let mut last = snapshot(&servers);
    until(
        Duration::from_secs(30),
        "the first provide's records land",
        async || {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = snapshot(&servers);
            let quiet = now == last;
            last = now;
            quiet
        },
    )
    .await;
    let first_sent = snapshot(&servers);
    eprintln!(
        "first provide: {} ADD_PROVIDER received; {first:?}",
        first_sent.iter().sum::<usize>()
    );

    // The schedule's next slice comes due: kill the node once it has sent part of it.
    until(
        Duration::from_secs(90),
        "a scheduled reprovide starts",
        async || {
            snapshot(&servers).iter().sum::<usize>() >= first_sent.iter().sum::<usize>() + 1_000
        },
    )
    .await;
    node.kill_9();
    let at_kill = snapshot(&servers);
    let in_flight = received_since(&servers, &first_sent);
    let slice = last_reprovide_slice(&read_log(&dir)).expect("the log names the reprovide's slice");
    let slice_keys: HashSet<Key> = keys
        .iter()
        .map(|c| kad(c))
        .filter(|k| slice.contains(k))
        .collect();
    // The most a slice's keys are sent: each to its k closest, plus at most k/2 spares
    // while the sweep still assumes some servers are silent.
    let slice_records = slice_keys.len() * (K_VALUE + K_VALUE / 2);
    eprintln!(
        "killed after {} ADD_PROVIDER of the reprovide of slice {slice} ({} keys, at most {slice_records} records)",
        in_flight.len(),
        slice_keys.len()
    );
    assert!(!slice.is_empty(), "one slice only: the test needs several");
    // (The slice before it may have ended just after the first provide: only this slice's
    // records count.)
    let in_flight: Vec<Key> = in_flight
        .into_iter()
        .filter(|k| slice.contains(k))
        .collect();
    assert!(
        in_flight.len() < slice_records,
        "the node was killed after its slice was sent ({} of {slice_records})",
        in_flight.len()
    );

    // Restarted: it sends the slice in flight again, and nothing else until the next slice
    // is due.
    let restarted = Instant::now();
    let node = NodeProc::start_at(&dir, &boot, &args, log);
    let mut last = (at_kill.iter().sum::<usize>(), Instant::now());
    until(
        Duration::from_secs(25),
        "the restarted node goes quiet",
        async || {
            let now = snapshot(&servers).iter().sum::<usize>();
            if now != last.0 {
                last = (now, Instant::now());
            }
            last.1.elapsed() > Duration::from_secs(3) && now > at_kill.iter().sum::<usize>()
        },
    )
    .await;
    let after = received_since(&servers, &at_kill);
    let stats = node.api.stats().await.unwrap();
    eprintln!(
        "after the restart ({:.1} s): {} ADD_PROVIDER; {stats:?}",
        restarted.elapsed().as_secs_f64(),
        after.len()
    );
    assert!(
        after.iter().all(|k| slice.contains(k)),
        "a key outside the slice in flight was sent"
    );
    assert!(
        after.len() <= slice_records,
        "{} ADD_PROVIDER after the restart, more than the slice's most, {slice_records}",
        after.len()
    );
    // And the slice is done: each of its keys was sent, before the kill or after.
    let sent: HashSet<Key> = in_flight.iter().chain(&after).copied().collect();
    assert_eq!(
        sent.len(),
        slice_keys.len(),
        "keys of the slice were never sent"
    );
    drop(node);
}
