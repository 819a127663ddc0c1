//! Hostile peers over real TCP on 127.0.0.1: what one unauthenticated peer may cost a node.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Node, RawPeer, within};
use dht_node::transport::{ConnectionLimits, KadConfig, TransportConfig, TransportError};
use dht_proto::pb::varint_bytes;
use dht_proto::{Request, Response};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::Multiaddr;

async fn honest_request_answered(client: &Node, server: &Node) {
    let out = within(
        "honest request",
        client.handle.request(
            &server.info,
            Request::FindNode {
                key: b"honest".to_vec(),
            },
        ),
    )
    .await;
    assert!(matches!(out, Ok(Some(_))), "{out:?}");
}

/// Polls `f` until it returns `want`, for at most 5 s; returns the last value seen.
async fn settles<F, Fut>(want: usize, mut f: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let got = f().await;
        if got == want || Instant::now() > until {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_announcing_4_mib_is_refused_at_its_length_prefix() {
    let server = Node::server().await;
    let hostile = RawPeer::start();
    hostile.connect(&server.info).await.unwrap();
    let mut stream = hostile.open(server.info.peer_id).await.unwrap();
    // The largest body a response may have, announced for a request, and 16 bytes of it.
    let mut frame = varint_bytes(4 * 1024 * 1024);
    frame.extend_from_slice(&[0u8; 16]);
    stream.write_all(&frame).await.unwrap();
    stream.flush().await.unwrap();
    let started = Instant::now();
    // The server resets the stream at once instead of waiting (60 s) for the rest.
    let mut buf = [0u8; 1];
    let read = within("the server gives up the stream", stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.handle.stats().inbound_stream_errors, 1);
    assert!(server.seen().is_empty());
    // Requests up to the limit still pass, and honest peers are answered.
    let client = Node::server().await;
    honest_request_answered(&client, &server).await;
    let key = vec![7u8; 60 * 1024];
    let out = within(
        "a 60 KiB request",
        client
            .handle
            .request(&server.info, Request::FindNode { key }),
    )
    .await;
    assert!(matches!(out, Ok(Some(_))), "{out:?}");
}

async fn server_with(limits: ConnectionLimits) -> Node {
    server_listening(limits, common::loopback()).await
}

async fn server_listening(limits: ConnectionLimits, listen: Multiaddr) -> Node {
    Node::start_listening(
        TransportConfig::default()
            .with_kad(KadConfig::default())
            .with_limits(limits),
        std::sync::Arc::new(common::default_answer),
        vec![listen],
    )
    .await
}

/// Two inbound connections per IP on a server listening on `listen` only: a third peer from
/// the same IP is refused, and takes the place of one that leaves.
async fn per_ip_limit_holds_and_releases(listen: Multiaddr) {
    let server = server_listening(
        ConnectionLimits::default()
            .with_max_incoming_per_ip(2)
            .with_limit_loopback(true),
        listen,
    )
    .await;
    let mut peers: Vec<RawPeer> = (0..3).map(|_| RawPeer::start()).collect();
    let mut results = Vec::new();
    for p in &peers {
        results.push(p.connect(&server.info).await.is_ok());
    }
    assert_eq!(results[..2], [true, true], "the first two peers connect");
    // The third is refused. Over QUIC the refusal may come just after its dial reported the
    // connection (the server closes it once established): what counts is that none stays.
    assert_eq!(
        settles(0, || peers[2].open_connections()).await,
        0,
        "the third peer from the IP is refused ({results:?})"
    );
    // A peer that leaves frees its place.
    drop(peers.remove(0));
    let newcomer = RawPeer::start();
    let until = Instant::now() + Duration::from_secs(5);
    let mut connected = newcomer.connect(&server.info).await;
    while connected.is_err() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        connected = newcomer.connect(&server.info).await;
    }
    assert!(
        connected.is_ok(),
        "the newcomer connects once a place is free"
    );
    assert_eq!(settles(1, || newcomer.open_connections()).await, 1);
    let _ = peers[1].connect(&server.info).await;
    assert_eq!(
        settles(0, || peers[1].open_connections()).await,
        0,
        "and no more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_connections_per_ip_are_limited_and_released() {
    per_ip_limit_holds_and_releases(common::loopback()).await;
}

/// The same limit holds for QUIC connections (UDP, where no accept queue stands before it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_quic_connections_per_ip_are_limited_and_released() {
    per_ip_limit_holds_and_releases("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_peer_and_in_total_are_limited() {
    let server = server_with(
        ConnectionLimits::default()
            .with_max_established_per_peer(1)
            .with_max_established_incoming(3),
    )
    .await;
    // One peer, three connections: one stays.
    let greedy = RawPeer::start();
    for _ in 0..3 {
        let _ = greedy.connect(&server.info).await;
    }
    assert_eq!(settles(1, || greedy.open_connections()).await, 1);
    // Four more peers: two fit under the total of three.
    let others: Vec<RawPeer> = (0..4).map(|_| RawPeer::start()).collect();
    for p in &others {
        let _ = p.connect(&server.info).await;
    }
    let total = settles(2, || async {
        let mut n = 0;
        for p in &others {
            n += p.open_connections().await;
        }
        n
    })
    .await;
    assert_eq!(total, 2);
}

/// Whether a server's "slow" requests may finish, and how many entered its handler. Opens
/// when dropped, however the test ends, so that no handler thread blocks for ever.
struct Gate {
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    entered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn entered(&self) -> usize {
        self.entered.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.open();
    }
}

/// A server whose GET_PROVIDERS of "slow" blocks (a store waiting on its disk) until its
/// [`Gate`] opens.
async fn slow_server(config: TransportConfig) -> (Node, Gate) {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    };
    let open = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(AtomicUsize::new(0));
    let (gate, count) = (open.clone(), entered.clone());
    let server = Node::start_with(
        config,
        Arc::new(move |peer, request: &Request| {
            if request.key() == b"slow" {
                count.fetch_add(1, Ordering::SeqCst);
                while !gate.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            common::default_answer(peer, request)
        }),
    )
    .await;
    (server, Gate { open, entered })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_work_is_bounded_and_the_excess_shed_at_once() {
    let (server, gate) = slow_server(
        TransportConfig::default().with_kad(KadConfig::default().with_max_inbound_requests(2)),
    )
    .await;
    let slow = || Request::GetProviders {
        key: b"slow".to_vec(),
    };
    let busy: Vec<Node> = vec![Node::server().await, Node::server().await];
    let mut waiting = Vec::new();
    for c in &busy {
        let (handle, info) = (c.handle.clone(), server.info.clone());
        waiting.push(tokio::spawn(
            async move { handle.request(&info, slow()).await },
        ));
    }
    within("two requests being answered", async {
        while gate.entered() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // A third is refused at once, not queued behind them (or left to time out after 10 s).
    let third = Node::server().await;
    let started = Instant::now();
    let out = within(
        "a third request",
        third.handle.request(&server.info, slow()),
    )
    .await;
    assert!(
        matches!(&out, Err(e) if !matches!(e, TransportError::Timeout)),
        "{out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(gate.entered(), 2, "the third never reached the handler");
    assert!(server.handle.stats().inbound_shed >= 1);
    // Once the work is done, requests are answered again.
    gate.open();
    for w in waiting {
        let out = within("the slow ones", w).await.unwrap();
        assert!(
            matches!(out, Ok(Some(Response::GetProviders { .. }))),
            "{out:?}"
        );
    }
    let out = within("after the load", third.handle.request(&server.info, slow())).await;
    assert!(
        matches!(out, Ok(Some(Response::GetProviders { .. }))),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_enters_the_routing_table_only_once_it_answered() {
    use dht_node::builder::NodeBuilder;
    let node = NodeBuilder::local().build().await.unwrap();
    // Identify says both serve the DHT; one refuses every request.
    let liar = Node::start(
        KadConfig::default(),
        std::sync::Arc::new(|_, _: &Request| Err("no".into())),
    )
    .await;
    let honest = Node::server().await;
    liar.handle.dial(node.info()).await.unwrap();
    honest.handle.dial(node.info()).await.unwrap();
    within("the honest server is admitted", async {
        while !node.table().contains(&honest.info.peer_id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !node.table().contains(&liar.info.peer_id),
        "the liar is left out"
    );
    assert_eq!(
        dht_routing_table::RoutingTable::len(node.table().as_ref()),
        1
    );
    // It was probed too: it saw the FIND_NODE and refused it.
    within("the liar is probed", async {
        while liar.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(!node.table().contains(&liar.info.peer_id));
    node.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_to_us_admits_nobody_to_the_routing_table() {
    use dht_node::builder::NodeBuilder;
    let node = NodeBuilder::local().build().await.unwrap();
    // Identify says it serves the DHT, it refuses the admission probe, and it keeps sending
    // requests: before, the first request after identify put it in the table.
    let hostile = Node::start(
        KadConfig::default(),
        std::sync::Arc::new(|_, _: &Request| Err("no".into())),
    )
    .await;
    for _ in 0..10 {
        let out = within(
            "a hostile request",
            hostile
                .handle
                .request(node.info(), Request::FindNode { key: b"x".to_vec() }),
        )
        .await;
        assert!(matches!(out, Ok(Some(_))), "{out:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    within("the node probed it", async {
        while hostile.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(!node.table().contains(&hostile.info.peer_id));
    assert_eq!(
        dht_routing_table::RoutingTable::len(node.table().as_ref()),
        0
    );
    node.close().await.unwrap();
}

/// Writes `request` on a new stream from `peer` to `server`; returns the stream, open (an
/// error if the server reset it already).
async fn write_on_new_stream(
    peer: &RawPeer,
    server: &dht_proto::PeerInfo,
    request: &Request,
) -> std::io::Result<libp2p::Stream> {
    let mut frame = Vec::new();
    dht_proto::Codec::default()
        .encode_request(request, &mut frame)
        .unwrap();
    let mut stream = peer.open(server.peer_id).await.unwrap();
    stream.write_all(&frame).await?;
    stream.flush().await?;
    Ok(stream)
}

/// Sends ADD_PROVIDER for `key` from `peer` (its own record, at `addr`) on a new stream to
/// `server`, and closes the stream.
async fn announce(peer: &RawPeer, server: &dht_proto::PeerInfo, key: &[u8], addr: &str) {
    let request = Request::AddProvider {
        key: key.to_vec(),
        providers: vec![dht_proto::PeerInfo::new(
            peer.peer_id,
            vec![addr.parse().unwrap()],
        )],
    };
    let mut stream = write_on_new_stream(peer, server, &request).await.unwrap();
    stream.close().await.unwrap();
}

/// The providers of `key` that `asker` gets from `server`.
async fn providers_of(
    asker: &Node,
    server: &dht_proto::PeerInfo,
    key: &[u8],
) -> Vec<dht_proto::PeerId> {
    let out = within(
        "GET_PROVIDERS",
        asker
            .handle
            .request(server, Request::GetProviders { key: key.to_vec() }),
    )
    .await;
    match out {
        Ok(Some(Response::GetProviders { providers, .. })) => {
            providers.into_iter().map(|p| p.peer_id).collect()
        }
        other => panic!("GET_PROVIDERS: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squatters_from_one_network_cannot_lock_an_honest_provider_out() {
    use dht_node::builder::NodeBuilder;
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::local()
        .data_dir(dir.path())
        .rocks_store(dht_provider_store::Config::small())
        .build()
        .await
        .unwrap();
    let server = node.info().clone();
    let asker = Node::server().await;
    let key = b"\x12\x20a CID that twenty squatters want".to_vec();
    // 20 fresh peer ids from one network (127.0.1.1: its /24 is 127.0.1.0) take every slot.
    let squatter_ip: std::net::IpAddr = "127.0.1.1".parse().unwrap();
    let squatters: Vec<RawPeer> = (0..20).map(|_| RawPeer::start_from(squatter_ip)).collect();
    for s in &squatters {
        s.connect(&server).await.unwrap();
        announce(s, &server, &key, "/ip4/127.0.1.1/tcp/4001").await;
    }
    let until = Instant::now() + Duration::from_secs(10);
    while providers_of(&asker, &server, &key).await.len() < 20 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(providers_of(&asker, &server, &key).await.len(), 20);
    // An honest provider from another network announces; the squatters keep re-announcing.
    let honest = RawPeer::start_from("127.0.2.1".parse().unwrap());
    honest.connect(&server).await.unwrap();
    announce(&honest, &server, &key, "/ip4/127.0.2.1/tcp/4001").await;
    for s in &squatters {
        announce(s, &server, &key, "/ip4/127.0.1.1/tcp/4001").await;
    }
    let until = Instant::now() + Duration::from_secs(5);
    let mut listed = providers_of(&asker, &server, &key).await;
    while !listed.contains(&honest.peer_id) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        listed = providers_of(&asker, &server, &key).await;
    }
    assert!(
        listed.contains(&honest.peer_id),
        "the honest provider is locked out: {} squatters listed",
        listed.len()
    );
    assert_eq!(listed.len(), 20);
    node.close().await.unwrap();
}

/// Sends `request` on a new stream from `peer` to `server` and reads the answer.
async fn raw_request(
    peer: &RawPeer,
    server: &dht_proto::PeerInfo,
    request: &Request,
) -> Result<Response, String> {
    let codec = dht_proto::Codec::default();
    let mut stream = peer.open(server.peer_id).await?;
    codec
        .write_request(&mut stream, request)
        .await
        .map_err(|e| e.to_string())?;
    codec
        .read_response(&mut stream)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ip_holding_all_its_streams_cannot_make_another_ip_shed() {
    // 8 permits, 2 per IP; loopback counted, so 127.0.1.1 and 127.0.2.1 are two IPs.
    let (server, gate) = slow_server(
        TransportConfig::default()
            .with_kad(
                KadConfig::default()
                    .with_max_inbound_requests(8)
                    .with_max_inbound_requests_per_ip(2),
            )
            .with_limits(ConnectionLimits::default().with_limit_loopback(true)),
    )
    .await;
    let hostile = RawPeer::start_from("127.0.1.1".parse().unwrap());
    hostile.connect(&server.info).await.unwrap();
    let slow = Request::GetProviders {
        key: b"slow".to_vec(),
    };
    // It opens 8 streams (all the node's permits, before) and asks something slow on each;
    // the node resets those beyond the IP's share.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.extend(
            write_on_new_stream(&hostile, &server.info, &slow)
                .await
                .ok(),
        );
    }
    within(
        "each hostile request entered the handler or was shed",
        async {
            let shed = || server.handle.stats().inbound_shed;
            while gate.entered() as u64 + shed() < 8 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    // Another IP is answered at once.
    let honest = RawPeer::start_from("127.0.2.1".parse().unwrap());
    honest.connect(&server.info).await.unwrap();
    let started = Instant::now();
    let out = within(
        "the other IP's request",
        raw_request(
            &honest,
            &server.info,
            &Request::FindNode {
                key: b"honest".to_vec(),
            },
        ),
    )
    .await;
    assert!(matches!(out, Ok(Response::FindNode { .. })), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(gate.entered(), 2, "one IP holds its share only");
    assert!(server.handle.stats().inbound_shed >= 6);
    gate.open();
    drop(held);
}

/// How many of 12 fresh peers on 127.0.0.1 hold a connection to a `dht-node run` process
/// started with `extra`.
async fn loopback_peers_connected_to_a_process(extra: &[&str]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let node = common::process::NodeProc::start_with(dir.path(), &[], extra);
    let info = dht_node::builder::parse_peer(&node.addrs[0]).unwrap();
    let peers: Vec<RawPeer> = (0..12).map(|_| RawPeer::start()).collect();
    let mut connected = 0;
    for p in &peers {
        if p.connect(&info).await.is_ok() {
            connected += 1;
        }
    }
    // Refused connections may be closed just after their handshake: count what stays open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut open = 0;
    for p in &peers {
        open += p.open_connections().await;
    }
    assert!(open <= connected, "{open} open of {connected} connected");
    open
}

/// `--limit-loopback` applies the per-IP limits (8 inbound connections per IP by default) to
/// peers on 127.0.0.1, which a node exempts otherwise (a devnet runs on one machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_loopback_applies_the_per_ip_limits_to_loopback_peers() {
    assert_eq!(loopback_peers_connected_to_a_process(&[]).await, 12);
    let limited = loopback_peers_connected_to_a_process(&["--limit-loopback"]).await;
    assert_eq!(limited, 8, "the default per-IP limit");
}
