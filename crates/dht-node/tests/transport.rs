//! Two or more of our nodes over real TCP (and QUIC) on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Node, default_answer, fixed_peers, some_peers, unreachable_peer, within};
use dht_node::transport::{KadConfig, Mode, TransportConfig, TransportError, TransportEvent};
use dht_proto::{CodecError, Multiaddr, PeerInfo, Record, Request, Response};

fn find_node(key: &[u8]) -> Request {
    Request::FindNode { key: key.to_vec() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_node_request_and_response() {
    let a = Node::server().await;
    let b = Node::server().await;
    let out = within("request", a.handle.request(&b.info, find_node(b"target"))).await;
    assert_eq!(
        out.expect("a response"),
        Some(Response::FindNode {
            closer_peers: fixed_peers()
        })
    );
    assert_eq!(b.seen(), vec![(a.info.peer_id, find_node(b"target"))]);
}

/// QUIC beside TCP: a node that listens on QUIC alone is dialled over it by a node that
/// listens on TCP, and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_travel_over_quic() {
    let quic: Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("valid");
    let a = Node::server().await;
    let b = Node::start_listening(
        TransportConfig::default(),
        Arc::new(default_answer),
        vec![quic],
    )
    .await;
    assert!(
        b.info.addrs.iter().all(|addr| {
            addr.iter()
                .any(|p| matches!(p, libp2p::multiaddr::Protocol::QuicV1))
        }),
        "{:?}",
        b.info.addrs
    );
    let out = within(
        "request",
        a.handle.request(&b.info, find_node(b"over quic")),
    )
    .await;
    assert_eq!(
        out.expect("a response"),
        Some(Response::FindNode {
            closer_peers: fixed_peers()
        })
    );
    assert_eq!(b.seen(), vec![(a.info.peer_id, find_node(b"over quic"))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_stream() {
    let a = Node::server().await;
    let b = Node::server().await;
    let requests = [
        find_node(b"one"),
        Request::GetProviders {
            key: b"two".to_vec(),
        },
        Request::Ping,
        Request::PutValue {
            record: Record::new(b"/v/three".to_vec(), b"value".to_vec()),
        },
        Request::GetValue {
            key: b"/v/three".to_vec(),
        },
        Request::AddProvider {
            key: b"four".to_vec(),
            providers: vec![a.info.clone()],
        },
        find_node(b"five"),
    ];
    for request in &requests {
        let out = within("request", a.handle.request(&b.info, request.clone())).await;
        let response = out.expect("request succeeds");
        assert_eq!(
            response.is_some(),
            request.message_type().expects_response()
        );
    }
    let sent = a.handle.stats();
    assert_eq!(sent.outbound_streams_opened, 1, "{sent:?}");
    assert_eq!(sent.outbound_streams_reused, requests.len() as u64 - 1);
    assert_eq!(sent.outbound_requests_ok, requests.len() as u64);
    let served = b.handle.stats();
    assert_eq!(served.inbound_streams_accepted, 1, "{served:?}");
    assert_eq!(served.inbound_requests, requests.len() as u64);
    assert_eq!(served.inbound_stream_errors, 0);
    let seen: Vec<Request> = b.seen().into_iter().map(|(_, r)| r).collect();
    assert_eq!(seen, requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_provider_has_no_response_and_is_delivered() {
    let a = Node::server().await;
    // A handler that (wrongly) answers ADD_PROVIDER: the transport must not write it.
    let b = Node::start(
        KadConfig::default(),
        Arc::new(|peer, request: &Request| match request {
            Request::AddProvider { .. } => Ok(Some(Response::Ping)),
            _ => default_answer(peer, request),
        }),
    )
    .await;
    let add = Request::AddProvider {
        key: b"cid-multihash".to_vec(),
        providers: vec![a.info.clone()],
    };
    let out = within("add provider", a.handle.request(&b.info, add.clone())).await;
    assert_eq!(out.expect("written"), None);
    // The next request on the same stream reads its own response, not a stray one.
    let out = within("find node", a.handle.request(&b.info, find_node(b"k"))).await;
    assert!(
        matches!(out, Ok(Some(Response::FindNode { .. }))),
        "{out:?}"
    );
    assert_eq!(a.handle.stats().outbound_streams_opened, 1);
    assert_eq!(b.seen()[0], (a.info.peer_id, add));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_add_providers_share_stream_writes() {
    let a = Node::server().await;
    let b = Node::server().await;
    // Connected, with a stream to reuse.
    let out = within("ping", a.handle.request(&b.info, Request::Ping)).await;
    assert!(out.is_ok(), "{out:?}");
    let before = a.handle.stats();
    let adds: Vec<Request> = (0..500u32)
        .map(|i| Request::AddProvider {
            key: format!("cid-multihash-{i:04}").into_bytes(),
            providers: vec![a.info.clone()],
        })
        .collect();
    // A request with a response among them is answered as usual.
    let (written, found) = within(
        "500 add providers and a find node",
        futures::future::join(
            futures::future::join_all(adds.iter().map(|r| a.handle.request(&b.info, r.clone()))),
            a.handle.request(&b.info, find_node(b"meanwhile")),
        ),
    )
    .await;
    for out in written {
        assert_eq!(out.expect("written"), None);
    }
    assert!(
        matches!(found, Ok(Some(Response::FindNode { .. }))),
        "{found:?}"
    );
    let sent = a.handle.stats();
    let writes = sent.outbound_writes - before.outbound_writes;
    let requests = sent.outbound_requests_ok - before.outbound_requests_ok;
    println!("{writes} stream writes for {requests} requests");
    assert_eq!(requests, 501, "{sent:?}");
    // One write per request before batching; now a few per peer.
    assert!(writes <= 50, "{writes} writes for 501 requests: {sent:?}");
    // Every record arrives, once.
    all_delivered_once(&b, &a.info, adds.iter().map(|r| r.key().to_vec())).await;
}

/// Waits until `server` has received an ADD_PROVIDER from `provider` for each of `keys`,
/// and checks that none arrived twice.
async fn all_delivered_once(
    server: &Node,
    provider: &PeerInfo,
    keys: impl Iterator<Item = Vec<u8>>,
) {
    let expect: std::collections::BTreeSet<Vec<u8>> = keys.collect();
    within("all delivered", async {
        loop {
            let seen: Vec<Vec<u8>> = server
                .seen()
                .into_iter()
                .filter_map(|(_, r)| match r {
                    Request::AddProvider { key, providers } => {
                        assert_eq!(providers[0].peer_id, provider.peer_id);
                        Some(key)
                    }
                    _ => None,
                })
                .collect();
            if seen.len() >= expect.len() {
                assert_eq!(seen.len(), expect.len(), "a record arrived twice");
                assert_eq!(
                    seen.into_iter().collect::<std::collections::BTreeSet<_>>(),
                    expect
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Many records for one peer in one call: each reports once, by its index, and every record
/// arrives once, over a connection the call dials itself; the records share writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_providers_reports_each_record_once_and_delivers_all() {
    use futures::StreamExt;
    let a = Node::server().await;
    let b = Node::server().await;
    let keys: Vec<Vec<u8>> = (0..700u32)
        .map(|i| format!("cid-multihash-{i:04}").into_bytes())
        .collect();
    let outcomes: Vec<(usize, Result<Option<Response>, TransportError>)> = within(
        "700 records in one call",
        a.handle
            .add_providers(&b.info, &a.info, keys.clone())
            .collect(),
    )
    .await;
    let mut reported: Vec<usize> = outcomes.iter().map(|(i, _)| *i).collect();
    reported.sort_unstable();
    assert_eq!(reported, (0..keys.len()).collect::<Vec<_>>());
    for (i, out) in &outcomes {
        assert!(matches!(out, Ok(None)), "record {i}: {out:?}");
    }
    let stats = a.handle.stats();
    println!("{} stream writes for 700 records", stats.outbound_writes);
    assert!(stats.outbound_writes <= 70, "{stats:?}");
    all_delivered_once(&b, &a.info, keys.into_iter()).await;
}

/// Records for a peer that cannot be reached each fail, with the dial error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_providers_to_an_unreachable_peer_fail_each() {
    use futures::StreamExt;
    let a = Node::server().await;
    let keys: Vec<Vec<u8>> = (0..50u32).map(|i| vec![1, 2, i as u8]).collect();
    let outcomes: Vec<_> = within(
        "dial failure",
        a.handle
            .add_providers(&unreachable_peer(), &a.info, keys)
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(outcomes.len(), 50);
    for (i, out) in outcomes {
        assert!(
            matches!(out, Err(TransportError::Dial(_))),
            "record {i}: {out:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_providers_response_larger_than_16_kib() {
    let a = Node::server().await;
    // Within the decoder's cap of 256 peers per list.
    let providers = some_peers(250);
    let closer = some_peers(250);
    let (answer, answer_closer) = (providers.clone(), closer.clone());
    let b = Node::start(
        KadConfig::default(),
        Arc::new(move |_, request: &Request| {
            Ok(Some(Response::GetProviders {
                key: request.key().to_vec(),
                providers: answer.clone(),
                closer_peers: answer_closer.clone(),
            }))
        }),
    )
    .await;
    let request = Request::GetProviders { key: b"k".to_vec() };
    let out = within("get providers", a.handle.request(&b.info, request)).await;
    let Ok(Some(Response::GetProviders {
        providers: got,
        closer_peers: got_closer,
        ..
    })) = out
    else {
        panic!("unexpected {out:?}");
    };
    assert_eq!((got, got_closer), (providers.clone(), closer.clone()));
    let mut frame = Vec::new();
    dht_proto::Codec::default()
        .encode_response(
            &Response::GetProviders {
                key: b"k".to_vec(),
                providers,
                closer_peers: closer,
            },
            &mut frame,
        )
        .expect("encodes");
    assert!(frame.len() > 16 * 1024, "response is {} bytes", frame.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_resets_the_stream_on_both_sides() {
    let a = Node::server().await;
    let b = Node::start(
        KadConfig::default().with_max_request_size(16 * 1024),
        Arc::new(default_answer),
    )
    .await;
    let started = Instant::now();
    let out = within(
        "oversized request",
        a.handle.request(&b.info, find_node(&[7; 32 * 1024])),
    )
    .await;
    assert!(
        matches!(out, Err(TransportError::Codec(_))),
        "sender sees a stream error, got {out:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "not a timeout");
    assert!(b.seen().is_empty(), "the handler never sees it");
    // Once, and once more for the sender's single retry on a new stream.
    assert_eq!(b.handle.stats().inbound_stream_errors, 2);
    assert_eq!(a.handle.stats().outbound_streams_opened, 2);
    // The connection survives: the next request goes on a new stream.
    let out = within("next request", a.handle.request(&b.info, find_node(b"k"))).await;
    assert!(
        matches!(out, Ok(Some(Response::FindNode { .. }))),
        "{out:?}"
    );
    assert_eq!(a.handle.stats().outbound_streams_opened, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_response_resets_the_stream_on_both_sides() {
    let a = Node::start(
        KadConfig::default().with_max_message_size(16 * 1024),
        Arc::new(default_answer),
    )
    .await;
    let big = some_peers(600);
    let b = Node::start(
        KadConfig::default(),
        Arc::new(move |_, request: &Request| match request {
            Request::GetProviders { key } => Ok(Some(Response::GetProviders {
                key: key.clone(),
                providers: big.clone(),
                closer_peers: Vec::new(),
            })),
            _ => default_answer(libp2p::PeerId::random(), request),
        }),
    )
    .await;
    let request = Request::GetProviders { key: b"k".to_vec() };
    let out = within("oversized response", a.handle.request(&b.info, request)).await;
    assert!(
        matches!(
            out,
            Err(TransportError::Codec(CodecError::Oversized {
                max: 16384,
                ..
            }))
        ),
        "{out:?}"
    );
    // The receiver reset the stream; the server's yamux reports that as the end of the stream
    // when it reads the next request, and the connection stays usable.
    let out = within("next request", a.handle.request(&b.info, find_node(b"k"))).await;
    assert!(
        matches!(out, Ok(Some(Response::FindNode { .. }))),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_and_clients_are_told_apart() {
    let mut server = Node::server().await;
    let mut client = Node::start(
        KadConfig::default().with_mode(Mode::Client),
        Arc::new(default_answer),
    )
    .await;
    // The client can query the server.
    let out = within(
        "client asks",
        client.handle.request(&server.info, find_node(b"k")),
    )
    .await;
    assert!(matches!(out, Ok(Some(_))), "{out:?}");
    // Each learns the other's role from identify.
    let seen_by_client = client
        .event(|e| match e {
            TransportEvent::PeerIsServer(p) => Some(p),
            _ => None,
        })
        .await;
    assert_eq!(seen_by_client.peer_id, server.info.peer_id);
    assert_eq!(seen_by_client.addrs, server.info.addrs);
    let client_id = client.info.peer_id;
    server
        .event(|e| (e == TransportEvent::PeerIsClient(client_id)).then_some(()))
        .await;
    // The client refuses inbound kad streams.
    let out = within(
        "server asks",
        server.handle.request(&client.info, find_node(b"k")),
    )
    .await;
    assert!(
        matches!(out, Err(TransportError::UnsupportedProtocol)),
        "{out:?}"
    );
    assert!(client.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_client_mode_is_announced() {
    let mut a = Node::server().await;
    let b = Node::server().await;
    let b_id = b.info.peer_id;
    within("connect", a.handle.dial(&b.info))
        .await
        .expect("dial");
    a.event(|e| matches!(e, TransportEvent::PeerIsServer(p) if p.peer_id == b_id).then_some(()))
        .await;
    b.handle.set_mode(Mode::Client).await.expect("running");
    a.event(|e| (e == TransportEvent::PeerIsClient(b_id)).then_some(()))
        .await;
    let out = within("ask the client", a.handle.request(&b.info, find_node(b"k"))).await;
    assert!(
        matches!(out, Err(TransportError::UnsupportedProtocol)),
        "{out:?}"
    );
    b.handle.set_mode(Mode::Server).await.expect("running");
    a.event(|e| matches!(e, TransportEvent::PeerIsServer(p) if p.peer_id == b_id).then_some(()))
        .await;
    let out = within("ask the server", a.handle.request(&b.info, find_node(b"k"))).await;
    assert!(matches!(out, Ok(Some(_))), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_times_out() {
    let a = Node::start(
        KadConfig::default().with_request_timeout(Duration::from_secs(1)),
        Arc::new(default_answer),
    )
    .await;
    // Answers nothing to FIND_NODE, and keeps reading the stream.
    let b = Node::start(
        KadConfig::default(),
        Arc::new(|peer, request: &Request| match request {
            Request::FindNode { .. } => Ok(None),
            _ => default_answer(peer, request),
        }),
    )
    .await;
    let started = Instant::now();
    let out = within("silent peer", a.handle.request(&b.info, find_node(b"k"))).await;
    assert!(matches!(out, Err(TransportError::Timeout)), "{out:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // The timed-out stream is dropped; the next request opens a new one.
    let out = within("ping", a.handle.request(&b.info, Request::Ping)).await;
    assert_eq!(out.expect("ping"), Some(Response::Ping));
    assert_eq!(a.handle.stats().outbound_streams_opened, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_respect_the_outbound_stream_limit() {
    let a = Node::start(
        KadConfig::default().with_max_outbound_streams(3),
        Arc::new(default_answer),
    )
    .await;
    let b = Node::server().await;
    let requests = (0..24u8).map(|i| {
        let handle = a.handle.clone();
        let peer = b.info.clone();
        async move { handle.request(&peer, find_node(&[i])).await }
    });
    let results = within("concurrent", futures::future::join_all(requests)).await;
    for r in &results {
        assert!(matches!(r, Ok(Some(Response::FindNode { .. }))), "{r:?}");
    }
    let stats = a.handle.stats();
    assert!(stats.outbound_streams_opened <= 3, "{stats:?}");
    assert_eq!(stats.outbound_requests_ok, 24);
    assert_eq!(b.seen().len(), 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_streams_beyond_the_limit_are_reset() {
    let a = Node::server().await;
    // Slow to answer "x", so a second request needs a second stream meanwhile.
    let b = Node::start(
        KadConfig::default().with_max_inbound_streams(1),
        Arc::new(|peer, request: &Request| {
            if request.key() == b"x" {
                std::thread::sleep(Duration::from_millis(300));
            }
            default_answer(peer, request)
        }),
    )
    .await;
    let (x, y) = within(
        "two at once",
        futures::future::join(a.handle.request(&b.info, find_node(b"x")), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            a.handle.request(&b.info, find_node(b"y")).await
        }),
    )
    .await;
    // b resets the second stream; "y" then runs on the first one (directly, or after one
    // retry if it had been written to the reset stream).
    assert!(x.is_ok() && y.is_ok(), "{x:?} {y:?}");
    let served = b.handle.stats();
    assert_eq!(served.inbound_streams_accepted, 1, "{served:?}");
    assert!(served.inbound_streams_refused >= 1, "{served:?}");
    // a negotiated that second stream too (possibly after "y" completed).
    within("second stream", async {
        while a.handle.stats().outbound_streams_opened < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A handler that blocks (a store waiting on its disk) holds up only the stream it answers:
/// the node serves other peers meanwhile, even when the whole process runs on one thread.
#[tokio::test(flavor = "current_thread")]
async fn a_blocking_handler_does_not_stall_the_node() {
    let blocking = Arc::new(AtomicBool::new(false));
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Mutex::new(released);
    let in_handler = blocking.clone();
    let b = Node::start(
        KadConfig::default(),
        Arc::new(move |peer, request: &Request| {
            if let Request::AddProvider { .. } = request {
                in_handler.store(true, Ordering::SeqCst);
                // Bounded, so a regression fails the test instead of hanging it.
                let _ = released
                    .lock()
                    .expect("lock")
                    .recv_timeout(Duration::from_secs(30));
                in_handler.store(false, Ordering::SeqCst);
            }
            default_answer(peer, request)
        }),
    )
    .await;
    let (a, c) = (Node::server().await, Node::server().await);
    let add = Request::AddProvider {
        key: b"cid-multihash".to_vec(),
        providers: vec![a.info.clone()],
    };
    within("add provider", a.handle.request(&b.info, add))
        .await
        .expect("written");
    within("b's handler blocks", async {
        while !blocking.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let out = within("find node", c.handle.request(&b.info, find_node(b"k"))).await;
    assert!(
        matches!(out, Ok(Some(Response::FindNode { .. }))),
        "{out:?}"
    );
    assert!(
        blocking.load(Ordering::SeqCst),
        "answered only after the blocked handler returned"
    );
    release.send(()).expect("handler waiting");
    within("b's handler returns", async {
        while blocking.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peer_is_a_dial_error() {
    let a = Node::server().await;
    let out = within("dial", a.handle.request(&unreachable_peer(), Request::Ping)).await;
    assert!(matches!(out, Err(TransportError::Dial(_))), "{out:?}");
    let out = within(
        "no address",
        a.handle.request(
            &PeerInfo::new(libp2p::PeerId::random(), vec![]),
            Request::Ping,
        ),
    )
    .await;
    assert!(matches!(out, Err(TransportError::Dial(_))), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_is_reported_and_shutdown_stops_the_handle() {
    let mut a = Node::server().await;
    let b = Node::server().await;
    within("dial", a.handle.dial(&b.info)).await.expect("dial");
    assert_eq!(
        a.handle.connected_peers().await.expect("running"),
        vec![b.info.peer_id]
    );
    b.handle.shutdown().await;
    let b_id = b.info.peer_id;
    a.event(|e| (e == TransportEvent::PeerDisconnected(b_id)).then_some(()))
        .await;
    let out = within("after shutdown", b.handle.request(&a.info, Request::Ping)).await;
    assert!(matches!(out, Err(TransportError::Shutdown)), "{out:?}");
    let out = within(
        "to a stopped peer",
        a.handle.request(&b.info, Request::Ping),
    )
    .await;
    assert!(matches!(out, Err(TransportError::Dial(_))), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_sees_the_sender_as_identify_describes_it() {
    let server = Node::server().await;
    let client = Node::start(
        KadConfig::default().with_mode(Mode::Client),
        Arc::new(default_answer),
    )
    .await;
    let mut b = Node::server().await;
    for node in [&server, &client] {
        within("dial", node.handle.dial(&b.info))
            .await
            .expect("dial");
    }
    let (server_id, client_id) = (server.info.peer_id, client.info.peer_id);
    // The two identify exchanges finish in either order: wait for both events at once.
    let (mut saw_server, mut saw_client) = (false, false);
    b.event(|e| {
        match e {
            TransportEvent::PeerIsServer(p) if p.peer_id == server_id => saw_server = true,
            TransportEvent::PeerIsClient(id) if id == client_id => saw_client = true,
            _ => {}
        }
        (saw_server && saw_client).then_some(())
    })
    .await;
    // The identify addresses reach the connection's handler just after the event: ask until
    // the handler has them.
    for node in [&server, &client] {
        let sender = within("sender known", async {
            loop {
                let out = node.handle.request(&b.info, Request::Ping).await;
                assert!(out.is_ok(), "{out:?}");
                let last = b
                    .senders()
                    .into_iter()
                    .rev()
                    .find(|s| s.peer.peer_id == node.info.peer_id);
                match last {
                    Some(s) if !s.peer.addrs.is_empty() => return s,
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        assert_eq!(sender.peer.addrs, node.info.addrs);
        assert_eq!(sender.is_server, node.info.peer_id == server_id);
        // The IP its connection comes from, and the same in the transport's peer book.
        let loopback: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
        assert_eq!(sender.remote_ip, Some(loopback));
        let observed =
            dht_routing_table::AddressBook::observed(&b.handle.peer_book(), &node.info.peer_id)
                .expect("connected peers are in the book");
        assert_eq!(observed.remote_ip, loopback);
        assert_eq!(observed.listen_addrs, node.info.addrs);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_peer_closed_while_idle_is_not_reused() {
    let a = Node::server().await;
    let b = Node::start(
        KadConfig::default().with_stream_idle_timeout(Duration::from_millis(300)),
        Arc::new(default_answer),
    )
    .await;
    let out = within("first", a.handle.request(&b.info, Request::Ping)).await;
    assert!(out.is_ok(), "{out:?}");
    // b closes its end after 300 ms without a request; a notices and drops its idle stream.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let out = within("second", a.handle.request(&b.info, Request::Ping)).await;
    assert!(out.is_ok(), "{out:?}");
    let sent = a.handle.stats();
    assert_eq!(sent.outbound_streams_opened, 2, "{sent:?}");
    assert_eq!(sent.outbound_streams_reused, 0, "{sent:?}");
    let served = b.handle.stats();
    assert_eq!(served.inbound_streams_accepted, 2, "{served:?}");
    assert_eq!(served.inbound_stream_errors, 0, "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pooled_streams_do_not_keep_the_connection_open() {
    let mut a = Node::start_with(
        TransportConfig::default().with_idle_connection_timeout(Duration::from_millis(500)),
        Arc::new(default_answer),
    )
    .await;
    let b = Node::server().await;
    let out = within("request", a.handle.request(&b.info, Request::Ping)).await;
    assert!(out.is_ok(), "{out:?}");
    let idle_since = Instant::now();
    let b_id = b.info.peer_id;
    a.event(|e| (e == TransportEvent::PeerDisconnected(b_id)).then_some(()))
        .await;
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(400) && idle < Duration::from_secs(5),
        "{idle:?}"
    );
    // The next request dials again.
    let out = within("again", a.handle.request(&b.info, Request::Ping)).await;
    assert!(out.is_ok(), "{out:?}");
}

/// The TCP port of a node's first listen address.
fn tcp_port(peer: &PeerInfo) -> u16 {
    peer.addrs
        .iter()
        .flat_map(|a| a.iter())
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_address_is_resolved_and_dialled() {
    let a = Node::server().await;
    let b = Node::server().await;
    let at_name = PeerInfo::new(
        a.info.peer_id,
        vec![
            format!("/dns4/localhost/tcp/{}", tcp_port(&a.info))
                .parse()
                .unwrap(),
        ],
    );
    let out = within(
        "a request to a /dns4 address",
        b.handle.request(&at_name, find_node(b"by name")),
    )
    .await;
    assert!(
        matches!(out, Ok(Some(Response::FindNode { .. }))),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_bootstraps_from_a_peer_named_by_dns() {
    use dht_node::builder::{NodeBuilder, parse_peer};
    let seed = NodeBuilder::local().build().await.unwrap();
    let named = parse_peer(&format!(
        "/dns4/localhost/tcp/{}/p2p/{}",
        tcp_port(seed.info()),
        seed.peer_id()
    ))
    .unwrap();
    let node = NodeBuilder::local()
        .bootstrap_peers(vec![named])
        .bootstrap_timeout(Duration::from_secs(15))
        .build()
        .await
        .unwrap();
    assert!(
        node.table().contains(&seed.peer_id()),
        "the bootstrap peer named by DNS was not reached"
    );
    node.close().await.unwrap();
    seed.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_addresses_are_announced_by_identify_and_in_our_own_records() {
    use dht_node::builder::NodeBuilder;
    let external: dht_proto::Multiaddr = "/ip4/198.51.100.7/tcp/4001".parse().unwrap();
    let node = NodeBuilder::local()
        .external_addrs(vec![external.clone()])
        .build()
        .await
        .unwrap();
    assert_eq!(node.info().addrs.first(), Some(&external));
    let mut other = Node::server().await;
    other.handle.dial(node.info()).await.unwrap();
    let peer_id = node.peer_id();
    let announced = other
        .event(|e| match e {
            TransportEvent::PeerIsServer(p) if p.peer_id == peer_id => Some(p.addrs),
            _ => None,
        })
        .await;
    assert!(announced.contains(&external), "identify: {announced:?}");
    // Asked for itself, it answers with itself first, at its external address too.
    let out = within(
        "FIND_NODE of its own id",
        other
            .handle
            .request(node.info(), find_node(&peer_id.to_bytes())),
    )
    .await;
    let Ok(Some(Response::FindNode { closer_peers })) = out else {
        panic!("{out:?}");
    };
    assert_eq!(closer_peers.first().map(|p| p.peer_id), Some(peer_id));
    assert!(
        closer_peers[0].addrs.contains(&external),
        "{:?}",
        closer_peers[0].addrs
    );
    node.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_the_internet_neither_dials_nor_serves_non_public_addresses() {
    use dht_node::builder::NodeBuilder;
    // WAN mode (the default of NodeBuilder::new), listening on loopback for the test.
    let wan = NodeBuilder::new()
        .listen_addrs(vec![common::loopback()])
        .bootstrap_peers(Vec::new())
        .memory_store()
        .raise_fd_limit(false)
        .build()
        .await
        .unwrap();
    let other = Node::server().await;
    // Known at a loopback address only (as a lookup would have learnt it): not dialled.
    let out = within(
        "a request to a loopback-only peer",
        wan.transport().request(&other.info, find_node(b"x")),
    )
    .await;
    assert!(matches!(out, Err(TransportError::Dial(_))), "{out:?}");
    assert!(other.seen().is_empty());
    // A devnet node dials it.
    let lan = NodeBuilder::local().build().await.unwrap();
    let out = within(
        "the same from a devnet node",
        lan.transport().request(&other.info, find_node(b"x")),
    )
    .await;
    assert!(matches!(out, Ok(Some(_))), "{out:?}");
    // Served: a provider record keeps its addresses, but answers carry the public one only.
    let key = b"\x12\x20a CID provided at two addresses..".to_vec();
    // (a routable address: the documentation ranges are not public)
    let public: dht_proto::Multiaddr = "/ip4/93.184.216.34/tcp/4001".parse().unwrap();
    let private: dht_proto::Multiaddr = "/ip4/10.1.2.3/tcp/4001".parse().unwrap();
    let add = Request::AddProvider {
        key: key.clone(),
        providers: vec![PeerInfo::new(
            other.info.peer_id,
            vec![public.clone(), private],
        )],
    };
    within("ADD_PROVIDER", other.handle.request(wan.info(), add))
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    let providers = loop {
        let out = within(
            "GET_PROVIDERS",
            other
                .handle
                .request(wan.info(), Request::GetProviders { key: key.clone() }),
        )
        .await;
        let Ok(Some(Response::GetProviders { providers, .. })) = out else {
            panic!("{out:?}");
        };
        if !providers.is_empty() || Instant::now() > until {
            break providers;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(providers.len(), 1, "{providers:?}");
    assert_eq!(providers[0].addrs, vec![public]);
    wan.close().await.unwrap();
    lan.close().await.unwrap();
}

/// `bytes_sent` counts the kad messages each side wrote: the request's frame on the sender,
/// the response's on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_counts_the_frames_written() {
    let a = Node::server().await;
    let b = Node::server().await;
    let request = find_node(b"target");
    let out = within("request", a.handle.request(&b.info, request.clone())).await;
    let response = out.expect("a response").expect("FIND_NODE has a response");
    let codec = dht_proto::Codec::default();
    let (mut request_frame, mut response_frame) = (Vec::new(), Vec::new());
    codec.encode_request(&request, &mut request_frame).unwrap();
    codec
        .encode_response(&response, &mut response_frame)
        .unwrap();
    assert_eq!(a.handle.stats().bytes_sent, request_frame.len() as u64);
    assert_eq!(b.handle.stats().bytes_sent, response_frame.len() as u64);
}
