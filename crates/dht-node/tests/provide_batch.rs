//! The batched provide protocol (`/amino-dht-rs/provide-batch/1.0.0`,
//! `docs/specs/provide-batch.md`) between real nodes on 127.0.0.1 with RocksDB stores: a
//! batch is stored and answered per key, and GET_PROVIDERS finds every key stored; the
//! refusals of the spec over raw streams; a node with the protocol off neither advertises,
//! serves nor sends it; and an answered batch survives `kill -9` of a `dht-node run` process.
#![allow(clippy::unwrap_used)]

mod common;

use std::{sync::Arc, time::Duration};

use common::{RawPeer, STEP, process::NodeProc, within};
use dht_handler::{HandlerConfig, RateLimit};
use dht_node::{
    builder::{NodeBuilder, parse_peer},
    node::Node,
    transport::{KadConfig, Mode, TransportConfig, TransportError, TransportHandle},
};
use dht_proto::{
    Multiaddr, PeerId, PeerInfo, Request, Response,
    batch::{
        BatchCodec, BatchError, KeyStatus, PROVIDE_BATCH_PROTOCOL, ProvideBatch,
        encode_request_body,
    },
};
use dht_provider_store::Config as StoreConfig;
use dht_routing::{Feature, Network, RpcError};
use dht_routing_table::AddressBook;
use futures::{AsyncReadExt, AsyncWriteExt};
use sha2::{Digest, Sha256};

/// `n` sha2-256 multihashes (34 bytes) made from `seed`.
fn keys(seed: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut key = vec![0x12, 0x20];
            key.extend_from_slice(&Sha256::digest(format!("{seed}-{i}").as_bytes()));
            key
        })
        .collect()
}

/// A node on 127.0.0.1 with RocksDB stores under `dir`, as `tune` sets it up.
async fn rocks_node(
    dir: &std::path::Path,
    tune: impl FnOnce(NodeBuilder) -> NodeBuilder,
) -> Arc<Node> {
    let builder = NodeBuilder::local()
        .data_dir(dir)
        .rocks_store(StoreConfig::default());
    within("node starts", tune(builder).build()).await.unwrap()
}

/// A node on 127.0.0.1 with stores in memory, as `tune` sets it up.
async fn memory_node(tune: impl FnOnce(NodeBuilder) -> NodeBuilder) -> Arc<Node> {
    within("node starts", tune(NodeBuilder::local()).build())
        .await
        .unwrap()
}

/// Connects `from` to `to` and waits until identify has told `from` about `to`.
async fn connect_identified(from: &TransportHandle, to: &PeerInfo) {
    within("dial", from.dial(to)).await.unwrap();
    let book = from.peer_book();
    within("identify", async {
        while book
            .observed(&to.peer_id)
            .is_none_or(|o| o.listen_addrs.is_empty())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The providers `server` lists for `key`.
async fn providers(from: &TransportHandle, server: &PeerInfo, key: &[u8]) -> Vec<PeerId> {
    let request = Request::GetProviders { key: key.to_vec() };
    match within("GET_PROVIDERS", from.request(server, request)).await {
        Ok(Some(Response::GetProviders { providers, .. })) => {
            providers.into_iter().map(|p| p.peer_id).collect()
        }
        other => panic!("GET_PROVIDERS answered {other:?}"),
    }
}

fn local_addr() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/4001".parse().unwrap()
}

/// A length-prefixed frame of `body`, written as the spec frames it.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut n = body.len() as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(body);
    out
}

/// Whether the server closed or reset `stream` (nothing more to read) within [`STEP`].
async fn closed(stream: &mut libp2p::Stream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(STEP, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stores_a_batch_answers_stored_per_key_and_get_providers_finds_each() {
    let dir = tempfile::tempdir().unwrap();
    let server = rocks_node(dir.path(), |b| b).await;
    let client = memory_node(|b| b).await;
    connect_identified(client.transport(), server.info()).await;
    let network = client.network();
    assert!(
        network.supports(&server.peer_id(), Feature::ProvideBatch),
        "the server lists the protocol in identify"
    );

    let keys = keys("stored", 300);
    let batch = ProvideBatch {
        provider: client.info().clone(),
        keys: keys.clone(),
    };
    let answer = within("batch", network.provide_batch(server.info(), batch))
        .await
        .unwrap();
    assert_eq!(answer.error, None);
    assert_eq!(answer.statuses, vec![KeyStatus::Stored; keys.len()]);

    for key in &keys {
        assert_eq!(
            providers(client.transport(), server.info(), key).await,
            vec![client.peer_id()],
            "the provider of a stored key"
        );
    }
    let sent = client.transport().stats();
    let received = server.transport().stats();
    eprintln!("client: {sent:?}\nserver: {received:?}");
    assert_eq!(
        (
            sent.outbound_batches,
            sent.outbound_batch_records,
            sent.outbound_batch_stored
        ),
        (1, 300, 300)
    );
    assert_eq!(
        (
            received.inbound_batches,
            received.inbound_batch_records,
            received.inbound_batch_stored,
            received.inbound_batches_refused
        ),
        (1, 300, 300, 0)
    );
    client.close().await.unwrap();
    server.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batches_store_nothing_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    // Keys over 40 bytes are refused by this server's rules (the protocol takes 80); a peer
    // may send 10 requests at once, then 1 a second: 30 batched records at once (a token pays
    // for 3), then 3 a second.
    let server = rocks_node(dir.path(), |b| {
        b.handler(
            HandlerConfig::default()
                .with_max_provider_key_len(40)
                .with_rate_limit(Some(RateLimit::new(1, 10))),
        )
    })
    .await;
    let asker = memory_node(|b| b).await;
    let raw = RawPeer::start();
    raw.connect(server.info()).await.unwrap();
    let codec = BatchCodec::default();
    let ok_key = keys("refusals", 1).remove(0);
    let mut stream = raw
        .open_protocol(server.peer_id(), PROVIDE_BATCH_PROTOCOL)
        .await
        .unwrap();

    // More records than the sender may send now: refused whole, nothing stored.
    let burst = keys("rate", 31);
    let batch = ProvideBatch {
        provider: PeerInfo::new(raw.peer_id, vec![local_addr()]),
        keys: burst.clone(),
    };
    codec.write_request(&mut stream, &batch).await.unwrap();
    let answer = within("answer", codec.read_response(&mut stream))
        .await
        .unwrap();
    assert_eq!(answer.error, Some(BatchError::RateLimited));
    assert!(answer.statuses.is_empty());
    for key in [&burst[0], &burst[30]] {
        assert!(
            providers(asker.transport(), server.info(), key)
                .await
                .is_empty()
        );
    }

    // Another peer as the provider.
    let someone = PeerInfo::new(PeerId::random(), vec![local_addr()]);
    let batch = ProvideBatch {
        provider: someone,
        keys: vec![ok_key.clone()],
    };
    codec.write_request(&mut stream, &batch).await.unwrap();
    let answer = within("answer", codec.read_response(&mut stream))
        .await
        .unwrap();
    assert_eq!(answer.error, Some(BatchError::ProviderNotSender));
    assert!(answer.statuses.is_empty());

    // No address: the stream stays open after an answered refusal.
    let batch = ProvideBatch {
        provider: PeerInfo::new(raw.peer_id, Vec::new()),
        keys: vec![ok_key.clone()],
    };
    codec.write_request(&mut stream, &batch).await.unwrap();
    let answer = within("answer", codec.read_response(&mut stream))
        .await
        .unwrap();
    assert_eq!(answer.error, Some(BatchError::NoAddresses));
    assert!(
        providers(asker.transport(), server.info(), &ok_key)
            .await
            .is_empty()
    );

    // A key the server's rules refuse: refused alone.
    let long_key = vec![0x55; 60];
    let batch = ProvideBatch {
        provider: PeerInfo::new(raw.peer_id, vec![local_addr()]),
        keys: vec![ok_key.clone(), long_key],
    };
    codec.write_request(&mut stream, &batch).await.unwrap();
    let answer = within("answer", codec.read_response(&mut stream))
        .await
        .unwrap();
    assert_eq!(answer.error, None);
    assert_eq!(
        answer.statuses,
        vec![KeyStatus::Stored, KeyStatus::InvalidKey]
    );
    assert_eq!(
        providers(asker.transport(), server.info(), &ok_key).await,
        vec![raw.peer_id]
    );

    // Too many keys: the stream is reset, nothing of the batch stored.
    let many = keys("too-many", 8193);
    let body = {
        let mut body = Vec::new();
        let batch = ProvideBatch {
            provider: PeerInfo::new(raw.peer_id, vec![local_addr()]),
            keys: many.clone(),
        };
        encode_request_body(&batch, &mut body);
        body
    };
    assert!(
        body.len() < 1 << 20,
        "under the message limit: only the key count is wrong"
    );
    let mut stream = raw
        .open_protocol(server.peer_id(), PROVIDE_BATCH_PROTOCOL)
        .await
        .unwrap();
    stream.write_all(&frame(&body)).await.unwrap();
    stream.flush().await.unwrap();
    assert!(
        closed(&mut stream).await,
        "a batch of 8,193 keys resets the stream"
    );
    for key in [&many[0], &many[8192]] {
        assert!(
            providers(asker.transport(), server.info(), key)
                .await
                .is_empty()
        );
    }

    // A message over 1 MiB: reset from its length prefix.
    let mut stream = raw
        .open_protocol(server.peer_id(), PROVIDE_BATCH_PROTOCOL)
        .await
        .unwrap();
    stream.write_all(&[0x81, 0x80, 0x40]).await.unwrap();
    stream.flush().await.unwrap();
    assert!(
        closed(&mut stream).await,
        "an oversize message resets the stream"
    );

    // A stream cut inside a batch: closed, nothing stored.
    let cut_key = keys("cut", 1).remove(0);
    let mut framed = Vec::new();
    let batch = ProvideBatch {
        provider: PeerInfo::new(raw.peer_id, vec![local_addr()]),
        keys: vec![cut_key.clone()],
    };
    codec.encode_request(&batch, &mut framed).unwrap();
    let mut stream = raw
        .open_protocol(server.peer_id(), PROVIDE_BATCH_PROTOCOL)
        .await
        .unwrap();
    stream.write_all(&framed[..framed.len() - 1]).await.unwrap();
    stream.close().await.unwrap();
    assert!(closed(&mut stream).await);
    assert!(
        providers(asker.transport(), server.info(), &cut_key)
            .await
            .is_empty()
    );

    // The server still serves batches (no panic took it down).
    let after = keys("after", 3);
    let mut stream = raw
        .open_protocol(server.peer_id(), PROVIDE_BATCH_PROTOCOL)
        .await
        .unwrap();
    let batch = ProvideBatch {
        provider: PeerInfo::new(raw.peer_id, vec![local_addr()]),
        keys: after.clone(),
    };
    codec.write_request(&mut stream, &batch).await.unwrap();
    let answer = within("answer", codec.read_response(&mut stream))
        .await
        .unwrap();
    assert_eq!(answer.statuses, vec![KeyStatus::Stored; 3]);
    let stats = server.transport().stats();
    eprintln!("server: {stats:?}");
    // Answered: 3 refusals, 2 processed; reset: too many, oversize, cut.
    assert_eq!(stats.inbound_batches, 5);
    assert_eq!(stats.inbound_batches_refused, 3 + 3);
    assert_eq!(stats.inbound_batch_stored, 1 + 3);
    asker.close().await.unwrap();
    server.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_protocol_off_neither_advertises_serves_nor_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let off = rocks_node(dir.path(), |b| b.provide_batch(false)).await;
    let on = memory_node(|b| b).await;
    connect_identified(on.transport(), off.info()).await;
    connect_identified(off.transport(), on.info()).await;

    // Not in its identify: the peer that has the protocol on does not list it for it.
    let network = on.network();
    assert!(!network.supports(&off.peer_id(), Feature::ProvideBatch));
    let batch = ProvideBatch {
        provider: on.info().clone(),
        keys: keys("off", 2),
    };
    let sent = within("batch", network.provide_batch(off.info(), batch.clone())).await;
    assert_eq!(sent, Err(RpcError::Unsupported(Feature::ProvideBatch)));

    // Its stream is refused in negotiation.
    let raw = RawPeer::start();
    raw.connect(off.info()).await.unwrap();
    assert!(
        raw.open_protocol(off.peer_id(), PROVIDE_BATCH_PROTOCOL)
            .await
            .is_err(),
        "the batch stream is refused"
    );
    // The kad protocol is still served.
    assert!(raw.open(off.peer_id()).await.is_ok());

    // And it sends none, though the other peer lists the protocol.
    assert!(
        off.transport()
            .peer_book()
            .supports(&on.peer_id(), Feature::ProvideBatch),
        "the other peer advertises it"
    );
    assert!(!off.network().supports(&on.peer_id(), Feature::ProvideBatch));
    let back = ProvideBatch {
        provider: off.info().clone(),
        keys: keys("off-back", 2),
    };
    let sent = within("batch", off.transport().provide_batch(on.info(), back)).await;
    assert!(
        matches!(sent, Err(TransportError::ProvideBatchUnsupported(_))),
        "{sent:?}"
    );
    let (a, b) = (on.transport().stats(), off.transport().stats());
    assert_eq!(
        (
            a.outbound_batches,
            a.outbound_batches_failed,
            a.inbound_batches
        ),
        (0, 0, 0)
    );
    assert_eq!(
        (
            b.outbound_batches,
            b.outbound_batches_failed,
            b.inbound_batches
        ),
        (0, 0, 0)
    );
    on.close().await.unwrap();
    off.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_batch_survives_kill_9_of_the_server() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("server");
    let mut proc = NodeProc::start(&dir, &[]);
    let server = parse_peer(&proc.addrs[0]).unwrap();
    let client = memory_node(|b| b).await;
    connect_identified(client.transport(), &server).await;

    let keys = keys("kill-9", 2000);
    let mut stored = Vec::new();
    for chunk in keys.chunks(500) {
        let batch = ProvideBatch {
            provider: client.info().clone(),
            keys: chunk.to_vec(),
        };
        let answer = within("batch", client.network().provide_batch(&server, batch))
            .await
            .unwrap();
        assert_eq!(answer.error, None);
        stored.extend(
            chunk
                .iter()
                .zip(&answer.statuses)
                .filter(|(_, s)| s.is_stored())
                .map(|(k, _)| k.clone()),
        );
    }
    // Killed right after the last answer.
    proc.kill_9();
    assert_eq!(stored.len(), keys.len(), "every key was answered STORED");

    let proc = NodeProc::start(&dir, &[]);
    let server = parse_peer(&proc.addrs[0]).unwrap();
    let asker = memory_node(|b| b).await;
    for key in &stored {
        assert_eq!(
            providers(asker.transport(), &server, key).await,
            vec![client.peer_id()],
            "a key answered STORED before kill -9 is listed after the restart"
        );
    }
    drop(proc);
    asker.close().await.unwrap();
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dht_client_neither_advertises_nor_serves_it() {
    let client = memory_node(|b| b.mode(Mode::Client)).await;
    let server = memory_node(|b| b).await;
    connect_identified(server.transport(), client.info()).await;
    assert!(
        !server
            .network()
            .supports(&client.peer_id(), Feature::ProvideBatch)
    );
    let raw = RawPeer::start();
    raw.connect(client.info()).await.unwrap();
    assert!(
        raw.open_protocol(client.peer_id(), PROVIDE_BATCH_PROTOCOL)
            .await
            .is_err()
    );
    // It still sends batches to servers that take them.
    connect_identified(client.transport(), server.info()).await;
    let batch = ProvideBatch {
        provider: client.info().clone(),
        keys: keys("client", 5),
    };
    let answer = within(
        "batch",
        client.network().provide_batch(server.info(), batch),
    )
    .await
    .unwrap();
    assert_eq!(answer.statuses, vec![KeyStatus::Stored; 5]);
    client.close().await.unwrap();
    server.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_streams_count_in_the_inbound_stream_limit() {
    // Two inbound streams per connection: kad and batch streams alike.
    let kad = KadConfig::default().with_max_inbound_streams(2);
    let server = memory_node(|b| {
        b.transport(TransportConfig::default().with_kad(kad))
            .listen_addrs(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()])
    })
    .await;
    let raw = RawPeer::start();
    raw.connect(server.info()).await.unwrap();
    let codec = BatchCodec::default();
    let provider = PeerInfo::new(raw.peer_id, vec![local_addr()]);
    let mut kad_stream = raw.open(server.peer_id()).await.unwrap();
    let mut first = raw
        .open_protocol(server.peer_id(), PROVIDE_BATCH_PROTOCOL)
        .await
        .unwrap();
    let batch = ProvideBatch {
        provider: provider.clone(),
        keys: keys("limit", 2),
    };
    // The first batch stream is served (so both streams are open at the server).
    codec.write_request(&mut first, &batch).await.unwrap();
    let answer = within("answer", codec.read_response(&mut first))
        .await
        .unwrap();
    assert_eq!(answer.statuses, vec![KeyStatus::Stored; 2]);
    // A third stream is reset.
    let mut third = raw
        .open_protocol(server.peer_id(), PROVIDE_BATCH_PROTOCOL)
        .await
        .unwrap();
    let batch = ProvideBatch {
        provider,
        keys: keys("limit-3", 1),
    };
    let _ = codec.write_request(&mut third, &batch).await;
    assert!(
        closed(&mut third).await,
        "the third inbound stream is reset"
    );
    let stats = server.transport().stats();
    assert_eq!(stats.inbound_streams_accepted, 2, "{stats:?}");
    assert!(stats.inbound_streams_refused >= 1, "{stats:?}");
    assert_eq!(stats.inbound_batches, 1, "{stats:?}");
    // The kad stream was open all along.
    kad_stream.close().await.unwrap();
    server.close().await.unwrap();
}
